import { randomUUID } from 'node:crypto';
import { AmazonFailure, classifyAmazonError } from '../shared/amazon/failure';
import type { Database } from '../shared/db/port';
import {
  addCounts,
  addRegionalCounts,
  countInRegion,
  describeError,
  JobRunContext,
  jobRunContext,
  JobRuntime,
  RegionalCounts,
} from '../shared/jobs/runtime';
import { runPipeline } from '../shared/jobs/pipeline';
import { METRIC_NAMES } from '../shared/jobs/metrics';
import { JOB_TIMING } from '../shared/jobs/timing';
import { endpointKey, readEndpointPauses, recordRateLimitUsage } from '../shared/amazon/usage-store';
import { oauthTokenBinding, TokenCipher } from '../shared/token-crypto';
import type { AmazonRegion } from '../shared/amazon/regions';
import { DeadlineExceededError } from '../shared/backoff';
import type { RateLimiterRegistry } from '../shared/amazon/rate-limiter';
import { writeResiliently } from '../shared/jobs/write-back';
import {
  LEASE_CALL_RESERVE_MS,
  limiterPausedUntil,
  MAX_ITEM_WAIT_MS,
  restoreEndpointState,
  saveLimiterRates,
} from '../shared/jobs/throttling';
import {
  claimDueTokens,
  ClaimedToken,
  countDueTokens,
  GivenIds,
  resultToken,
  saveResults,
  TOKEN_REFRESH_WINDOW_SECONDS,
  TokenResult,
} from './store';
import { REFRESH_OUTCOME_DEFAULTS, refreshFailureOutcome, unreadableTokenOutcome } from './outcome';

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

/** Amazon rejected the application's credentials for several different tokens in a row: stop the run. */
export class ClientCredentialsError extends Error {
  constructor(
    readonly code: string,
    readonly tokensInARow: number,
  ) {
    super(
      `Login with Amazon rejected the application's credentials (${code}) for ${tokensInARow} different tokens in a row; the run stopped. Check the LWA client id and secret.`,
    );
    this.name = 'ClientCredentialsError';
  }
}

/** Codes that blame the application rather than the token. */
const CLIENT_ERRORS = new Set(['invalid_client', 'unsupported_grant_type', 'unauthorized_client']);

/**
 * Distinct tokens in a row answered with a client error after which the run stops: one such
 * answer may be about that token (an application it was not issued to), several in a row mean
 * the client id or secret is wrong and every further call would fail the same way.
 */
export const CLIENT_ERROR_STOP_AFTER = 3;

export interface TokenRefreshSettings {
  /**
   * Tokens expiring within this window are refreshed. @default TOKEN_REFRESH_WINDOW_SECONDS (660 s: just in
   * time for the 5-minute schedule, see window.ts)
   */
  readonly windowSeconds?: number;
  /** Tokens claimed per database round trip. @default 500 */
  readonly batchSize?: number;
  /** Amazon calls in flight at once. @default 16 */
  readonly concurrency?: number;
  /**
   * Amazon's definite refusals in a row after which proactive refresh is turned off (5xx,
   * timeouts, malformed answers and 429s never count: see outcome.ts). @default 5
   */
  readonly maxConsecutiveRefusals?: number;
  /** First retry delay after a failure; doubles per failure (full jitter, floor of half). @default 60 */
  readonly retryBaseSeconds?: number;
  /** @default 3600 */
  readonly retryMaxSeconds?: number;
  /** Stop claiming when less than this remains of the invocation. @default 30000 */
  readonly reserveMs?: number;
  /**
   * Longest one token waits for its turn at Amazon (the limiter's pace, a 429's pause as the
   * limiter really applies it) before it is given back and its region left alone for the rest
   * of the run: a run never sits out a pause. @default MAX_ITEM_WAIT_MS (15 s)
   */
  readonly maxItemWaitMs?: number;
  /**
   * Finished results wait at most this long for the rest of their batch before being written:
   * at 10 requests/s per region a write-back every 3 s was half the run's statements (issue 25:
   * at most 30 per 1,000 tokens); 10 s still loses little to a run cut short, with leases of
   * minutes. @default 10000
   */
  readonly flushAfterMs?: number;
  /**
   * Refresh only connections used within this many seconds (`last_used_at`, set by the account
   * sync when it wants the token; never recorded counts as used). Idle connections are left to
   * expire and are refreshed once something wants their token again.
   * @default - every connection (PROACTIVE_REFRESH_USED_WITHIN_SECONDS in AWS)
   */
  readonly usedWithinSeconds?: number;
  /**
   * Work on these tokens only (a fan-out message: ids and the dispatcher's mark), on the same
   * conditions as the next due ones: ids no longer due or leased by a live run are skipped.
   * @default - the next due tokens, until none are left or time runs low
   */
  readonly given?: GivenIds;
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
  /** Results the database refused even one at a time (their leases were given back). */
  readonly rejectedByDatabase: number;
  /** Results that could not be written back (logged; their lease expires and a later run retries). */
  readonly notWritten: number;
  readonly batches: number;
  readonly databaseCalls: number;
  readonly durationMs: number;
}

type Outcome = TokenResult;

const DEFAULT_SETTINGS = {
  windowSeconds: TOKEN_REFRESH_WINDOW_SECONDS,
  batchSize: 500,
  concurrency: 16,
  maxConsecutiveRefusals: REFRESH_OUTCOME_DEFAULTS.maxConsecutiveRefusals,
  retryBaseSeconds: REFRESH_OUTCOME_DEFAULTS.retryBaseSeconds,
  retryMaxSeconds: REFRESH_OUTCOME_DEFAULTS.retryMaxSeconds,
  reserveMs: 30_000,
  flushAfterMs: 10_000,
  maxItemWaitMs: MAX_ITEM_WAIT_MS,
};

/** What refreshing one token needs of its run (see {@link refreshOneToken}). */
interface RefreshContext extends JobRunContext<TokenRefreshDeps, typeof DEFAULT_SETTINGS> {
  /** Set when the run must stop; `clientErrorStreak` holds the tokens of the current streak. */
  readonly stop: { fatal?: ClientCredentialsError; clientErrorStreak: Set<string> };
  /** When each claimed token's lease ends (this run's clock, counted from before its claim). */
  readonly leaseEndsAt: WeakMap<ClaimedToken, number>;
  /** Claimed tokens not yet done, per region: what the shared budget reserves ahead for. */
  readonly toSend: Map<AmazonRegion, number>;
}

/**
 * One run of the proactive token refresh: claims due tokens in batches (a lease per token,
 * so overlapping invocations never refresh one twice; the lease outlasts the function's
 * timeout, see JOB_TIMING), refreshes them with bounded concurrency, writes the results back in
 * batches (claims and write-backs overlapping the Amazon calls, see runPipeline), and keeps
 * going until nothing is due or time runs low.
 * Every claimed token is written back or released before it returns, even when it throws.
 */
export async function runTokenRefresh(deps: TokenRefreshDeps): Promise<TokenRefreshSummary> {
  const s = { ...DEFAULT_SETTINGS, ...deps.settings };
  const started = Date.now();
  const callsBefore = deps.db.callCounts().total;
  const owner = randomUUID();
  /** Failures and 429s by region, for the per-region graphs. */
  const regional: Record<string, RegionalCounts> = {};
  const totals = {
    claimed: 0,
    refreshed: 0,
    failed: 0,
    reauthRequired: 0,
    rateLimited: 0,
    released: 0,
    rejectedByDatabase: 0,
    notWritten: 0,
    batches: 0,
  };
  const context: RefreshContext = {
    ...jobRunContext(deps, s),
    stop: { clientErrorStreak: new Set() },
    leaseEndsAt: new WeakMap(),
    toSend: new Map(),
  };
  const { now, pausedUntil } = context;

  // Endpoints a previous invocation was told to leave alone, and those this one is told to;
  // the limiters also take over the rate earlier 429s cut them to.
  for (const [region, until] of await restoreEndpointState(deps.db, 'lwa', deps.lwa.limiters)) {
    pausedUntil.set(region, until);
  }
  const pausedRegions = () => [...pausedUntil].filter(([, until]) => until > now().getTime()).map(([region]) => region);

  try {
    const run = await runPipeline<ClaimedToken, Outcome>({
      concurrency: s.concurrency,
      mayClaim: () => deps.remainingTimeMs() > s.reserveMs,
      claim: async () => {
        // The lease runs from the statement's start at the latest: counted from before it.
        const leaseEnds = now().getTime() + JOB_TIMING.tokenRefresh.leaseSeconds * 1000;
        const tokens = await claimDueTokens(deps.db, {
          owner,
          windowSeconds: s.windowSeconds,
          leaseSeconds: JOB_TIMING.tokenRefresh.leaseSeconds,
          limit: s.batchSize,
          pausedRegions: pausedRegions(),
          usedWithinSeconds: s.usedWithinSeconds,
          given: s.given,
        });
        for (const token of tokens) {
          context.leaseEndsAt.set(token, leaseEnds);
          context.toSend.set(token.region, (context.toSend.get(token.region) ?? 0) + 1);
        }
        // Reservations sized to what this run will send (issue 25), not the budget's horizon.
        for (const region of new Set(tokens.map((t) => t.region)))
          deps.lwa.limiters?.for('lwa', region).expectRequests(context.toSend.get(region));
        return tokens;
      },
      process: (token) =>
        refreshOneToken(context, token).finally(() =>
          context.toSend.set(token.region, Math.max(0, (context.toSend.get(token.region) ?? 1) - 1)),
        ),
      unprocessed: (token) => ({ kind: 'released', token }),
      // Transient database errors are retried and the set split (writeResiliently); a result the
      // database refuses as data is isolated by saveResults itself and its lease given back.
      writeBack: async (outcomes) => {
        // A refused result is counted as what was written in its place: its lease given back.
        const givenBack = new Set<string>();
        const { written, unwritten } = await writeResiliently(outcomes, {
          write: async (set) => {
            const { rejected } = await saveResults(deps.db, owner, set);
            totals.rejectedByDatabase += rejected.length;
            for (const r of rejected) {
              givenBack.add(r.token.id);
              deps.logger.error('Token refresh result refused by the database; its lease was given back', {
                tokenId: r.token.id,
                userId: r.token.userId,
                error: r.error,
              });
            }
          },
          waitBudgetMs: () => deps.remainingTimeMs() - 1000,
          describe: (o) => ({ tokenId: resultToken(o).id, userId: resultToken(o).userId, outcome: o.kind }),
          logger: deps.logger,
          random: context.random,
        });
        tallyTokenOutcomes(
          deps,
          totals,
          written.map((o) => (givenBack.has(resultToken(o).id) ? { kind: 'released', token: resultToken(o) } : o)),
          regional,
        );
        totals.notWritten += unwritten.length;
      },
      flushAfterMs: s.flushAfterMs,
      shouldStop: () => context.stop.fatal !== undefined,
      onBatchWritten: (_outcomes, ms) => {
        deps.metrics.addMetric(METRIC_NAMES.batchDurationMs, 'Milliseconds', ms);
      },
    });
    totals.claimed = run.claimed;
    totals.batches = run.batches;
  } finally {
    // The shared budget's slots this run reserved and will not use go back (one call per budget).
    await deps.lwa.limiters?.releaseUnused();
    saveLimiterRates(deps.lwa.limiters, 'lwa', context.usage);
    await recordRateLimitUsage(deps.db, context.usage.drain()).catch((error) =>
      deps.logger.warn('Could not record rate-limit usage', { error: describeError(error) }),
    );
  }
  if (context.stop.fatal) throw context.stop.fatal;

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
  addRegionalCounts(deps.metrics, regional);
  deps.logger.info('Token refresh run finished', { ...summary });
  return summary;
}

/** Adds a written batch's outcomes to the run's totals and logs its failures. */
function tallyTokenOutcomes(
  deps: TokenRefreshDeps,
  totals: { refreshed: number; released: number; failed: number; rateLimited: number; reauthRequired: number },
  outcomes: readonly Outcome[],
  regional: Record<string, RegionalCounts>,
): void {
  for (const o of outcomes) {
    if (o.kind === 'success') totals.refreshed += 1;
    else if (o.kind === 'released') totals.released += 1;
    else if (o.result.countsAsFailure) {
      totals.failed += 1;
      countInRegion(regional, METRIC_NAMES.refreshFailures, o.result.token.region);
    } else {
      totals.rateLimited += 1;
      countInRegion(regional, METRIC_NAMES.rateLimitHits, o.result.token.region);
    }
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

/** What a dry run (`{"dryRun": true}`) reports instead of running. */
export interface TokenRefreshPreview {
  readonly job: 'token-refresh';
  readonly dryRun: true;
  /** Tokens a run started now would claim and refresh (used within the window, when one is set). */
  readonly due: number;
  /** Due tokens of regions a Retry-After still pauses (left for a later run). */
  readonly pausedByRateLimit: number;
  readonly pausedRegions: readonly AmazonRegion[];
  readonly databaseCalls: number;
}

/**
 * A dry run of the token refresh: reads what a run would start on (due tokens, paused
 * regions) and returns it. Claims nothing, writes nothing, calls no Amazon.
 */
export async function previewTokenRefresh(
  deps: Pick<TokenRefreshDeps, 'db' | 'settings' | 'logger' | 'now'>,
): Promise<TokenRefreshPreview> {
  const windowSeconds = deps.settings?.windowSeconds ?? TOKEN_REFRESH_WINDOW_SECONDS;
  const now = (deps.now ?? (() => new Date()))().getTime();
  const callsBefore = deps.db.callCounts().total;
  const pausedRegions = [...(await readEndpointPauses(deps.db, 'lwa-token:'))]
    .filter(([, until]) => until.getTime() > now)
    .map(([endpoint]) => endpoint.split(':')[1] as AmazonRegion);
  const counts = await countDueTokens(deps.db, {
    windowSeconds,
    pausedRegions,
    usedWithinSeconds: deps.settings?.usedWithinSeconds,
  });
  const preview: TokenRefreshPreview = {
    job: 'token-refresh',
    dryRun: true,
    due: counts.due,
    pausedByRateLimit: counts.paused,
    pausedRegions,
    databaseCalls: deps.db.callCounts().total - callsBefore,
  };
  deps.logger.info('Token refresh dry run: nothing claimed, written or sent to Amazon', { ...preview });
  return preview;
}

/**
 * Refreshes one claimed token and says what to write back. Never throws: every Amazon
 * failure becomes a failure outcome (backoff, count, refresh off where it must stop).
 */
async function refreshOneToken(c: RefreshContext, token: ClaimedToken): Promise<Outcome> {
  const { deps, now } = c;
  // No idle waiting: a token whose region is paused (the pause its limiter really applies, or
  // the one an earlier run left) past what it may wait is given back at once, and so is one
  // whose lease would end before its call is done: a run never calls Amazon for a token whose
  // lease it no longer holds.
  const at = now().getTime();
  const maxWaitMs = Math.min(
    c.waitBudgetMs(),
    c.settings.maxItemWaitMs,
    (c.leaseEndsAt.get(token) ?? Infinity) - at - LEASE_CALL_RESERVE_MS,
  );
  const pausedMs =
    Math.max(c.pausedUntil.get(token.region) ?? 0, limiterPausedUntil(deps.lwa.limiters, 'lwa', token.region)) - at;
  if (c.stop.fatal || maxWaitMs < 0) return { kind: 'released', token };
  if (pausedMs > maxWaitMs) {
    holdRegion(c, token.region, at + pausedMs);
    return { kind: 'released', token };
  }
  const endpoint = endpointKey('lwa', token.region);
  let refreshToken: string;
  try {
    refreshToken = await deps.cipher.decrypt(token.storedRefreshToken, oauthTokenBinding(token, 'refresh_token'));
  } catch (error) {
    // Cannot be refreshed by anyone until the web app stores it again: same as revoked.
    return unreadableTokenOutcome(token, describeError(error), c.settings, { now: now(), random: c.random });
  }
  const requestedAt = now();
  try {
    const tokens = await deps.lwa.refresh({ itemId: token.id, region: token.region, refreshToken, maxWaitMs });
    c.usage.request(endpoint);
    c.stop.clientErrorStreak.clear();
    const newRefresh = tokens.refreshToken ?? refreshToken;
    return {
      kind: 'success',
      result: {
        token,
        accessToken: deps.cipher.encrypt(tokens.accessToken, oauthTokenBinding(token, 'access_token')),
        // Amazon's new refresh token; else the one we have, rewritten only if it is not yet
        // enc:v2 under the current key (plaintext, enc:v1, an older key).
        refreshToken:
          tokens.refreshToken !== undefined || !deps.cipher.isCurrent(token.storedRefreshToken)
            ? deps.cipher.encrypt(newRefresh, oauthTokenBinding(token, 'refresh_token'))
            : token.storedRefreshToken,
        expiresAt: new Date(requestedAt.getTime() + tokens.expiresInSeconds * 1000),
      },
    };
  } catch (error) {
    // The limiter (a pause, the reduced rate) or a retry would have waited longer than the token
    // may: given back, and the region left alone until its turn would have come.
    if (error instanceof DeadlineExceededError) {
      holdRegion(c, token.region, now().getTime() + error.waitMs);
      return { kind: 'released', token };
    }
    c.usage.request(endpoint);
    return failedRefresh(c, token, classifyAmazonError(error));
  }
}

/** The run leaves `region` alone until `until` (epoch ms): its claims skip it, its tokens are given back. */
function holdRegion(c: RefreshContext, region: AmazonRegion, until: number): void {
  c.pausedUntil.set(region, Math.max(until, c.pausedUntil.get(region) ?? 0));
}

/**
 * The outcome of a refresh Amazon refused or did not answer properly: the policy shared with
 * the on-demand route (outcome.ts); what is the run's own is the client-error streak and the
 * region's pause after a 429.
 */
function failedRefresh(c: RefreshContext, token: ClaimedToken, f: AmazonFailure): Outcome {
  const { now } = c;
  if (f.kind === 'permanent' && CLIENT_ERRORS.has(f.code)) {
    // Backed off like any failure; the run stops only when several tokens in a row get it.
    c.stop.clientErrorStreak.add(token.id);
    if (c.stop.clientErrorStreak.size >= CLIENT_ERROR_STOP_AFTER)
      c.stop.fatal ??= new ClientCredentialsError(f.code, c.stop.clientErrorStreak.size);
  } else {
    c.stop.clientErrorStreak.clear();
  }
  if (f.kind === 'rate_limited') {
    // The endpoint resumes after the pause the limiter applied (Retry-After, doubled for each
    // 429 in a row) for the other tokens; this one waits for a later run (at least the base
    // retry delay), so one run never calls a token twice. The pause recorded is the real one.
    const at = now().getTime();
    const until = Math.max(
      at + f.retryAfterSeconds * 1000,
      limiterPausedUntil(c.deps.lwa.limiters, 'lwa', token.region),
    );
    c.usage.limitHit(endpointKey('lwa', token.region), null, Math.ceil((until - at) / 1000), now());
    holdRegion(c, token.region, until);
  }
  return refreshFailureOutcome(token, f, c.settings, { now: now(), random: c.random });
}
