import { LwaClient } from '../../../lambda/shared/amazon';
import { interactiveLane, jobsCeiling } from '../../../lambda/shared/amazon/api-share';
import {
  DatabaseRateBudgetStore,
  RateBudgetStore,
  Reservation,
  SharedRateBudget,
} from '../../../lambda/shared/amazon/rate-budget';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import type { Database } from '../../../lambda/shared/db';
import type { ApiResult } from '../../../lambda/shared/http';
import { budgetLimiters } from '../../../lambda/shared/amazon/api-share';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { createTokenRoute } from '../../../lambda/token-route/core';
import { JobWorld, RecordingLogger, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';
import { pollUntil } from '../../support/poll';
import { tokenRouteRequest } from '../fixture';
import { busiestSecond } from '../../../local/amazon/busiest-second';

// The token route's refresh while the jobs run flat out (issue 25: a rate budget that is fair).
// The jobs reserve batches of the shared schedule up to 6 s ahead; the route draws from the
// interactive lane they leave free (migration 0026, lambda/shared/amazon/api-share.ts), with the
// limiters the container builds for each (budgetLimiters), on the real database through both
// paths, and the fake Amazon counting each request's arrival.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

/** Today's default limits (LWA 10 requests/s per region). */
const LIMITS = { lwa: 10, ads: 5 };
const REGION: AmazonRegion = 'EU';

const tokenRequest = (userId: string) => tokenRouteRequest(userId, REGION);

function lwaClient(db: Database, interactive: boolean, toleranceMs?: number): LwaClient {
  return new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    timeoutMs: 15_000,
    retry: { maxAttempts: 1 },
    limiters: budgetLimiters(db, LIMITS, { interactive, recordThrottles: true }, toleranceMs),
  });
}

/** The route as its handler builds it: the interactive limiters of the container. */
function route(db: Database, waitDeadlineMs: number, toleranceMs?: number) {
  return createTokenRoute({
    db,
    lwa: lwaClient(db, true, toleranceMs),
    cipher: world.cipher,
    logger: new RecordingLogger(),
    settings: { waitDeadlineMs, pollIntervalMs: 20 },
  });
}

/** Connections the scheduled refresh leaves alone (idle: not used within its hour), due for a token. */
async function idleConnections(count: number, expiresInSeconds: number) {
  const users = await seedUsers(world, { count, expiresInSeconds, regions: () => [REGION] });
  await world.admin.query(
    `UPDATE oauth_tokens SET last_used_at = now() - interval '2 hours' WHERE user_id = ANY(:ids::uuid[])`,
    { ids: `{${users.map((u) => u.userId).join(',')}}` },
  );
  return users;
}

async function budgetRow(endpoint: string) {
  const { rows } = await world.admin.query<{ ahead_ms: number; ceiling_per_second: number }>(
    `SELECT extract(epoch FROM next_slot_at - clock_timestamp()) * 1000 AS ahead_ms, ceiling_per_second
       FROM amazon_rate_budget WHERE endpoint = :endpoint AND region = :region`,
    { endpoint, region: REGION },
  );
  return rows[0] ? { aheadMs: Number(rows[0].ahead_ms), ceiling: Number(rows[0].ceiling_per_second) } : undefined;
}

const json = (r: ApiResult) => JSON.parse(r.body) as Record<string, unknown>;

test('the lane: LWA at 10/s is 9/s for the jobs and 1/s for interactive requests; no lane for Ads or below 2/s', () => {
  expect(jobsCeiling('lwa', 10)).toBe(9);
  expect(interactiveLane('lwa', 10)).toBe(1);
  expect(jobsCeiling('lwa', 80)).toBe(79);
  expect(interactiveLane('ads', 5)).toBe(0);
  expect(jobsCeiling('ads', 5)).toBe(5);
  expect(interactiveLane('lwa', 1.5)).toBe(0);
  expect(jobsCeiling('lwa', 1.5)).toBe(1.5);
});

test("a client's lane slot is spaced from its previous lane slot, not from its slots of the jobs' schedule", async () => {
  // A virtual clock (the database's and the client's the same) and the store's answers in turn.
  let now = 1_000_000;
  const answers: Array<(at: number) => Reservation> = [
    // The jobs' schedule (the lane was taken): a slot at once.
    (at) => ({ granted: 1, firstSlotAtMs: at + 10, intervalMs: 122, ratePerSecond: 9, databaseNowMs: at }),
    // The lane, 100 ms later: well within the jobs' schedule's interval after that slot.
    (at) => lane(at + 100, at),
    // The lane again, 500 ms after its last slot: closer than the lane's interval, dropped.
    (at) => lane(at + 500 - 100, at),
    // The jobs' schedule again, one interval after its last slot: used.
    (at) => ({ granted: 1, firstSlotAtMs: at + 200, intervalMs: 122, ratePerSecond: 9, databaseNowMs: at }),
  ];
  const lane = (slot: number, at: number): Reservation => ({
    granted: 1,
    firstSlotAtMs: slot,
    intervalMs: 1100,
    ratePerSecond: 1,
    databaseNowMs: at,
    pool: 'interactive',
  });
  let calls = 0;
  const store: RateBudgetStore = {
    reserve: async () => {
      const answer = answers[calls++];
      if (!answer) throw new Error('no further reservation expected');
      return answer(now);
    },
    throttled: async () => {
      throw new Error('no 429 here');
    },
  };
  const budget = new SharedRateBudget(
    store,
    { endpoint: 'lwa', region: REGION },
    {
      ceiling: 10,
      now: () => now,
      sleep: async (ms) => {
        now += ms;
      },
      random: () => 0,
    },
  );

  await budget.take();
  await budget.take();
  await budget.take();

  expect(calls).toBe(4);
  expect(budget.stats()).toMatchObject({ slotsUsed: 3, slotsDropped: 1, reservations: 4 });
});

describe.each(PATHS)('%s', (_path, database) => {
  test('a job batch holds the schedule 6 s ahead: the route still refreshes within a 1 s wait, from the lane, and leaves the jobs’ schedule as it was', async () => {
    const [user] = await idleConnections(1, 30);
    const db = database();
    // A job's batch, as a run reserves it: the jobs' schedule at their pace, the whole horizon.
    const batch = await new DatabaseRateBudgetStore(db).reserve(
      { endpoint: 'lwa', region: REGION },
      {
        ceiling: jobsCeiling('lwa', LIMITS.lwa),
        wanted: 100,
        maxWaitMs: 0,
        toleranceMs: 100,
        leadMs: 0,
        horizonMs: 6000,
      },
    );
    expect(batch.granted).toBeGreaterThanOrEqual(50);
    const held = (await budgetRow('lwa-token'))!;
    expect(held.aheadMs).toBeGreaterThan(5000);
    const lwaBefore = world.amazon.counters.total('lwa');

    // The stored token has 30 s left (less than the minute the route would still serve): only a
    // refresh answers 200.
    const result = await route(db, 1000)(tokenRequest(user.userId));

    expect(result.statusCode).toBe(200);
    expect(json(result)).toMatchObject({ refreshed: true, region: REGION });
    expect(world.amazon.counters.total('lwa') - lwaBefore).toBe(1);
    // The slot was the lane's: the jobs' schedule did not move, and nothing was queued on it.
    const after = (await budgetRow('lwa-token'))!;
    expect(after.aheadMs).toBeLessThanOrEqual(held.aheadMs);
    expect(after.aheadMs).toBeGreaterThan(held.aheadMs - 2000);
    expect((await budgetRow('lwa-token:interactive'))?.ceiling).toBe(1);
  });

  test('a 429 reported by the jobs holds the lane back too: the route does not call Amazon during the pause', async () => {
    const [user] = await idleConnections(1, 30);
    const db = database();
    const store = new DatabaseRateBudgetStore(db);
    const paused = await store.throttled(
      { endpoint: 'lwa', region: REGION },
      { ceiling: jobsCeiling('lwa', LIMITS.lwa), sentAtMs: Date.now(), pauseSeconds: 30 },
    );
    expect(paused.pausedUntilMs).toBeGreaterThan(Date.now() + 20_000);
    const lwaBefore = world.amazon.counters.total('lwa');

    const result = await route(db, 1000)(tokenRequest(user.userId));

    expect(result.statusCode).toBe(503);
    // The answer to a wait the budget would make too long (core.ts, 'budget'): try again in 2 s.
    expect(result.headers['retry-after']).toBe('2');
    expect(json(result)).toMatchObject({
      detail: "Amazon's request budget for this region is used up; try again shortly.",
      retryAfterSeconds: 2,
    });
    expect(world.amazon.counters.total('lwa')).toBe(lwaBefore);
    // The lane's reservation saw the endpoint's pause (and answered with it).
    const lane = await store.reserve(
      { endpoint: 'lwa', region: REGION, pool: 'interactive' },
      { ceiling: 1, wanted: 1, maxWaitMs: 500, toleranceMs: 100, leadMs: 0, horizonMs: 500 },
    );
    expect(lane.granted).toBe(0);
    expect(lane.pausedUntilMs).toBe(paused.pausedUntilMs);
  });

  test("a 429 at the route's lane slot pauses and cuts the endpoint for everyone and is recorded in rate_limit_tracking (the jobs' login)", async () => {
    const [user] = await idleConnections(1, 30);
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 7 }, 'lwa');

    const result = await route(database(), 1000)(tokenRequest(user.userId));

    expect(result.statusCode).toBe(503);
    expect(result.headers['retry-after']).toBe('7');
    // The report goes out without holding the answer back: wait for it to land.
    const rows = await pollUntil(
      async () =>
        (
          await world.admin.query<{ endpoint: string; throttled_count: string; limit_hit_count: number | null }>(
            `SELECT b.endpoint, b.throttled_count::text,
                    (SELECT limit_hit_count FROM rate_limit_tracking
                      WHERE endpoint = 'lwa-token:' || b.region AND user_id IS NULL) AS limit_hit_count
               FROM amazon_rate_budget b WHERE b.region = :region ORDER BY b.endpoint`,
            { region: REGION },
          )
        ).rows,
      (r) => r.some((row) => row.throttled_count !== '0'),
      { timeoutMs: 10_000 },
    );
    // Reported to the endpoint's row (the jobs' schedule, which holds the lane back), not the lane's.
    expect(rows).toEqual([
      { endpoint: 'lwa-token', throttled_count: '1', limit_hit_count: 1 },
      { endpoint: 'lwa-token:interactive', throttled_count: '0', limit_hit_count: 1 },
    ]);
  });

  test('jobs flat out and route requests together: Amazon never sees more than 10 a second, and every route request is served', async () => {
    // Enough for the jobs to run flat out past the route's last answer: the budget lets them send
    // at most 6 a second here (9/s, slots 1.5 s ÷ 9 apart for the tolerance below), so 60 take at
    // least 10 s; the five route requests are sent by 1.5 s + 4 × 0.7 s and, even at the lane's
    // own pace alone (one per 1.5 s), all answered by 1.5 s + 5 × 1.5 s = 9 s.
    const jobUsers = await seedUsers(world, { count: 60, expiresInSeconds: 600, regions: () => [REGION] });
    const routeUsers = await idleConnections(5, 30);
    // The fake Amazon runs in this process beside two runs, the route and the Data API emulator,
    // on a machine other test runs share: the tolerance (and with it the spacing of the slots)
    // covers how late a request may reach it after its slot, as in production it covers the
    // network's spread. Amazon's count below is still held to the limit exactly.
    const toleranceMs = 500;
    const start = Date.now();
    const job = () => {
      const db = database();
      return runTokenRefresh({
        db,
        lwa: lwaClient(db, false, toleranceMs),
        cipher: world.cipher,
        ...runtime(),
        settings: { concurrency: 8, batchSize: 15, usedWithinSeconds: 3600 },
      });
    };
    const handle = route(database(), 20_000, toleranceMs);
    const requests = (async () => {
      // Once the jobs hold the schedule, one route request every 700 ms: faster than the lane.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const results: Promise<ApiResult>[] = [];
      for (const u of routeUsers) {
        results.push(handle(tokenRequest(u.userId)));
        await new Promise((resolve) => setTimeout(resolve, 700));
      }
      return Promise.all(results);
    })();

    const [runs, results] = await Promise.all([Promise.all([job(), job()]), requests]);

    expect(runs.reduce((n, r) => n + r.refreshed, 0)).toBe(jobUsers.length);
    expect(results.map((r) => r.statusCode)).toEqual(routeUsers.map(() => 200));
    expect(results.every((r) => json(r).refreshed === true)).toBe(true);
    for (const u of [...jobUsers, ...routeUsers]) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
    const arrived = world.amazon.counters.arrivals('lwa', REGION).filter((t) => t >= start);
    expect(arrived).toHaveLength(jobUsers.length + routeUsers.length);
    expect(busiestSecond(arrived)).toBeLessThanOrEqual(LIMITS.lwa);
    // The jobs' schedule is paced at 9/s: the jobs left the lane free.
    expect((await budgetRow('lwa-token'))?.ceiling).toBe(jobsCeiling('lwa', LIMITS.lwa));
  }, 120_000);
});
