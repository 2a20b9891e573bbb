import { LwaClient } from '../../../lambda/shared/amazon';
import type { FetchFunction } from '../../../lambda/shared/amazon/http';
import { DEFAULT_ENDPOINT_LIMITS, RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import { JOB_TIMING } from '../../../lambda/shared/jobs/timing';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * No idle waiting: a run gives back what it cannot start within the pause its limiter really
 * applies, and ends; it never calls Amazon for a token whose lease it no longer holds; and a run
 * started while the shared budget is paused leaves that region alone. Time is virtual (the
 * limiter's sleep and the run's clock move together), so nothing here waits.
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

/** An LWA client on its own container's limiter, on the virtual clock, recording when each call was sent. */
function lwaOn(clock: Clock, sent: number[], callTakesMs = 0): LwaClient {
  const fetchAndRecord: FetchFunction = async (input, init) => {
    sent.push(clock.now());
    clock.advance(callTakesMs);
    return fetch(input, init);
  };
  return new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    limiters: new RateLimiterRegistry({ lwa: DEFAULT_ENDPOINT_LIMITS.lwa }, clock),
    fetch: fetchAndRecord,
  });
}

async function leasesHeld(): Promise<number> {
  const { rows } = await world.admin.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL',
  );
  return rows[0].n;
}

describe.each(PATHS)('%s', (_path, database: () => Database) => {
  test('with every LWA call answered 429 (Retry-After 30), the run ends well before its deadline and gives back what it did not start', async () => {
    await seedUsers(world, { count: 30, expiresInSeconds: 300 }); // ten per region
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 30 }, 'lwa');
    const clock = virtualClock(Date.now());
    const started = clock.now();
    const deadline = started + JOB_TIMING.tokenRefresh.timeoutSeconds * 1000;
    const sent: number[] = [];

    const summary = await runTokenRefresh({
      db: database(),
      lwa: lwaOn(clock, sent),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => deadline - clock.now() }),
      now: () => new Date(clock.now()),
      settings: { concurrency: 16 },
    });

    // One probe per region got its 429; the region's pause (30 s, the next one 60 s) is longer
    // than an item waits for its turn, so nothing else was sent and the run did not sit it out.
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.length).toBeLessThanOrEqual(3);
    expect(clock.now() - started).toBeLessThan(60_000);
    expect(summary).toMatchObject({ claimed: 30, refreshed: 0, failed: 0, rateLimited: sent.length });
    expect(summary.released).toBe(30 - sent.length);
    expect(await leasesHeld()).toBe(0);
    // The 429s are recorded with the pause the limiter applied.
    const { rows } = await world.admin.query<{ endpoint: string; hits: number; pause: number }>(
      `SELECT endpoint, limit_hit_count AS hits, retry_after_seconds AS pause FROM rate_limit_tracking
        WHERE user_id IS NULL AND limit_hit_count > 0 ORDER BY endpoint`,
    );
    expect(rows.reduce((n, r) => n + r.hits, 0)).toBe(sent.length);
    for (const r of rows) expect(r.pause).toBeGreaterThanOrEqual(30);
  });

  test('a run whose deadline outlasts its leases never calls Amazon for a token after its lease ended', async () => {
    await seedUsers(world, { count: 12, expiresInSeconds: 300, regions: () => ['EU'] });
    const clock = virtualClock(Date.now());
    const started = clock.now();
    // More time than its 5-minute leases (as `npm run job` used to give, 14 minutes): 5.5
    // minutes, so that the run claims nothing after the leases' end; each call takes 60 s.
    const deadline = started + JOB_TIMING.tokenRefresh.leaseSeconds * 1000 + 30_000;
    const sent: number[] = [];

    const summary = await runTokenRefresh({
      db: database(),
      lwa: lwaOn(clock, sent, 60_000),
      cipher: world.cipher,
      ...runtime({ remainingTimeMs: () => deadline - clock.now() }),
      now: () => new Date(clock.now()),
      settings: { concurrency: 1 },
    });

    const leaseEnds = started + JOB_TIMING.tokenRefresh.leaseSeconds * 1000;
    expect(sent.length).toBeGreaterThan(0);
    for (const at of sent) expect(at).toBeLessThan(leaseEnds);
    expect(summary.claimed).toBe(12);
    expect(summary.refreshed).toBe(sent.length);
    expect(summary.released).toBe(12 - sent.length);
    expect(await leasesHeld()).toBe(0);
  });

  test('a run started while the shared budget pauses a region claims nothing there, though the recorded Retry-After has passed', async () => {
    const users = await seedUsers(world, { count: 6, expiresInSeconds: 300 });
    const paused: AmazonRegion = 'FE';
    await world.admin.query(
      `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start)
       VALUES (NULL, 'lwa-token:FE', 1, 1, now() - interval '40 seconds', 30, now())`,
    );
    await world.admin.query(
      `INSERT INTO amazon_rate_budget (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until)
       VALUES ('lwa-token', 'FE', 10, 5, now(), now(), now() + interval '80 seconds')`,
    );

    const before = world.amazon.counters.arrivals('lwa', paused).length;

    const summary = await runTokenRefresh({ db: database(), lwa: world.lwa(), cipher: world.cipher, ...runtime() });

    expect(summary).toMatchObject({ claimed: 4, refreshed: 4, released: 0 });
    expect(world.amazon.counters.arrivals('lwa', paused)).toHaveLength(before);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(u.region === paused ? 0 : 1);
  });
});
