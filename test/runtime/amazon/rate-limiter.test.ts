import { ADAPTIVE_RATE } from '../../../lambda/shared/amazon/adaptive-rate';
import type { BudgetKey, RateBudgetStore } from '../../../lambda/shared/amazon/rate-budget';
import {
  ConcurrencyLimiter,
  DEFAULT_ENDPOINT_LIMITS,
  EndpointLimiter,
  endpointLimitsFor,
  MAX_PAUSE_SECONDS,
  RateLimiterRegistry,
  TokenBucket,
} from '../../../lambda/shared/amazon/rate-limiter';
import { DeadlineExceededError } from '../../../lambda/shared/backoff';

// What an endpoint limiter takes over from an earlier invocation (lambda/shared/amazon/rate-limiter.ts,
// `restore`, fed from rate_limit_tracking by lambda/shared/jobs/throttling.ts): a lower rate and a
// pause in force, never a rate above today's ceiling or above a cut made since, never a shorter
// pause. Written to hold however the limiter is built inside (a clamp or a refusal of the value).

const CEILING = 10;
const limits = { ratePerSecond: CEILING, burst: CEILING, maxConcurrency: 4 };

function limiter(now = 1_000_000) {
  const clock = { now };
  return { clock, limiter: new EndpointLimiter(limits, { now: () => clock.now, sleep: () => Promise.resolve() }) };
}

test('a restored rate above the ceiling (a run under a higher ceiling) is not taken over', () => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: 50 });
  expect(l.allowedRate()).toBeLessThanOrEqual(CEILING);
  expect(l.bucket.ratePerSecond()).toBeLessThanOrEqual(CEILING);
});

test('a restored rate above a cut made since is not taken over: the cut stands', () => {
  const { limiter: l } = limiter();
  l.throttled(1);
  const cut = l.allowedRate();
  expect(cut).toBe(CEILING * ADAPTIVE_RATE.decrease);
  l.restore({ allowedRatePerSecond: 8 });
  expect(l.allowedRate()).toBe(cut);
});

test('a lower restored rate is taken over, but never below the floor', () => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: 2 });
  expect(l.allowedRate()).toBe(2);
  const { limiter: m } = limiter();
  m.restore({ allowedRatePerSecond: CEILING * ADAPTIVE_RATE.minFraction * 0.01 });
  expect(m.allowedRate()).toBe(CEILING * ADAPTIVE_RATE.minFraction);
});

test.each([[0], [-3], [Number.NaN]])('a restored rate of %p changes nothing', (rate) => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: rate });
  expect(l.allowedRate()).toBe(CEILING);
});

test('a restored pause never shortens the pause in force', () => {
  const { clock, limiter: l } = limiter();
  l.pauseFor(60);
  const until = l.bucket.pausedUntilMs();
  expect(until).toBe(clock.now + 60_000);
  l.restore({ pausedUntilMs: clock.now + 5_000 });
  expect(l.bucket.pausedUntilMs()).toBe(until);
  l.restore({ pausedUntilMs: clock.now + 120_000 });
  expect(l.bucket.pausedUntilMs()).toBe(clock.now + 120_000);
});

// What the rest of the module does, on a clock the tests move: the token bucket (burst, pace,
// pause, deadline), the concurrency limit, the endpoint limiter's probe and adaptive rate, the
// limits for configured rates, and the registry's release at the end of a run.

/** A clock that only moves when someone sleeps (or the test moves it); every sleep recorded. */
function movingClock(start = 1_000_000) {
  const clock = { now: start, sleeps: [] as number[] };
  return {
    clock,
    now: () => clock.now,
    sleep: (ms: number) => {
      clock.sleeps.push(ms);
      clock.now += ms;
      return Promise.resolve();
    },
  };
}

/** Lets every promise chain that can move on do so (the sleeps above resolve at once). */
async function settle(): Promise<void> {
  for (let i = 0; i < 10; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

describe('TokenBucket', () => {
  test.each([[0], [-1], [Number.NaN]])('a rate of %p is refused, at creation and when changed', (rate) => {
    expect(() => new TokenBucket({ ratePerSecond: rate })).toThrow(new RangeError('ratePerSecond must be positive'));
    const bucket = new TokenBucket({ ratePerSecond: 1 });
    expect(() => bucket.setRate(rate)).toThrow(new RangeError('ratePerSecond must be positive'));
    expect(bucket.ratePerSecond()).toBe(1);
  });

  test('any positive rate is accepted, however small', () => {
    const bucket = new TokenBucket({ ratePerSecond: 0.001 });
    bucket.setRate(0.002);
    expect(bucket.ratePerSecond()).toBe(0.002);
  });

  test('after a quiet period no more than the burst goes at once, even when the rate is higher', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 2, now, sleep });
    clock.now += 60_000;
    const start = clock.now;
    const times: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      await bucket.take();
      times.push(clock.now - start);
    }
    expect(times).toEqual([0, 0, 100]);
  });

  test('a lower rate caps the tokens already held: no burst above what the new rate allows', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 10, burst: 10, now, sleep });
    bucket.setRate(2);
    const start = clock.now;
    const times: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      await bucket.take();
      times.push(clock.now - start);
    }
    expect(times).toEqual([0, 0, 500]);
    // Below one per second it holds a single token.
    bucket.setRate(0.5);
    clock.now += 60_000;
    await bucket.take();
    const before = clock.now;
    await bucket.take();
    expect(clock.now - before).toBe(2000);
  });

  test('a new rate never fills the bucket: after a drain, a rate raised or cut still leaves it empty', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 4, burst: 4, now, sleep });
    bucket.drain();
    bucket.setRate(2);
    const start = clock.now;
    await bucket.take();
    expect(clock.now - start).toBe(500);
    bucket.setRate(4);
    await bucket.take();
    expect(clock.now - start).toBe(750);
  });

  test('drain empties the bucket: the next request waits one interval', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 4, burst: 4, now, sleep });
    bucket.drain();
    const start = clock.now;
    await bucket.take();
    expect(clock.now - start).toBe(250);
  });

  test('a request waits only for the part of a token still missing', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 4, burst: 1, now, sleep });
    await bucket.take();
    clock.now += 100; // 0.4 of a token back
    await bucket.take();
    expect(clock.sleeps).toEqual([150]);
  });

  test('a pause is waited out for exactly its remaining time', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 100, burst: 10, now, sleep });
    bucket.pauseUntil(clock.now + 5000);
    await bucket.take();
    expect(clock.sleeps).toEqual([5000]);
  });

  test('a pause longer than the caller can wait is refused at once; one that ends exactly then is waited for', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 100, burst: 10, now, sleep });
    bucket.pauseUntil(clock.now + 5000);
    const refused = await bucket.take(4000).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DeadlineExceededError);
    expect(refused).toMatchObject({ waitMs: 5000, budgetMs: 4000 });
    expect(clock.sleeps).toEqual([]);
    await bucket.take(5000);
    expect(clock.sleeps).toEqual([5000]);
  });

  test('a token later than the caller can wait is refused at once and not taken; one exactly in time is waited for', async () => {
    const { clock, now, sleep } = movingClock();
    const bucket = new TokenBucket({ ratePerSecond: 1, burst: 1, now, sleep });
    await bucket.take();
    const refused = await bucket.take(999).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DeadlineExceededError);
    expect(refused).toMatchObject({ waitMs: 1000, budgetMs: 999 });
    expect(clock.sleeps).toEqual([]);
    await bucket.take(1000);
    expect(clock.sleeps).toEqual([1000]);
  });
});

describe('ConcurrencyLimiter', () => {
  test.each([[0], [0.5], [-1], [Number.NaN]])('a limit of %p is refused', (max) => {
    expect(() => new ConcurrencyLimiter(max)).toThrow(new RangeError('max must be at least 1'));
  });

  test('a limit of one is accepted', () => {
    expect(new ConcurrencyLimiter(1).max).toBe(1);
  });
});

describe('EndpointLimiter', () => {
  function endpoint(limits = { ratePerSecond: CEILING, burst: CEILING, maxConcurrency: 4 }) {
    const time = movingClock();
    return { ...time, limiter: new EndpointLimiter(limits, { now: time.now, sleep: time.sleep }) };
  }

  /** Calls that start (recorded in order) and end when the test says. */
  function heldCalls(limiter: EndpointLimiter) {
    const started: number[] = [];
    const finish = new Map<number, () => void>();
    const call = (i: number) =>
      limiter.run(
        () =>
          new Promise<void>((resolve) => {
            started.push(i);
            finish.set(i, resolve);
          }),
      );
    return { started, finish, call };
  }

  test('a fresh limiter sends one call at a time until Amazon answers one without a 429; then they go together', async () => {
    const { limiter: l } = endpoint();
    const { started, finish, call } = heldCalls(l);
    const calls = [0, 1, 2].map(call);
    await settle();
    expect(started).toEqual([0]);
    l.succeeded();
    finish.get(0)!();
    await settle();
    expect(started).toEqual([0, 1, 2]);
    expect(l.concurrency.inFlight()).toBe(2);
    finish.get(1)!();
    finish.get(2)!();
    await Promise.all(calls);
  });

  test('a probe not answered without a 429 leaves the next call as the only one in flight', async () => {
    const { limiter: l } = endpoint();
    const { started, finish, call } = heldCalls(l);
    const calls = [0, 1, 2].map(call);
    await settle();
    finish.get(0)!();
    await settle();
    expect(started).toEqual([0, 1]);
    l.succeeded();
    finish.get(1)!();
    await settle();
    expect(started).toEqual([0, 1, 2]);
    finish.get(2)!();
    await Promise.all(calls);
  });

  test('after a 429 calls go one at a time again, after the pause, until one is answered without a 429', async () => {
    const { clock, limiter: l } = endpoint();
    l.succeeded();
    const throttledAt = clock.now;
    l.throttled(1);
    const { started, finish, call } = heldCalls(l);
    const calls = [0, 1, 2].map(call);
    await settle();
    expect(started).toEqual([0]);
    expect(clock.now).toBeGreaterThanOrEqual(throttledAt + 1000);
    l.succeeded();
    finish.get(0)!();
    await settle();
    expect(started).toEqual([0, 1, 2]);
    finish.get(1)!();
    finish.get(2)!();
    await Promise.all(calls);
  });

  test('after a 429 the probe goes once the pause is over, without waiting for calls sent before the 429 to come back', async () => {
    const { limiter: l } = endpoint();
    l.succeeded();
    const { started, finish, call } = heldCalls(l);
    const early = call(0); // goes freely, and hangs
    await settle();
    expect(started).toEqual([0]);
    l.throttled(1); // another call's 429
    const probe = call(1);
    await settle();
    expect(started).toEqual([0, 1]);
    finish.get(0)!();
    finish.get(1)!();
    await Promise.all([early, probe]);
  });

  test('a call whose turn would come after its deadline is refused and not made, as the probe and as a free call', async () => {
    const { clock, limiter: l } = endpoint({ ratePerSecond: 1, burst: 1, maxConcurrency: 4 });
    const fn = jest.fn(() => Promise.resolve('sent'));
    l.bucket.drain();
    await expect(l.run(fn, 999)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(fn).not.toHaveBeenCalled();
    await expect(l.run(fn, 1000)).resolves.toBe('sent');
    l.succeeded();
    l.bucket.drain();
    await expect(l.run(fn, 500)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(fn).toHaveBeenCalledTimes(1);
    const before = clock.now;
    await expect(l.run(fn, 1000)).resolves.toBe('sent');
    expect(clock.now - before).toBe(1000);
  });

  test('each 429 in a row doubles the pause from its Retry-After, up to 900 s; a success starts again from Retry-After', () => {
    const { clock, limiter: l } = endpoint();
    const pauses: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      l.throttled(2);
      pauses.push(l.pausedUntilMs() - clock.now);
    }
    expect(pauses).toEqual([2000, 4000, 8000]);
    clock.now += 10_000;
    l.succeeded();
    l.throttled(2);
    expect(l.pausedUntilMs() - clock.now).toBe(2000);
    l.throttled(600);
    expect(l.pausedUntilMs() - clock.now).toBe(MAX_PAUSE_SECONDS * 1000);
  });

  test('each 429 halves the rate down to 1 % of the ceiling; each success adds 2 % of the ceiling, up to the ceiling', () => {
    const { limiter: l } = endpoint();
    l.throttled(1);
    expect(l.allowedRate()).toBe(CEILING / 2);
    l.succeeded();
    expect(l.allowedRate()).toBeCloseTo(CEILING / 2 + CEILING * 0.02, 10);
    for (let i = 0; i < 10; i += 1) l.throttled(1);
    expect(l.allowedRate()).toBeCloseTo(CEILING * 0.01, 10);
    for (let i = 0; i < 100; i += 1) l.succeeded();
    expect(l.allowedRate()).toBe(CEILING);
    expect(l.bucket.ratePerSecond()).toBe(CEILING);
  });

  test('without a shared budget: its own pause is the pause, and there is nothing to give back', async () => {
    const { clock, limiter: l } = endpoint();
    expect(l.pausedUntilMs()).toBe(0);
    l.pauseFor(60);
    expect(l.pausedUntilMs()).toBe(clock.now + 60_000);
    await expect(l.release()).resolves.toBe(false);
  });
});

describe('EndpointLimiter with a shared budget', () => {
  test('a restored rate equal to the budget’s does not hold the limiter there when the budget grows back', async () => {
    const time = movingClock();
    let budgetRate = 4;
    const store: RateBudgetStore = {
      reserve: (_key, request) =>
        Promise.resolve({
          granted: 1,
          firstSlotAtMs: time.clock.now,
          intervalMs: 1000 / request.ceiling,
          ratePerSecond: budgetRate,
          databaseNowMs: time.clock.now,
        }),
      throttled: () => Promise.reject(new Error('no 429 in this test')),
    };
    const l = new RateLimiterRegistry({ lwa: limits }, { now: time.now, sleep: time.sleep }, store).for('lwa', 'EU');
    l.succeeded();
    await l.run(() => Promise.resolve());
    expect(l.allowedRate()).toBe(4);
    l.restore({ allowedRatePerSecond: 4 });
    expect(l.allowedRate()).toBe(4);
    budgetRate = 8;
    time.clock.now += 10_000;
    await l.run(() => Promise.resolve());
    expect(l.allowedRate()).toBe(8);
  });
});

describe('endpointLimitsFor', () => {
  test('burst one second’s worth (at least one), in flight as many as that up to 64; absent rates keep the defaults', () => {
    expect(endpointLimitsFor({ lwa: 2.5 })).toEqual({
      lwa: { ratePerSecond: 2.5, burst: 3, maxConcurrency: 3 },
      ads: DEFAULT_ENDPOINT_LIMITS.ads,
    });
    expect(endpointLimitsFor({ lwa: 0.2, ads: 100 })).toEqual({
      lwa: { ratePerSecond: 0.2, burst: 1, maxConcurrency: 1 },
      ads: { ratePerSecond: 100, burst: 100, maxConcurrency: 64 },
    });
    expect(endpointLimitsFor({})).toEqual(DEFAULT_ENDPOINT_LIMITS);
  });
});

describe('RateLimiterRegistry', () => {
  test('releaseUnused gives every budget back the slots its limiter holds unused, one store call each', async () => {
    const time = movingClock();
    const released: Array<{ key: BudgetKey; fromMs: number; untilMs: number }> = [];
    const store: RateBudgetStore = {
      reserve: (_key, request) =>
        Promise.resolve({
          granted: request.wanted,
          firstSlotAtMs: time.clock.now,
          intervalMs: 100,
          ratePerSecond: request.ceiling,
          databaseNowMs: time.clock.now,
        }),
      throttled: () => Promise.reject(new Error('no 429 in this test')),
      release: (key, range) => {
        released.push({ key, ...range });
        return Promise.resolve(true);
      },
    };
    const registry = new RateLimiterRegistry({}, { now: time.now, sleep: time.sleep }, store);
    const limiters = [registry.for('lwa', 'EU'), registry.for('ads', 'NA')];
    for (const l of limiters) {
      l.expectRequests(5);
      await l.run(() => Promise.resolve());
    }
    await registry.releaseUnused();
    expect(released.map((r) => r.key)).toEqual([
      { endpoint: 'lwa', region: 'EU' },
      { endpoint: 'ads', region: 'NA' },
    ]);
    expect(limiters.map((l) => l.shared!.stats().slotsReleased)).toEqual([4, 4]);
  });
});
