import { LwaClient } from '../../lambda/shared/amazon';
import type { FetchFunction } from '../../lambda/shared/amazon/http';
import { DEFAULT_ENDPOINT_LIMITS, RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { runTokenRefresh } from '../../lambda/token-refresh/core';
import { JobWorld, runtime, seedUsers, useJobWorld } from '../support/jobs';

// Adaptive throttling (lambda/shared/jobs/throttling.ts) in a token refresh run, on a virtual clock.

let world: JobWorld;
useJobWorld((w) => (world = w));

/** Time that moves only when someone waits: the limiter sleeps, the run sees its remaining time shrink. */
function virtualClock(start: number) {
  let t = start;
  return {
    now: () => t,
    sleep: async (ms: number) => {
      t += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}

/** Global fetch, recording the (virtual) time of every request. */
function recordingFetch(clock: { now: () => number }, times: number[]): FetchFunction {
  return (input, init) => {
    times.push(clock.now());
    return fetch(input, init);
  };
}

describe('adaptive throttling', () => {
  test('with Amazon answering 429 to everything, a run over 100 tokens makes a handful of calls, turns nothing off, and the next run starts slow', async () => {
    // One region, so that one endpoint's limiter is what is measured.
    const users = await seedUsers(world, { count: 100, regions: () => ['NA'] });
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 1 });

    const clock = virtualClock(Date.now());
    const invocationEnd = clock.now() + 60_000;
    const calls: number[] = [];
    const lwa = (limiters: RateLimiterRegistry, c: typeof clock, times: number[]) =>
      new LwaClient({
        clientId: world.amazon.clientId,
        clientSecret: world.amazon.clientSecret,
        tokenUrl: world.amazon.lwaTokenUrl,
        limiters,
        fetch: recordingFetch(c, times),
      });
    const first = await runTokenRefresh({
      db: world.dataApi(),
      lwa: lwa(new RateLimiterRegistry({ lwa: DEFAULT_ENDPOINT_LIMITS.lwa }, clock), clock, calls),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => invocationEnd - clock.now() }),
      now: () => new Date(clock.now()),
      settings: { concurrency: 16 },
    });

    // A handful of calls, spaced further and further apart; the rest given back, none failed.
    expect(calls.length).toBeGreaterThan(0);
    expect(calls.length).toBeLessThanOrEqual(6);
    expect(world.amazon.counters.total('lwa')).toBe(calls.length);
    expect(first).toMatchObject({ claimed: 100, refreshed: 0, failed: 0, rateLimited: calls.length });
    expect(first.released).toBe(100 - calls.length);
    const { rows } = await world.admin.query<{
      proactive_refresh_enabled: boolean;
      refresh_failure_count: number;
      refresh_lease_owner: string | null;
    }>(`SELECT proactive_refresh_enabled, refresh_failure_count, refresh_lease_owner FROM oauth_tokens`);
    for (const r of rows)
      expect(r).toMatchObject({ proactive_refresh_enabled: true, refresh_failure_count: 0, refresh_lease_owner: null });

    // The reduced rate is kept for the next invocation.
    const stored = await world.admin.query<{ rate: string | null }>(
      `SELECT allowed_rate_per_second::text AS rate FROM rate_limit_tracking WHERE endpoint = 'lwa-token:NA' AND user_id IS NULL`,
    );
    const rate = Number(stored.rows[0].rate);
    expect(rate).toBeGreaterThan(0);
    expect(rate).toBeLessThan(DEFAULT_ENDPOINT_LIMITS.lwa.ratePerSecond / 10);

    // The next invocation, in a new container (a fresh limiter), after the pause, Amazon healthy
    // again: it starts at the stored pace, not with a burst at the ceiling.
    world.amazon.setKnobs({ rate429: 0 });
    const later = virtualClock(clock.now() + 120_000);
    const laterEnd = later.now() + 60_000;
    const secondCalls: number[] = [];
    const second = await runTokenRefresh({
      db: world.dataApi(),
      lwa: lwa(new RateLimiterRegistry({ lwa: DEFAULT_ENDPOINT_LIMITS.lwa }, later), later, secondCalls),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => laterEnd - later.now() }),
      now: () => new Date(later.now()),
      settings: { concurrency: 16 },
    });
    expect(second.refreshed).toBeGreaterThan(1);
    expect(second.failed).toBe(0);
    // At the ceiling (10/s, a burst of 10) the first calls would go out together.
    expect(secondCalls[1] - secondCalls[0]).toBeGreaterThan(500);
    // Calls that succeed raise the rate again.
    const after = await world.admin.query<{ rate: string | null }>(
      `SELECT allowed_rate_per_second::text AS rate FROM rate_limit_tracking WHERE endpoint = 'lwa-token:NA' AND user_id IS NULL`,
    );
    expect(after.rows[0].rate === null || Number(after.rows[0].rate) > rate).toBe(true);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBeLessThanOrEqual(1);
  });
});
