import { LwaClient } from '../../lambda/shared/amazon';
import { DatabaseRateBudgetStore } from '../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import { runTokenRefresh, TokenRefreshSummary } from '../../lambda/token-refresh/core';
import { JobWorld, runtime, seedUsers, useJobWorld } from '../support/jobs';
import { busiestSecond } from '../../local/amazon/busiest-second';
import { stampingSentAt } from '../../local/amazon/types';

// Four token refresh runs at once, as four Lambda invocations would be, each with its own
// database connection (Data API) and its own limiters: with the budget in the database they
// share one rate per endpoint and region, as Amazon sees it.

let world: JobWorld;
useJobWorld((w) => (world = w));

const REGIONS: AmazonRegion[] = ['NA', 'EU'];

/** One invocation: its own Data API adapter and limiter registry drawing from the shared budget. */
function invocation(lwaPerSecond: number) {
  const db = world.dataApi();
  const limiters = new RateLimiterRegistry(
    { lwa: { ratePerSecond: lwaPerSecond, burst: lwaPerSecond, maxConcurrency: 8 } },
    {},
    new DatabaseRateBudgetStore(db),
    // The fake Amazon runs in this process, next to four runs and the Data API emulator: on a
    // busy machine a request can reach it a few hundred ms after it left. The tolerance (and
    // with it the spacing of the slots) covers that spread, as in production it covers the
    // network's.
    300,
  );
  const lwa = new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    timeoutMs: 15_000,
    limiters,
    retry: { maxAttempts: 1 },
    // Counted by the fake Amazon when sent, not when its handler, in this busy process, gets to it.
    fetch: stampingSentAt(),
  });
  return { db, lwa, limiters };
}

/** Four invocations of `seconds` each (their remaining time counts down), small claims so all four get work. */
function fourRuns(lwaPerSecond: number, seconds: number): Promise<TokenRefreshSummary[]> {
  const deadline = Date.now() + seconds * 1000;
  return Promise.all(
    [0, 1, 2, 3].map(() => {
      const { db, lwa } = invocation(lwaPerSecond);
      return runTokenRefresh({
        db,
        lwa,
        cipher: world.cipher,
        ...runtime({ remainingTimeMs: () => deadline - Date.now() }),
        settings: { concurrency: 8, batchSize: 5, reserveMs: 1_000 },
      });
    }),
  );
}

const since = (region: AmazonRegion, from: number) =>
  world.amazon.counters.arrivals('lwa', region).filter((t) => t >= from);

test('four runs at once: together they never send Amazon more than the budget per region, and every token is refreshed once', async () => {
  const users = await seedUsers(world, { count: 60, expiresInSeconds: 600, regions: (i) => [REGIONS[i % 2]] });
  const start = Date.now();
  const runs = await fourRuns(12, 60);

  expect(runs.reduce((n, r) => n + r.refreshed, 0)).toBe(60);
  expect(runs.filter((r) => r.claimed > 0).length).toBeGreaterThan(1);
  for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  for (const region of REGIONS) {
    const arrived = since(region, start);
    expect(arrived).toHaveLength(30);
    // Four invocations with 8 calls in flight each could send 32 at once; the budget is 12/s.
    expect(busiestSecond(arrived)).toBeLessThanOrEqual(12);
  }
  const { rows } = await world.admin.query<{ region: string; ceiling_per_second: number }>(
    `SELECT region, ceiling_per_second FROM amazon_rate_budget WHERE endpoint = 'lwa-token' ORDER BY region`,
  );
  expect(rows).toEqual([
    { region: 'EU', ceiling_per_second: 12 },
    { region: 'NA', ceiling_per_second: 12 },
  ]);
});

test('a 429 that one run receives slows all four: the shared rate is cut and nobody calls during the pause', async () => {
  await seedUsers(world, { count: 40, expiresInSeconds: 600, regions: () => ['NA'] });
  // Amazon allows 6 per second in NA; our budget thinks 16: the first 429s come quickly.
  world.amazon.setKnobs({ limitPerSecond: 6, retryAfterSeconds: 3 }, 'lwa');
  const start = Date.now();
  const runs = await fourRuns(16, 12);
  const arrived = since('NA', start);
  const statuses = world.amazon.counters.byStatus('lwa');
  expect(statuses[429]).toBeGreaterThan(0);

  // Every token was refreshed or given back untouched for the next run (429s are not failures).
  const refreshed = runs.reduce((n, r) => n + r.refreshed, 0);
  expect(refreshed).toBeGreaterThan(0);
  expect(runs.reduce((n, r) => n + r.failed, 0)).toBe(0);

  const { rows } = await world.admin.query<{ rate_per_second: number; paused_until: Date; throttled_count: string }>(
    `SELECT rate_per_second, paused_until, throttled_count::text FROM amazon_rate_budget
      WHERE endpoint = 'lwa-token' AND region = 'NA'`,
  );
  // The cut is shared: the budget's rate is below its 16/s ceiling for every invocation.
  expect(rows[0].rate_per_second).toBeLessThan(16);
  // After the first 429 its receiver drops the slots it holds at once. The other three runs
  // hold batches sized to their claims (issue 25: reservations sized to what a run sends), which
  // the database granted before the pause and does not take back: each learns of the pause from
  // its next answer (a 429: it drops its slots too) or its next reservation (which starts after
  // the pause). So from one second after the first 429 until the pause ends (Retry-After 3 s),
  // Amazon sees a request or two from each of the other three, never a run's whole batch.
  const first429 = world.amazon.counters.limitedAt('lwa', 'NA').find((t) => t >= start)!;
  expect(first429).toBeDefined();
  const quiet = arrived.filter((t) => t > first429 + 1000 && t < first429 + 2900);
  expect(quiet.length).toBeLessThanOrEqual(2 * 3); // two each, if an answer is slower than the slot spacing
  // Without the shared cut each run would keep hitting Amazon at its own pace; with it, 429s stay few.
  expect(statuses[429]).toBeLessThan(arrived.length / 2);
});
