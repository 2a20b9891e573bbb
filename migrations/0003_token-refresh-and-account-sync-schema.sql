-- Up Migration
--
-- Spec "Step 2: Apply Schema Changes": every ALTER TABLE and CREATE TABLE of the specification
-- in one transaction, so the schema change is atomic. What differs from the spec's SQL, and why:
--
-- Locks. ALTER TABLE takes ACCESS EXCLUSIVE on oauth_tokens and user_accounts, and the new
-- foreign keys take SHARE ROW EXCLUSIVE on users and user_accounts. While a lock request
-- waits (say, behind a long report query), every later write to that table queues behind it.
-- lock_timeout bounds that wait: the migration gives up after 500 ms instead of stalling the
-- application, and the migration runner retries it with backoff (lambda/migrate). Nothing in
-- this transaction scans or rewrites a table, so the locks are held for milliseconds:
--   * ADD COLUMN with a constant DEFAULT is a catalogue change in PostgreSQL >= 11;
--   * CHECK constraints on existing tables are added NOT VALID here (enforced for new rows at
--     once) and validated by migration 0004 under SHARE UPDATE EXCLUSIVE, which does not
--     block writes;
--   * the spec's indexes on the three big tables are built CONCURRENTLY by migration 0005.
--
-- The sync_status trap. The spec adds `sync_status ... DEFAULT 'pending'` and then runs
-- `UPDATE ... WHERE sync_status IS NULL`. Adding a column with a default fills every existing
-- row with that default, so that UPDATE matches no row and active accounts would stay
-- 'pending'. Here sync_status and next_sync_at are added WITHOUT a default for existing rows
-- (ADD COLUMN, then SET DEFAULT in the same statement, which only affects rows inserted
-- later): existing rows are NULL until migration 0004 backfills them, in batches, with the
-- spec's CASE; new rows get the defaults. 0004 then makes both columns NOT NULL.
--
-- Constraints the spec's rationale promises ("check constraints on sync_status", "NOT NULL on
-- critical fields") are written out: counters are NOT NULL and never negative, statuses and
-- sync types are checked against their documented values, and a history row is 'started'
-- exactly while completed_at is NULL. sync_status also allows 'in_progress' (a sync is
-- running) and 'reauth_required' (the user must reconnect Amazon), which the jobs set.
--
-- Row Level Security. The spec's account_sync_history policy reads user_accounts as
-- `authenticated`. Granting that role SELECT on user_accounts would, without RLS there, show
-- it every user's accounts; so user_accounts gets RLS too, with a policy that lets
-- `authenticated` see only its own rows, and the grant is limited to the two columns the
-- policy reads (id, user_id). `authenticated` gets nothing on oauth_tokens or the backups,
-- and oauth_tokens gets RLS with no policy for it, so a mistaken grant still shows nothing.
-- FOR ALL policies with only USING also check new rows against USING: a user cannot insert
-- or move a row into another user's account.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE users, oauth_tokens, user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

ALTER TABLE oauth_tokens
  ADD COLUMN IF NOT EXISTS refresh_failure_count integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS last_refresh_error text,
  ADD COLUMN IF NOT EXISTS proactive_refresh_enabled boolean NOT NULL DEFAULT true,
  ADD CONSTRAINT oauth_tokens_refresh_failure_count_check CHECK (refresh_failure_count >= 0) NOT VALID;

ALTER TABLE user_accounts
  ADD COLUMN IF NOT EXISTS sync_status varchar(50),
  ALTER COLUMN sync_status SET DEFAULT 'pending',
  ADD COLUMN IF NOT EXISTS sync_error_message text,
  ADD COLUMN IF NOT EXISTS sync_retry_count integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS next_sync_at timestamptz,
  ALTER COLUMN next_sync_at SET DEFAULT now(),
  ADD CONSTRAINT user_accounts_sync_status_check
    CHECK (sync_status IN ('pending', 'in_progress', 'completed', 'failed', 'reauth_required')) NOT VALID,
  ADD CONSTRAINT user_accounts_sync_retry_count_check CHECK (sync_retry_count >= 0) NOT VALID;

CREATE TABLE IF NOT EXISTS account_sync_history (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- NULL for a user who has no account yet; metadata then names the user (docs/architecture.md).
  user_account_id uuid REFERENCES user_accounts (id) ON DELETE CASCADE,
  sync_type varchar(50) NOT NULL
    CONSTRAINT account_sync_history_sync_type_check CHECK (sync_type IN ('manual', 'scheduled', 'webhook')),
  sync_status varchar(50) NOT NULL
    CONSTRAINT account_sync_history_sync_status_check CHECK (sync_status IN ('started', 'success', 'failed')),
  started_at timestamptz NOT NULL DEFAULT now(),
  completed_at timestamptz,
  accounts_synced integer NOT NULL DEFAULT 0
    CONSTRAINT account_sync_history_accounts_synced_check CHECK (accounts_synced >= 0),
  accounts_failed integer NOT NULL DEFAULT 0
    CONSTRAINT account_sync_history_accounts_failed_check CHECK (accounts_failed >= 0),
  error_details jsonb,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT account_sync_history_completion_check
    CHECK ((sync_status = 'started') = (completed_at IS NULL) AND (completed_at IS NULL OR completed_at >= started_at))
);

CREATE INDEX IF NOT EXISTS idx_sync_history_account ON account_sync_history (user_account_id);
CREATE INDEX IF NOT EXISTS idx_sync_history_status ON account_sync_history (sync_status);
CREATE INDEX IF NOT EXISTS idx_sync_history_started ON account_sync_history (started_at DESC);

CREATE TABLE IF NOT EXISTS rate_limit_tracking (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  -- NULL for limits that belong to an endpoint rather than to one user (the LWA token
  -- endpoint limits the application's client id).
  user_id uuid REFERENCES users (id) ON DELETE CASCADE,
  endpoint varchar(255) NOT NULL,
  request_count integer NOT NULL DEFAULT 0
    CONSTRAINT rate_limit_tracking_request_count_check CHECK (request_count >= 0),
  limit_hit_count integer NOT NULL DEFAULT 0
    CONSTRAINT rate_limit_tracking_limit_hit_count_check CHECK (limit_hit_count >= 0),
  last_limit_hit timestamptz,
  retry_after_seconds integer
    CONSTRAINT rate_limit_tracking_retry_after_seconds_check CHECK (retry_after_seconds >= 0),
  window_start timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  -- One row per (endpoint, user), endpoint-wide rows included, so the jobs can upsert.
  CONSTRAINT rate_limit_tracking_endpoint_user_key UNIQUE NULLS NOT DISTINCT (endpoint, user_id)
);

CREATE INDEX IF NOT EXISTS idx_rate_limit_user ON rate_limit_tracking (user_id);
CREATE INDEX IF NOT EXISTS idx_rate_limit_endpoint ON rate_limit_tracking (endpoint);
CREATE INDEX IF NOT EXISTS idx_rate_limit_window ON rate_limit_tracking (window_start);

-- Row Level Security (spec, plus what keeps it from leaking, see above).
ALTER TABLE account_sync_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE rate_limit_tracking ENABLE ROW LEVEL SECURITY;
ALTER TABLE user_accounts ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_tokens ENABLE ROW LEVEL SECURITY;

CREATE POLICY account_sync_history_policy ON account_sync_history
  FOR ALL
  TO authenticated
  USING (
    user_account_id IN (
      SELECT id FROM user_accounts
      WHERE user_id = auth.uid()
    )
  );

CREATE POLICY rate_limit_tracking_policy ON rate_limit_tracking
  FOR ALL
  TO authenticated
  USING (user_id = auth.uid());

CREATE POLICY user_accounts_owner_read_policy ON user_accounts
  FOR SELECT
  TO authenticated
  USING (user_id = auth.uid());

REVOKE ALL ON account_sync_history, rate_limit_tracking FROM PUBLIC;
GRANT SELECT (id, user_id) ON user_accounts TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON account_sync_history, rate_limit_tracking TO authenticated;

-- Down Migration
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens, user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';
DROP TABLE IF EXISTS rate_limit_tracking;
DROP TABLE IF EXISTS account_sync_history;
DROP POLICY IF EXISTS user_accounts_owner_read_policy ON user_accounts;
REVOKE SELECT (id, user_id) ON user_accounts FROM authenticated;
ALTER TABLE user_accounts DISABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_tokens DISABLE ROW LEVEL SECURITY;
ALTER TABLE user_accounts
  DROP CONSTRAINT IF EXISTS user_accounts_sync_retry_count_check,
  DROP CONSTRAINT IF EXISTS user_accounts_sync_status_check,
  DROP COLUMN IF EXISTS next_sync_at,
  DROP COLUMN IF EXISTS sync_retry_count,
  DROP COLUMN IF EXISTS sync_error_message,
  DROP COLUMN IF EXISTS sync_status;
ALTER TABLE oauth_tokens
  DROP CONSTRAINT IF EXISTS oauth_tokens_refresh_failure_count_check,
  DROP COLUMN IF EXISTS proactive_refresh_enabled,
  DROP COLUMN IF EXISTS last_refresh_error,
  DROP COLUMN IF EXISTS refresh_failure_count;
