import { randomUUID } from 'node:crypto';
import type { Database } from '../shared/db/port';
import {
  addCounts,
  addRegionalCounts,
  countInRegion,
  describeError,
  JobRunContext,
  jobRunContext,
  JobRuntime,
  nextRetryAt,
  RegionalCounts,
} from '../shared/jobs/runtime';
import { runPipeline } from '../shared/jobs/pipeline';
import { METRIC_NAMES } from '../shared/jobs/metrics';
import { JOB_TIMING } from '../shared/jobs/timing';
import { endpointKey, recordRateLimitUsage } from '../shared/amazon/usage-store';
import { DeadlineExceededError, sleep as defaultSleep } from '../shared/backoff';
import type { RateLimiterRegistry } from '../shared/amazon/rate-limiter';
import { writeResiliently } from '../shared/jobs/write-back';
import {
  LEASE_CALL_RESERVE_MS,
  limiterPausedUntil,
  MAX_ITEM_WAIT_MS,
  restoreEndpointState,
  saveLimiterRates,
} from '../shared/jobs/throttling';
import { oauthTokenBinding, type TokenCipher } from '../shared/token-crypto';
import type { TokenRefresher } from '../token-refresh/core';
import { takeAccessToken } from '../token-refresh/on-demand';
import { REFRESH_OUTCOME_DEFAULTS } from '../token-refresh/outcome';
import type { GivenIds } from '../shared/jobs/fan-out';
import { ATTRIBUTION_SUB_TYPE, type AdsProfile } from '../shared/amazon/schemas';
import { classifyAmazonError } from '../shared/amazon/failure';
import { AMAZON_REGIONS, type AmazonRegion } from '../shared/amazon/regions';
import {
  AccountRecord,
  claimConnections,
  ClaimedConnection,
  countDueConnections,
  flagAccountsNeedingReauth,
  MIN_TOKEN_VALIDITY_SECONDS,
  REAUTH_MESSAGE,
  saveOutcomes,
  SyncType,
  ConnectionSyncOutcome,
} from './store';

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
 * The profiles to store as accounts, and the ids of those that are not advertising accounts
 * (Amazon Attribution, see ATTRIBUTION_SUB_TYPE): those are never stored, and any stored
 * earlier are set inactive. A profile listed twice is stored once (the last one wins).
 */
export function accountsFromProfiles(
  profiles: readonly AdsProfile[],
  region: AmazonRegion,
): { accounts: AccountRecord[]; excludedProfileIds: string[] } {
  const isAttribution = (p: AdsProfile) => p.accountInfo.subType === ATTRIBUTION_SUB_TYPE;
  const accounts = dedupe(profiles.filter((p) => !isAttribution(p)).map((p) => toAccountRecord(p, region)));
  const kept = new Set(accounts.map((a) => a.amazonAccountId));
  const excludedProfileIds = [
    ...new Set(profiles.filter((p) => isAttribution(p) && !kept.has(p.profileId)).map((p) => p.profileId)),
  ];
  return { accounts, excludedProfileIds };
}

/** Maps a profile to its stored form: `amazon_account_id` and the metadata keys docs/architecture.md fixes. */
export function toAccountRecord(profile: AdsProfile, region: AmazonRegion): AccountRecord {
  const info = profile.accountInfo;
  return {
    amazonAccountId: String(profile.profileId),
    metadata: {
      marketplaceStringId: info.marketplaceStringId,
      countryCode: profile.countryCode,
      currencyCode: profile.currencyCode,
      timezone: profile.timezone,
      accountType: info.type,
      accountSubType: info.subType ?? null,
      accountId: info.id,
      accountName: info.name,
      validPaymentMethod: info.validPaymentMethod,
      dailyBudget: profile.dailyBudget ?? null,
      region,
    },
  };
}

/**
 * The refresh lease the sync takes for a token on demand: it outlasts the item's wait (at most
 * MAX_ITEM_WAIT_MS), Login with Amazon's answer (10 s timeout) and the write-back.
 */
export const ON_DEMAND_LEASE_SECONDS = 60;

const DEFAULT_SETTINGS = {
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

/** What syncing one connection needs of its run (see {@link syncOneConnection}). */
interface SyncContext extends JobRunContext<AccountSyncDeps, typeof DEFAULT_SETTINGS> {
  /** When each claimed connection's sync lease ends (this run's clock, counted from before its claim). */
  readonly leaseEndsAt: WeakMap<ClaimedConnection, number>;
  /** Per region: until when this run leaves connections needing a new token alone (Login with Amazon's budget or pause). */
  readonly tokensHeldUntil: Map<AmazonRegion, number>;
  /** Tokens refreshed on demand by this run. */
  tokensRefreshed: number;
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

/** What a dry run (`{"dryRun": true}`) reports instead of running. */
export interface AccountSyncPreview {
  readonly job: 'account-sync';
  readonly dryRun: true;
  /** Connections a scheduled run started now would claim and sync. */
  readonly due: number;
  /** Due connections whose access token expires too soon: they wait for the token refresh. */
  readonly waitingForTokenRefresh: number;
  /** Accounts a run would flag for re-authorisation (their user's token is off). */
  readonly accountsToFlagForReauth: number;
  readonly databaseCalls: number;
}

/**
 * A dry run of the scheduled account sync: reads what a run would start on and returns it.
 * Claims nothing, writes nothing (no history row either), calls no Amazon.
 */
export async function previewAccountSync(
  deps: Pick<AccountSyncDeps, 'db' | 'settings' | 'logger'>,
): Promise<AccountSyncPreview> {
  const callsBefore = deps.db.callCounts().total;
  const counts = await countDueConnections(deps.db, {
    minTokenValiditySeconds: deps.settings?.minTokenValiditySeconds ?? 120,
  });
  const preview: AccountSyncPreview = {
    job: 'account-sync',
    dryRun: true,
    due: counts.due,
    waitingForTokenRefresh: counts.waitingForToken,
    accountsToFlagForReauth: counts.needReauth,
    databaseCalls: deps.db.callCounts().total - callsBefore,
  };
  deps.logger.info('Account sync dry run: nothing claimed, written or sent to Amazon', { ...preview });
  return preview;
}

function retryAt(c: SyncContext, failures: number, atLeastSeconds = 0): Date {
  return nextRetryAt(c.now(), failures, {
    baseSeconds: c.settings.retryBaseSeconds,
    maxSeconds: c.settings.retryMaxSeconds,
    random: c.random,
    atLeastSeconds,
  });
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

/** The run leaves `region` alone until `until` (epoch ms): its claims skip it, its connections are given back. */
function holdRegion(held: Map<AmazonRegion, number>, region: AmazonRegion, until: number): void {
  held.set(region, Math.max(until, held.get(region) ?? 0));
}

/**
 * The connection's access token: the stored one while it has more than
 * `minTokenValiditySeconds` left (no database call); else taken on demand, single-flight with
 * the token route and the token refresh (lambda/token-refresh/on-demand.ts): refreshed once
 * under the connection's refresh lease, the refresh's outcome policy applied once, without
 * recording a use (so an idle connection stays out of the proactive refresh's window and is
 * refreshed once per sync cycle, when the sync needs its token). What cannot be had by
 * `notAfter` is given back.
 */
async function accessTokenFor(
  c: SyncContext,
  connection: ClaimedConnection,
  notAfter: number,
): Promise<{ kind: 'token'; accessToken: string } | { kind: 'none'; outcome: ConnectionSyncOutcome }> {
  const { deps, settings: s, now } = c;
  const failures = connection.retryCount + 1;
  const unreadable = (reason: string) => ({
    kind: 'none' as const,
    outcome: failed({
      connection,
      error: `Stored access token is unreadable (${reason})`,
      errorDetails: { class: 'token', reason },
      nextAttemptAt: retryAt(c, failures),
    }),
  });
  if (connection.expiresAt.getTime() - now().getTime() > s.minTokenValiditySeconds * 1000) {
    try {
      return {
        kind: 'token',
        accessToken: await deps.cipher.decrypt(
          connection.storedAccessToken,
          oauthTokenBinding(connection, 'access_token'),
        ),
      };
    } catch (error) {
      return unreadable(describeError(error));
    }
  }
  const released = { kind: 'none' as const, outcome: { kind: 'released' as const, connection } };
  const { region } = connection;
  if ((c.tokensHeldUntil.get(region) ?? 0) > notAfter) return released;
  const taken = await takeAccessToken(
    {
      db: deps.db,
      lwa: deps.lwa,
      cipher: deps.cipher,
      logger: deps.logger,
      now: () => now().getTime(),
      sleep: deps.sleep ?? defaultSleep,
      random: c.random,
    },
    {
      ...REFRESH_OUTCOME_DEFAULTS,
      minRemainingSeconds: s.minTokenValiditySeconds,
      leaseSeconds: ON_DEMAND_LEASE_SECONDS,
      pollIntervalMs: 250,
      usableSeconds: 60,
    },
    { userId: connection.userId, region, recordUse: false, deadline: notAfter },
  );
  switch (taken.kind) {
    case 'token':
      if (taken.by === 'refreshed') c.tokensRefreshed += 1;
      return { kind: 'token', accessToken: taken.accessToken };
    case 'unreadable':
      return unreadable(taken.error);
    case 'reauth':
      // Refresh was turned off (the grant is gone): its write-back flagged the accounts.
      return {
        kind: 'none',
        outcome: failed({
          connection,
          error: REAUTH_MESSAGE,
          errorDetails: { class: 'reauth' },
          nextAttemptAt: retryAt(c, failures),
        }),
      };
    case 'not-found':
      // Disconnected meanwhile: nothing to sync (its write-back writes nothing for it).
      return released;
    case 'unavailable':
      if (taken.reason === 'failed' && (taken.failure?.kind === 'transient' || taken.failure?.kind === 'malformed'))
        return {
          kind: 'none',
          outcome: failed({
            connection,
            error: `token: the access token could not be refreshed (${taken.failure.kind}: ${taken.failure.reason})`,
            errorDetails: { class: 'token', reason: `${taken.failure.kind}: ${taken.failure.reason}` },
            nextAttemptAt: retryAt(c, failures, taken.retryAfterSeconds),
          }),
        };
      // Login with Amazon's pace (a 429, the budget), a backoff, or another caller still
      // refreshing: given back, the region's tokens left alone for a while in this run.
      if (taken.reason === 'budget' || taken.failure?.kind === 'rate_limited')
        holdRegion(c.tokensHeldUntil, region, now().getTime() + taken.retryAfterSeconds * 1000);
      return released;
  }
}

function failed(f: {
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

/** Amazon should not list a profile twice; if it does, the last one wins (one row per profile). */
function dedupe(accounts: AccountRecord[]): AccountRecord[] {
  return [...new Map(accounts.map((a) => [a.amazonAccountId, a])).values()];
}
