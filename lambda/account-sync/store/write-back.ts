import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import type { AmazonRegion } from '../../shared/amazon/regions';
import { databaseErrorSummary, writeInHalves } from '../../shared/jobs/write-in-halves';
import type { ClaimedConnection } from './claims';

/** One profile as stored: `amazon_account_id` and the metadata keys docs/architecture.md fixes. */
export interface AccountRecord {
  readonly amazonAccountId: string;
  readonly metadata: Record<string, unknown>;
}

export type ConnectionSyncOutcome =
  | {
      readonly kind: 'success';
      readonly connection: ClaimedConnection;
      readonly accounts: readonly AccountRecord[];
      /** Profiles Amazon listed that are not advertising accounts (Amazon Attribution): not stored. */
      readonly excludedProfileIds?: readonly string[];
      readonly nextSyncAt: Date;
    }
  | {
      readonly kind: 'failure';
      readonly connection: ClaimedConnection;
      /** Human-readable, recorded in sync_error_message; never a token. */
      readonly error: string;
      readonly errorDetails: Record<string, unknown>;
      readonly nextAttemptAt: Date;
    }
  | {
      /** Not attempted (time ran out): lease released, nothing recorded against the connection. */
      readonly kind: 'released';
      readonly connection: ClaimedConnection;
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

interface ConnectionRow {
  readonly token_id: string;
  readonly generation: number;
  readonly user_id: string;
  readonly region: AmazonRegion;
  readonly history_id: string;
  readonly kind: ConnectionSyncOutcome['kind'];
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

/** One connection's part of a write-back, with its size on the wire. */
interface ConnectionWrite {
  readonly outcome: ConnectionSyncOutcome;
  readonly row: ConnectionRow;
  readonly accounts: readonly AccountRow[];
  readonly bytes: number;
}

/** A connection whose outcome the database refused even on its own. */
export interface RejectedConnection {
  readonly connection: ClaimedConnection;
  /** The first line of the database's message. */
  readonly error: string;
  /** What was written in its place: `onRefused`'s outcome, or the connection released if that was refused too. */
  readonly recordedAs: ConnectionSyncOutcome;
}

export interface SaveOptions {
  /**
   * What to write instead for a connection whose outcome the database refuses even on its own
   * (a failure with a backoff); if that is refused too, the connection is released.
   */
  readonly onRefused: (outcome: ConnectionSyncOutcome, error: string) => ConnectionSyncOutcome;
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
 * Every statement writes only for connections whose sync lease this run still holds (a run whose
 * lease expired and was taken over writes nothing) and whose connection is still the
 * generation it claimed (a region connected again meanwhile, or disconnected, gets nothing of
 * the old connection's profiles; api.store_connection closed that attempt's history row). A user whose accounts alone exceed the
 * budget (thousands of profiles) has them upserted in chunks first. A statement the database
 * refuses with a data error is written again in halves, down to single connections (writeInHalves);
 * a connection refused even alone gets `onRefused`'s outcome instead, and is returned.
 */
export async function saveOutcomes(
  db: Database,
  owner: string,
  outcomes: readonly ConnectionSyncOutcome[],
  options: SaveOptions,
): Promise<{ accountsMissing: number; rejected: RejectedConnection[] }> {
  const counts = { accountsMissing: 0 };
  const rejected: RejectedConnection[] = [];
  for (const group of packBySize(outcomes.map(toConnectionWrite))) {
    for (const r of await writeInHalves(group, (part) => writeConnections(db, owner, part, counts))) {
      const error = databaseErrorSummary(r.error);
      const instead = options.onRefused(r.item.outcome, error);
      const released: ConnectionSyncOutcome = { kind: 'released', connection: r.item.outcome.connection };
      const again = await writeInHalves([toConnectionWrite(instead)], (part) =>
        writeConnections(db, owner, part, counts),
      );
      if (again.length > 0) await writeConnections(db, owner, [toConnectionWrite(released)], counts);
      rejected.push({
        connection: r.item.outcome.connection,
        error,
        recordedAs: again.length > 0 ? released : instead,
      });
    }
  }
  return { accountsMissing: counts.accountsMissing, rejected };
}

function toConnectionWrite(o: ConnectionSyncOutcome): ConnectionWrite {
  const row: ConnectionRow = {
    token_id: o.connection.tokenId,
    generation: o.connection.generation,
    user_id: o.connection.userId,
    region: o.connection.region,
    history_id: o.connection.historyId,
    kind: o.kind,
    profile_ids: o.kind === 'success' ? o.accounts.map((a) => a.amazonAccountId) : [],
    excluded_ids: o.kind === 'success' ? (o.excludedProfileIds ?? []) : [],
    synced: o.kind === 'success' ? o.accounts.length : 0,
    failed: o.kind === 'failure' ? Math.max(1, o.connection.accountCount) : 0,
    error: o.kind === 'failure' ? o.error : null,
    error_details: o.kind === 'failure' ? o.errorDetails : null,
    next_at: o.kind === 'success' ? o.nextSyncAt : o.kind === 'failure' ? o.nextAttemptAt : null,
    // Given back: the accounts return to the status they had before the claim.
    usual_status: o.kind === 'released' ? (o.connection.previousStatus?.usual ?? 'pending') : null,
    other_statuses: o.kind === 'released' ? (o.connection.previousStatus?.others ?? {}) : null,
  };
  const accounts =
    o.kind === 'success'
      ? o.accounts.map((a) => ({
          user_id: o.connection.userId,
          generation: o.connection.generation,
          region: o.connection.region,
          amazon_account_id: a.amazonAccountId,
          metadata: a.metadata,
          next_sync_at: o.nextSyncAt,
        }))
      : [];
  return { outcome: o, row, accounts, bytes: wireBytes(row) + accounts.reduce((n, a) => n + wireBytes(a), 0) };
}

/** Bytes a row takes in the Data API request: its JSON, escaped again as a string value. */
function wireBytes(row: object): number {
  return Buffer.byteLength(JSON.stringify(JSON.stringify(row))) + 1;
}

/** Groups connections in order so that each group's rows stay under the budget (at least one per group). */
function packBySize(writes: readonly ConnectionWrite[]): ConnectionWrite[][] {
  const groups: ConnectionWrite[][] = [];
  let current: ConnectionWrite[] = [];
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

/** Writes connections' outcomes; a lone connection over the budget has its accounts upserted in chunks first. */
async function writeConnections(
  db: Database,
  owner: string,
  writes: readonly ConnectionWrite[],
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
  counts.accountsMissing += await writeConnectionOutcomes(
    db,
    owner,
    writes.map((w) => w.row),
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
async function writeConnectionOutcomes(
  db: Database,
  owner: string,
  users: readonly ConnectionRow[],
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

/** The `sync_error_message` of accounts whose connection needs re-authorisation ({@link flagAccountsNeedingReauth}). */
export const REAUTH_MESSAGE = 'Amazon access needs re-authorisation: the user must reconnect their Amazon account';

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
