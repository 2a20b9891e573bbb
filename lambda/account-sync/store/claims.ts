import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import type { AmazonRegion } from '../../shared/amazon/regions';
import { CLAIM_TOKEN_CHARS } from '../../shared/db/limits';
import {
  DUE_CONNECTIONS,
  DUE_GIVEN_CONNECTIONS,
  REFRESH_ON_TOKEN_OF_DUE_CONNECTION,
  REGION_NOT_PAUSED,
  SYNC_LEASE_FREE,
  SYNC_LEASE_FREE_OR_DISPATCH_MARKED,
  TOKEN_OBTAINABLE,
} from './due';
import type { GivenIds } from '../../shared/jobs/fan-out';

export type SyncType = 'scheduled' | 'manual' | 'webhook';

/** `error_details.reason` of a history row closed because the run that opened it died. */
export const ABANDONED_ATTEMPT_REASON =
  'abandoned: the run that started this attempt ended without recording its outcome';

/**
 * A connection (one oauth_tokens row: a user in one region) claimed for one sync attempt, with
 * the history row opened for it. Everything the attempt writes stays within its region.
 */
export interface ClaimedConnection {
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
  /** When the stored access token expires: one about to expire is taken on demand instead (refreshed once). */
  readonly expiresAt: Date;
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

export interface ClaimConnectionsOptions {
  readonly owner: string;
  readonly leaseSeconds: number;
  readonly limit: number;
  readonly syncType: SyncType;
  /** Claim only this user's connections (manual/webhook); due or not. @default - every due connection */
  readonly userId?: string;
  /**
   * Access tokens expiring sooner than this are taken on demand (refreshed once, single-flight);
   * such a connection is claimed only when its refresh is not backing off after a failure.
   */
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

/** The candidates a claim leases: the response carries each access token, so stop before the Data API's 1 MiB. */
const SIZED_WITHIN_TOKEN_CHARS = `sized AS (
       SELECT id FROM (
         SELECT c.id, length(t.access_token) AS chars, sum(length(t.access_token)) OVER (ORDER BY c.id) AS running
           FROM candidates c JOIN oauth_tokens t ON t.id = c.id
       ) r
        WHERE running <= :maxTokenChars OR running = chars
     )`;

/**
 * What a claim does with the connections it locked and sized (see {@link claimConnections}): leases
 * them, marks their region's accounts 'in_progress', closes the history rows a dead run left
 * 'started', opens one per connection, and returns the claimed connections. It records no use
 * of their tokens (`last_used_at`): the sync takes a token once per cycle, on demand, so an idle
 * connection stays out of the proactive refresh's window.
 */
const LEASE_AND_OPEN_HISTORY = `claimed AS (
       UPDATE oauth_tokens t
          SET sync_lease_owner = :owner, sync_lease_expires_at = now() + make_interval(secs => :leaseSeconds)
         FROM sized c WHERE t.id = c.id
       RETURNING t.id, t.user_id, t.access_token, t.expires_at, t.region, t.sync_retry_count, t.connection_generation
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
     SELECT c.id AS token_id, c.connection_generation AS generation, c.user_id, h.id AS history_id, c.access_token,
            c.expires_at, c.region,
            greatest(c.sync_retry_count, coalesce(a.retry_count, 0)) AS retry_count, a.account_count,
            a.usual_status, o.statuses AS other_statuses
       FROM claimed c
       JOIN history h ON h.user_id = c.user_id AND h.region = c.region
       LEFT JOIN accounts a ON a.token_id = c.id
       LEFT JOIN other_statuses o ON o.token_id = c.id`;

interface ClaimedConnectionRow {
  token_id: string;
  generation: number;
  user_id: string;
  history_id: string;
  access_token: string;
  expires_at: Date | string;
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
 * while its token needs re-authorisation (refresh off), nor while its token is about to expire
 * and its refresh backs off after a failure (a token about to expire is otherwise refreshed on
 * demand by the run, see {@link TOKEN_OBTAINABLE}). The claim takes the connection's sync lease with FOR UPDATE SKIP LOCKED,
 * so concurrent invocations claim disjoint connections (two regions of one user may be worked
 * on by two runs at once) and each gets a full batch; the same statement marks the region's
 * accounts 'in_progress', closes the connection's history rows that a run which died left
 * 'started' ('failed', {@link ABANDONED_ATTEMPT_REASON}) and opens one 'started' row per
 * connection, with its region.
 */
export async function claimConnections(db: Database, o: ClaimConnectionsOptions): Promise<ClaimedConnection[]> {
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
    ? await db.query<ClaimedConnectionRow>(
        `WITH due AS (
       ${DUE_GIVEN_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE ${REFRESH_ON_TOKEN_OF_DUE_CONNECTION}
          AND ${TOKEN_OBTAINABLE}
          AND ${SYNC_LEASE_FREE_OR_DISPATCH_MARKED}
          AND ${REGION_NOT_PAUSED}
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     ), ${SIZED_WITHIN_TOKEN_CHARS}, ${LEASE_AND_OPEN_HISTORY}`,
        { ...params, ids: sqlJson(o.given.ids), dispatchId: sqlUuid(o.given.dispatchId) },
      )
    : await db.query<ClaimedConnectionRow>(
        `WITH due AS (
       ${DUE_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE ${REFRESH_ON_TOKEN_OF_DUE_CONNECTION}
          AND ${TOKEN_OBTAINABLE}
          AND ${SYNC_LEASE_FREE}
          AND ${REGION_NOT_PAUSED}
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     ), ${SIZED_WITHIN_TOKEN_CHARS}, ${LEASE_AND_OPEN_HISTORY}`,
        params,
      );
  return rows.map((r) => ({
    tokenId: r.token_id,
    generation: Number(r.generation),
    userId: r.user_id,
    historyId: r.history_id,
    storedAccessToken: r.access_token,
    expiresAt: r.expires_at instanceof Date ? r.expires_at : new Date(r.expires_at),
    region: r.region,
    retryCount: Number(r.retry_count),
    accountCount: Number(r.account_count ?? 0),
    ...(r.usual_status ? { previousStatus: { usual: r.usual_status, others: r.other_statuses ?? {} } } : {}),
  }));
}

/**
 * How many connections a scheduled claim would take now (the claim's conditions, read only):
 * for a dry run. `waitingForToken` counts due connections whose access token expires too soon
 * while its refresh backs off after a failure (claimed once the backoff ends), and `needReauth`
 * the accounts a run would flag for re-authorisation.
 */
export async function countDueConnections(
  db: Database,
  o: Pick<ClaimConnectionsOptions, 'minTokenValiditySeconds'>,
): Promise<{ due: number; waitingForToken: number; needReauth: number }> {
  const { rows } = await db.query<{ due: number; waiting: number; reauth: number }>(
    `WITH due AS (
       SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t WHERE t.sync_next_attempt_at <= now()
     ), tokens AS (
       SELECT ${TOKEN_OBTAINABLE} AS usable FROM oauth_tokens t
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
