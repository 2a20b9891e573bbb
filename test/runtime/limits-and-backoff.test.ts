import { parseRetryAfterSeconds } from '../../lambda/shared/amazon';
import { backoffDelayMs, retry, RetriesExhaustedError } from '../../lambda/shared/backoff';
import {
  ConcurrencyLimiter,
  RateLimiterRegistry,
  sharedRateLimiters,
  TokenBucket,
} from '../../lambda/shared/amazon/rate-limiter';

/** A clock that only moves when someone sleeps: time-based behaviour without waiting. */
function fakeClock(start = 0) {
  const clock = { now: start, sleeps: [] as number[] };
  return {
    clock,
    now: () => clock.now,
    sleep: async (ms: number) => {
      clock.sleeps.push(ms);
      clock.now += ms;
    },
  };
}

describe('backoffDelayMs (capped exponential, full jitter)', () => {
  test('the ceiling doubles per attempt up to the cap', () => {
    const top = { baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.999999 };
    expect([1, 2, 3, 4, 5, 6].map((a) => backoffDelayMs(a, top))).toEqual([99, 199, 399, 799, 999, 999]);
  });

  test('full jitter: any delay from 0 up to the ceiling', () => {
    expect(backoffDelayMs(3, { baseDelayMs: 100, maxDelayMs: 1000, random: () => 0 })).toBe(0);
    expect(backoffDelayMs(3, { baseDelayMs: 100, maxDelayMs: 1000, random: () => 0.5 })).toBe(200);
  });

  test('huge attempt numbers stay finite and capped', () => {
    expect(backoffDelayMs(10_000, { baseDelayMs: 100, maxDelayMs: 30_000, random: () => 0.5 })).toBe(15_000);
  });
});

describe('retry', () => {
  test('retries retryable errors, honours a minimum delay, and returns the result', async () => {
    const { clock, sleep } = fakeClock();
    let calls = 0;
    const result = await retry(
      async () => {
        calls += 1;
        if (calls < 3) throw new Error('flaky');
        return 'done';
      },
      {
        maxAttempts: 5,
        baseDelayMs: 10,
        maxDelayMs: 100,
        random: () => 0,
        isRetryable: () => true,
        minimumDelayMs: () => 42,
        sleep,
      },
    );
    expect(result).toBe('done');
    expect(clock.sleeps).toEqual([42, 42]);
  });

  test('rethrows non-retryable errors at once', async () => {
    const fatal = new Error('fatal');
    await expect(
      retry(async () => Promise.reject(fatal), {
        maxAttempts: 5,
        baseDelayMs: 1,
        maxDelayMs: 1,
        isRetryable: () => false,
      }),
    ).rejects.toBe(fatal);
  });

  test('wraps the last error when attempts run out', async () => {
    const error = await retry(async () => Promise.reject(new Error('still down')), {
      maxAttempts: 3,
      baseDelayMs: 1,
      maxDelayMs: 1,
      isRetryable: () => true,
      sleep: async () => undefined,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RetriesExhaustedError);
    expect(error).toMatchObject({ attempts: 3, message: 'Gave up after 3 attempts: still down' });
  });
});

describe('TokenBucket', () => {
  test('lets a burst through, then one request per 1/rate seconds', async () => {
    const { clock, now, sleep } = fakeClock(1000);
    const bucket = new TokenBucket({ ratePerSecond: 4, burst: 2, now, sleep });
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      await bucket.take();
      times.push(clock.now - 1000);
    }
    expect(times).toEqual([0, 0, 250, 500, 750, 1000]);
  });

  test('concurrent takers are served in order without exceeding the rate', async () => {
    const { clock, now, sleep } = fakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 1, now, sleep });
    const order: number[] = [];
    await Promise.all([0, 1, 2, 3].map((i) => bucket.take().then(() => order.push(i))));
    expect(order).toEqual([0, 1, 2, 3]);
    expect(clock.now).toBe(300);
  });

  test('a pause (Retry-After) holds every taker until it ends', async () => {
    const { clock, now, sleep } = fakeClock();
    const bucket = new TokenBucket({ ratePerSecond: 100, burst: 10, now, sleep });
    bucket.pauseUntil(5000);
    bucket.pauseUntil(2000); // an earlier pause never shortens a later one
    await bucket.take();
    expect(clock.now).toBe(5000);
  });
});

describe('ConcurrencyLimiter', () => {
  test('never runs more than max at once and runs everything', async () => {
    const limiter = new ConcurrencyLimiter(3);
    let running = 0;
    let peak = 0;
    const release: (() => void)[] = [];
    const done = Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        limiter.run(async () => {
          running += 1;
          peak = Math.max(peak, running);
          await new Promise<void>((resolve) => release.push(resolve));
          running -= 1;
          return i;
        }),
      ),
    );
    let started = 0;
    while (started < 10) {
      await new Promise((resolve) => setImmediate(resolve));
      expect(limiter.inFlight()).toBeLessThanOrEqual(3);
      started += release.length;
      release.splice(0).forEach((r) => r());
    }
    expect(await done).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(peak).toBe(3);
  });

  test('a failing call frees its slot', async () => {
    const limiter = new ConcurrencyLimiter(1);
    await expect(limiter.run(async () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    await expect(limiter.run(async () => 'next')).resolves.toBe('next');
    expect(limiter.inFlight()).toBe(0);
  });
});

describe('RateLimiterRegistry', () => {
  test('one limiter per endpoint and region, shared by everyone asking', () => {
    const registry = new RateLimiterRegistry();
    expect(registry.for('lwa', 'EU')).toBe(registry.for('lwa', 'EU'));
    expect(registry.for('lwa', 'EU')).not.toBe(registry.for('lwa', 'NA'));
    expect(registry.for('lwa', 'EU')).not.toBe(registry.for('ads', 'EU'));
    expect(sharedRateLimiters.for('ads', 'FE')).toBe(sharedRateLimiters.for('ads', 'FE'));
  });
});

describe('parseRetryAfterSeconds', () => {
  test.each([
    ['7', 7],
    [' 0 ', 0],
    ['999999', 3600],
    ['Wed, 25 Nov 2026 12:00:30 GMT', 30],
    ['soon', undefined],
    [null, undefined],
  ])('%p → %p', (header, seconds) => {
    expect(parseRetryAfterSeconds(header, Date.parse('Wed, 25 Nov 2026 12:00:00 GMT'))).toBe(seconds);
  });
});
