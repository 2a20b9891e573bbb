import type { Database } from '../shared/db/port';
import { JobRunContext, JobRuntime, nextRetryAt } from '../shared/jobs/runtime';
import type { RateLimiterRegistry } from '../shared/amazon/rate-limiter';
import type { AdsProfile } from '../shared/amazon/schemas';
import type { TokenCipher } from '../shared/token-crypto';
import type { TokenRefresher } from '../token-refresh/core';
import { MAX_ITEM_WAIT_MS } from '../shared/jobs/throttling';
import type { AmazonRegion } from '../shared/amazon/regions';
import { ClaimedConnection, ConnectionSyncOutcome, MIN_TOKEN_VALIDITY_SECONDS } from './store';

/** What the core needs of the Ads API client (AdsClient). */
export interface ProfileLister {
  /**
   * Lists every profile the access token can see in the region; throws the Amazon error
   * classes, and DeadlineExceededError when it would have to wait longer than `maxWaitMs`.
   */
  listProfiles(request: {
    itemId: string;
    region: AmazonRegion;
    accessToken: string;
    maxWaitMs?: number;
  }): Promise<readonly AdsProfile[]>;
  /** The client's rate limiters: their adaptive rate and pauses carry over through rate_limit_tracking. */
  readonly limiters?: RateLimiterRegistry;
}

export interface AccountSyncSettings {
  /** Connections claimed per database round trip. @default 250 */
  readonly batchSize?: number;
  /** Ads API calls in flight at once. @default 16 */
  readonly concurrency?: number;
  /** Time between regular syncs of a user's accounts. @default 21600 (6 h) */
  readonly syncIntervalSeconds?: number;
  /** First retry delay after a failure; doubles per failure (jittered, floor of half). @default 300 */
  readonly retryBaseSeconds?: number;
  /** @default 21600 */
  readonly retryMaxSeconds?: number;
  /**
   * A claimed connection whose stored access token has less than this left takes its token on
   * demand: refreshed once, under the connection's refresh lease (single-flight with the token
   * route and the token refresh, lambda/token-refresh/on-demand.ts). @default 120
   */
  readonly minTokenValiditySeconds?: number;
  /**
   * Longest one connection waits for its turn (the Ads limiter's pace, a pause as the shared
   * budget really applies it, another caller's refresh of its token) before it is given back and
   * its region left alone for the rest of the run: a run never sits out a pause.
   * @default MAX_ITEM_WAIT_MS (15 s)
   */
  readonly maxItemWaitMs?: number;
  /** Stop claiming when less than this remains of the invocation. @default 30000 */
  readonly reserveMs?: number;
  /** Finished connections wait at most this long for the rest of their batch before being written. @default 3000 */
  readonly flushAfterMs?: number;
}

export interface AccountSyncDeps extends JobRuntime {
  readonly db: Database;
  readonly ads: ProfileLister;
  /** Refreshes a claimed connection's token when it is about to expire (on demand, once). */
  readonly lwa: TokenRefresher;
  readonly cipher: TokenCipher;
  readonly settings?: AccountSyncSettings;
  /** Between two reads of a connection whose token another caller is refreshing. @default backoff's sleep */
  readonly sleep?: (ms: number) => Promise<void>;
}

/** A run's settings when the caller gives none. */
export const DEFAULT_SETTINGS = {
  batchSize: 250,
  concurrency: 16,
  syncIntervalSeconds: 21_600,
  retryBaseSeconds: 300,
  retryMaxSeconds: 21_600,
  minTokenValiditySeconds: MIN_TOKEN_VALIDITY_SECONDS,
  maxItemWaitMs: MAX_ITEM_WAIT_MS,
  reserveMs: 30_000,
  flushAfterMs: 3000,
};

/** What syncing one connection needs of its run (`syncOneConnection` in core.ts). */
export interface SyncContext extends JobRunContext<AccountSyncDeps, typeof DEFAULT_SETTINGS> {
  /** When each claimed connection's sync lease ends (this run's clock, counted from before its claim). */
  readonly leaseEndsAt: WeakMap<ClaimedConnection, number>;
  /** Per region: until when this run leaves connections needing a new token alone (Login with Amazon's budget or pause). */
  readonly tokensHeldUntil: Map<AmazonRegion, number>;
  /** Tokens refreshed on demand by this run. */
  tokensRefreshed: number;
}

export function retryAt(c: SyncContext, failures: number, atLeastSeconds = 0): Date {
  return nextRetryAt(c.now(), failures, {
    baseSeconds: c.settings.retryBaseSeconds,
    maxSeconds: c.settings.retryMaxSeconds,
    random: c.random,
    atLeastSeconds,
  });
}

/** The run leaves `region` alone until `until` (epoch ms): its claims skip it, its connections are given back. */
export function holdRegion(held: Map<AmazonRegion, number>, region: AmazonRegion, until: number): void {
  held.set(region, Math.max(until, held.get(region) ?? 0));
}

/** A failure outcome for `connection`, its user and region added to the details. */
export function failed(f: {
  readonly connection: ClaimedConnection;
  readonly error: string;
  readonly errorDetails: Record<string, unknown>;
  readonly nextAttemptAt: Date;
}): ConnectionSyncOutcome {
  return {
    kind: 'failure',
    ...f,
    errorDetails: { ...f.errorDetails, userId: f.connection.userId, region: f.connection.region },
  };
}
