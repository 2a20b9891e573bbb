import { runAccountSync } from '../../lambda/account-sync/core';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import type { FetchFunction } from '../../lambda/shared/amazon/http';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { Database } from '../../lambda/shared/db';
import { runTokenRefresh, TokenRefresher } from '../../lambda/token-refresh/core';
import { JobWorld, runtime, seedUsers, useJobWorld } from '../support/jobs';

let world: JobWorld;
useJobWorld((w) => (world = w));

const paths: Array<[string, () => Database]> = [
  ['Data API', () => world.dataApi()],
  ['node-postgres', () => world.admin],
];

/** Limits far above what the tests need: the limiter's pauses matter here, not its pace. */
const fastLimiters = () =>
  new RateLimiterRegistry({
    lwa: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 },
    ads: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 },
  });

/** Global fetch, except that the very first request is answered 429 with this Retry-After. */
function firstCallThrottled(retryAfterSeconds: number): FetchFunction {
  let first = true;
  return async (input, init) => {
    if (first) {
      first = false;
      return new Response('{"message":"Too Many Requests"}', {
        status: 429,
        headers: { 'retry-after': String(retryAfterSeconds), 'content-type': 'application/json' },
      });
    }
    return fetch(input, init);
  };
}

/**
 * A Lambda invocation of `ms`: the run sees its remaining time count down, and whatever it has
 * not written when the time is up is lost (Lambda ends the invocation). Resolves with what
 * happened first.
 */
async function invoke<T>(ms: number, run: (remainingTimeMs: () => number) => Promise<T>) {
  const deadline = Date.now() + ms;
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<'killed'>((resolve) => (timer = setTimeout(() => resolve('killed'), ms)));
  const running = run(() => deadline - Date.now());
  const first = await Promise.race([running.then(() => 'finished' as const), killed]);
  clearTimeout(timer);
  return { first, running };
}

describe.each(paths)('deadlines (%s)', (_path, database) => {
  test('a 429 with a Retry-After longer than the invocation: the region’s tokens are given back, everything else is written before the deadline', async () => {
    const users = await seedUsers(world, { count: 120 });
    const lwa = new LwaClient({
      clientId: world.amazon.clientId,
      clientSecret: world.amazon.clientSecret,
      tokenUrl: world.amazon.lwaTokenUrl,
      limiters: fastLimiters(),
      fetch: firstCallThrottled(60),
    });
    const { first, running } = await invoke(8000, (remainingTimeMs) =>
      runTokenRefresh({
        db: database(),
        lwa,
        cipher: world.cipher,
        ...runtime({ remainingTimeMs }),
        settings: { concurrency: 16, reserveMs: 2000, flushAfterMs: 500 },
      }),
    );
    expect(first).toBe('finished');
    const summary = await running;

    const { rows } = await world.admin.query<{
      region: string;
      refresh_lease_owner: string | null;
      last_refreshed_at: Date | null;
      last_refresh_error: string | null;
      refresh_failure_count: number;
    }>(
      `SELECT region, refresh_lease_owner, last_refreshed_at, last_refresh_error, refresh_failure_count FROM oauth_tokens`,
    );
    expect(rows).toHaveLength(120);
    expect(rows.filter((r) => r.refresh_lease_owner !== null)).toHaveLength(0);
    const throttled = rows.filter((r) => r.last_refresh_error?.startsWith('rate_limited'));
    expect(throttled).toHaveLength(1);
    const paused = throttled[0].region;
    for (const r of rows.filter((row) => row.region !== paused)) expect(r.last_refreshed_at).not.toBeNull();
    // The paused region's other tokens were never sent (their wait would have outlasted the
    // invocation): given back as they were, not counted as failures.
    const given = rows.filter((r) => r.region === paused && r !== throttled[0]);
    expect(given).toHaveLength(39);
    for (const r of given)
      expect(r).toMatchObject({ last_refreshed_at: null, last_refresh_error: null, refresh_failure_count: 0 });
    expect(summary).toMatchObject({ refreshed: 80, rateLimited: 1, released: 39, failed: 0 });
    for (const u of users.filter((x) => x.region === paused))
      expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(0); // only the throttled call, which never reached the fake
  });

  test('finished results are written back while a call of the same batch still hangs', async () => {
    const users = await seedUsers(world, { count: 40 });
    const lwa = world.lwa();
    let hung: string | undefined;
    let releaseHung!: () => void;
    const stuck = new Promise<void>((resolve) => (releaseHung = resolve));
    const hanging: TokenRefresher = {
      refresh: async (request) => {
        if (hung === undefined) {
          hung = request.itemId;
          await stuck; // a call still in flight when Lambda ends the invocation
        }
        return lwa.refresh(request);
      },
    };
    const { first, running } = await invoke(6000, (remainingTimeMs) =>
      runTokenRefresh({
        db: database(),
        lwa: hanging,
        cipher: world.cipher,
        ...runtime({ remainingTimeMs }),
        settings: { concurrency: 8, reserveMs: 2000, flushAfterMs: 300 },
      }),
    );
    expect(first).toBe('killed');
    // What Lambda would have left behind: every finished refresh is stored, only the hung one is leased.
    const { rows } = await world.admin.query<{
      id: string;
      refresh_lease_owner: string | null;
      last_refreshed_at: Date | null;
    }>(`SELECT id, refresh_lease_owner, last_refreshed_at FROM oauth_tokens`);
    expect(rows.filter((r) => r.last_refreshed_at !== null)).toHaveLength(users.length - 1);
    expect(rows.filter((r) => r.refresh_lease_owner !== null).map((r) => r.id)).toEqual([hung]);
    releaseHung();
    await running;
  });

  test('account sync: a 429 with a long Retry-After gives the region’s users back, and the rest is written before the deadline', async () => {
    await seedUsers(world, { count: 60, accountsDueInSeconds: -60 });
    const ads = new AdsClient({
      clientId: world.amazon.clientId,
      baseUrl: world.amazon.adsBaseUrl,
      limiters: fastLimiters(),
      retry: { maxAttempts: 1 },
      fetch: firstCallThrottled(60),
    });
    const { first, running } = await invoke(8000, (remainingTimeMs) =>
      runAccountSync({
        db: database(),
        ads,
        lwa: world.lwa(),
        cipher: world.cipher,
        ...runtime({ remainingTimeMs }),
        settings: { concurrency: 16, reserveMs: 2000, flushAfterMs: 500 },
      }),
    );
    expect(first).toBe('finished');
    const summary = await running;
    expect(summary).toMatchObject({
      connectionsClaimed: 60,
      connectionsSynced: 40,
      connectionsFailed: 1,
      connectionsReleased: 19,
    });

    const open = await world.admin.query(`SELECT id FROM account_sync_history WHERE sync_status = 'started'`);
    expect(open.rows).toHaveLength(0);
    const leased = await world.admin.query(`SELECT id FROM oauth_tokens WHERE sync_lease_owner IS NOT NULL`);
    expect(leased.rows).toHaveLength(0);
    const { rows } = await world.admin.query<{ sync_status: string; n: number }>(
      `SELECT sync_status, count(*)::int AS n FROM user_accounts GROUP BY sync_status ORDER BY sync_status`,
    );
    // 40 users synced (80 accounts written), 1 throttled (2 accounts failed), 19 given back as they were.
    expect(Object.fromEntries(rows.map((r) => [r.sync_status, r.n]))).toEqual({ completed: 80 + 38, failed: 2 });
    const written = await world.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM account_sync_history WHERE sync_status = 'success'`,
    );
    expect(written.rows[0].n).toBe(40);
  });

  test('account sync: users claimed and then given back when time runs out get their history closed, their accounts’ status back and their lease freed', async () => {
    const users = await seedUsers(world, { count: 12, accountsDueInSeconds: -60 });
    // Some accounts were failing before, so "back to their previous status" is not one value.
    await world.admin.query(
      `UPDATE user_accounts SET sync_status = 'failed', sync_retry_count = 1
        WHERE id IN (SELECT min(id::text)::uuid FROM user_accounts GROUP BY user_id LIMIT 5)`,
    );
    const before = await world.admin.query<{ id: string; sync_status: string }>(
      `SELECT id, sync_status FROM user_accounts`,
    );
    let calls = 0;
    // Time enough to claim, then none left: every claimed user is given back unattempted.
    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => (calls++ === 0 ? 60_000 : 1_000) }),
    });
    expect(summary).toMatchObject({
      connectionsClaimed: 12,
      connectionsReleased: 12,
      connectionsSynced: 0,
      connectionsFailed: 0,
    });
    for (const u of users) expect(world.amazon.counters.profileCalls(u.userId)).toBe(0);

    const history = await world.admin.query<{
      sync_status: string;
      completed_at: Date | null;
      error_details: { reason?: string } | null;
    }>(`SELECT sync_status, completed_at, error_details FROM account_sync_history`);
    expect(history.rows).toHaveLength(12);
    for (const h of history.rows) {
      expect(h.sync_status).toBe('failed');
      expect(h.completed_at).not.toBeNull();
      expect(h.error_details?.reason).toMatch(/not attempted/);
    }
    const after = await world.admin.query<{ id: string; sync_status: string }>(
      `SELECT id, sync_status FROM user_accounts`,
    );
    expect(new Map(after.rows.map((r) => [r.id, r.sync_status]))).toEqual(
      new Map(before.rows.map((r) => [r.id, r.sync_status])),
    );
    expect(before.rows.filter((r) => r.sync_status === 'failed')).toHaveLength(5);
    const leased = await world.admin.query(`SELECT id FROM oauth_tokens WHERE sync_lease_owner IS NOT NULL`);
    expect(leased.rows).toHaveLength(0);
  });
});
