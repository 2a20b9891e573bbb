import { Database, sqlJson, sqlUuid } from '../shared/db/port';
import type { AmazonRegion } from '../shared/amazon/regions';
import { CLAIM_TOKEN_CHARS } from '../shared/db/limits';

export type SyncType = 'scheduled' | 'manual' | 'webhook';

/** A user claimed for one sync attempt, with the history row opened for it. */
export interface ClaimedUser {
  readonly userId: string;
  readonly historyId: string;
  /** The stored access token (`enc:v1:…` or legacy plaintext). */
  readonly storedAccessToken: string;
  readonly region: AmazonRegion;
  /** Failed attempts in a row so far (the highest of the user's accounts, or the user's own). */
  readonly retryCount: number;
  /** How many accounts the user had before this attempt. */
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
  /** Claim only this user (manual/webhook); due or not. @default - every due user */
  readonly userId?: string;
  /** Access tokens expiring sooner than this are not used (the refresh job renews them first). */
  readonly minTokenValiditySeconds: number;
  /** Regions whose Ads endpoint is paused by a Retry-After: their users are left alone. @default none */
  readonly pausedRegions?: readonly AmazonRegion[];
}

/**
 * Claims due users in one statement. A user is due when one of their accounts' next_sync_at
 * has passed (the spec's schedule) or their own sync_next_attempt_at has (a user without an
 * account yet, or one waiting for a retry); never while their token needs re-authorisation
 * (refresh off) or is about to expire (the refresh job renews it first). The claim takes the
 * user's sync lease on their oauth_tokens row with FOR UPDATE SKIP LOCKED, so concurrent
 * invocations claim disjoint users and each gets a full batch; the same statement marks the
 * user's accounts 'in_progress' and opens one 'started' history row per user.
 */
export async function claimUsers(db: Database, o: ClaimUsersOptions): Promise<ClaimedUser[]> {
  const { rows } = await db.query<{
    user_id: string;
    history_id: string;
    access_token: string;
    region: AmazonRegion;
    retry_count: number;
    account_count: number | null;
    usual_status: string | null;
    other_statuses: Record<string, string> | null;
  }>(
    `WITH due AS (
       SELECT ua.user_id FROM user_accounts ua
        WHERE :userId::uuid IS NULL AND ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
       UNION
       SELECT t.user_id FROM oauth_tokens t
        WHERE :userId::uuid IS NULL AND t.sync_next_attempt_at <= now()
       UNION
       SELECT :userId::uuid WHERE :userId::uuid IS NOT NULL
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE t.user_id IN (SELECT user_id FROM due)
          AND t.proactive_refresh_enabled = TRUE
          AND t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds)
          AND (t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now())
          AND NOT (t.region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     ), sized AS (
       -- The response carries each user's access token: stop before the Data API's 1 MiB.
       SELECT id FROM (
         SELECT c.id, length(t.access_token) AS chars, sum(length(t.access_token)) OVER (ORDER BY c.id) AS running
           FROM candidates c JOIN oauth_tokens t ON t.id = c.id
       ) r
        WHERE running <= :maxTokenChars OR running = chars
     ), claimed AS (
       UPDATE oauth_tokens t
          SET sync_lease_owner = :owner, sync_lease_expires_at = now() + make_interval(secs => :leaseSeconds)
         FROM sized c WHERE t.id = c.id
       RETURNING t.user_id, t.access_token, t.region, t.sync_retry_count
     ), accounts AS (
       SELECT ua.user_id, max(ua.sync_retry_count) AS retry_count, count(*)::int AS account_count,
              (array_agg(ua.id ORDER BY ua.next_sync_at, ua.id))[1] AS first_account_id,
              mode() WITHIN GROUP (ORDER BY ua.sync_status) AS usual_status
         FROM user_accounts ua JOIN claimed c ON c.user_id = ua.user_id
        GROUP BY ua.user_id
     ), other_statuses AS (
       -- (this statement's snapshot: the statuses as they were before in_progress below)
       SELECT ua.user_id, jsonb_object_agg(ua.id, ua.sync_status) AS statuses
         FROM user_accounts ua JOIN accounts a ON a.user_id = ua.user_id
        WHERE ua.sync_status <> a.usual_status
        GROUP BY ua.user_id
     ), in_progress AS (
       UPDATE user_accounts ua SET sync_status = 'in_progress', updated_at = now()
         FROM claimed c WHERE ua.user_id = c.user_id AND ua.sync_status <> 'reauth_required'
     ), history AS (
       INSERT INTO account_sync_history (user_account_id, sync_type, sync_status, metadata)
       SELECT a.first_account_id, :syncType, 'started',
              jsonb_build_object('userId', c.user_id, 'accountsBefore', coalesce(a.account_count, 0))
         FROM claimed c LEFT JOIN accounts a ON a.user_id = c.user_id
       RETURNING id, (metadata->>'userId')::uuid AS user_id
     )
     SELECT c.user_id, h.id AS history_id, c.access_token, c.region,
            greatest(c.sync_retry_count, coalesce(a.retry_count, 0)) AS retry_count, a.account_count,
            a.usual_status, o.statuses AS other_statuses
       FROM claimed c
       JOIN history h ON h.user_id = c.user_id
       LEFT JOIN accounts a ON a.user_id = c.user_id
       LEFT JOIN other_statuses o ON o.user_id = c.user_id`,
    {
      owner: sqlUuid(o.owner),
      leaseSeconds: o.leaseSeconds,
      limit: o.limit,
      syncType: o.syncType,
      userId: o.userId === undefined ? null : sqlUuid(o.userId),
      minTokenValiditySeconds: o.minTokenValiditySeconds,
      maxTokenChars: CLAIM_TOKEN_CHARS,
      pausedRegions: sqlJson(o.pausedRegions ?? []),
    },
  );
  return rows.map((r) => ({
    userId: r.user_id,
    historyId: r.history_id,
    storedAccessToken: r.access_token,
    region: r.region,
    retryCount: Number(r.retry_count),
    accountCount: Number(r.account_count ?? 0),
    ...(r.usual_status ? { previousStatus: { usual: r.usual_status, others: r.other_statuses ?? {} } } : {}),
  }));
}

/** One profile as stored: `amazon_account_id` and the metadata DESIGN.md fixes. */
export interface AccountRecord {
  readonly amazonAccountId: string;
  readonly metadata: Record<string, unknown>;
}

export type UserSyncOutcome =
  | {
      readonly kind: 'success';
      readonly user: ClaimedUser;
      readonly accounts: readonly AccountRecord[];
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

/**
 * Writes a batch of outcomes back in one statement (data-modifying CTEs):
 * - success: profiles upserted (metadata merged into what is there, status 'active', sync
 *   'completed', retry 0, next regular sync); accounts Amazon no longer returns are kept (history
 *   and references stay intact) but set 'inactive' with MISSING_PROFILE_MESSAGE and a
 *   `missingFromAmazonSince` metadata key, and come back to 'active' if the profile reappears;
 * - failure: the user's accounts 'failed', retry count + 1, message, retry time;
 * - every attempt: the history row closed ('success' | 'failed', counts, error_details), the
 *   lease released and the user's own schedule updated: after a success the user is due again
 *   only through their accounts (or, with none, at the next regular time); after a failure at
 *   the retry time.
 */
export async function saveOutcomes(
  db: Database,
  owner: string,
  outcomes: readonly UserSyncOutcome[],
): Promise<{ accountsMissing: number }> {
  if (outcomes.length === 0) return { accountsMissing: 0 };
  const accounts = outcomes.flatMap((o) =>
    o.kind === 'success'
      ? o.accounts.map((a) => ({
          user_id: o.user.userId,
          amazon_account_id: a.amazonAccountId,
          metadata: a.metadata,
          next_sync_at: o.nextSyncAt,
        }))
      : [],
  );
  const users = outcomes.map((o) => ({
    user_id: o.user.userId,
    history_id: o.user.historyId,
    kind: o.kind,
    profile_ids: o.kind === 'success' ? o.accounts.map((a) => a.amazonAccountId) : [],
    synced: o.kind === 'success' ? o.accounts.length : 0,
    failed: o.kind === 'failure' ? Math.max(1, o.user.accountCount) : 0,
    error: o.kind === 'failure' ? o.error : null,
    error_details: o.kind === 'failure' ? o.errorDetails : null,
    next_at: o.kind === 'success' ? o.nextSyncAt : o.kind === 'failure' ? o.nextAttemptAt : null,
    // Given back: the accounts return to the status they had before the claim.
    usual_status: o.kind === 'released' ? (o.user.previousStatus?.usual ?? 'pending') : null,
    other_statuses: o.kind === 'released' ? (o.user.previousStatus?.others ?? {}) : null,
  }));
  const { rows } = await db.query<{ missing: number }>(
    `WITH u AS (
       SELECT * FROM jsonb_to_recordset(:users::jsonb) AS x(
         user_id uuid, history_id uuid, kind text, profile_ids jsonb, synced int, failed int,
         error text, error_details jsonb, next_at timestamptz, usual_status text, other_statuses jsonb)
     ), a AS (
       SELECT * FROM jsonb_to_recordset(:accounts::jsonb) AS x(user_id uuid, amazon_account_id text, metadata jsonb, next_sync_at timestamptz)
     ), upserted AS (
       INSERT INTO user_accounts AS ua (user_id, amazon_account_id, status, metadata, sync_status, sync_error_message, sync_retry_count, next_sync_at, updated_at)
       SELECT user_id, amazon_account_id, 'active', metadata, 'completed', NULL, 0, next_sync_at, now() FROM a
       ON CONFLICT (user_id, amazon_account_id) DO UPDATE
         SET status = CASE WHEN ua.status = 'pending' OR ua.metadata ? 'missingFromAmazonSince' THEN 'active' ELSE ua.status END,
             metadata = (ua.metadata - 'missingFromAmazonSince') || EXCLUDED.metadata,
             sync_status = 'completed', sync_error_message = NULL, sync_retry_count = 0,
             next_sync_at = EXCLUDED.next_sync_at, updated_at = now()
       RETURNING 1
     ), missing AS (
       UPDATE user_accounts ua
          SET status = 'inactive', sync_status = 'completed', sync_error_message = :missingMessage,
              sync_retry_count = 0, next_sync_at = u.next_at, updated_at = now(),
              metadata = ua.metadata || jsonb_build_object('missingFromAmazonSince', coalesce(ua.metadata->'missingFromAmazonSince', to_jsonb(now())))
         FROM u
        WHERE u.kind = 'success' AND ua.user_id = u.user_id AND NOT (u.profile_ids ? ua.amazon_account_id)
          AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ), failed AS (
       UPDATE user_accounts ua
          SET sync_status = 'failed', sync_error_message = u.error, sync_retry_count = ua.sync_retry_count + 1,
              next_sync_at = u.next_at, updated_at = now()
         FROM u
        WHERE u.kind = 'failure' AND ua.user_id = u.user_id AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ), released AS (
       UPDATE user_accounts ua
          SET sync_status = coalesce(u.other_statuses ->> ua.id::text, u.usual_status), updated_at = now()
         FROM u WHERE u.kind = 'released' AND ua.user_id = u.user_id AND ua.sync_status = 'in_progress'
       RETURNING 1
     ), closed AS (
       UPDATE account_sync_history h
          SET sync_status = CASE u.kind WHEN 'success' THEN 'success' ELSE 'failed' END,
              completed_at = greatest(now(), h.started_at),
              accounts_synced = u.synced, accounts_failed = u.failed,
              error_details = CASE u.kind WHEN 'released' THEN jsonb_build_object('reason', 'not attempted: invocation ran out of time') ELSE u.error_details END
         FROM u WHERE h.id = u.history_id
       RETURNING 1
     )
     UPDATE oauth_tokens t
        SET sync_lease_owner = NULL, sync_lease_expires_at = NULL,
            sync_next_attempt_at = CASE u.kind WHEN 'released' THEN t.sync_next_attempt_at ELSE u.next_at END,
            sync_retry_count = CASE u.kind WHEN 'success' THEN 0 WHEN 'failure' THEN t.sync_retry_count + 1 ELSE t.sync_retry_count END,
            sync_last_error = CASE u.kind WHEN 'success' THEN NULL WHEN 'failure' THEN u.error ELSE t.sync_last_error END
       FROM u
      WHERE t.user_id = u.user_id AND t.sync_lease_owner = :owner
     RETURNING (SELECT count(*)::int FROM missing) AS missing`,
    {
      users: sqlJson(users),
      accounts: sqlJson(accounts),
      owner: sqlUuid(owner),
      missingMessage: MISSING_PROFILE_MESSAGE,
    },
  );
  return { accountsMissing: rows[0]?.missing ?? 0 };
}

/**
 * Makes sure the accounts of users whose token needs re-authorisation say so (the token
 * refresh sets this when it turns refresh off; this catches tokens turned off any other way).
 * Returns how many accounts were newly flagged.
 */
export async function flagAccountsNeedingReauth(db: Database, message: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH flagged AS (
       UPDATE user_accounts ua SET sync_status = 'reauth_required', sync_error_message = :message, updated_at = now()
         FROM oauth_tokens t
        WHERE t.user_id = ua.user_id AND t.proactive_refresh_enabled = FALSE AND ua.sync_status <> 'reauth_required'
       RETURNING 1
     ) SELECT count(*)::int AS n FROM flagged`,
    { message },
  );
  return rows[0]?.n ?? 0;
}
