import { Database, sqlJson, sqlUuid } from '../shared/db/port';

/** Regions of Login with Amazon (DESIGN.md): each has its own token endpoint. */
export type Region = 'NA' | 'EU' | 'FE';

/** A token claimed for refresh: the lease is this invocation's until `leaseSeconds` pass. */
export interface ClaimedToken {
  readonly id: string;
  readonly userId: string;
  /** The stored value as read (`enc:v1:…` or legacy plaintext); the write-back guard compares it. */
  readonly storedRefreshToken: string;
  readonly region: Region;
  readonly refreshFailureCount: number;
}

export interface ClaimOptions {
  /** This invocation's id: the lease owner. */
  readonly owner: string;
  /** Tokens expiring within this many seconds are due. */
  readonly windowSeconds: number;
  readonly leaseSeconds: number;
  readonly limit: number;
  /** Regions whose token endpoint is paused by a Retry-After: their tokens are left alone. */
  readonly pausedRegions: readonly Region[];
  /**
   * Most characters of stored refresh tokens one claim returns, so its response stays under
   * the Data API's 1 MiB limit whatever the tokens' size (Amazon allows refresh tokens of
   * 2,048 bytes: 2,775 characters encrypted). @default CLAIM_TOKEN_CHARS
   */
  readonly maxTokenChars?: number;
}

/**
 * The claim's response budget for token text: 600,000 characters, leaving ample room under
 * 1 MiB for ids, regions and the Data API's JSON framing. The claim is an UPDATE … RETURNING,
 * so a response the Data API refused would leave leases taken for tokens nobody got.
 */
export const CLAIM_TOKEN_CHARS = 600_000;

/**
 * Claims up to `limit` due tokens in one statement: proactive refresh on, expiring within the
 * window, not leased (or the lease expired: a run that died), not waiting for a retry. FOR
 * UPDATE SKIP LOCKED plus the lease make overlapping invocations claim disjoint sets.
 */
export async function claimDueTokens(db: Database, o: ClaimOptions): Promise<ClaimedToken[]> {
  const { rows } = await db.query<{ id: string; user_id: string; refresh_token: string; region: Region; refresh_failure_count: number }>(
    `WITH due AS (
       SELECT id, expires_at, length(refresh_token) AS chars FROM oauth_tokens
        WHERE proactive_refresh_enabled = TRUE
          AND expires_at < now() + make_interval(secs => :windowSeconds)
          AND (refresh_lease_expires_at IS NULL OR refresh_lease_expires_at < now())
          AND (next_refresh_attempt_at IS NULL OR next_refresh_attempt_at <= now())
          AND NOT (region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
     ), sized AS (
       -- Rows past the response budget stay unleased (locked only until this statement ends).
       -- (The first row always goes: its running total is its own size.)
       SELECT id FROM (
         SELECT id, chars, sum(chars) OVER (ORDER BY expires_at, id) AS running FROM due
       ) r
        WHERE running <= :maxTokenChars OR running = chars
     )
     UPDATE oauth_tokens t
        SET refresh_lease_owner = :owner,
            refresh_lease_expires_at = now() + make_interval(secs => :leaseSeconds)
       FROM sized
      WHERE t.id = sized.id
     RETURNING t.id, t.user_id, t.refresh_token, t.region, t.refresh_failure_count`,
    {
      owner: sqlUuid(o.owner),
      windowSeconds: o.windowSeconds,
      leaseSeconds: o.leaseSeconds,
      limit: o.limit,
      pausedRegions: sqlJson(o.pausedRegions),
      maxTokenChars: o.maxTokenChars ?? CLAIM_TOKEN_CHARS,
    },
  );
  return rows.map((r) => ({
    id: r.id,
    userId: r.user_id,
    storedRefreshToken: r.refresh_token,
    region: r.region,
    refreshFailureCount: Number(r.refresh_failure_count),
  }));
}

export interface RefreshSuccess {
  readonly token: ClaimedToken;
  /** Encrypted (`enc:v1:`) new access token. */
  readonly accessToken: string;
  /** Encrypted refresh token to store: Amazon's new one, or the old one re-encrypted if it was legacy plaintext. */
  readonly refreshToken: string;
  readonly expiresAt: Date;
}

export interface RefreshFailure {
  readonly token: ClaimedToken;
  /** Counts towards `refresh_failure_count` (a 429 does not: it is Amazon's pace, not the token's fault). */
  readonly countsAsFailure: boolean;
  /** Turn proactive refresh off (invalid_grant, or too many failures in a row). */
  readonly disable: boolean;
  /** Recorded in `last_refresh_error`: a classification and Amazon's error code, never a token. */
  readonly error: string;
  /** When to try again (backoff or Retry-After). */
  readonly nextAttemptAt: Date;
}

/**
 * Writes successes back in one batch and releases their leases. The new values are written
 * only where the stored refresh token is still the one claimed: a token that the web app
 * replaced meanwhile (a re-connection) keeps the web app's values, never ours from the old
 * grant. `refresh_lease_owner = :owner` keeps a run whose lease expired from writing at all.
 * (All expressions of an UPDATE read the row as it was, so every CASE compares the old value.)
 */
export async function saveRefreshed(db: Database, owner: string, results: readonly RefreshSuccess[]): Promise<void> {
  await db.batch(
    `UPDATE oauth_tokens
        SET access_token = CASE WHEN refresh_token = :claimed THEN :accessToken ELSE access_token END,
            refresh_token = CASE WHEN refresh_token = :claimed THEN :refreshToken ELSE refresh_token END,
            expires_at = CASE WHEN refresh_token = :claimed THEN :expiresAt ELSE expires_at END,
            refresh_failure_count = CASE WHEN refresh_token = :claimed THEN 0 ELSE refresh_failure_count END,
            last_refresh_error = CASE WHEN refresh_token = :claimed THEN NULL ELSE last_refresh_error END,
            next_refresh_attempt_at = CASE WHEN refresh_token = :claimed THEN NULL ELSE next_refresh_attempt_at END,
            last_refreshed_at = CASE WHEN refresh_token = :claimed THEN now() ELSE last_refreshed_at END,
            refresh_lease_owner = NULL,
            refresh_lease_expires_at = NULL,
            updated_at = now()
      WHERE id = :id AND refresh_lease_owner = :owner`,
    results.map((r) => ({
      id: sqlUuid(r.token.id),
      owner: sqlUuid(owner),
      claimed: r.token.storedRefreshToken,
      accessToken: r.accessToken,
      refreshToken: r.refreshToken,
      expiresAt: r.expiresAt,
    })),
  );
}

/** Records failures in one batch: count, error, backoff, and refresh off where it must stop. */
export async function saveFailures(db: Database, owner: string, failures: readonly RefreshFailure[]): Promise<void> {
  await db.batch(
    `UPDATE oauth_tokens
        SET refresh_failure_count = refresh_failure_count + :increment,
            last_refresh_error = :error,
            proactive_refresh_enabled = proactive_refresh_enabled AND NOT :disable,
            next_refresh_attempt_at = :nextAttemptAt,
            refresh_lease_owner = NULL,
            refresh_lease_expires_at = NULL,
            updated_at = now()
      WHERE id = :id AND refresh_lease_owner = :owner`,
    failures.map((f) => ({
      id: sqlUuid(f.token.id),
      owner: sqlUuid(owner),
      increment: f.countsAsFailure ? 1 : 0,
      error: f.error,
      disable: f.disable,
      nextAttemptAt: f.nextAttemptAt,
    })),
  );
}

/**
 * Flags every account of these users as needing re-authorisation (one statement), so the
 * account sync leaves them alone and the product can ask the user to reconnect.
 */
export async function flagReauthorisation(db: Database, users: ReadonlyArray<{ userId: string; reason: string }>): Promise<void> {
  if (users.length === 0) return;
  await db.query(
    `UPDATE user_accounts ua
        SET sync_status = 'reauth_required', sync_error_message = x.reason, updated_at = now()
       FROM jsonb_to_recordset(:users::jsonb) AS x(user_id uuid, reason text)
      WHERE ua.user_id = x.user_id`,
    { users: sqlJson(users.map((u) => ({ user_id: u.userId, reason: u.reason }))) },
  );
}

/** Gives back leases this invocation still holds (time ran out before they were processed). */
export async function releaseLeases(db: Database, owner: string, tokenIds: readonly string[]): Promise<void> {
  if (tokenIds.length === 0) return;
  await db.query(
    `UPDATE oauth_tokens SET refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
      WHERE refresh_lease_owner = :owner AND id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
    { owner: sqlUuid(owner), ids: sqlJson(tokenIds) },
  );
}
