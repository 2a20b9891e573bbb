import { createHash } from 'node:crypto';
import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import { databaseErrorSummary, writeInHalves } from '../../shared/jobs/write-in-halves';
import type { ClaimedToken } from './claims';

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
  /**
   * Counts towards `refresh_refusal_count`: Amazon refused for good (invalid_grant,
   * invalid_client, …). 5xx, timeouts, malformed answers and 429s never do. @default false
   */
  readonly countsAsRefusal?: boolean;
  /** Turn proactive refresh off (invalid_grant, or too many refusals in a row). */
  readonly disable: boolean;
  /** Recorded in `last_refresh_error`: a classification and Amazon's error code, never a token. */
  readonly error: string;
  /** When to try again (backoff or Retry-After). */
  readonly nextAttemptAt: Date;
}

/** What happened to one claimed token, as written back. */
export type TokenResult =
  | { readonly kind: 'success'; readonly result: RefreshSuccess }
  | {
      readonly kind: 'failure';
      readonly result: RefreshFailure;
      /** When set, the user's accounts are flagged 'reauth_required' with this reason. */
      readonly reauth?: string;
    }
  | { readonly kind: 'released'; readonly token: ClaimedToken };

/** Request budget per write-back statement: well under the Data API's 4 MiB per request. */
const WRITE_BACK_CHARS = 1_500_000;

/** One result as the write-back statement reads it (`jsonb_to_recordset`). */
interface ResultRow {
  readonly id: string;
  readonly kind: TokenResult['kind'];
  /** md5 of the stored refresh token as claimed (success and failure). */
  readonly claimed_md5?: string;
  readonly access_token?: string;
  readonly refresh_token?: string;
  readonly expires_at?: string;
  readonly increment?: number;
  readonly refusal?: number;
  readonly error?: string;
  readonly disable?: boolean;
  readonly next_attempt_at?: string;
  readonly reauth_user?: string | null;
  readonly reauth_reason?: string | null;
}

/** A token whose result the database refused even on its own (its lease was given back instead). */
export interface RejectedResult {
  readonly token: ClaimedToken;
  /** The first line of the database's message. */
  readonly error: string;
}

/**
 * Writes a batch's results back, set-based: one statement per ~1.5 MB of results (one for a
 * normal batch), instead of one UPDATE per token. Each outcome is its own data-modifying CTE:
 * - `succeeded`: the new values, refresh failures reset;
 * - `failed`: count (+0 for a 429), error, backoff, refresh off where it must stop, and (the
 *   last UPDATE) the accounts of that connection's region flagged for re-authorisation (a user's
 *   connections in other regions, and their accounts, are left alone);
 * - `given_back`: released tokens, and results for a token the web app replaced meanwhile;
 * every one of them releases the lease. Two guards, on every statement:
 * - `refresh_lease_owner = :owner`: a run whose lease expired (and that another run may have
 *   re-claimed) writes nothing at all;
 * - `md5(refresh_token) = claimed_md5` on success and failure: a token the web app replaced
 *   during the run (a re-connection) keeps the web app's values: neither our new tokens from
 *   the old grant nor a stale `invalid_grant` for it (which would turn refresh off and flag the
 *   accounts of a user who has just reconnected).
 * A chunk the database refuses with a data error is written again in halves, down to single
 * tokens (see writeInHalves); a token refused even alone gets only its lease released, and is
 * returned.
 */
export async function saveResults(
  db: Database,
  owner: string,
  results: readonly TokenResult[],
): Promise<{ rejected: RejectedResult[] }> {
  const rows = results.map(toResultRow);
  const byId = new Map(results.map((r) => [resultToken(r).id, resultToken(r)]));
  const rejected: RejectedResult[] = [];
  for (const chunk of chunkByLength(rows, WRITE_BACK_CHARS)) {
    for (const r of await writeInHalves(chunk, (part) => writeResultRows(db, owner, part))) {
      await writeResultRows(db, owner, [{ id: r.item.id, kind: 'released' }]);
      rejected.push({ token: byId.get(r.item.id)!, error: databaseErrorSummary(r.error) });
    }
  }
  return { rejected };
}

/** The token an outcome is about. */
export function resultToken(r: TokenResult): ClaimedToken {
  return r.kind === 'released' ? r.token : r.result.token;
}

function md5(text: string): string {
  return createHash('md5').update(text).digest('hex');
}

function toResultRow(r: TokenResult): ResultRow {
  if (r.kind === 'released') return { id: r.token.id, kind: 'released' };
  if (r.kind === 'success') {
    const x = r.result;
    return {
      id: x.token.id,
      kind: 'success',
      claimed_md5: md5(x.token.storedRefreshToken),
      access_token: x.accessToken,
      refresh_token: x.refreshToken,
      expires_at: x.expiresAt.toISOString(),
    };
  }
  const f = r.result;
  return {
    id: f.token.id,
    kind: 'failure',
    claimed_md5: md5(f.token.storedRefreshToken),
    increment: f.countsAsFailure ? 1 : 0,
    refusal: f.countsAsRefusal ? 1 : 0,
    error: f.error,
    disable: f.disable,
    next_attempt_at: f.nextAttemptAt.toISOString(),
    reauth_user: r.reauth ? f.token.userId : null,
    reauth_reason: r.reauth ?? null,
  };
}

async function writeResultRows(db: Database, owner: string, rows: readonly ResultRow[]): Promise<void> {
  await db.query(
    `WITH r AS (
       SELECT * FROM jsonb_to_recordset(:results::jsonb) AS x(
         id uuid, kind text, claimed_md5 text, access_token text, refresh_token text, expires_at timestamptz,
         increment int, refusal int, error text, disable boolean, next_attempt_at timestamptz, reauth_user uuid, reauth_reason text)
     ), succeeded AS (
       UPDATE oauth_tokens t
          SET access_token = r.access_token, refresh_token = r.refresh_token, expires_at = r.expires_at,
              refresh_failure_count = 0, refresh_refusal_count = 0, last_refresh_error = NULL, next_refresh_attempt_at = NULL,
              last_refreshed_at = now(), refresh_lease_owner = NULL, refresh_lease_expires_at = NULL, updated_at = now()
         FROM r
        WHERE r.kind = 'success' AND t.id = r.id AND t.refresh_lease_owner = :owner AND md5(t.refresh_token) = r.claimed_md5
     ), failed AS (
       UPDATE oauth_tokens t
          SET refresh_failure_count = t.refresh_failure_count + r.increment,
              refresh_refusal_count = t.refresh_refusal_count + r.refusal, last_refresh_error = r.error,
              proactive_refresh_enabled = t.proactive_refresh_enabled AND NOT r.disable,
              next_refresh_attempt_at = r.next_attempt_at,
              refresh_lease_owner = NULL, refresh_lease_expires_at = NULL, updated_at = now()
         FROM r
        WHERE r.kind = 'failure' AND t.id = r.id AND t.refresh_lease_owner = :owner AND md5(t.refresh_token) = r.claimed_md5
       RETURNING t.id, t.user_id, t.region
     ), given_back AS (
       UPDATE oauth_tokens t
          SET refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
         FROM r
        WHERE t.id = r.id AND t.refresh_lease_owner = :owner
          AND (r.kind = 'released' OR md5(t.refresh_token) IS DISTINCT FROM r.claimed_md5)
     )
     -- Only the accounts of this connection's region: the user's other connections are fine.
     UPDATE user_accounts ua
        SET sync_status = 'reauth_required', sync_error_message = r.reauth_reason, updated_at = now()
       FROM r JOIN failed f ON f.id = r.id
      WHERE r.reauth_user IS NOT NULL AND ua.user_id = f.user_id AND ua.region = f.region`,
    { results: sqlJson(rows), owner: sqlUuid(owner) },
  );
}

/** Splits rows into runs whose JSON stays under `maxChars` (at least one row per run). */
function chunkByLength<T>(rows: readonly T[], maxChars: number): T[][] {
  const chunks: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const row of rows) {
    const length = JSON.stringify(row).length + 1;
    if (current.length > 0 && size + length > maxChars) {
      chunks.push(current);
      current = [];
      size = 0;
    }
    current.push(row);
    size += length;
  }
  if (current.length > 0) chunks.push(current);
  return chunks;
}
