import { randomUUID } from 'node:crypto';
import { classifyAmazonError } from '../shared/amazon/failure';
import type { Database } from '../shared/db/port';
import { addCounts, describeError, JobRuntime, nextRetryAt } from '../shared/jobs/runtime';
import { runPipeline } from '../shared/jobs/pipeline';
import { METRIC_NAMES } from '../shared/jobs/metrics';
import {
  endpointKey,
  RateLimitUsageRecorder,
  readEndpointStates,
  recordRateLimitUsage,
} from '../shared/amazon/usage-store';
import { isEncrypted, TokenCipher } from '../shared/token-crypto';
import type { AmazonRegion } from '../shared/amazon/regions';
import { DeadlineExceededError } from '../shared/backoff';
import type { RateLimiterRegistry } from '../shared/amazon/rate-limiter';
import { writeResiliently } from '../shared/jobs/write-back';
import { restoreLimiters, saveLimiterRates } from '../shared/jobs/throttling';
import { claimDueTokens, ClaimedToken, RefreshFailure, saveResults, TokenResult } from './store';

/** What the core needs of the Login with Amazon client (LwaClient). */
export interface TokenRefresher {
  /**
   * Exchanges a refresh token at the region's token endpoint; throws the Amazon error classes,
   * and DeadlineExceededError when it would have to wait longer than `maxWaitMs`.
   */
  refresh(request: { itemId: string; region: AmazonRegion; refreshToken: string; maxWaitMs?: number }): Promise<{
    accessToken: string;
    refreshToken: string | undefined;
    expiresInSeconds: number;
  }>;
  /** The client's rate limiters: their adaptive rate and pauses carry over through rate_limit_tracking. */
  readonly limiters?: RateLimiterRegistry;
}

/** Amazon said our application's credentials are wrong: no token is at fault, so stop the run. */
export class ClientCredentialsError extends Error {
  constructor(readonly code: string) {
    super(
      `Login with Amazon rejected the application's credentials (${code}); no token was changed. Check the LWA client id and secret.`,
    );
    this.name = 'ClientCredentialsError';
  }
}

const CLIENT_ERRORS = new Set(['invalid_client', 'unsupported_grant_type', 'unauthorized_client']);

export interface TokenRefreshSettings {
  /** Tokens expiring within this window are refreshed. @default 1800 (30 min; the schedule runs every 5) */
  readonly windowSeconds?: number;
  /** Tokens claimed per database round trip. @default 500 */
  readonly batchSize?: number;
  /** Amazon calls in flight at once. @default 16 */
  readonly concurrency?: number;
  /** How long a claim holds before another invocation may take the token. @default 300 */
  readonly leaseSeconds?: number;
  /** Failures in a row after which proactive refresh is turned off. @default 5 */
  readonly maxConsecutiveFailures?: number;
  /** First retry delay after a failure; doubles per failure (full jitter, floor of half). @default 60 */
  readonly retryBaseSeconds?: number;
  /** @default 3600 */
  readonly retryMaxSeconds?: number;
  /** Stop claiming when less than this remains of the invocation. @default 30000 */
  readonly reserveMs?: number;
  /** Finished results wait at most this long for the rest of their batch before being written. @default 3000 */
  readonly flushAfterMs?: number;
}

export interface TokenRefreshDeps extends JobRuntime {
  readonly db: Database;
  readonly lwa: TokenRefresher;
  readonly cipher: TokenCipher;
  readonly settings?: TokenRefreshSettings;
}

export interface TokenRefreshSummary {
  readonly job: 'token-refresh';
  readonly claimed: number;
  readonly refreshed: number;
  readonly failed: number;
  readonly reauthRequired: number;
  readonly rateLimited: number;
  /** Claimed but given back unprocessed (time ran out, or the endpoint paused by a 429). */
  readonly released: number;
  /** Results that could not be written back (logged; their lease expires and a later run retries). */
  readonly notWritten: number;
  readonly batches: number;
  readonly databaseCalls: number;
  readonly durationMs: number;
}

type Outcome = TokenResult;

/**
 * One run of the proactive token refresh: claims due tokens in batches (a lease per token,
 * so overlapping invocations never refresh one twice), refreshes them with bounded concurrency,
 * writes the results back in batches (claims and write-backs overlapping the Amazon calls, see
 * runPipeline), and keeps going until nothing is due or time runs low.
 * Every claimed token is written back or released before it returns, even when it throws.
 */
export async function runTokenRefresh(deps: TokenRefreshDeps): Promise<TokenRefreshSummary> {
  const s = {
    windowSeconds: 1800,
    batchSize: 500,
    concurrency: 16,
    leaseSeconds: 300,
    maxConsecutiveFailures: 5,
    retryBaseSeconds: 60,
    retryMaxSeconds: 3600,
    reserveMs: 30_000,
    flushAfterMs: 3000,
    ...deps.settings,
  };
  const now = deps.now ?? (() => new Date());
  const random = deps.random ?? Math.random;
  const started = Date.now();
  const callsBefore = deps.db.callCounts().total;
  const owner = randomUUID();
  const usage = new RateLimitUsageRecorder();
  const totals = {
    claimed: 0,
    refreshed: 0,
    failed: 0,
    reauthRequired: 0,
    rateLimited: 0,
    released: 0,
    notWritten: 0,
    batches: 0,
  };
  // How long a call may still wait (for the limiter, a pause, a retry) and leave the reserve.
  const waitBudgetMs = () => deps.remainingTimeMs() - s.reserveMs / 2;

  // Endpoints a previous invocation was told to leave alone, and those this one is told to;
  // the limiters also take over the rate earlier 429s cut them to.
  const states = await readEndpointStates(deps.db, 'lwa-token:');
  const pausedUntil = new Map<AmazonRegion, number>();
  for (const [endpoint, state] of states) {
    if (state.pausedUntil) pausedUntil.set(endpoint.split(':')[1] as AmazonRegion, state.pausedUntil.getTime());
  }
  restoreLimiters(deps.lwa.limiters, 'lwa', states);
  const pausedRegions = () => [...pausedUntil].filter(([, until]) => until > now().getTime()).map(([region]) => region);

  const retryAt = (failures: number) =>
    nextRetryAt(now(), failures, { baseSeconds: s.retryBaseSeconds, maxSeconds: s.retryMaxSeconds, random });

  // Set when Amazon rejects the application itself: the batch's other results are still
  // written (a refresh token Amazon rotated must never be lost), then the run stops.
  let fatal: ClientCredentialsError | undefined;

  const refreshOne = async (token: ClaimedToken): Promise<Outcome> => {
    // A 429 pauses the region's shared limiter, which holds later calls until Retry-After has
    // passed; a token whose wait would outlast the invocation is given back instead.
    const waitMs = Math.max(0, (pausedUntil.get(token.region) ?? 0) - now().getTime());
    if (fatal || waitMs > waitBudgetMs()) return { kind: 'released', token };
    const endpoint = endpointKey('lwa', token.region);
    let refreshToken: string;
    try {
      refreshToken = deps.cipher.decrypt(token.storedRefreshToken);
    } catch (error) {
      // Cannot be refreshed by anyone until the web app stores it again: same as revoked.
      const reason = `Stored refresh token is unreadable (${describeError(error)}); the user must reconnect Amazon`;
      return {
        kind: 'failure',
        reauth: reason,
        result: failure(token, true, true, reason, retryAt(token.refreshFailureCount + 1)),
      };
    }
    const requestedAt = now();
    try {
      const tokens = await deps.lwa.refresh({
        itemId: token.id,
        region: token.region,
        refreshToken,
        maxWaitMs: waitBudgetMs(),
      });
      usage.request(endpoint);
      const newRefresh = tokens.refreshToken ?? refreshToken;
      return {
        kind: 'success',
        result: {
          token,
          accessToken: deps.cipher.encrypt(tokens.accessToken),
          // Amazon's new refresh token; else the one we have, re-encrypted only if it was legacy plaintext.
          refreshToken:
            tokens.refreshToken !== undefined || !isEncrypted(token.storedRefreshToken)
              ? deps.cipher.encrypt(newRefresh)
              : token.storedRefreshToken,
          expiresAt: new Date(requestedAt.getTime() + tokens.expiresInSeconds * 1000),
        },
      };
    } catch (error) {
      // The limiter (a pause, the reduced rate) or a retry would have waited past the deadline.
      if (error instanceof DeadlineExceededError) return { kind: 'released', token };
      usage.request(endpoint);
      const f = classifyAmazonError(error);
      const failures = token.refreshFailureCount + 1;
      switch (f.kind) {
        case 'permanent': {
          if (CLIENT_ERRORS.has(f.code)) {
            fatal ??= new ClientCredentialsError(f.code);
            return { kind: 'released', token };
          }
          const revoked = f.code === 'invalid_grant';
          const disable = revoked || failures >= s.maxConsecutiveFailures;
          const message = revoked
            ? 'invalid_grant: the refresh token was revoked or has expired; the user must reconnect Amazon'
            : `${f.code}: Login with Amazon refused the refresh`;
          return {
            kind: 'failure',
            reauth: disable ? message : undefined,
            result: failure(token, true, disable, message, retryAt(failures)),
          };
        }
        case 'rate_limited': {
          usage.limitHit(endpoint, null, f.retryAfterSeconds, now());
          const until = now().getTime() + f.retryAfterSeconds * 1000;
          pausedUntil.set(token.region, Math.max(until, pausedUntil.get(token.region) ?? 0));
          const message = `rate_limited: Login with Amazon answered 429, retry after ${f.retryAfterSeconds} s`;
          // The endpoint resumes after Retry-After for the other tokens; this one waits for a
          // later run (at least the base retry delay), so one run never calls a token twice.
          return {
            kind: 'failure',
            result: failure(
              token,
              false,
              false,
              message,
              new Date(Math.max(until, now().getTime() + s.retryBaseSeconds * 1000)),
            ),
          };
        }
        case 'transient':
        case 'malformed': {
          const disable = failures >= s.maxConsecutiveFailures;
          const message = `${f.kind}: ${f.reason}${disable ? ` (${failures} failures in a row: proactive refresh turned off)` : ''}`;
          return {
            kind: 'failure',
            reauth: disable ? message : undefined,
            result: failure(token, true, disable, message, retryAt(failures)),
          };
        }
      }
    }
  };

  try {
    const run = await runPipeline<ClaimedToken, Outcome>({
      concurrency: s.concurrency,
      mayClaim: () => deps.remainingTimeMs() > s.reserveMs,
      claim: () =>
        claimDueTokens(deps.db, {
          owner,
          windowSeconds: s.windowSeconds,
          leaseSeconds: s.leaseSeconds,
          limit: s.batchSize,
          pausedRegions: pausedRegions(),
        }),
      process: refreshOne,
      unprocessed: (token) => ({ kind: 'released', token }),
      writeBack: async (outcomes) => {
        const { written, unwritten } = await writeResiliently(outcomes, {
          write: (set) => saveResults(deps.db, owner, set),
          waitBudgetMs: () => deps.remainingTimeMs() - 1000,
          describe: (o) => {
            const token = o.kind === 'success' || o.kind === 'failure' ? o.result.token : o.token;
            return { tokenId: token.id, userId: token.userId, outcome: o.kind };
          },
          logger: deps.logger,
          random,
        });
        tally(written);
        totals.notWritten += unwritten.length;
      },
      flushAfterMs: s.flushAfterMs,
      shouldStop: () => fatal !== undefined,
      onBatchWritten: (_outcomes, ms) => {
        deps.metrics.addMetric(METRIC_NAMES.batchDurationMs, 'Milliseconds', ms);
      },
    });
    totals.claimed = run.claimed;
    totals.batches = run.batches;
  } finally {
    saveLimiterRates(deps.lwa.limiters, 'lwa', usage);
    await recordRateLimitUsage(deps.db, usage.drain()).catch((error) =>
      deps.logger.warn('Could not record rate-limit usage', { error: describeError(error) }),
    );
  }
  if (fatal) throw fatal;

  const summary: TokenRefreshSummary = {
    job: 'token-refresh',
    ...totals,
    databaseCalls: deps.db.callCounts().total - callsBefore,
    durationMs: Date.now() - started,
  };
  addCounts(deps.metrics, {
    [METRIC_NAMES.tokensRefreshed]: summary.refreshed,
    [METRIC_NAMES.refreshFailures]: summary.failed,
    [METRIC_NAMES.reauthRequired]: summary.reauthRequired,
    [METRIC_NAMES.rateLimitHits]: summary.rateLimited,
    [METRIC_NAMES.dataApiCalls]: summary.databaseCalls,
  });
  deps.logger.info('Token refresh run finished', { ...summary });
  return summary;

  function tally(outcomes: Outcome[]) {
    for (const o of outcomes) {
      if (o.kind === 'success') totals.refreshed += 1;
      else if (o.kind === 'released') totals.released += 1;
      else if (o.result.countsAsFailure) totals.failed += 1;
      else totals.rateLimited += 1;
      if (o.kind === 'failure' && o.reauth) totals.reauthRequired += 1;
      if (o.kind === 'failure') {
        deps.logger.warn('Token refresh failed', {
          tokenId: o.result.token.id,
          userId: o.result.token.userId,
          region: o.result.token.region,
          error: o.result.error,
          refreshDisabled: o.result.disable,
        });
      }
    }
  }
}

function failure(
  token: ClaimedToken,
  countsAsFailure: boolean,
  disable: boolean,
  error: string,
  nextAttemptAt: Date,
): RefreshFailure {
  return { token, countsAsFailure, disable, error, nextAttemptAt };
}
