import { runAccountSync } from '../../../lambda/account-sync/core';
import { AdsClient } from '../../../lambda/shared/amazon';
import type { FetchFunction } from '../../../lambda/shared/amazon/http';
import { DEFAULT_ENDPOINT_LIMITS, RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import { JOB_TIMING } from '../../../lambda/shared/jobs/timing';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * No idle waiting in the account sync (issue 25), as in the token refresh
 * (test/jobs/token-refresh/no-idle-waiting.test.ts): a run gives back what it cannot start
 * within the Ads region's real pause (the limiter's, the shared budget's `paused_until`) and
 * ends; it never calls Amazon for a connection whose sync lease it no longer holds; a run
 * started while the shared budget pauses a region leaves that region alone. Faults are the
 * fake Amazon's 429s; time is virtual (the limiter's sleep and the run's clock move together),
 * so nothing here waits.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

/** Time that moves only when someone waits (or a call takes it). */
function virtualClock(start: number) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => (t += ms),
    sleep: async (ms: number) => {
      t += ms;
      await new Promise((resolve) => setImmediate(resolve));
    },
  };
}
type Clock = ReturnType<typeof virtualClock>;

/** An Ads client on its own container's limiter, on the virtual clock, recording when each call was sent. */
function adsOn(clock: Clock, sent: number[], callTakesMs = 0): AdsClient {
  const fetchAndRecord: FetchFunction = async (input, init) => {
    sent.push(clock.now());
    clock.advance(callTakesMs);
    return fetch(input, init);
  };
  return new AdsClient({
    clientId: world.amazon.clientId,
    baseUrl: world.amazon.adsBaseUrl,
    limiters: new RateLimiterRegistry({ ads: DEFAULT_ENDPOINT_LIMITS.ads }, clock),
    retry: { maxAttempts: 1 },
    fetch: fetchAndRecord,
  });
}

async function leasesHeld(): Promise<number> {
  const { rows } = await world.admin.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM oauth_tokens WHERE sync_lease_owner IS NOT NULL',
  );
  return rows[0].n;
}

describe.each(PATHS)('%s', (_path, database: () => Database) => {
  test('with every Ads call answered 429 (Retry-After 30), the run ends well before its deadline and gives back what it did not start', async () => {
    await seedUsers(world, { count: 30, expiresInSeconds: 3600, accountsDueInSeconds: -60 }); // ten per region
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 30 }, 'ads');
    const clock = virtualClock(Date.now());
    const started = clock.now();
    const deadline = started + JOB_TIMING.accountSync.timeoutSeconds * 1000;
    const sent: number[] = [];

    const summary = await runAccountSync({
      db: database(),
      ads: adsOn(clock, sent),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => deadline - clock.now() }),
      now: () => new Date(clock.now()),
      settings: { concurrency: 16 },
    });

    // One probe per region got its 429; the region's pause (30 s) is longer than a connection
    // waits for its turn, so nothing else was sent and the run did not sit it out.
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.length).toBeLessThanOrEqual(3);
    expect(clock.now() - started).toBeLessThan(60_000);
    expect(summary).toMatchObject({ connectionsClaimed: 30, connectionsSynced: 0, rateLimited: sent.length });
    expect(summary.connectionsReleased).toBe(30 - sent.length);
    expect(await leasesHeld()).toBe(0);
    // The 429s are recorded with the pause the limiter applied.
    const { rows } = await world.admin.query<{ hits: number; pause: number }>(
      `SELECT limit_hit_count AS hits, retry_after_seconds AS pause FROM rate_limit_tracking
        WHERE user_id IS NULL AND limit_hit_count > 0 AND endpoint LIKE 'ads-profiles:%'`,
    );
    expect(rows.reduce((n, r) => n + r.hits, 0)).toBe(sent.length);
    for (const r of rows) expect(r.pause).toBeGreaterThanOrEqual(30);
  });

  test('a run whose deadline outlasts its leases never calls Amazon for a connection after its lease ended', async () => {
    await seedUsers(world, { count: 12, expiresInSeconds: 3 * 3600, accountsDueInSeconds: -60, regions: () => ['EU'] });
    const clock = virtualClock(Date.now());
    const started = clock.now();
    // More time than its 11-minute leases; each call takes 60 s.
    const deadline = started + JOB_TIMING.accountSync.leaseSeconds * 1000 + 60_000;
    const sent: number[] = [];

    const summary = await runAccountSync({
      db: database(),
      ads: adsOn(clock, sent, 60_000),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => deadline - clock.now() }),
      now: () => new Date(clock.now()),
      settings: { concurrency: 1 },
    });

    const leaseEnds = started + JOB_TIMING.accountSync.leaseSeconds * 1000;
    expect(sent.length).toBeGreaterThan(0);
    for (const at of sent) expect(at).toBeLessThan(leaseEnds);
    expect(summary.connectionsClaimed).toBe(12);
    expect(summary.connectionsSynced).toBe(sent.length);
    expect(summary.connectionsReleased).toBe(12 - sent.length);
    expect(summary.connectionsReleased).toBeGreaterThan(0);
    expect(await leasesHeld()).toBe(0);
  });

  test('a run started while the shared budget pauses a region claims nothing there, and calls nothing there', async () => {
    const users = await seedUsers(world, { count: 6, expiresInSeconds: 3600, accountsDueInSeconds: -60 });
    const paused: AmazonRegion = 'FE';
    await world.admin.query(
      `INSERT INTO amazon_rate_budget (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until)
       VALUES ('ads-profiles', 'FE', 5, 5, now(), now(), now() + interval '80 seconds')`,
    );
    const before = world.amazon.counters.arrivals('ads', paused).length;

    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime(),
    });

    expect(summary).toMatchObject({ connectionsClaimed: 4, connectionsSynced: 4, connectionsReleased: 0 });
    expect(world.amazon.counters.arrivals('ads', paused)).toHaveLength(before);
    for (const u of users) expect(world.amazon.counters.profileCalls(u.userId)).toBe(u.region === paused ? 0 : 1);
  });
});
