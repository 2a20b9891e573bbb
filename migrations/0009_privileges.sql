-- Up Migration
--
-- Privileges that hold wherever the schema lands, Supabase included.
--
-- What went wrong before this migration. On a database prepared the way Supabase prepares
-- one, the schema `public` carries default privileges (ALTER DEFAULT PRIVILEGES IN SCHEMA
-- public GRANT ALL ON TABLES / SEQUENCES / FUNCTIONS TO anon, authenticated, service_role), so
-- every table, sequence and function the migrations created came with ALL for the roles
-- `anon` (no sign-in at all) and `authenticated` (any signed-in user). `REVOKE ... FROM
-- PUBLIC` does not take back a grant made to a named role. Without RLS on `users`, `anon`
-- read and updated every user's e-mail, and read `pgmigrations`; `authenticated` read and
-- changed every other user's `users` row; ALL includes TRUNCATE, which RLS does not filter.
--
-- What this migration does, for exactly the objects this project's migrations create or
-- adopt (it changes no default privilege: other applications' objects keep theirs):
--   * takes back every privilege PUBLIC, `anon` and `authenticated` hold on them, table-wide
--     and per column, whatever default privileges or earlier grants put there (`anon` only
--     where the role exists: plain PostgreSQL and Aurora have none);
--   * grants `authenticated` only what its policies are for, column by column where a table
--     holds secrets or may grow some:
--       users                 SELECT (id, email, created_at), own row (new RLS + policy);
--       oauth_tokens          SELECT on the connection's non-token columns, own row (policy);
--       user_accounts         SELECT on the account's columns, own rows (0003's policy);
--       account_sync_history  SELECT, own accounts' rows (the spec's policy);
--       rate_limit_tracking   SELECT, INSERT and UPDATE of the counters, own rows: a manual
--                             sync's per-user limit is recorded under the caller's user_id;
--     never access_token or refresh_token, nothing on the backups of 0002 or on pgmigrations,
--     no DELETE, TRUNCATE, REFERENCES or TRIGGER anywhere;
--   * the spec's FOR ALL policies get a WITH CHECK equal to their USING, so a write a later
--     grant might allow can never create or move a row outside the caller's own;
--   * the reconnection trigger function of 0007 (SECURITY DEFINER) is executable by its owner
--     only: triggers do not need EXECUTE to fire, and nobody has to call it;
--   * `users` gets Row Level Security, with a read-all policy for the jobs' role
--     (accounts_worker keeps exactly what 0006 gave it).
-- `service_role` (Supabase's key for the product's own servers, BYPASSRLS) is left with
-- whatever the database gave it, except EXECUTE on the trigger function. `accounts_worker`
-- keeps what 0006 granted.
--
-- Idempotent (REVOKE/GRANT/ENABLE repeat harmlessly; policies are dropped and re-created in
-- this transaction), so it also repairs a database where someone re-granted something later:
-- run it again by hand with `psql -f` (the Up part).
--
-- Locks: GRANT/REVOKE change catalogue rows only; ENABLE ROW LEVEL SECURITY and the policy
-- changes take ACCESS EXCLUSIVE on their table for a catalogue change (no scan), behind
-- lock_timeout like 0003, and the runner retries after a timeout.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE users, oauth_tokens, account_sync_history, rate_limit_tracking IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

DO $$
DECLARE
  target regclass;
  migrations_table regclass := to_regclass('public.pgmigrations');
  migrations_sequence regclass;
  grantee regrole;
  from_roles text := 'PUBLIC, authenticated' || CASE WHEN to_regrole('anon') IS NULL THEN '' ELSE ', anon' END;
BEGIN
  FOREACH target IN ARRAY ARRAY[
    'public.users', 'public.oauth_tokens', 'public.user_accounts',
    'public.user_accounts_backup', 'public.oauth_tokens_backup',
    'public.account_sync_history', 'public.rate_limit_tracking'
  ]::regclass[] LOOP
    -- A table-wide REVOKE also revokes the same privileges granted on single columns.
    EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', target, from_roles);
  END LOOP;

  -- node-pg-migrate's bookkeeping table and its id sequence (made by the runner, in the
  -- default privileges' reach like everything else).
  IF migrations_table IS NOT NULL THEN
    EXECUTE format('REVOKE ALL ON TABLE %s FROM %s', migrations_table, from_roles);
    migrations_sequence := pg_get_serial_sequence(migrations_table::text, 'id')::regclass;
    IF migrations_sequence IS NOT NULL THEN
      EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM %s', migrations_sequence, from_roles);
    END IF;
  END IF;

  -- SECURITY DEFINER: executable by its owner only. Every grantee is revoked, PUBLIC and
  -- service_role included (nobody calls a trigger function).
  REVOKE ALL ON FUNCTION public.oauth_tokens_reconnected() FROM PUBLIC;
  FOR grantee IN
    SELECT DISTINCT acl.grantee::regrole
      FROM pg_proc p, aclexplode(p.proacl) acl
     WHERE p.oid = 'public.oauth_tokens_reconnected()'::regprocedure
       AND acl.grantee <> 0 AND acl.grantee <> p.proowner
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION public.oauth_tokens_reconnected() FROM %s', grantee);
  END LOOP;
END
$$;

-- users: Row Level Security, own row for `authenticated`, everything for the jobs' role
-- (which 0006 granted SELECT). Foreign key checks and the owner are not subject to RLS.
ALTER TABLE users ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS users_owner_read_policy ON users;
CREATE POLICY users_owner_read_policy ON users
  FOR SELECT TO authenticated
  USING (id = auth.uid());

DROP POLICY IF EXISTS accounts_worker_read ON users;
CREATE POLICY accounts_worker_read ON users
  FOR SELECT TO accounts_worker
  USING (true);

DROP POLICY IF EXISTS oauth_tokens_owner_read_policy ON oauth_tokens;
CREATE POLICY oauth_tokens_owner_read_policy ON oauth_tokens
  FOR SELECT TO authenticated
  USING (user_id = auth.uid());

-- The spec's policies, as written, plus WITH CHECK.
DROP POLICY IF EXISTS account_sync_history_policy ON account_sync_history;
CREATE POLICY account_sync_history_policy ON account_sync_history
  FOR ALL
  TO authenticated
  USING (
    user_account_id IN (
      SELECT id FROM user_accounts
      WHERE user_id = auth.uid()
    )
  )
  WITH CHECK (
    user_account_id IN (
      SELECT id FROM user_accounts
      WHERE user_id = auth.uid()
    )
  );

DROP POLICY IF EXISTS rate_limit_tracking_policy ON rate_limit_tracking;
CREATE POLICY rate_limit_tracking_policy ON rate_limit_tracking
  FOR ALL
  TO authenticated
  USING (user_id = auth.uid())
  WITH CHECK (user_id = auth.uid());

GRANT SELECT (id, email, created_at) ON users TO authenticated;
GRANT SELECT (id, user_id, region, expires_at, refresh_failure_count, last_refresh_error,
              proactive_refresh_enabled, created_at, updated_at)
  ON oauth_tokens TO authenticated;
GRANT SELECT (id, user_id, amazon_account_id, status, metadata, sync_status, sync_error_message,
              sync_retry_count, next_sync_at, created_at, updated_at)
  ON user_accounts TO authenticated;
GRANT SELECT ON account_sync_history TO authenticated;
GRANT SELECT ON rate_limit_tracking TO authenticated;
GRANT INSERT (user_id, endpoint, request_count, limit_hit_count, last_limit_hit,
              retry_after_seconds, window_start)
  ON rate_limit_tracking TO authenticated;
GRANT UPDATE (request_count, limit_hit_count, last_limit_hit, retry_after_seconds,
              window_start, updated_at)
  ON rate_limit_tracking TO authenticated;

-- Down Migration
--
-- Back to the grants and policies 0003 and 0006 left (on a database without default
-- privileges). What was taken from `anon` and from the trigger function's grantees is not
-- given back: those grants were never meant to be there.
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE users, oauth_tokens, account_sync_history, rate_limit_tracking IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';
REVOKE ALL ON users, oauth_tokens, user_accounts, account_sync_history, rate_limit_tracking FROM authenticated;
DROP POLICY IF EXISTS oauth_tokens_owner_read_policy ON oauth_tokens;
DROP POLICY IF EXISTS accounts_worker_read ON users;
DROP POLICY IF EXISTS users_owner_read_policy ON users;
ALTER TABLE users DISABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS rate_limit_tracking_policy ON rate_limit_tracking;
CREATE POLICY rate_limit_tracking_policy ON rate_limit_tracking
  FOR ALL
  TO authenticated
  USING (user_id = auth.uid());
DROP POLICY IF EXISTS account_sync_history_policy ON account_sync_history;
CREATE POLICY account_sync_history_policy ON account_sync_history
  FOR ALL
  TO authenticated
  USING (
    user_account_id IN (
      SELECT id FROM user_accounts
      WHERE user_id = auth.uid()
    )
  );
GRANT SELECT (id, user_id) ON user_accounts TO authenticated;
GRANT SELECT, INSERT, UPDATE, DELETE ON account_sync_history, rate_limit_tracking TO authenticated;
