import { randomUUID } from 'node:crypto';
import {
  addCounts,
  addRegionalCounts,
  countInRegion,
  describeError,
  jobRunContext,
  RegionalCounts,
} from '../shared/jobs/runtime';
import { runPipeline } from '../shared/jobs/pipeline';
import { METRIC_NAMES } from '../shared/jobs/metrics';
import { JOB_TIMING } from '../shared/jobs/timing';
import { endpointKey, recordRateLimitUsage } from '../shared/amazon/usage-store';
import { DeadlineExceededError } from '../shared/backoff';
import { writeResiliently } from '../shared/jobs/write-back';
import {
  LEASE_CALL_RESERVE_MS,
  limiterPausedUntil,
  restoreEndpointState,
  saveLimiterRates,
} from '../shared/jobs/throttling';
import type { GivenIds } from '../shared/jobs/fan-out';
import { classifyAmazonError } from '../shared/amazon/failure';
import { AMAZON_REGIONS, type AmazonRegion } from '../shared/amazon/regions';
import {
  claimConnections,
  ClaimedConnection,
  flagAccountsNeedingReauth,
  REAUTH_MESSAGE,
  saveOutcomes,
  SyncType,
  ConnectionSyncOutcome,
} from './store';
import { accessTokenFor } from './access-token';
import { accountsFromProfiles } from './profiles';
import { type AccountSyncDeps, DEFAULT_SETTINGS, failed, holdRegion, retryAt, type SyncContext } from './run-context';

/** What to sync: every due connection (the schedule), or one user's connections on demand. */
export type AccountSyncRequest =
  | {
      readonly syncType: 'scheduled';
      /** Only these connections (a fan-out message), on the same conditions. @default - the next due ones */
      readonly given?: GivenIds;
    }
  | {
      readonly syncType: 'manual' | 'webhook';
      readonly userId: string;
      /** Only the user's connections in these regions. @default - all of them */
      readonly regions?: readonly AmazonRegion[];
    };

/**
 * A run's counts. The unit of work is a connection (one user in one region): a user connected
 * in NA and EU who is synced counts twice.
 */
export interface AccountSyncSummary {
  readonly job: 'account-sync';
  readonly syncType: SyncType;
  readonly connectionsClaimed: number;
  readonly connectionsSynced: number;
  readonly connectionsFailed: number;
  readonly connectionsReleased: number;
  /** Connections whose outcome the database refused even on its own (counted as the failure written instead, or as released if that was refused too). */
  readonly connectionsRejectedByDatabase: number;
  /** Outcomes that could not be written back (logged; their lease expires and a later run retries). */
  readonly connectionsNotWritten: number;
  readonly accountsSynced: number;
  /** Accounts whose sync failed (every account of a failed connection, at least one per connection). */
  readonly accountsFailed: number;
  /** Accounts Amazon no longer returns (kept, set inactive). */
  readonly accountsMissing: number;
  readonly reauthFlagged: number;
  readonly rateLimited: number;
  /** Access tokens this run refreshed on demand (Login with Amazon calls): claimed connections whose token was about to expire. */
  readonly tokensRefreshed: number;
  readonly batches: number;
  readonly databaseCalls: number;
  readonly durationMs: number;
}

/**
 * One run of the account sync: claims due connections in batches (a lease per connection, so
 * overlapping invocations never sync one connection twice; the lease outlasts the function's
 * timeout, see JOB_TIMING), lists each connection's profiles with bounded concurrency, and writes
 * every batch back (accounts upserted, history rows closed, schedules and retries set). Keeps
 * going until nothing is due or time runs low. Every claimed connection is written back or
 * released before it returns.
 */
export async function runAccountSync(
  deps: AccountSyncDeps,
  request: AccountSyncRequest = { syncType: 'scheduled' },
): Promise<AccountSyncSummary> {
  const s = { ...DEFAULT_SETTINGS, ...deps.settings };
  const context: SyncContext = {
    ...jobRunContext(deps, s),
    leaseEndsAt: new WeakMap(),
    tokensHeldUntil: new Map(),
    tokensRefreshed: 0,
  };
  const { now, pausedUntil } = context;
  const started = Date.now();
  const callsBefore = deps.db.callCounts().total;
  const owner = randomUUID();
  const totals = {
    connectionsClaimed: 0,
    connectionsSynced: 0,
    connectionsFailed: 0,
    connectionsReleased: 0,
    connectionsRejectedByDatabase: 0,
    connectionsNotWritten: 0,
    accountsSynced: 0,
    accountsFailed: 0,
    accountsMissing: 0,
    rateLimited: 0,
    batches: 0,
  };
  const single = request.syncType !== 'scheduled' ? request.userId : undefined;
  /** Failed accounts and 429s by region, for the per-region graphs. */
  const regional: Record<string, RegionalCounts> = {};

  const given = request.syncType === 'scheduled' ? request.given : undefined;
  // (With fan-out the dispatcher flags them, once per tick.)
  const reauthFlagged = single || given ? 0 : await flagAccountsNeedingReauth(deps.db, REAUTH_MESSAGE);
  // Regions whose Ads endpoint an earlier invocation was told to leave alone; the limiters
  // also take over the rate earlier 429s cut them to.
  for (const [region, until] of await restoreEndpointState(deps.db, 'ads', deps.ads.limiters)) {
    pausedUntil.set(region, until);
  }
  let claims = 0;
  try {
    const run = await runPipeline<ClaimedConnection, ConnectionSyncOutcome>({
      concurrency: s.concurrency,
      // A manual or webhook request is one claim: the user's connections, one per region.
      mayClaim: () => deps.remainingTimeMs() > s.reserveMs && !(single && claims > 0),
      claim: async () => {
        claims += 1;
        // The lease runs from the statement's start at the latest: counted from before it.
        const leaseEnds = now().getTime() + JOB_TIMING.accountSync.leaseSeconds * 1000;
        const connections = await claimConnections(deps.db, {
          owner,
          leaseSeconds: JOB_TIMING.accountSync.leaseSeconds,
          limit: single ? AMAZON_REGIONS.length : s.batchSize,
          syncType: request.syncType,
          userId: single,
          given,
          minTokenValiditySeconds: s.minTokenValiditySeconds,
          // Regions paused (the Ads budget's real pause, or this run's hold) past what one
          // connection may wait: their users would only be given back. (A user asked for by
          // name is claimed anyway, and given back if need be; in the regions asked for only,
          // when the request names some: the others are left alone.)
          pausedRegions: single
            ? AMAZON_REGIONS.filter(
                (r) => request.syncType !== 'scheduled' && request.regions && !request.regions.includes(r),
              )
            : [...pausedUntil, ...context.tokensHeldUntil]
                .filter(([, until]) => until - now().getTime() > s.maxItemWaitMs)
                .map(([region]) => region),
        });
        for (const connection of connections) context.leaseEndsAt.set(connection, leaseEnds);
        return connections;
      },
      process: (connection) => syncOneConnection(context, connection),
      unprocessed: (connection) => ({ kind: 'released', connection }),
      // Transient database errors are retried and the set split (writeResiliently); an outcome
      // the database refuses as data is isolated by saveOutcomes and recorded as a failure.
      writeBack: async (outcomes) => {
        // A refused outcome is counted as what was written in its place (a failure, or a release).
        const recordedAs = new Map<ClaimedConnection, ConnectionSyncOutcome>();
        const { written, unwritten } = await writeResiliently(outcomes, {
          write: async (set) => {
            const { accountsMissing, rejected } = await saveOutcomes(deps.db, owner, set, {
              onRefused: (outcome, error) => refusedByDatabase(context, outcome.connection, error),
            });
            totals.accountsMissing += accountsMissing;
            totals.connectionsRejectedByDatabase += rejected.length;
            for (const r of rejected) {
              recordedAs.set(r.connection, r.recordedAs);
              deps.logger.error('Account sync outcome refused by the database; recorded as a failure', {
                userId: r.connection.userId,
                error: r.error,
              });
            }
          },
          waitBudgetMs: () => deps.remainingTimeMs() - 1000,
          describe: (o) => ({ userId: o.connection.userId, historyId: o.connection.historyId, outcome: o.kind }),
          logger: deps.logger,
          random: context.random,
        });
        tallyConnectionOutcomes(
          deps,
          totals,
          written.map((o) => recordedAs.get(o.connection) ?? o),
          regional,
        );
        totals.connectionsNotWritten += unwritten.length;
      },
      flushAfterMs: s.flushAfterMs,
      onBatchWritten: (_outcomes, ms) => {
        deps.metrics.addMetric(METRIC_NAMES.batchDurationMs, 'Milliseconds', ms);
      },
    });
    totals.connectionsClaimed = run.claimed;
    totals.batches = run.batches;
  } finally {
    // The shared budget's slots this run reserved and will not use go back (one call per budget).
    await deps.ads.limiters?.releaseUnused();
    await deps.lwa.limiters?.releaseUnused();
    saveLimiterRates(deps.ads.limiters, 'ads', context.usage);
    await recordRateLimitUsage(deps.db, context.usage.drain()).catch((error) =>
      deps.logger.warn('Could not record rate-limit usage', { error: describeError(error) }),
    );
  }

  const summary: AccountSyncSummary = {
    job: 'account-sync',
    syncType: request.syncType,
    ...totals,
    reauthFlagged,
    tokensRefreshed: context.tokensRefreshed,
    databaseCalls: deps.db.callCounts().total - callsBefore,
    durationMs: Date.now() - started,
  };
  addCounts(deps.metrics, {
    [METRIC_NAMES.accountsSynced]: summary.accountsSynced,
    [METRIC_NAMES.accountsFailed]: summary.accountsFailed,
    [METRIC_NAMES.rateLimitHits]: summary.rateLimited,
    [METRIC_NAMES.reauthRequired]: summary.reauthFlagged,
    [METRIC_NAMES.dataApiCalls]: summary.databaseCalls,
  });
  addRegionalCounts(deps.metrics, regional);
  deps.logger.info('Account sync run finished', { ...summary });
  return summary;
}

/** Adds a written batch's outcomes to the run's totals and logs its failures. */
function tallyConnectionOutcomes(
  deps: AccountSyncDeps,
  totals: {
    connectionsSynced: number;
    accountsSynced: number;
    connectionsReleased: number;
    connectionsFailed: number;
    accountsFailed: number;
    rateLimited: number;
  },
  outcomes: readonly ConnectionSyncOutcome[],
  regional: Record<string, RegionalCounts>,
): void {
  for (const o of outcomes) {
    if (o.kind === 'success') {
      totals.connectionsSynced += 1;
      totals.accountsSynced += o.accounts.length;
    } else if (o.kind === 'released') {
      totals.connectionsReleased += 1;
    } else {
      totals.connectionsFailed += 1;
      totals.accountsFailed += Math.max(1, o.connection.accountCount);
      countInRegion(regional, METRIC_NAMES.accountsFailed, o.connection.region, Math.max(1, o.connection.accountCount));
      if (o.errorDetails.class === 'rate_limited') {
        totals.rateLimited += 1;
        countInRegion(regional, METRIC_NAMES.rateLimitHits, o.connection.region);
      }
      deps.logger.warn('Account sync failed', {
        userId: o.connection.userId,
        region: o.connection.region,
        error: o.error,
      });
    }
  }
}

/** The failure recorded for a connection whose outcome the database refused. */
function refusedByDatabase(c: SyncContext, connection: ClaimedConnection, error: string): ConnectionSyncOutcome {
  return failed({
    connection,
    error: `write_back: the database refused this user's outcome (${error})`,
    errorDetails: { class: 'write_back', reason: error },
    nextAttemptAt: retryAt(c, connection.retryCount + 1),
  });
}

/**
 * Lists one claimed connection's profiles (its user's in its region) and says what to write back.
 * Never throws. No idle waiting: a connection whose region is paused (the pause the Ads limiter
 * and the shared budget really apply, or one an earlier run left) past what it may wait is given
 * back at once, and so is one whose sync lease would end before its call is done: a run never
 * calls Amazon for a connection whose lease it no longer holds.
 */
async function syncOneConnection(c: SyncContext, connection: ClaimedConnection): Promise<ConnectionSyncOutcome> {
  const { deps, settings: s, now, random, usage } = c;
  const released: ConnectionSyncOutcome = { kind: 'released', connection };
  const { region } = connection;
  const at = now().getTime();
  const notAfter =
    at +
    Math.min(
      c.waitBudgetMs(),
      s.maxItemWaitMs,
      (c.leaseEndsAt.get(connection) ?? Infinity) - at - LEASE_CALL_RESERVE_MS,
    );
  if (notAfter < at) return released;
  const pausedUntil = Math.max(c.pausedUntil.get(region) ?? 0, limiterPausedUntil(deps.ads.limiters, 'ads', region));
  if (pausedUntil > notAfter) {
    holdRegion(c.pausedUntil, region, pausedUntil);
    return released;
  }
  const token = await accessTokenFor(c, connection, notAfter);
  if (token.kind !== 'token') return token.outcome;
  const failures = connection.retryCount + 1;
  const endpoint = endpointKey('ads', region);
  // Requests are counted per endpoint; a user gets a row of their own only when Amazon
  // throttled a call made for them (one row per synced user would make this write grow
  // with every user: megabytes at 100,000 users, past the Data API's request limit).
  try {
    const maxWaitMs = notAfter - now().getTime();
    if (maxWaitMs < 0) return released; // taking the token took the connection's time
    const profiles = await deps.ads.listProfiles({
      itemId: connection.userId,
      region,
      accessToken: token.accessToken,
      maxWaitMs,
    });
    usage.request(endpoint);
    const { accounts, excludedProfileIds } = accountsFromProfiles(profiles, region);
    const jitter = 1 + (random() - 0.5) / 10; // ±5 %, so a cohort does not stay in lock-step
    return {
      kind: 'success',
      connection,
      accounts,
      excludedProfileIds,
      nextSyncAt: new Date(now().getTime() + s.syncIntervalSeconds * 1000 * jitter),
    };
  } catch (error) {
    // The limiter (a pause, the reduced rate) or a retry would have waited longer than the
    // connection may: given back, and the region left alone until its turn would have come.
    if (error instanceof DeadlineExceededError) {
      holdRegion(c.pausedUntil, region, now().getTime() + error.waitMs);
      return released;
    }
    usage.request(endpoint);
    const f = classifyAmazonError(error);
    if (f.kind === 'rate_limited') {
      // The region resumes after the pause the limiter applied (Retry-After, doubled for each
      // 429 in a row); the pause recorded is that one.
      const hitAt = now().getTime();
      const until = Math.max(hitAt + f.retryAfterSeconds * 1000, limiterPausedUntil(deps.ads.limiters, 'ads', region));
      const pauseSeconds = Math.ceil((until - hitAt) / 1000);
      holdRegion(c.pausedUntil, region, until);
      usage.limitHit(endpoint, null, pauseSeconds, now());
      usage.request(endpoint, connection.userId);
      usage.limitHit(endpoint, connection.userId, f.retryAfterSeconds, now());
      return failed({
        connection,
        error: `rate_limited: Amazon Ads answered 429, retry after ${f.retryAfterSeconds} s`,
        errorDetails: { class: 'rate_limited', retryAfterSeconds: f.retryAfterSeconds },
        nextAttemptAt: retryAt(c, failures, pauseSeconds),
      });
    }
    const reason = f.kind === 'permanent' ? f.code : f.reason;
    return failed({
      connection,
      error: `${f.kind}: ${reason}`,
      errorDetails: { class: f.kind, reason },
      nextAttemptAt: retryAt(c, failures),
    });
  }
}
