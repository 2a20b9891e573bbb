import { Database, sqlJson, sqlUuid } from '../shared/db/port';
import type { AmazonRegion } from '../shared/amazon/regions';
import { CLAIM_TOKEN_CHARS } from '../shared/db/limits';
import { databaseErrorSummary, writeInHalves } from '../shared/jobs/write-in-halves';
import type { GivenIds } from '../shared/jobs/fan-out';

export type SyncType = 'scheduled' | 'manual' | 'webhook';

/** `error_details.reason` of a history row closed because the run that opened it died. */
export const ABANDONED_ATTEMPT_REASON =
  'abandoned: the run that started this attempt ended without recording its outcome';

/**
 * A connection (one oauth_tokens row: a user in one region) claimed for one sync attempt, with
 * the history row opened for it. Everything the attempt writes stays within its region.
 */
export interface ClaimedUser {
  /** The connection: oauth_tokens.id. */
  readonly tokenId: string;
  /**
   * The connection's `connection_generation` when claimed: storing the connection again
   * (reconnecting) changes it, and a write-back for another generation writes nothing.
   */
  readonly generation: number;
  readonly userId: string;
  readonly historyId: string;
  /** The stored access token (`enc:v1:…` or legacy plaintext). */
  readonly storedAccessToken: string;
  readonly region: AmazonRegion;
  /** Failed attempts in a row so far (the highest of the region's accounts, or the connection's own). */
  readonly retryCount: number;
  /** How many accounts the user had in this region before this attempt. */
  readonly accountCount: number;
  /**
   * The accounts' sync_status before the claim marked them 'in_progress', to put back if the
   * user is given back unattempted: the most common status, and the accounts that differ.
   */
  readonly previousStatus?: { readonly usual: string; readonly others: Readonly<Record<string, string>> };
}

export interface ClaimUsersOptions {
  readonly owner: string;
  readonly leaseSeconds: number;
  readonly limit: number;
  readonly syncType: SyncType;
  /** Claim only this user's connections (manual/webhook); due or not. @default - every due connection */
  readonly userId?: string;
  /** Access tokens expiring sooner than this are not used (the refresh job renews them first). */
  readonly minTokenValiditySeconds: number;
  /** Regions whose Ads endpoint is paused by a Retry-After: their users are left alone. @default none */
  readonly pausedRegions?: readonly AmazonRegion[];
  /**
   * Claim only these connections (oauth_tokens ids a fan-out dispatcher sent), on the scheduled
   * claim's conditions: an id no longer due, or leased by a live run, is skipped. Their dispatch
   * mark (a sync lease held by `dispatchId`, see {@link markDueConnectionsDispatched}) counts as free.
   * @default - the next due connections
   */
  readonly given?: GivenIds;
}

/**
 * The connections due for a sync (user_id, region): one of the region's accounts is due, or the
 * connection's own retry time has passed (`:userId` null); or a user's connections on demand.
 * The one definition the claim and the fan-out dispatcher share.
 */
const DUE_CONNECTIONS = `SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE :userId::uuid IS NULL AND ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t
        WHERE :userId::uuid IS NULL AND t.sync_next_attempt_at <= now()
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t WHERE t.user_id = :userId::uuid`;

/**
 * The same conditions among given connections only (a fan-out message's ids), without a scan of
 * every due row: {@link DUE_CONNECTIONS} restricted to `:ids`.
 */
const DUE_GIVEN_CONNECTIONS = `SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
          AND (ua.user_id, ua.region) IN (
            SELECT user_id, region FROM oauth_tokens WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid))
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t
        WHERE t.sync_next_attempt_at <= now() AND t.id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`;

/** A connection's sync lease is free: none, or expired (a run that died). */
const SYNC_LEASE_FREE = `(t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now())`;

/** Free, or the mark of the dispatch that sent the given ids. */
const SYNC_GIVEN_LEASE_FREE = `(t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now() OR t.sync_lease_owner = :dispatchId)`;

/** What a claim does with the connections it locked (see {@link claimUsers}). */
/** A token row of a due connection, with proactive refresh on (both claims' candidates and waiting rows). */
const TOKEN_OF_DUE_CONNECTION = `(t.user_id, t.region) IN (SELECT user_id, region FROM due)
          AND t.proactive_refresh_enabled = TRUE`;

/**
 * Paused regions left alone; rows locked SKIP LOCKED: a row another statement holds is left to a
 * later run (never a wait, so never a deadlock with the token refresh's write-back).
 */
const REGION_NOT_PAUSED_LOCKED = `NOT (t.region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED`;

/** The candidates a claim leases: the response carries each access token, so stop before the Data API's 1 MiB. */
const SIZED_BY_TOKEN_CHARS = `sized AS (
       SELECT id FROM (
         SELECT c.id, length(t.access_token) AS chars, sum(length(t.access_token)) OVER (ORDER BY c.id) AS running
           FROM candidates c JOIN oauth_tokens t ON t.id = c.id
       ) r
        WHERE running <= :maxTokenChars OR running = chars
     )`;

const CLAIM_USERS_REST = `wanted AS (
       -- Used: the token refresh renews them even when they had been idle past its window.
       UPDATE oauth_tokens t SET last_used_at = now() FROM waiting w WHERE t.id = w.id
     ), claimed AS (
       UPDATE oauth_tokens t
          SET sync_lease_owner = :owner, sync_lease_expires_at = now() + make_interval(secs => :leaseSeconds),
              last_used_at = now()
         FROM sized c WHERE t.id = c.id
       RETURNING t.id, t.user_id, t.access_token, t.region, t.sync_retry_count, t.connection_generation
     ), accounts AS (
       -- The connection's accounts: the user's accounts in its region.
       SELECT c.id AS token_id, c.user_id, c.region, max(ua.sync_retry_count) AS retry_count,
              count(*)::int AS account_count,
              (array_agg(ua.id ORDER BY ua.next_sync_at, ua.id))[1] AS first_account_id,
              mode() WITHIN GROUP (ORDER BY ua.sync_status) AS usual_status
         FROM user_accounts ua JOIN claimed c ON c.user_id = ua.user_id AND c.region = ua.region
        GROUP BY c.id, c.user_id, c.region
     ), other_statuses AS MATERIALIZED (
       -- (this statement's snapshot: the statuses as they were before in_progress below)
       -- Materialized and joined to user_accounts through its (user_id, region) index once: left
       -- to the planner, this CTE was inlined into the final LEFT JOIN and recomputed for every
       -- claimed connection (batch³ index probes: 25 s for a batch of 240).
       SELECT a.token_id, jsonb_object_agg(ua.id, ua.sync_status) AS statuses
         FROM accounts a
         JOIN user_accounts ua ON ua.user_id = a.user_id AND ua.region = a.region
        WHERE ua.sync_status <> a.usual_status
        GROUP BY a.token_id
     ), abandoned AS (
       -- History rows a run opened for these connections and never closed: that run is gone
       -- (its lease, which outlasts the function's timeout, has expired). Rows from before
       -- connections per region have no region; they were for the user's only connection.
       UPDATE account_sync_history h
          SET sync_status = 'failed', completed_at = greatest(now(), h.started_at),
              error_details = jsonb_build_object('reason', :abandonedReason::text, 'abandoned', true)
         FROM claimed c
        WHERE h.sync_status = 'started' AND h.metadata->>'userId' = c.user_id::text
          AND (h.region = c.region OR h.region IS NULL)
     ), in_progress AS (
       UPDATE user_accounts ua SET sync_status = 'in_progress', updated_at = now()
         FROM claimed c
        WHERE ua.user_id = c.user_id AND ua.region = c.region AND ua.sync_status <> 'reauth_required'
     ), history AS (
       INSERT INTO account_sync_history (user_account_id, sync_type, sync_status, metadata, region)
       SELECT a.first_account_id, :syncType, 'started',
              jsonb_build_object('userId', c.user_id, 'accountsBefore', coalesce(a.account_count, 0)), c.region
         FROM claimed c LEFT JOIN accounts a ON a.token_id = c.id
       RETURNING id, (metadata->>'userId')::uuid AS user_id, region
     )
     SELECT c.id AS token_id, c.connection_generation AS generation, c.user_id, h.id AS history_id, c.access_token, c.region,
            greatest(c.sync_retry_count, coalesce(a.retry_count, 0)) AS retry_count, a.account_count,
            a.usual_status, o.statuses AS other_statuses
       FROM claimed c
       JOIN history h ON h.user_id = c.user_id AND h.region = c.region
       LEFT JOIN accounts a ON a.token_id = c.id
       LEFT JOIN other_statuses o ON o.token_id = c.id`;

interface ClaimedUserRow {
  token_id: string;
  generation: number;
  user_id: string;
  history_id: string;
  access_token: string;
  region: AmazonRegion;
  retry_count: number;
  account_count: number | null;
  usual_status: string | null;
  other_statuses: Record<string, string> | null;
}

/**
 * Claims due connections in one statement. The unit of work is a connection (an oauth_tokens
 * row: one user in one region), because one GET /v2/profiles on a region's host with that
 * connection's token lists that region's profiles. A connection is due when one of its
 * region's accounts' next_sync_at has passed (the spec's schedule) or its own
 * sync_next_attempt_at has (no account in its region yet, or waiting for a retry); never
 * while its token needs re-authorisation (refresh off) or is about to expire (the refresh job
 * renews it first). The claim takes the connection's sync lease with FOR UPDATE SKIP LOCKED,
 * so concurrent invocations claim disjoint connections (two regions of one user may be worked
 * on by two runs at once) and each gets a full batch; the same statement marks the region's
 * accounts 'in_progress', closes the connection's history rows that a run which died left
 * 'started' ('failed', {@link ABANDONED_ATTEMPT_REASON}) and opens one 'started' row per
 * connection, with its region. It also records the use of each connection's access token
 * (`last_used_at`): of every claimed connection, and of every due one it leaves because its
 * token expires too soon, so that the token refresh renews that token even when its window
 * leaves idle connections alone (the next sync then proceeds).
 */
export async function claimUsers(db: Database, o: ClaimUsersOptions): Promise<ClaimedUser[]> {
  const params = {
    owner: sqlUuid(o.owner),
    leaseSeconds: o.leaseSeconds,
    limit: o.limit,
    syncType: o.syncType,
    userId: o.userId === undefined ? null : sqlUuid(o.userId),
    minTokenValiditySeconds: o.minTokenValiditySeconds,
    maxTokenChars: CLAIM_TOKEN_CHARS,
    abandonedReason: ABANDONED_ATTEMPT_REASON,
    pausedRegions: sqlJson(o.pausedRegions ?? []),
  };
  const { rows } = o.given
    ? await db.query<ClaimedUserRow>(
        `WITH due AS (
       ${DUE_GIVEN_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE ${TOKEN_OF_DUE_CONNECTION}
          AND t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_GIVEN_LEASE_FREE}
          AND ${REGION_NOT_PAUSED_LOCKED}
     ), ${SIZED_BY_TOKEN_CHARS}, waiting AS (
       -- Due connections the claim leaves because their access token expires too soon: the
       -- sync wants that token too.
       SELECT t.id FROM oauth_tokens t
        WHERE ${TOKEN_OF_DUE_CONNECTION}
          AND t.expires_at <= now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_GIVEN_LEASE_FREE}
          AND ${REGION_NOT_PAUSED_LOCKED}
     ), ${CLAIM_USERS_REST}`,
        { ...params, ids: sqlJson(o.given.ids), dispatchId: sqlUuid(o.given.dispatchId) },
      )
    : await db.query<ClaimedUserRow>(
        `WITH due AS (
       ${DUE_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE ${TOKEN_OF_DUE_CONNECTION}
          AND t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_LEASE_FREE}
          AND ${REGION_NOT_PAUSED_LOCKED}
     ), ${SIZED_BY_TOKEN_CHARS}, waiting AS (
       -- Due connections the claim leaves because their access token expires too soon: the
       -- sync wants that token too.
       SELECT t.id FROM oauth_tokens t
        WHERE ${TOKEN_OF_DUE_CONNECTION}
          AND t.expires_at <= now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_LEASE_FREE}
          AND ${REGION_NOT_PAUSED_LOCKED}
     ), ${CLAIM_USERS_REST}`,
        params,
      );
  return rows.map((r) => ({
    tokenId: r.token_id,
    generation: Number(r.generation),
    userId: r.user_id,
    historyId: r.history_id,
    storedAccessToken: r.access_token,
    region: r.region,
    retryCount: Number(r.retry_count),
    accountCount: Number(r.account_count ?? 0),
    ...(r.usual_status ? { previousStatus: { usual: r.usual_status, others: r.other_statuses ?? {} } } : {}),
  }));
}

export interface DispatchConnectionsOptions {
  /** This dispatch's id: the owner of the mark. */
  readonly dispatchId: string;
  /** How long the mark holds: a lost message delays its connections by at most this. */
  readonly markSeconds: number;
  readonly limit: number;
  readonly minTokenValiditySeconds: number;
  /** @default none */
  readonly pausedRegions?: readonly AmazonRegion[];
}

/**
 * The fan-out dispatcher's selection: up to `limit` connections a scheduled claim would take
 * (the claim's due and claimable conditions), marked as dispatched by taking their sync lease
 * for `markSeconds` in `dispatchId`'s name, so the next tick does not send them again while they
 * wait in the queue; the consumer's claim of given ids takes the lease over from the mark. Like
 * the claim, it records the use of the tokens of due connections left because their access
 * token expires too soon (the token refresh renews them, a later tick dispatches them).
 * Returns only the ids.
 */
export async function markDueConnectionsDispatched(db: Database, o: DispatchConnectionsOptions): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `WITH due AS (
       ${DUE_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE (t.user_id, t.region) IN (SELECT user_id, region FROM due)
          AND t.proactive_refresh_enabled = TRUE
          AND t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_LEASE_FREE}
          AND NOT (t.region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
        ORDER BY t.id
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     ), waiting AS (
       SELECT t.id FROM oauth_tokens t
        WHERE (t.user_id, t.region) IN (SELECT user_id, region FROM due)
          AND t.proactive_refresh_enabled = TRUE
          AND t.expires_at <= now() + make_interval(secs => :minTokenValiditySeconds)
          AND ${SYNC_LEASE_FREE}
          AND NOT (t.region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     ), wanted AS (
       UPDATE oauth_tokens t SET last_used_at = now() FROM waiting w WHERE t.id = w.id
     )
     UPDATE oauth_tokens t
        SET sync_lease_owner = :dispatchId, sync_lease_expires_at = now() + make_interval(secs => :markSeconds)
       FROM candidates c
      WHERE t.id = c.id
     RETURNING t.id`,
    {
      userId: null,
      dispatchId: sqlUuid(o.dispatchId),
      markSeconds: o.markSeconds,
      limit: o.limit,
      minTokenValiditySeconds: o.minTokenValiditySeconds,
      pausedRegions: sqlJson(o.pausedRegions ?? []),
    },
  );
  return rows.map((r) => r.id);
}

/** Takes the dispatch mark off connections that could not be sent, so the next tick sends them. */
export async function releaseDispatchedConnections(
  db: Database,
  dispatchId: string,
  ids: readonly string[],
): Promise<void> {
  await db.query(
    `UPDATE oauth_tokens SET sync_lease_owner = NULL, sync_lease_expires_at = NULL
      WHERE sync_lease_owner = :dispatchId AND id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
    { dispatchId: sqlUuid(dispatchId), ids: sqlJson(ids) },
  );
}

/**
 * How many connections a scheduled claim would take now (the claim's conditions, read only):
 * for a dry run. `waitingForToken` counts due connections whose access token expires too soon
 * (the refresh job renews it first), and `needReauth` the accounts a run would flag for
 * re-authorisation.
 */
export async function countDueUsers(
  db: Database,
  o: Pick<ClaimUsersOptions, 'minTokenValiditySeconds'>,
): Promise<{ due: number; waitingForToken: number; needReauth: number }> {
  const { rows } = await db.query<{ due: number; waiting: number; reauth: number }>(
    `WITH due AS (
       SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t WHERE t.sync_next_attempt_at <= now()
     ), tokens AS (
       SELECT t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds) AS usable FROM oauth_tokens t
        WHERE (t.user_id, t.region) IN (SELECT user_id, region FROM due)
          AND t.proactive_refresh_enabled = TRUE
          AND (t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now())
     )
     SELECT (SELECT count(*) FILTER (WHERE usable) FROM tokens)::int AS due,
            (SELECT count(*) FILTER (WHERE NOT usable) FROM tokens)::int AS waiting,
            (SELECT count(*) FROM user_accounts ua JOIN oauth_tokens t ON t.user_id = ua.user_id AND t.region = ua.region
              WHERE t.proactive_refresh_enabled = FALSE AND ua.sync_status <> 'reauth_required')::int AS reauth`,
    { minTokenValiditySeconds: o.minTokenValiditySeconds },
  );
  return { due: Number(rows[0].due), waitingForToken: Number(rows[0].waiting), needReauth: Number(rows[0].reauth) };
}

/** One profile as stored: `amazon_account_id` and the metadata keys docs/architecture.md fixes. */
export interface AccountRecord {
  readonly amazonAccountId: string;
  readonly metadata: Record<string, unknown>;
}

export type UserSyncOutcome =
  | {
      readonly kind: 'success';
      readonly user: ClaimedUser;
      readonly accounts: readonly AccountRecord[];
      /** Profiles Amazon listed that are not advertising accounts (Amazon Attribution): not stored. */
      readonly excludedProfileIds?: readonly string[];
      readonly nextSyncAt: Date;
    }
  | {
      readonly kind: 'failure';
      readonly user: ClaimedUser;
      /** Human-readable, recorded in sync_error_message; never a token. */
      readonly error: string;
      readonly errorDetails: Record<string, unknown>;
      readonly nextAttemptAt: Date;
    }
  | {
      /** Not attempted (time ran out): lease released, nothing recorded against the user. */
      readonly kind: 'released';
      readonly user: ClaimedUser;
    };

/** Sentence stored on accounts that Amazon stopped returning. */
export const MISSING_PROFILE_MESSAGE = 'Amazon Ads no longer returns this profile for the user';

/** Sentence stored on accounts that turned out to be Amazon Attribution profiles. */
export const ATTRIBUTION_PROFILE_MESSAGE = 'Amazon Attribution profile: not an advertising account';

/**
 * Request budget per write-back statement, in bytes of the JSON parameters as they travel
 * (escaped once more inside the Data API's request): well under its 4 MiB per request.
 */
const WRITE_BACK_BYTES = 3_000_000;

interface UserRow {
  readonly token_id: string;
  readonly generation: number;
  readonly user_id: string;
  readonly region: AmazonRegion;
  readonly history_id: string;
  readonly kind: UserSyncOutcome['kind'];
  readonly profile_ids: readonly string[];
  readonly excluded_ids: readonly string[];
  readonly synced: number;
  readonly failed: number;
  readonly error: string | null;
  readonly error_details: Record<string, unknown> | null;
  readonly next_at: Date | null;
  /** Given back: the status the accounts return to, and the accounts that return to another. */
  readonly usual_status: string | null;
  readonly other_statuses: Readonly<Record<string, string>> | null;
}

interface AccountRow {
  readonly user_id: string;
  /** The claim's generation of the connection: only upserted while it is still the connection's. */
  readonly generation: number;
  readonly region: AmazonRegion;
  readonly amazon_account_id: string;
  readonly metadata: Record<string, unknown>;
  readonly next_sync_at: Date;
}

/** One user's part of a write-back, with its size on the wire. */
interface UserWrite {
  readonly outcome: UserSyncOutcome;
  readonly user: UserRow;
  readonly accounts: readonly AccountRow[];
  readonly bytes: number;
}

/** A user whose outcome the database refused even on its own. */
export interface RejectedUser {
  readonly user: ClaimedUser;
  /** The first line of the database's message. */
  readonly error: string;
  /** What was written in its place: `onRefused`'s outcome, or the user released if that was refused too. */
  readonly recordedAs: UserSyncOutcome;
}

export interface SaveOptions {
  /**
   * What to write instead for a user whose outcome the database refuses even on its own
   * (a failure with a backoff); if that is refused too, the user is released.
   */
  readonly onRefused: (outcome: UserSyncOutcome, error: string) => UserSyncOutcome;
}

/**
 * Writes a batch of outcomes back: one statement (data-modifying CTEs) per ~3 MB, so one for
 * a normal batch. Every outcome is one connection's, and only the accounts of its region are
 * touched (a sync of NA never changes an EU account):
 * - success: profiles upserted (metadata merged into what is there, status 'active', sync
 *   'completed', retry 0, next regular sync); accounts Amazon no longer returns are kept (history
 *   and references stay intact) but set 'inactive' with MISSING_PROFILE_MESSAGE and a
 *   `missingFromAmazonSince` metadata key, and come back to 'active' if the profile reappears;
 *   stored accounts that are Amazon Attribution profiles are set 'inactive' with
 *   ATTRIBUTION_PROFILE_MESSAGE;
 * - failure: the region's accounts 'failed', retry count + 1, message, retry time;
 * - every attempt: the history row closed ('success' | 'failed', counts, error_details), the
 *   lease released and the connection's own schedule updated: after a success it is due again
 *   only through its region's accounts (or, with none, at the next regular time); after a
 *   failure at the retry time.
 * Every statement writes only for users whose sync lease this run still holds (a run whose
 * lease expired and was taken over writes nothing) and whose connection is still the
 * generation it claimed (a region connected again meanwhile, or disconnected, gets nothing of
 * the old connection's profiles; api.store_connection closed that attempt's history row). A user whose accounts alone exceed the
 * budget (thousands of profiles) has them upserted in chunks first. A statement the database
 * refuses with a data error is written again in halves, down to single users (writeInHalves);
 * a user refused even alone gets `onRefused`'s outcome instead, and is returned.
 */
export async function saveOutcomes(
  db: Database,
  owner: string,
  outcomes: readonly UserSyncOutcome[],
  options: SaveOptions,
): Promise<{ accountsMissing: number; rejected: RejectedUser[] }> {
  const counts = { accountsMissing: 0 };
  const rejected: RejectedUser[] = [];
  for (const group of packBySize(outcomes.map(toUserWrite))) {
    for (const r of await writeInHalves(group, (part) => writeUsers(db, owner, part, counts))) {
      const error = databaseErrorSummary(r.error);
      const instead = options.onRefused(r.item.outcome, error);
      const released: UserSyncOutcome = { kind: 'released', user: r.item.outcome.user };
      const again = await writeInHalves([toUserWrite(instead)], (part) => writeUsers(db, owner, part, counts));
      if (again.length > 0) await writeUsers(db, owner, [toUserWrite(released)], counts);
      rejected.push({ user: r.item.outcome.user, error, recordedAs: again.length > 0 ? released : instead });
    }
  }
  return { accountsMissing: counts.accountsMissing, rejected };
}

function toUserWrite(o: UserSyncOutcome): UserWrite {
  const user: UserRow = {
    token_id: o.user.tokenId,
    generation: o.user.generation,
    user_id: o.user.userId,
    region: o.user.region,
    history_id: o.user.historyId,
    kind: o.kind,
    profile_ids: o.kind === 'success' ? o.accounts.map((a) => a.amazonAccountId) : [],
    excluded_ids: o.kind === 'success' ? (o.excludedProfileIds ?? []) : [],
    synced: o.kind === 'success' ? o.accounts.length : 0,
    failed: o.kind === 'failure' ? Math.max(1, o.user.accountCount) : 0,
    error: o.kind === 'failure' ? o.error : null,
    error_details: o.kind === 'failure' ? o.errorDetails : null,
    next_at: o.kind === 'success' ? o.nextSyncAt : o.kind === 'failure' ? o.nextAttemptAt : null,
    // Given back: the accounts return to the status they had before the claim.
    usual_status: o.kind === 'released' ? (o.user.previousStatus?.usual ?? 'pending') : null,
    other_statuses: o.kind === 'released' ? (o.user.previousStatus?.others ?? {}) : null,
  };
  const accounts =
    o.kind === 'success'
      ? o.accounts.map((a) => ({
          user_id: o.user.userId,
          generation: o.user.generation,
          region: o.user.region,
          amazon_account_id: a.amazonAccountId,
          metadata: a.metadata,
          next_sync_at: o.nextSyncAt,
        }))
      : [];
  return { outcome: o, user, accounts, bytes: wireBytes(user) + accounts.reduce((n, a) => n + wireBytes(a), 0) };
}

/** Bytes a row takes in the Data API request: its JSON, escaped again as a string value. */
function wireBytes(row: object): number {
  return Buffer.byteLength(JSON.stringify(JSON.stringify(row))) + 1;
}

/** Groups users in order so that each group's rows stay under the budget (at least one user per group). */
function packBySize(writes: readonly UserWrite[]): UserWrite[][] {
  const groups: UserWrite[][] = [];
  let current: UserWrite[] = [];
  let size = 0;
  for (const w of writes) {
    if (current.length > 0 && size + w.bytes > WRITE_BACK_BYTES) {
      groups.push(current);
      current = [];
      size = 0;
    }
    current.push(w);
    size += w.bytes;
  }
  if (current.length > 0) groups.push(current);
  return groups;
}

/** Writes users' outcomes; a lone user over the budget has its accounts upserted in chunks first. */
async function writeUsers(
  db: Database,
  owner: string,
  writes: readonly UserWrite[],
  counts: { accountsMissing: number },
): Promise<void> {
  let accounts = writes.flatMap((w) => w.accounts);
  if (writes.reduce((n, w) => n + w.bytes, 0) > WRITE_BACK_BYTES) {
    let chunk: AccountRow[] = [];
    let size = 0;
    for (const a of accounts) {
      const bytes = wireBytes(a);
      if (chunk.length > 0 && size + bytes > WRITE_BACK_BYTES) {
        await upsertAccounts(db, owner, chunk);
        chunk = [];
        size = 0;
      }
      chunk.push(a);
      size += bytes;
    }
    await upsertAccounts(db, owner, chunk);
    accounts = [];
  }
  counts.accountsMissing += await writeUserOutcomes(
    db,
    owner,
    writes.map((w) => w.user),
    accounts,
  );
}

// region = EXCLUDED.region: an account belongs to the region whose profiles list it (this
// also corrects an account that migration 0012 could only guess the region of).
const UPSERT_ACCOUNTS = `INSERT INTO user_accounts AS ua (user_id, amazon_account_id, region, status, metadata, sync_status, sync_error_message, sync_retry_count, next_sync_at, updated_at)
       SELECT user_id, amazon_account_id, region, 'active', metadata, 'completed', NULL, 0, next_sync_at, now() FROM a
       ON CONFLICT (user_id, amazon_account_id) DO UPDATE
         SET status = CASE WHEN ua.status = 'pending' OR ua.metadata ? 'missingFromAmazonSince' THEN 'active' ELSE ua.status END,
             region = EXCLUDED.region,
             metadata = (ua.metadata - 'missingFromAmazonSince') || EXCLUDED.metadata,
             sync_status = 'completed', sync_error_message = NULL, sync_retry_count = 0,
             next_sync_at = EXCLUDED.next_sync_at, updated_at = now()`;

/**
 * Upserts accounts of users whose lease this run holds, on the connection generation it claimed
 * (the accounts of one very large user).
 */
async function upsertAccounts(db: Database, owner: string, accounts: readonly AccountRow[]): Promise<void> {
  if (accounts.length === 0) return;
  await db.query(
    `WITH a AS (
       SELECT x.* FROM jsonb_to_recordset(:accounts::jsonb) AS x(user_id uuid, generation int, region text, amazon_account_id text, metadata jsonb, next_sync_at timestamptz)
         JOIN oauth_tokens t ON t.user_id = x.user_id AND t.region = x.region AND t.sync_lease_owner = :owner
                            AND t.connection_generation = x.generation
     )
     ${UPSERT_ACCOUNTS}`,
    { accounts: sqlJson(accounts), owner: sqlUuid(owner) },
  );
}

/** The write-back statement proper; returns how many accounts were newly found missing. */
async function writeUserOutcomes(
  db: Database,
  owner: string,
  users: readonly UserRow[],
  accounts: readonly AccountRow[],
): Promise<number> {
  const { rows } = await db.query<{ missing: number }>(
    `WITH input AS (
       SELECT * FROM jsonb_to_recordset(:users::jsonb) AS x(
         token_id uuid, generation int, user_id uuid, region text, history_id uuid, kind text, profile_ids jsonb, excluded_ids jsonb, synced int, failed int,
         error text, error_details jsonb, next_at timestamptz, usual_status text, other_statuses jsonb)
     ), u AS (
       -- Only connections whose lease this run still holds, and that have not been stored again
       -- since the claim (a reconnect: another generation); locked, so no run takes them meanwhile.
       SELECT input.* FROM input JOIN oauth_tokens t ON t.id = input.token_id AND t.sync_lease_owner = :owner
                                                    AND t.connection_generation = input.generation
          FOR UPDATE OF t
     ), a AS (
       SELECT * FROM jsonb_to_recordset(:accounts::jsonb) AS x(user_id uuid, generation int, region text, amazon_account_id text, metadata jsonb, next_sync_at timestamptz)
        WHERE (x.user_id, x.region) IN (SELECT user_id, region FROM u)
     ), upserted AS (
       ${UPSERT_ACCOUNTS}
       RETURNING 1
     ), missing AS (
       UPDATE user_accounts ua
          SET status = 'inactive', sync_status = 'completed', sync_error_message = :missingMessage,
              sync_retry_count = 0, next_sync_at = u.next_at, updated_at = now(),
              metadata = ua.metadata || jsonb_build_object('missingFromAmazonSince', coalesce(ua.metadata->'missingFromAmazonSince', to_jsonb(now())))
         FROM u
        WHERE u.kind = 'success' AND ua.user_id = u.user_id AND ua.region = u.region
          AND NOT (u.profile_ids ? ua.amazon_account_id)
          AND NOT (u.excluded_ids ? ua.amazon_account_id) AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ), excluded AS (
       UPDATE user_accounts ua
          SET status = 'inactive', sync_status = 'completed', sync_error_message = :attributionMessage,
              sync_retry_count = 0, next_sync_at = u.next_at, updated_at = now()
         FROM u
        WHERE u.kind = 'success' AND ua.user_id = u.user_id AND ua.region = u.region AND u.excluded_ids ? ua.amazon_account_id
          AND ua.sync_status <> 'reauth_required'
     ), failed AS (
       UPDATE user_accounts ua
          SET sync_status = 'failed', sync_error_message = u.error, sync_retry_count = ua.sync_retry_count + 1,
              next_sync_at = u.next_at, updated_at = now()
         FROM u
        WHERE u.kind = 'failure' AND ua.user_id = u.user_id AND ua.region = u.region AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ), released AS (
       UPDATE user_accounts ua
          SET sync_status = coalesce(u.other_statuses ->> ua.id::text, u.usual_status), updated_at = now()
         FROM u
        WHERE u.kind = 'released' AND ua.user_id = u.user_id AND ua.region = u.region AND ua.sync_status = 'in_progress'
       RETURNING 1
     ), closed AS (
       UPDATE account_sync_history h
          SET sync_status = CASE u.kind WHEN 'success' THEN 'success' ELSE 'failed' END,
              completed_at = greatest(now(), h.started_at),
              accounts_synced = u.synced, accounts_failed = u.failed,
              error_details = CASE u.kind WHEN 'released' THEN jsonb_build_object('reason', 'not attempted: invocation ran out of time') ELSE u.error_details END
         FROM u WHERE h.id = u.history_id
       RETURNING 1
     ), leases AS (
       UPDATE oauth_tokens t
          SET sync_lease_owner = NULL, sync_lease_expires_at = NULL,
              sync_next_attempt_at = CASE u.kind WHEN 'released' THEN t.sync_next_attempt_at ELSE u.next_at END,
              sync_retry_count = CASE u.kind WHEN 'success' THEN 0 WHEN 'failure' THEN t.sync_retry_count + 1 ELSE t.sync_retry_count END,
              sync_last_error = CASE u.kind WHEN 'success' THEN NULL WHEN 'failure' THEN u.error ELSE t.sync_last_error END
         FROM u
        WHERE t.id = u.token_id AND t.sync_lease_owner = :owner AND t.connection_generation = u.generation
     )
     SELECT count(*)::int AS missing FROM missing`,
    {
      users: sqlJson(users),
      accounts: sqlJson(accounts),
      owner: sqlUuid(owner),
      missingMessage: MISSING_PROFILE_MESSAGE,
      attributionMessage: ATTRIBUTION_PROFILE_MESSAGE,
    },
  );
  return rows[0]?.missing ?? 0;
}

/**
 * Makes sure the accounts of connections that need re-authorisation say so, region by region
 * (the token refresh sets this when it turns refresh off; this catches connections turned off
 * any other way). Returns how many accounts were newly flagged.
 */
export async function flagAccountsNeedingReauth(db: Database, message: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH flagged AS (
       UPDATE user_accounts ua SET sync_status = 'reauth_required', sync_error_message = :message, updated_at = now()
         FROM oauth_tokens t
        WHERE t.user_id = ua.user_id AND t.region = ua.region AND t.proactive_refresh_enabled = FALSE
          AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ) SELECT count(*)::int AS n FROM flagged`,
    { message },
  );
  return rows[0]?.n ?? 0;
}
