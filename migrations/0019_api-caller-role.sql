-- Up Migration
--
-- Identity no caller can choose. Every function of schema `api` (0013) takes the caller's
-- claims as an argument and sets them; until now `authenticated` could execute them. On
-- Supabase `authenticated` is every signed-in user (PostgREST exposes any schema added to the
-- project's API settings), so a user could call them with another user's `sub` and read,
-- disconnect or sync that user's connections; and 0013's DELETE on oauth_tokens let a user
-- delete its own token rows directly, behind the API's disconnect (its accounts left active).
--
-- The API's database side becomes a role of its own, `accounts_api_caller` (NOLOGIN, no
-- superuser, no BYPASSRLS, created here; roles are cluster-wide, so only when absent):
--   * it is a member of `authenticated` and inherits its privileges, so it reads exactly what a
--     signed-in user reads, under the same own-row policies `TO authenticated` (0003, 0009):
--     a policy applies to the members of the role it names. Isolation stays the database's;
--   * it is the only grantee of USAGE on schema `api` and of EXECUTE on every function in it
--     (revoked from PUBLIC and from every other grantee: `authenticated`, and Supabase's
--     `anon` and `service_role` where default privileges or anyone else granted them);
--   * it, not `authenticated`, holds the writes 0013 gave for connect and disconnect, each with
--     its own-row policy now `TO accounts_api_caller`:
--       users          INSERT (id, email)                                the first connect
--       oauth_tokens   DELETE                                            disconnect
--       user_accounts  UPDATE (status, sync_error_message, updated_at)   disconnect
--     `authenticated` keeps what 0009 and 0013 give it to read its own rows (and, by the
--     spec's policy, its own rate_limit_tracking counters).
-- The API's login (`accounts_api`, made by the migration custom resource) is granted this role
-- (lambda/migrate/worker-login.ts, ensureApiLogin); on node-postgres (`npm run api`,
-- `npm start`) each request's transaction runs `SET LOCAL ROLE accounts_api_caller`.
--
-- Functions created later in schema `api` by the migration user: default privileges in the
-- schema give EXECUTE to `accounts_api_caller`, and any per-schema default grant to
-- `authenticated`, `anon`, `service_role` or PUBLIC (Supabase's recipe for exposing a schema
-- adds them) is taken back. PUBLIC's EXECUTE on new functions is PostgreSQL's global default,
-- which a per-schema default cannot remove and which this migration does not change for the
-- whole database (on Supabase the migration user is shared with the rest of the project);
-- without USAGE on `api` it reaches nothing, and every migration that adds an `api` function
-- revokes PUBLIC's EXECUTE itself, as 0013 and this one do.
--
-- Idempotent: the role is created only when absent; GRANT/REVOKE repeat harmlessly; policies
-- are dropped and re-created in this transaction. Applied again after 0013 is re-applied by
-- hand, it takes back what 0013 gives `authenticated`.
--
-- Locks: CREATE ROLE, GRANT, REVOKE and ALTER DEFAULT PRIVILEGES change catalogue rows only;
-- CREATE/DROP POLICY take ACCESS EXCLUSIVE on users, oauth_tokens and user_accounts for a
-- catalogue change (no scan), behind lock_timeout. First SHARE UPDATE EXCLUSIVE on the three
-- tables (up to 20 s; it blocks no writer and makes the server cancel a running autovacuum
-- after deadlock_timeout, which a 500 ms lock_timeout alone never waits for), as 0013 and 0021.

SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.users, public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accounts_api_caller') THEN
    CREATE ROLE accounts_api_caller NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

-- A signed-in user's reads, through authenticated's own-row policies.
GRANT authenticated TO accounts_api_caller;

-- Schema `api` and every function in it: accounts_api_caller only.
DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
BEGIN
  REVOKE ALL ON SCHEMA api FROM PUBLIC;
  FOR grantee IN
    SELECT DISTINCT acl.grantee::regrole
      FROM pg_namespace n, aclexplode(n.nspacl) acl
     WHERE n.oid = 'api'::regnamespace AND acl.grantee <> 0 AND acl.grantee <> n.nspowner
       AND acl.grantee <> 'accounts_api_caller'::regrole
  LOOP
    EXECUTE format('REVOKE ALL ON SCHEMA api FROM %s', grantee);
  END LOOP;
  GRANT USAGE ON SCHEMA api TO accounts_api_caller;

  FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR grantee IN
      SELECT DISTINCT acl.grantee::regrole
        FROM pg_proc p, aclexplode(p.proacl) acl
       WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
         AND acl.grantee <> 'accounts_api_caller'::regrole
    LOOP
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO accounts_api_caller', fn);
  END LOOP;
END
$$;

-- Functions the migration user creates later in `api`: EXECUTE for accounts_api_caller, and
-- no per-schema default grant for anyone else.
DO $$
DECLARE
  grantee text;
BEGIN
  FOR grantee IN
    SELECT r FROM unnest(ARRAY['PUBLIC', 'authenticated', 'anon', 'service_role']) r
     WHERE r = 'PUBLIC' OR to_regrole(r) IS NOT NULL
  LOOP
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA api REVOKE ALL ON FUNCTIONS FROM %s',
                   CASE WHEN grantee = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(grantee) END);
  END LOOP;
END
$$;
ALTER DEFAULT PRIVILEGES IN SCHEMA api GRANT EXECUTE ON FUNCTIONS TO accounts_api_caller;

-- The writes of connect and disconnect: accounts_api_caller's, not authenticated's.
REVOKE INSERT (id, email) ON public.users FROM authenticated;
GRANT INSERT (id, email) ON public.users TO accounts_api_caller;
DROP POLICY IF EXISTS users_owner_insert_policy ON public.users;
CREATE POLICY users_owner_insert_policy ON public.users
  FOR INSERT TO accounts_api_caller
  WITH CHECK (id = auth.uid());

REVOKE DELETE ON public.oauth_tokens FROM authenticated;
GRANT DELETE ON public.oauth_tokens TO accounts_api_caller;
DROP POLICY IF EXISTS oauth_tokens_owner_delete_policy ON public.oauth_tokens;
CREATE POLICY oauth_tokens_owner_delete_policy ON public.oauth_tokens
  FOR DELETE TO accounts_api_caller
  USING (user_id = auth.uid());

REVOKE UPDATE (status, sync_error_message, updated_at) ON public.user_accounts FROM authenticated;
GRANT UPDATE (status, sync_error_message, updated_at) ON public.user_accounts TO accounts_api_caller;
DROP POLICY IF EXISTS user_accounts_owner_update_policy ON public.user_accounts;
CREATE POLICY user_accounts_owner_update_policy ON public.user_accounts
  FOR UPDATE TO accounts_api_caller
  USING (user_id = auth.uid())
  WITH CHECK (user_id = auth.uid());

-- Down Migration
--
-- Back to 0013's grants: `authenticated` executes the functions and holds the writes again.
-- The cluster-wide role is kept (as 0006 and 0018 keep theirs: the API's login is a member,
-- other databases of the cluster may use it); it holds nothing in this database afterwards.
SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.users, public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

DROP POLICY IF EXISTS user_accounts_owner_update_policy ON public.user_accounts;
REVOKE UPDATE (status, sync_error_message, updated_at) ON public.user_accounts FROM accounts_api_caller;
GRANT UPDATE (status, sync_error_message, updated_at) ON public.user_accounts TO authenticated;
CREATE POLICY user_accounts_owner_update_policy ON public.user_accounts
  FOR UPDATE TO authenticated
  USING (user_id = auth.uid())
  WITH CHECK (user_id = auth.uid());

DROP POLICY IF EXISTS oauth_tokens_owner_delete_policy ON public.oauth_tokens;
REVOKE DELETE ON public.oauth_tokens FROM accounts_api_caller;
GRANT DELETE ON public.oauth_tokens TO authenticated;
CREATE POLICY oauth_tokens_owner_delete_policy ON public.oauth_tokens
  FOR DELETE TO authenticated
  USING (user_id = auth.uid());

DROP POLICY IF EXISTS users_owner_insert_policy ON public.users;
REVOKE INSERT (id, email) ON public.users FROM accounts_api_caller;
GRANT INSERT (id, email) ON public.users TO authenticated;
CREATE POLICY users_owner_insert_policy ON public.users
  FOR INSERT TO authenticated
  WITH CHECK (id = auth.uid());

ALTER DEFAULT PRIVILEGES IN SCHEMA api REVOKE EXECUTE ON FUNCTIONS FROM accounts_api_caller;

DO $$
DECLARE
  fn regprocedure;
BEGIN
  FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM accounts_api_caller', fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated', fn);
  END LOOP;
END
$$;
REVOKE ALL ON SCHEMA api FROM accounts_api_caller;
GRANT USAGE ON SCHEMA api TO authenticated;
