-- Up Migration
--
-- The jobs' role gets exactly the columns the jobs' statements use, and nothing on `users`.
--
-- Before this migration accounts_worker (0006) could SELECT every row of `users` (no job
-- reads it; 0009 added a read-all policy for it), and SELECT and UPDATE every column of
-- oauth_tokens and user_accounts (user_id included), and of the two job tables. A stolen or
-- misused job login could so move tokens or accounts between users and read every e-mail
-- address.
--
-- Now every privilege is per column: SELECT on what the statements read (WHERE, SET
-- expressions, ON CONFLICT, RETURNING), INSERT and UPDATE on what they assign. The statements
-- are in lambda/token-refresh/store.ts, lambda/account-sync/store.ts and
-- lambda/shared/amazon/usage-store.ts; test/migrations/worker-privileges.test.ts lists each
-- privilege with the statement that needs it, and fails on one that no statement needs or one
-- that is missing. A job change that reads or writes another column adds it here (in a new
-- migration) and in that list. Never user_id on UPDATE, never id, created_at, DELETE,
-- TRUNCATE, REFERENCES or TRIGGER.
--
-- `users`: privileges revoked, and 0009's read-all policy for accounts_worker dropped (a
-- policy without a grant gives nothing, but nothing should suggest the role reads users).
-- Foreign key checks on user_id run as the table owner and need nothing from the role.
--
-- Idempotent: a table-wide REVOKE also takes back the role's per-column privileges, then the
-- column lists are granted again, all in this transaction (the jobs never see the role
-- without its privileges). Re-applying 0009 by hand re-creates its policy on users; apply
-- this one after it.
--
-- Locks: GRANT and REVOKE change catalogue rows only; DROP POLICY takes ACCESS EXCLUSIVE on
-- users for a catalogue change (no scan), behind lock_timeout like 0003, and the runner
-- retries after a timeout.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

REVOKE ALL ON users, oauth_tokens, user_accounts, account_sync_history, rate_limit_tracking FROM accounts_worker;
DROP POLICY IF EXISTS accounts_worker_read ON users;

GRANT SELECT (id, user_id, access_token, refresh_token, expires_at, region, proactive_refresh_enabled,
              refresh_failure_count, next_refresh_attempt_at,
              refresh_lease_owner, refresh_lease_expires_at,
              sync_lease_owner, sync_lease_expires_at, sync_next_attempt_at, sync_retry_count, sync_last_error)
  ON oauth_tokens TO accounts_worker;
GRANT UPDATE (access_token, refresh_token, expires_at, proactive_refresh_enabled,
              refresh_failure_count, last_refresh_error, next_refresh_attempt_at, last_refreshed_at,
              refresh_lease_owner, refresh_lease_expires_at, updated_at,
              sync_lease_owner, sync_lease_expires_at, sync_next_attempt_at, sync_retry_count, sync_last_error)
  ON oauth_tokens TO accounts_worker;

GRANT SELECT (id, user_id, amazon_account_id, status, metadata, sync_status, sync_retry_count, next_sync_at)
  ON user_accounts TO accounts_worker;
GRANT INSERT (user_id, amazon_account_id, status, metadata, sync_status, sync_error_message, sync_retry_count,
              next_sync_at, updated_at)
  ON user_accounts TO accounts_worker;
GRANT UPDATE (status, metadata, sync_status, sync_error_message, sync_retry_count, next_sync_at, updated_at)
  ON user_accounts TO accounts_worker;

GRANT SELECT (id, sync_status, started_at, metadata) ON account_sync_history TO accounts_worker;
GRANT INSERT (user_account_id, sync_type, sync_status, metadata) ON account_sync_history TO accounts_worker;
GRANT UPDATE (sync_status, completed_at, accounts_synced, accounts_failed, error_details)
  ON account_sync_history TO accounts_worker;

GRANT SELECT (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start,
              allowed_rate_per_second)
  ON rate_limit_tracking TO accounts_worker;
GRANT INSERT (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start,
              updated_at, allowed_rate_per_second)
  ON rate_limit_tracking TO accounts_worker;
GRANT UPDATE (request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start, updated_at,
              allowed_rate_per_second)
  ON rate_limit_tracking TO accounts_worker;

-- Down Migration
--
-- Back to the table-wide grants of 0006 and the users policy of 0009.
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';
REVOKE ALL ON users, oauth_tokens, user_accounts, account_sync_history, rate_limit_tracking FROM accounts_worker;
GRANT SELECT ON users TO accounts_worker;
GRANT SELECT, UPDATE ON oauth_tokens TO accounts_worker;
GRANT SELECT, INSERT, UPDATE ON user_accounts TO accounts_worker;
GRANT SELECT, INSERT, UPDATE ON account_sync_history, rate_limit_tracking TO accounts_worker;
DROP POLICY IF EXISTS accounts_worker_read ON users;
CREATE POLICY accounts_worker_read ON users
  FOR SELECT TO accounts_worker
  USING (true);
