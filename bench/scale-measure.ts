/**
 * The measured half of `npm run bench:scale`, on PostgreSQL 17, the Data API emulator and the
 * fake Amazon (local/world.ts), through the Data API path production uses:
 *
 * - `measureSize`: an environment's steady state of `connections` (bench/scale-seed.ts) and the
 *   token refresh's windowed claim and set-based write-back on it, each timed over several
 *   batches of 500 (the claim must step over every idle connection's expired token: what
 *   migration 0017's index is for);
 * - `measureRateRun`: the real cores against the fake Amazon limited to the configured rate per
 *   region (`limitPerSecond`, which answers 429 beyond it and records every arrival), for a
 *   bounded time on top of that table: a token refresh and an account sync invocation at once,
 *   each drawing from the shared budget in the database. Every connection they work on is due
 *   (more than the rate allows in the time), so the rate, not the data, bounds them.
 */
import { oauthTokenBinding } from '../lambda/shared/token-crypto';
import { performance } from 'node:perf_hooks';
import { runAccountSync } from '../lambda/account-sync/core';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { DatabaseRateBudgetStore } from '../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../lambda/shared/amazon/rate-limiter';
import { AMAZON_REGIONS, type AmazonRegion } from '../lambda/shared/amazon/regions';
import { DataApiDatabase } from '../lambda/shared/db';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import { claimDueTokens, saveResults, TokenResult } from '../lambda/token-refresh/store';
import { stampingSentAt } from '../local/amazon/types';
import { LocalWorld, seedUsers } from '../local/world';
import { seedSteadyState, SteadyStateCounts, steadyStateCounts } from './scale-seed';
import { profilesFor } from './seeding';
import { busiestSecond } from '../local/amazon/busiest-second';

/** The regions the measured run covers: every Amazon region. */
export const REGIONS: readonly AmazonRegion[] = AMAZON_REGIONS;

/**
 * The shared budget's tolerance for late slots in the rate run: 300 ms, as
 * test/jobs/shared-budget.test.ts, because the fake Amazon runs in this busy process and a
 * request can reach it a few hundred ms after it left (the Lambdas use 100 ms).
 */
export const RATE_RUN_TOLERANCE_MS = 300;

export interface Timing {
  readonly calls: number;
  readonly meanMs: number;
  readonly maxMs: number;
}

export interface SizeMeasurement {
  readonly connections: number;
  readonly counts: SteadyStateCounts;
  readonly seedSeconds: number;
  /** The windowed claim of 500 (Data API: one call each). */
  readonly claim: Timing;
  /** The write-back of 500 refreshed tokens (Data API: one call each). */
  readonly writeBack: Timing;
}

export interface RateRunMeasurement {
  readonly tableConnections: number;
  /** Connections seeded due (token expiring in 5 minutes, accounts due) for the run. */
  readonly dueConnections: number;
  readonly seconds: number;
  readonly lwaPerSecond: number;
  readonly adsPerSecond: number;
  readonly refreshed: number;
  readonly synced: number;
  readonly failed: number;
  /** Calls the fake Amazon received per endpoint (every call, answered or refused). */
  readonly lwaCalls: number;
  readonly adsCalls: number;
  /** The most calls that arrived within any one second, per endpoint and region (the fake's count). */
  readonly busiest: { readonly lwa: Record<AmazonRegion, number>; readonly ads: Record<AmazonRegion, number> };
  /** Calls the fake answered 429 because they were over limitPerSecond. */
  readonly refused: { readonly lwa: number; readonly ads: number };
  readonly dataApi: { readonly refresh: number; readonly sync: number };
  /** Of those, the shared budget's slot reservations. */
  readonly reservations: { readonly refresh: number; readonly sync: number };
  /** Seconds from the start to the first call at the fake Amazon, per endpoint. */
  readonly firstCallAfterSeconds: { readonly lwa: number; readonly ads: number };
}

const uuid = (n: number) => `00000000-0000-4000-8000-${n.toString(16).padStart(12, '0')}`;

async function timed<T>(times: number[], fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  const result = await fn();
  times.push(performance.now() - started);
  return result;
}

const summary = (times: number[]): Timing => ({
  calls: times.length,
  meanMs: times.reduce((a, b) => a + b, 0) / Math.max(1, times.length),
  maxMs: Math.max(0, ...times),
});

export function dataApiFor(world: LocalWorld): DataApiDatabase {
  return new DataApiDatabase({ client: world.emulator.createClient(), ...world.emulator.target });
}

/** Seeds the steady state of `connections` and times the windowed claim and the write-back on it. */
export async function measureSize(
  world: LocalWorld,
  o: { connections: number; usedShare: number; usedWithinSeconds: number; batches: number },
): Promise<SizeMeasurement> {
  await world.reset();
  const seedStarted = performance.now();
  await seedSteadyState(world.admin, {
    count: o.connections,
    usedShare: o.usedShare,
    usedWithinSeconds: o.usedWithinSeconds,
  });
  await world.admin.query('VACUUM ANALYZE oauth_tokens');
  const seedSeconds = (performance.now() - seedStarted) / 1000;
  const counts = await steadyStateCounts(world.admin, o.usedWithinSeconds);
  const db = dataApiFor(world);
  const claims: number[] = [];
  const writes: number[] = [];
  for (let b = 0; b < o.batches; b++) {
    const owner = uuid(b + 1);
    const claimed = await timed(claims, () =>
      claimDueTokens(db, {
        owner,
        windowSeconds: 1800,
        leaseSeconds: 300,
        limit: 500,
        pausedRegions: [],
        usedWithinSeconds: o.usedWithinSeconds,
      }),
    );
    if (claimed.length !== Math.min(500, counts.dueInWindow - b * 500))
      throw new Error(`claim ${b + 1} took ${claimed.length} of ${counts.dueInWindow} due connections`);
    const expiresAt = new Date(Date.now() + 3_600_000);
    const results: TokenResult[] = claimed.map((token) => ({
      kind: 'success',
      result: {
        token,
        accessToken: world.cipher.encrypt(`Atza|bench-${token.id}`, oauthTokenBinding(token, 'access_token')),
        refreshToken: world.cipher.encrypt(`Atzr|bench-${token.id}`, oauthTokenBinding(token, 'refresh_token')),
        expiresAt,
      },
    }));
    const { rejected } = await timed(writes, () => saveResults(db, owner, results));
    if (rejected.length > 0) throw new Error(`${rejected.length} write-backs rejected`);
  }
  const { rows } = await world.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM oauth_tokens WHERE left(access_token, 7) = 'enc:v2:'`,
  );
  if (Number(rows[0].n) !== Math.min(o.batches * 500, counts.dueInWindow))
    throw new Error(`write-back stored ${rows[0].n} tokens`);
  return { connections: o.connections, counts, seedSeconds, claim: summary(claims), writeBack: summary(writes) };
}

/**
 * On the table `measureSize` left: moves its own connections' expiring tokens out of the refresh
 * window, used or idle (the fake Amazon never issued them: neither the refresh nor the sync, which
 * takes an expiring token on demand, may call it with them), seeds `due` real ones, then runs one token refresh
 * and one account sync invocation at once for `seconds`, with the fake Amazon limited to the
 * configured rate per region and the cores drawing from the shared budget at that rate.
 */
export async function measureRateRun(
  world: LocalWorld,
  o: {
    due: number;
    seconds: number;
    lwaPerSecond: number;
    adsPerSecond: number;
    tableConnections: number;
    usedWithinSeconds: number;
  },
): Promise<RateRunMeasurement> {
  await world.admin.query(
    `UPDATE oauth_tokens SET expires_at = now() + interval '45 minutes', refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
      WHERE expires_at < now() + interval '40 minutes'`,
  );
  // Nor does the sync take them: its claim is this run's connections only. (The table's seeded
  // rows hold placeholder tokens no key decrypts; the sync would take a new one on demand, and
  // the fake Amazon, which never issued their refresh tokens, would refuse it.)
  await world.admin.query(`UPDATE user_accounts SET next_sync_at = now() + interval '1 day'`);
  await world.admin.query(`UPDATE oauth_tokens SET sync_next_attempt_at = now() + interval '1 day'`);
  for (let start = 0, chunk = 0; start < o.due; start += 4000, chunk++)
    await seedUsers(world, {
      count: Math.min(4000, o.due - start),
      prefix: `rate${chunk}`,
      expiresInSeconds: 300,
      profilesPerUser: profilesFor,
      accountsDueInSeconds: -60,
    });
  world.amazon.setKnobs({ latencyMs: 100, limitPerSecond: o.lwaPerSecond }, 'lwa');
  world.amazon.setKnobs({ latencyMs: 150, limitPerSecond: o.adsPerSecond }, 'ads');
  const lwaBefore = world.amazon.counters.total('lwa');
  const adsBefore = world.amazon.counters.total('ads');

  const refreshDb = dataApiFor(world);
  const syncDb = dataApiFor(world);
  const refreshLimiters = limitersFor(refreshDb);
  const syncLimiters = limitersFor(syncDb);
  // Production's limits per endpoint (rate per region from amazonLimits, 16 in flight), drawing
  // from the budget in the database.
  function limitersFor(db: DataApiDatabase) {
    return new RateLimiterRegistry(
      {
        lwa: { ratePerSecond: o.lwaPerSecond, burst: o.lwaPerSecond, maxConcurrency: 16 },
        ads: { ratePerSecond: o.adsPerSecond, burst: o.adsPerSecond, maxConcurrency: 16 },
      },
      {},
      new DatabaseRateBudgetStore(db),
      RATE_RUN_TOLERANCE_MS,
    );
  }
  // Each call stamped when it leaves the client, and counted by the fake at that time: the fake
  // runs in this process, where a call sent on time can reach it hundreds of ms late on a busy
  // machine, bunched with the next ones (local/amazon/types.ts, SENT_AT_HEADER).
  const sentAtStamped = stampingSentAt();
  const startedAt = Date.now();
  const deadline = startedAt + o.seconds * 1000;
  const common = {
    cipher: world.cipher,
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => deadline - Date.now(),
  };
  const [refresh, sync] = await Promise.all([
    runTokenRefresh({
      ...common,
      db: refreshDb,
      lwa: new LwaClient({
        clientId: world.amazon.clientId,
        clientSecret: world.amazon.clientSecret,
        tokenUrl: world.amazon.lwaTokenUrl,
        limiters: refreshLimiters,
        fetch: sentAtStamped,
      }),
      settings: { concurrency: 16, reserveMs: 1_000, usedWithinSeconds: o.usedWithinSeconds },
    }),
    runAccountSync({
      ...common,
      db: syncDb,
      ads: new AdsClient({
        clientId: world.amazon.clientId,
        baseUrl: world.amazon.adsBaseUrl,
        limiters: syncLimiters,
        fetch: sentAtStamped,
      }),
      // Tokens about to expire are taken on demand, from the same LWA budget as the refresh's.
      lwa: new LwaClient({
        clientId: world.amazon.clientId,
        clientSecret: world.amazon.clientSecret,
        tokenUrl: world.amazon.lwaTokenUrl,
        limiters: syncLimiters,
        fetch: sentAtStamped,
      }),
      settings: { concurrency: 16, reserveMs: 1_000 },
    }),
  ]);
  // This run's calls only: the world's fake Amazon has also served what ran before it (the
  // refresh cycles' measurement sends its connections' calls at once, with no limit set).
  const busiest = (endpoint: 'lwa' | 'ads') =>
    Object.fromEntries(
      REGIONS.map((r) => [r, busiestSecond(world.amazon.counters.arrivals(endpoint, r).filter((t) => t >= startedAt))]),
    ) as Record<AmazonRegion, number>;
  const refused = (endpoint: 'lwa' | 'ads') =>
    REGIONS.reduce((n, r) => n + world.amazon.counters.limitedAt(endpoint, r).filter((t) => t >= startedAt).length, 0);
  const reservations = (registry: RateLimiterRegistry) =>
    registry.entries().reduce((n, e) => n + (e.limiter.shared?.stats().reservations ?? 0), 0);
  const firstCall = (endpoint: 'lwa' | 'ads') =>
    (Math.min(
      ...REGIONS.map((r) => world.amazon.counters.arrivals(endpoint, r).find((t) => t >= startedAt) ?? Infinity),
    ) -
      startedAt) /
    1000;
  return {
    tableConnections: o.tableConnections,
    dueConnections: o.due,
    seconds: o.seconds,
    lwaPerSecond: o.lwaPerSecond,
    adsPerSecond: o.adsPerSecond,
    refreshed: refresh.refreshed,
    synced: sync.connectionsSynced,
    failed: refresh.failed + sync.connectionsFailed,
    lwaCalls: world.amazon.counters.total('lwa') - lwaBefore,
    adsCalls: world.amazon.counters.total('ads') - adsBefore,
    busiest: { lwa: busiest('lwa'), ads: busiest('ads') },
    refused: { lwa: refused('lwa'), ads: refused('ads') },
    dataApi: { refresh: refreshDb.callCounts().total, sync: syncDb.callCounts().total },
    reservations: { refresh: reservations(refreshLimiters), sync: reservations(syncLimiters) },
    firstCallAfterSeconds: { lwa: firstCall('lwa'), ads: firstCall('ads') },
  };
}
