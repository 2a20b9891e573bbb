/**
 * The naive baseline the benchmark compares the job cores with: the same work done the obvious
 * way, one row at a time, sequentially. It is honest: every row costs a real SELECT and real
 * writes through the same database port (the Data API path in the benchmark) and one real call
 * to the same (fake) Amazon through the same clients. What it leaves out is what makes the cores
 * fast: batching (claims and write-backs per batch, not per row) and concurrency.
 *
 * It keeps the jobs' essential behaviour, so the comparison is like for like: tokens are
 * decrypted and the new ones encrypted, failures are recorded with a retry time, accounts are
 * upserted with the same metadata and every sync attempt leaves a history row. It has no leases
 * (it is not safe to run twice at once) and no rate-limit bookkeeping.
 */
import type { ProfileLister } from '../lambda/account-sync/run-context';
import { toAccountRecord } from '../lambda/account-sync/profiles';
import { classifyAmazonError } from '../lambda/shared/amazon/failure';
import { Database, sqlJson, sqlUuid } from '../lambda/shared/db/port';
import { describeError } from '../lambda/shared/jobs/runtime';
import { oauthTokenBinding, type TokenCipher } from '../lambda/shared/token-crypto';
import type { TokenRefresher } from '../lambda/token-refresh/core';
import type { AmazonRegion } from '../lambda/shared/amazon/regions';

export interface NaiveResult {
  /** Rows (tokens or users) processed: each cost one SELECT, one Amazon call and its writes. */
  readonly processed: number;
  readonly succeeded: number;
  readonly failed: number;
  /** Accounts upserted (account sync only). */
  readonly accounts: number;
  readonly databaseCalls: number;
  readonly amazonCalls: number;
  readonly seconds: number;
}

export interface NaiveOptions {
  /** Stop after this many rows. @default - until nothing is due */
  readonly limit?: number;
}

/**
 * Token refresh, naively: SELECT the next due token, refresh it at Amazon, UPDATE its row;
 * repeat. Due means what it means for the core (refresh on, expiring within 30 minutes, not
 * waiting for a retry).
 */
export async function naiveTokenRefresh(
  deps: { db: Database; lwa: TokenRefresher; cipher: TokenCipher },
  o: NaiveOptions = {},
): Promise<NaiveResult> {
  const { db, lwa, cipher } = deps;
  const started = performance.now();
  const callsBefore = db.callCounts().total;
  const r = { processed: 0, succeeded: 0, failed: 0, amazonCalls: 0 };
  while (o.limit === undefined || r.processed < o.limit) {
    const { rows } = await db.query<{ id: string; user_id: string; refresh_token: string; region: AmazonRegion }>(
      `SELECT id, user_id, refresh_token, region FROM oauth_tokens
        WHERE proactive_refresh_enabled = TRUE
          AND expires_at < now() + interval '30 minutes'
          AND (next_refresh_attempt_at IS NULL OR next_refresh_attempt_at <= now())
        ORDER BY expires_at
        LIMIT 1`,
    );
    const row = rows[0];
    if (!row) break;
    r.processed += 1;
    try {
      const binding = { userId: row.user_id, region: row.region };
      const refreshToken = await cipher.decrypt(row.refresh_token, oauthTokenBinding(binding, 'refresh_token'));
      r.amazonCalls += 1;
      const tokens = await lwa.refresh({ itemId: row.id, region: row.region, refreshToken });
      await db.query(
        `UPDATE oauth_tokens
            SET access_token = :accessToken, refresh_token = :refreshToken,
                expires_at = now() + make_interval(secs => :expiresIn),
                refresh_failure_count = 0, last_refresh_error = NULL, next_refresh_attempt_at = NULL,
                last_refreshed_at = now(), updated_at = now()
          WHERE id = :id`,
        {
          id: sqlUuid(row.id),
          accessToken: cipher.encrypt(tokens.accessToken, oauthTokenBinding(binding, 'access_token')),
          refreshToken: cipher.encrypt(
            tokens.refreshToken ?? refreshToken,
            oauthTokenBinding(binding, 'refresh_token'),
          ),
          expiresIn: tokens.expiresInSeconds,
        },
      );
      r.succeeded += 1;
    } catch (error) {
      const f = classifyAmazonError(error);
      await db.query(
        `UPDATE oauth_tokens
            SET refresh_failure_count = refresh_failure_count + 1, last_refresh_error = :error,
                next_refresh_attempt_at = now() + interval '5 minutes', updated_at = now()
          WHERE id = :id`,
        { id: sqlUuid(row.id), error: `${f.kind}: ${describeError(error)}` },
      );
      r.failed += 1;
    }
  }
  return {
    ...r,
    accounts: 0,
    databaseCalls: db.callCounts().total - callsBefore,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * Account sync, naively: SELECT the next due user with their token, list their profiles at
 * Amazon, then one INSERT … ON CONFLICT per profile, an INSERT and an UPDATE of the history row and one
 * UPDATE of the user's schedule; repeat.
 */
export async function naiveAccountSync(
  deps: { db: Database; ads: ProfileLister; cipher: TokenCipher },
  o: NaiveOptions = {},
): Promise<NaiveResult> {
  const { db, ads, cipher } = deps;
  const started = performance.now();
  const callsBefore = db.callCounts().total;
  const r = { processed: 0, succeeded: 0, failed: 0, accounts: 0, amazonCalls: 0 };
  while (o.limit === undefined || r.processed < o.limit) {
    const { rows } = await db.query<{ user_id: string; access_token: string; region: AmazonRegion }>(
      `SELECT t.user_id, t.access_token, t.region FROM oauth_tokens t
        WHERE t.proactive_refresh_enabled = TRUE
          AND t.expires_at > now() + interval '2 minutes'
          AND (t.sync_next_attempt_at <= now()
               OR EXISTS (SELECT 1 FROM user_accounts ua
                           WHERE ua.user_id = t.user_id AND ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'))
        LIMIT 1`,
    );
    const row = rows[0];
    if (!row) break;
    r.processed += 1;
    const nextSyncAt = new Date(Date.now() + 6 * 3600_000);
    try {
      const accessToken = await cipher.decrypt(
        row.access_token,
        oauthTokenBinding({ userId: row.user_id, region: row.region }, 'access_token'),
      );
      r.amazonCalls += 1;
      const profiles = await ads.listProfiles({ itemId: row.user_id, region: row.region, accessToken });
      for (const profile of profiles) {
        const account = toAccountRecord(profile, row.region);
        await db.query(
          `INSERT INTO user_accounts AS ua (user_id, amazon_account_id, status, metadata, sync_status, sync_error_message, sync_retry_count, next_sync_at, updated_at)
           VALUES (:userId, :accountId, 'active', :metadata, 'completed', NULL, 0, :next, now())
           ON CONFLICT (user_id, amazon_account_id) DO UPDATE
             SET metadata = ua.metadata || EXCLUDED.metadata, sync_status = 'completed', sync_error_message = NULL,
                 sync_retry_count = 0, next_sync_at = EXCLUDED.next_sync_at, updated_at = now()`,
          {
            userId: sqlUuid(row.user_id),
            accountId: account.amazonAccountId,
            metadata: sqlJson(account.metadata),
            next: nextSyncAt,
          },
        );
      }
      await recordHistory(db, row.user_id, { status: 'success', synced: profiles.length, failed: 0, details: null });
      await db.query(
        `UPDATE oauth_tokens SET sync_next_attempt_at = :next, sync_retry_count = 0, sync_last_error = NULL WHERE user_id = :userId`,
        {
          userId: sqlUuid(row.user_id),
          next: nextSyncAt,
        },
      );
      r.succeeded += 1;
      r.accounts += profiles.length;
    } catch (error) {
      const message = describeError(error);
      const retryAt = new Date(Date.now() + 5 * 60_000);
      await recordHistory(db, row.user_id, { status: 'failed', synced: 0, failed: 1, details: { error: message } });
      await db.query(
        `UPDATE user_accounts SET sync_status = 'failed', sync_error_message = :error, sync_retry_count = sync_retry_count + 1, next_sync_at = :next WHERE user_id = :userId`,
        { userId: sqlUuid(row.user_id), error: message, next: retryAt },
      );
      await db.query(
        `UPDATE oauth_tokens SET sync_next_attempt_at = :next, sync_retry_count = sync_retry_count + 1, sync_last_error = :error WHERE user_id = :userId`,
        {
          userId: sqlUuid(row.user_id),
          error: message,
          next: retryAt,
        },
      );
      r.failed += 1;
    }
  }
  return { ...r, databaseCalls: db.callCounts().total - callsBefore, seconds: (performance.now() - started) / 1000 };
}

/**
 * One history row, the way the jobs' login may write it (it inserts a 'started' row and closes
 * it, as the real job does): an INSERT and an UPDATE per user.
 */
async function recordHistory(
  db: Database,
  userId: string,
  o: { status: 'success' | 'failed'; synced: number; failed: number; details: Record<string, unknown> | null },
): Promise<void> {
  const { rows } = await db.query<{ id: string }>(
    `INSERT INTO account_sync_history (sync_type, sync_status, metadata)
     VALUES ('scheduled', 'started', :metadata) RETURNING id`,
    { metadata: sqlJson({ userId }) },
  );
  await db.query(
    `UPDATE account_sync_history
        SET sync_status = :status, completed_at = now(), accounts_synced = :synced, accounts_failed = :failed,
            error_details = :details
      WHERE id = :id`,
    {
      id: sqlUuid(rows[0].id),
      status: o.status,
      synced: o.synced,
      failed: o.failed,
      details: o.details ? sqlJson(o.details) : null,
    },
  );
}
