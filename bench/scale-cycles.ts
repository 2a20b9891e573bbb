/**
 * The refreshes a connection costs, measured with the real cores (bench:scale's check of the
 * model's ratios): a few used and idle connections over hours of schedule, played by moving the
 * stored times back by one tick after each tick (the database's clock is the real one). Each
 * tick (the token refresh's 5 minutes) runs the token refresh, and every other one the account
 * sync (10 minutes), as the stack schedules them; the product uses each used connection every
 * tick (the route's `last_used_at`). Counted at the fake Amazon: LWA refreshes per used
 * connection-hour and per idle connection per sync (the model's two ratios; the minimum is 1 and 1).
 */
import { runAccountSync } from '../lambda/account-sync/core';
import { LwaClient, AdsClient } from '../lambda/shared/amazon';
import { RateLimiterRegistry } from '../lambda/shared/amazon/rate-limiter';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import { proactiveRefreshWindowSeconds } from '../lambda/token-refresh/window';
import { LocalWorld, seedUsers } from '../local/world';
import { dataApiFor } from './scale-measure';

export interface CycleMeasurement {
  readonly usedConnections: number;
  readonly idleConnections: number;
  readonly hours: number;
  readonly usedRefreshes: number;
  readonly idleRefreshes: number;
  readonly idleSyncs: number;
  /** LWA refreshes per used connection-hour (minimum 1: one per 60-minute token lifetime). */
  readonly perUsedConnectionHour: number;
  /** LWA refreshes per idle connection per sync (minimum 1: the sync needs its token). */
  readonly perIdleConnectionSync: number;
}

const TICK_SECONDS = 300;

export async function measureRefreshCycles(
  world: LocalWorld,
  o: { used: number; idle: number; hours: number; usedWithinSeconds: number },
): Promise<CycleMeasurement> {
  // Used: tokens somewhere in their hour; idle: last used long ago, token expired, syncs spread
  // over the 6-hour cycle (due now, as the model's idle connections are at some point of theirs).
  const used = await seedUsers(world, {
    count: o.used,
    prefix: 'cycle-used',
    expiresInSeconds: (i) => 1500 + Math.round((2100 * i) / Math.max(1, o.used)),
    accountsDueInSeconds: -60,
  });
  const idle = await seedUsers(world, {
    count: o.idle,
    prefix: 'cycle-idle',
    expiresInSeconds: -3600,
    accountsDueInSeconds: -60,
  });
  const usedIds = used.map((u) => u.userId);
  await world.admin.query(
    `UPDATE oauth_tokens SET last_used_at = CASE WHEN user_id IN (SELECT jsonb_array_elements_text(:used::jsonb)::uuid)
                                                 THEN now() ELSE now() - interval '1 day' END`,
    { used: JSON.stringify(usedIds) },
  );
  const db = dataApiFor(world);
  const fast = () =>
    new RateLimiterRegistry({
      lwa: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 64 },
      ads: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 64 },
    });
  const lwa = new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    limiters: fast(),
  });
  const ads = new AdsClient({ clientId: world.amazon.clientId, baseUrl: world.amazon.adsBaseUrl, limiters: fast() });
  const runtime = () => ({
    cipher: world.cipher,
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => 120_000,
  });
  const before = (users: typeof used) => users.map((u) => world.amazon.counters.refreshCalls(u.refreshToken));
  const usedBefore = before(used);
  const idleBefore = before(idle);
  const idleSyncsBefore = idle.map((u) => world.amazon.counters.profileCalls(u.userId));
  try {
    const ticks = (o.hours * 3600) / TICK_SECONDS;
    for (let tick = 0; tick < ticks; tick++) {
      await runTokenRefresh({
        ...runtime(),
        db,
        lwa,
        settings: {
          windowSeconds: proactiveRefreshWindowSeconds(TICK_SECONDS),
          usedWithinSeconds: o.usedWithinSeconds,
        },
      });
      if (tick % 2 === 0) await runAccountSync({ ...runtime(), db, ads, lwa });
      await world.admin.query(
        `UPDATE oauth_tokens
            SET expires_at = expires_at - make_interval(secs => :s),
                last_used_at = CASE WHEN user_id IN (SELECT jsonb_array_elements_text(:used::jsonb)::uuid)
                                    THEN now() ELSE last_used_at - make_interval(secs => :s) END,
                next_refresh_attempt_at = next_refresh_attempt_at - make_interval(secs => :s),
                sync_next_attempt_at = sync_next_attempt_at - make_interval(secs => :s)`,
        { s: TICK_SECONDS, used: JSON.stringify(usedIds) },
      );
      await world.admin.query(`UPDATE user_accounts SET next_sync_at = next_sync_at - make_interval(secs => :s)`, {
        s: TICK_SECONDS,
      });
    }
  } finally {
    await db.close();
  }
  const sum = (now: number[], then: number[]) => now.reduce((n, x, i) => n + x - then[i], 0);
  const usedRefreshes = sum(before(used), usedBefore);
  const idleRefreshes = sum(before(idle), idleBefore);
  const idleSyncs = sum(
    idle.map((u) => world.amazon.counters.profileCalls(u.userId)),
    idleSyncsBefore,
  );
  return {
    usedConnections: o.used,
    idleConnections: o.idle,
    hours: o.hours,
    usedRefreshes,
    idleRefreshes,
    idleSyncs,
    perUsedConnectionHour: usedRefreshes / Math.max(1, o.used) / o.hours,
    perIdleConnectionSync: idleRefreshes / Math.max(1, idleSyncs),
  };
}
