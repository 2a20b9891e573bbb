-- Up Migration
--
-- The accounts API's database side: schema `api`, the functions the API calls (one statement
-- per request on the Data API), and what `authenticated` needs beyond 0009 to connect,
-- disconnect and start a sync through Row Level Security.
--
-- Isolation comes from the database. The API logs in as `accounts_api` (a LOGIN member of
-- `authenticated`, owner of nothing, no BYPASSRLS; created by the deploy, not here) or, on
-- node-postgres, runs `SET LOCAL ROLE authenticated` in each request's transaction. Every
-- function here takes the caller's verified claims as its first argument and sets them
-- transaction-locally (`set_config(…, true)`) before it reads anything, so `auth.uid()` is
-- the caller for exactly that statement and the policies of 0003/0009 (and the ones below)
-- decide what is visible. A statement that set no claims sees nothing. The functions also
-- filter on `auth.uid()` themselves (marked `/* own rows */`) so the planner can use the
-- per-user indexes; the API's tests drop those filters and check that RLS alone still
-- isolates.
--
-- SECURITY INVOKER everywhere but two functions (each explained where it is defined):
-- `api.accounts_matching` lets the GIN index serve metadata filters, and
-- `api.store_connection` writes the tokens.
-- `authenticated` must never hold a privilege on `access_token` or `refresh_token` (not even
-- INSERT or UPDATE: a column privilege there is what the privilege tests refuse, and Supabase
-- clients use the same role), so the one write of token columns goes through a SECURITY
-- DEFINER function that: reads the caller from `auth.uid()` (refusing a call without one),
-- writes only that user's row of the given region, accepts only `enc:v1:` ciphertext, and
-- returns nothing but the row id. search_path is pinned, every name is schema-qualified, and
-- EXECUTE is granted to `authenticated` only.
--
-- Privileges: EXECUTE on every function here is revoked from PUBLIC and from every other
-- grantee whatever default privileges gave (Supabase grants EXECUTE on new functions), then
-- granted to `authenticated`. USAGE on schema `api` only for `authenticated`. New grants to
-- `authenticated`, each with an own-row policy:
--   users          INSERT (id, email)            its own row, when the first connect creates it
--   oauth_tokens   SELECT (last_refreshed_at)    shown as lastRefreshedAt
--                  DELETE                        disconnect (own rows)
--   user_accounts  SELECT (region)               the account's region (column of 0012)
--                  UPDATE (status, sync_error_message, updated_at)  disconnect marks accounts inactive
-- rate_limit_tracking already allows what a manual sync's limit needs (0009).
--
-- Locks: CREATE SCHEMA/FUNCTION, GRANT/REVOKE change catalogue rows only; CREATE POLICY takes
-- ACCESS EXCLUSIVE on its table for a catalogue change (no scan), behind lock_timeout.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.users, public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

CREATE SCHEMA IF NOT EXISTS api;
REVOKE ALL ON SCHEMA api FROM PUBLIC;
GRANT USAGE ON SCHEMA api TO authenticated;

-- The caller's claims for the rest of this transaction (never session-wide). Both the JSON and
-- the `sub` shortcut are set, so that a leftover session value of either cannot win.
CREATE OR REPLACE FUNCTION api.set_claims(claims jsonb) RETURNS void
  LANGUAGE sql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT set_config('request.jwt.claims', coalesce(claims::text, ''), true),
         set_config('request.jwt.claim.sub', coalesce(claims ->> 'sub', ''), true);
$$;

-- One account as the API shows it (columns passed one by one: `authenticated` may read only
-- some columns, so a whole-row reference would be refused).
CREATE OR REPLACE FUNCTION api.account_json(
  id uuid, amazon_account_id text, region text, status text, sync_status text, sync_error_message text,
  next_sync_at timestamptz, metadata jsonb, last_synced_at timestamptz
) RETURNS jsonb
  LANGUAGE sql IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
    'id', id,
    'amazonAccountId', amazon_account_id,
    'region', region,
    'status', status,
    'syncStatus', sync_status,
    'syncErrorMessage', sync_error_message,
    'nextSyncAt', next_sync_at,
    'lastSyncedAt', last_synced_at,
    'marketplaceStringId', metadata ->> 'marketplaceStringId',
    'countryCode', metadata ->> 'countryCode',
    'currencyCode', metadata ->> 'currencyCode',
    'timezone', metadata ->> 'timezone',
    'accountType', metadata ->> 'accountType',
    'accountName', metadata ->> 'accountName',
    'validPaymentMethod', CASE jsonb_typeof(metadata -> 'validPaymentMethod')
                            WHEN 'boolean' THEN (metadata -> 'validPaymentMethod')::boolean END
  );
$$;

-- When each of the caller's connections (region) last synced successfully.
CREATE OR REPLACE FUNCTION api.last_synced() RETURNS TABLE (region text, completed_at timestamptz)
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT a.region, max(h.completed_at)
    FROM public.account_sync_history h
    JOIN public.user_accounts a ON a.id = h.user_account_id
   WHERE /* own rows */ a.user_id = auth.uid()
     AND h.sync_status = 'success'
   GROUP BY a.region;
$$;

-- The caller's accounts whose metadata contains `meta`, by id: the GIN index on metadata.
-- SECURITY DEFINER, the second and last one, for a reason of the planner: under Row Level
-- Security PostgreSQL evaluates the policy's qual before any qual whose operator is not
-- LEAKPROOF, so it will not use `metadata @> …` (jsonb_contains is not leakproof) as an index
-- condition on a table with RLS, and a metadata filter would scan every account of the
-- caller. This function runs as the owner, reads only the rows of `auth.uid()` (none without
-- a caller), and returns ids only; api.list_accounts then reads those rows as the caller,
-- under RLS, so even an id of another user returned here would not be shown.
CREATE OR REPLACE FUNCTION api.accounts_matching(meta jsonb) RETURNS SETOF uuid
  LANGUAGE plpgsql STABLE
  SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
  RETURN QUERY
    SELECT ua.id FROM public.user_accounts ua
     WHERE /* own rows */ ua.user_id = auth.uid()
       AND ua.metadata @> meta;
END
$$;

-- GET /v1/accounts: up to `page_size` accounts after the keyset position, in
-- (amazon_account_id, id) order. `meta` is a jsonb object the metadata must contain; NULL
-- filters match everything. Planned for the actual values on every call (plan_cache_mode).
-- With a metadata filter the candidates come from api.accounts_matching (the GIN index, see
-- there), and the rows themselves are still read under RLS; without one, the page is read in
-- key order from idx_user_accounts_user_amazon.
CREATE OR REPLACE FUNCTION api.list_accounts(
  claims jsonb, meta jsonb, p_region text, p_status text, p_sync_status text,
  page_size integer, after_account text, after_id uuid
) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  page jsonb;
  result jsonb;
BEGIN
  PERFORM api.set_claims(claims);
  IF meta IS NULL THEN
    SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.amazon_account_id, p.id), '[]'::jsonb) INTO page
      FROM (
        SELECT ua.id, ua.amazon_account_id, ua.region, ua.status, ua.sync_status, ua.sync_error_message,
               ua.next_sync_at, ua.metadata
          FROM public.user_accounts ua
         WHERE /* own rows */ ua.user_id = auth.uid()
           AND (p_region IS NULL OR ua.region = p_region)
           AND (p_status IS NULL OR ua.status = p_status)
           AND (p_sync_status IS NULL OR ua.sync_status = p_sync_status)
           AND (after_account IS NULL OR (ua.amazon_account_id, ua.id) > (after_account, after_id))
         ORDER BY ua.amazon_account_id, ua.id
         LIMIT page_size
      ) p;
  ELSE
    SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.amazon_account_id, p.id), '[]'::jsonb) INTO page
      FROM (
        SELECT ua.id, ua.amazon_account_id, ua.region, ua.status, ua.sync_status, ua.sync_error_message,
               ua.next_sync_at, ua.metadata
          FROM public.user_accounts ua
         WHERE ua.id IN (SELECT api.accounts_matching(meta))
           AND /* own rows */ ua.user_id = auth.uid()
           AND ua.metadata @> meta
           AND (p_region IS NULL OR ua.region = p_region)
           AND (p_status IS NULL OR ua.status = p_status)
           AND (p_sync_status IS NULL OR ua.sync_status = p_sync_status)
           AND (after_account IS NULL OR (ua.amazon_account_id, ua.id) > (after_account, after_id))
         ORDER BY ua.amazon_account_id, ua.id
         LIMIT page_size
      ) p;
  END IF;
  SELECT coalesce(jsonb_agg(api.account_json((a ->> 'id')::uuid, a ->> 'amazon_account_id', a ->> 'region',
                                             a ->> 'status', a ->> 'sync_status', a ->> 'sync_error_message',
                                             (a ->> 'next_sync_at')::timestamptz, a -> 'metadata', ls.completed_at)
                            ORDER BY ord), '[]'::jsonb)
    INTO result
    FROM jsonb_array_elements(page) WITH ORDINALITY AS x(a, ord)
    LEFT JOIN api.last_synced() ls ON ls.region = a ->> 'region';
  RETURN result;
END
$$;

-- GET /v1/accounts/{id}: the account, or NULL when the caller cannot see it.
CREATE OR REPLACE FUNCTION api.get_account(claims jsonb, account_id uuid) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  result jsonb;
BEGIN
  PERFORM api.set_claims(claims);
  SELECT api.account_json(ua.id, ua.amazon_account_id, ua.region, ua.status, ua.sync_status,
                          ua.sync_error_message, ua.next_sync_at, ua.metadata, ls.completed_at)
    INTO result
    FROM public.user_accounts ua
    LEFT JOIN api.last_synced() ls ON ls.region = ua.region
   WHERE ua.id = account_id
     AND /* own rows */ ua.user_id = auth.uid();
  RETURN result;
END
$$;

-- GET /v1/sync-history and /v1/accounts/{id}/sync-history: newest first, keyset
-- (started_at, id) descending. With an account id: {"found": false} when the caller cannot
-- see that account.
CREATE OR REPLACE FUNCTION api.list_sync_history(
  claims jsonb, account_id uuid, page_size integer, after_started timestamptz, after_id uuid
) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
  SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
  items jsonb;
BEGIN
  PERFORM api.set_claims(claims);
  IF account_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM public.user_accounts ua WHERE ua.id = account_id AND /* own rows */ ua.user_id = auth.uid()
  ) THEN
    RETURN jsonb_build_object('found', false);
  END IF;
  SELECT coalesce(jsonb_agg(jsonb_build_object(
           'id', page.id,
           'accountId', page.user_account_id,
           'region', page.region,
           'syncType', page.sync_type,
           'syncStatus', page.sync_status,
           'startedAt', page.started_at,
           'completedAt', page.completed_at,
           'accountsSynced', page.accounts_synced,
           'accountsFailed', page.accounts_failed,
           'errorDetails', page.error_details
         ) ORDER BY page.started_at DESC, page.id DESC), '[]'::jsonb)
    INTO items
    FROM (
      SELECT h.id, h.user_account_id, h.sync_type, h.sync_status, h.started_at, h.completed_at,
             h.accounts_synced, h.accounts_failed, h.error_details, ua.region
        FROM public.account_sync_history h
        JOIN public.user_accounts ua ON ua.id = h.user_account_id
       WHERE /* own rows */ ua.user_id = auth.uid()
         AND (account_id IS NULL OR h.user_account_id = account_id)
         AND (after_started IS NULL OR (h.started_at, h.id) < (after_started, after_id))
       ORDER BY h.started_at DESC, h.id DESC
       LIMIT page_size
    ) page;
  RETURN jsonb_build_object('found', true, 'items', items);
END
$$;

-- GET /v1/connections: one object per connected region, never a token.
CREATE OR REPLACE FUNCTION api.list_connections(claims jsonb) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  result jsonb;
BEGIN
  PERFORM api.set_claims(claims);
  SELECT coalesce(jsonb_agg(api.connection_json(t.id) ORDER BY t.region), '[]'::jsonb)
    INTO result
    FROM public.oauth_tokens t
   WHERE /* own rows */ t.user_id = auth.uid();
  RETURN result;
END
$$;

-- One connection (by oauth_tokens id) as the API shows it; NULL when the caller cannot see it.
CREATE OR REPLACE FUNCTION api.connection_json(connection_id uuid) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
    'region', t.region,
    'status', CASE WHEN NOT t.proactive_refresh_enabled THEN 'reauth_required'
                   WHEN t.refresh_failure_count > 0 THEN 'refresh_failing'
                   ELSE 'connected' END,
    'expiresAt', t.expires_at,
    'lastRefreshedAt', t.last_refreshed_at,
    'lastError', t.last_refresh_error,
    'connectedAt', t.created_at,
    'accounts', (
      SELECT jsonb_build_object(
        'total', count(*),
        'pending', count(*) FILTER (WHERE ua.sync_status = 'pending'),
        'inProgress', count(*) FILTER (WHERE ua.sync_status = 'in_progress'),
        'completed', count(*) FILTER (WHERE ua.sync_status = 'completed'),
        'failed', count(*) FILTER (WHERE ua.sync_status = 'failed'),
        'reauthRequired', count(*) FILTER (WHERE ua.sync_status = 'reauth_required'))
        FROM public.user_accounts ua
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region),
    'lastSync', (
      SELECT jsonb_build_object('syncType', h.sync_type, 'syncStatus', h.sync_status,
                                'startedAt', h.started_at, 'completedAt', h.completed_at,
                                'accountsSynced', h.accounts_synced, 'accountsFailed', h.accounts_failed)
        FROM public.account_sync_history h
        JOIN public.user_accounts ua ON ua.id = h.user_account_id
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region
       ORDER BY h.started_at DESC, h.id DESC
       LIMIT 1))
    FROM public.oauth_tokens t
   WHERE t.id = connection_id
     AND /* own rows */ t.user_id = auth.uid();
$$;

-- The one SECURITY DEFINER function (see the header): stores the caller's encrypted tokens
-- for one region, replacing that region's previous connection, refresh on, failures cleared,
-- due for a sync now. Returns the row id.
CREATE OR REPLACE FUNCTION api.store_connection(
  p_region text, p_access_token text, p_refresh_token text, p_expires_at timestamptz
) RETURNS uuid
  LANGUAGE plpgsql VOLATILE
  SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller uuid := auth.uid();
  stored uuid;
BEGIN
  IF caller IS NULL THEN
    RAISE EXCEPTION 'accounts-api: no caller' USING ERRCODE = '42501';
  END IF;
  IF p_region IS NULL OR p_region NOT IN ('NA', 'EU', 'FE') THEN
    RAISE EXCEPTION 'accounts-api: invalid region' USING ERRCODE = '22023';
  END IF;
  IF p_access_token IS NULL OR p_refresh_token IS NULL
     OR left(p_access_token, 7) <> 'enc:v1:' OR left(p_refresh_token, 7) <> 'enc:v1:' THEN
    RAISE EXCEPTION 'accounts-api: tokens must be encrypted' USING ERRCODE = '22023';
  END IF;
  INSERT INTO public.oauth_tokens AS t (user_id, region, access_token, refresh_token, expires_at,
                                        proactive_refresh_enabled, sync_next_attempt_at)
  VALUES (caller, p_region, p_access_token, p_refresh_token, p_expires_at, true, now())
  ON CONFLICT (user_id, region) DO UPDATE
    SET access_token = excluded.access_token,
        refresh_token = excluded.refresh_token,
        expires_at = excluded.expires_at,
        proactive_refresh_enabled = true,
        refresh_failure_count = 0,
        last_refresh_error = NULL,
        next_refresh_attempt_at = NULL,
        refresh_lease_owner = NULL,
        refresh_lease_expires_at = NULL,
        sync_next_attempt_at = now(),
        sync_retry_count = 0,
        sync_last_error = NULL,
        updated_at = now()
  RETURNING t.id INTO stored;
  RETURN stored;
END
$$;

-- POST /v1/connections, after Amazon gave the tokens: the caller's users row (from the
-- claims, when it does not exist yet, through RLS), the tokens (store_connection), and the
-- connection as GET /v1/connections shows it.
CREATE OR REPLACE FUNCTION api.connect(
  claims jsonb, p_region text, p_access_token text, p_refresh_token text, p_expires_at timestamptz
) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  stored uuid;
BEGIN
  PERFORM api.set_claims(claims);
  IF NOT EXISTS (SELECT 1 FROM public.users u WHERE u.id = auth.uid()) THEN
    IF coalesce(claims ->> 'email', '') = '' THEN
      RAISE EXCEPTION 'accounts-api: email required' USING ERRCODE = '22023';
    END IF;
    BEGIN
      INSERT INTO public.users (id, email) VALUES (auth.uid(), claims ->> 'email') ON CONFLICT (id) DO NOTHING;
    EXCEPTION WHEN unique_violation THEN
      RAISE EXCEPTION 'accounts-api: email in use' USING ERRCODE = '23505';
    END;
  END IF;
  stored := api.store_connection(p_region, p_access_token, p_refresh_token, p_expires_at);
  RETURN api.connection_json(stored);
END
$$;

-- DELETE /v1/connections/{region}: the connection's tokens removed, its accounts inactive with
-- a message, history kept. false when there was no such connection.
CREATE OR REPLACE FUNCTION api.disconnect(claims jsonb, p_region text, message text) RETURNS boolean
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  removed integer;
BEGIN
  PERFORM api.set_claims(claims);
  DELETE FROM public.oauth_tokens t WHERE /* own rows */ t.user_id = auth.uid() AND t.region = p_region;
  GET DIAGNOSTICS removed = ROW_COUNT;
  IF removed = 0 THEN
    RETURN false;
  END IF;
  UPDATE public.user_accounts ua
     SET status = 'inactive', sync_error_message = message, updated_at = now()
   WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = p_region;
  RETURN true;
END
$$;

-- POST /v1/syncs: at most one manual sync per user per `window_seconds`, recorded in
-- rate_limit_tracking under the caller's user_id through its policy. Returns
-- {"allowed": true, "regions": [...]} with the connected regions to sync (all, or `p_region`),
-- {"allowed": false, "retryAfterSeconds": n} inside the window (the hit is counted), or
-- {"allowed": false, "regions": []} when there is nothing to sync (nothing is recorded).
CREATE OR REPLACE FUNCTION api.request_manual_sync(claims jsonb, p_region text, window_seconds integer) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  regions jsonb;
  granted boolean;
  wait_seconds integer;
BEGIN
  PERFORM api.set_claims(claims);
  SELECT coalesce(jsonb_agg(t.region ORDER BY t.region), '[]'::jsonb) INTO regions
    FROM public.oauth_tokens t
   WHERE /* own rows */ t.user_id = auth.uid() AND (p_region IS NULL OR t.region = p_region);
  IF jsonb_array_length(regions) = 0 THEN
    RETURN jsonb_build_object('allowed', false, 'regions', regions);
  END IF;
  INSERT INTO public.rate_limit_tracking AS r (user_id, endpoint, request_count, window_start)
  VALUES (auth.uid(), 'accounts-api:manual-sync', 1, now())
  ON CONFLICT ON CONSTRAINT rate_limit_tracking_endpoint_user_key DO UPDATE
    SET request_count = r.request_count + 1, window_start = now(), updated_at = now()
    WHERE r.window_start <= now() - make_interval(secs => window_seconds)
  RETURNING true INTO granted;
  IF granted THEN
    RETURN jsonb_build_object('allowed', true, 'regions', regions);
  END IF;
  UPDATE public.rate_limit_tracking r
     SET limit_hit_count = r.limit_hit_count + 1,
         last_limit_hit = now(),
         retry_after_seconds = greatest(1, ceil(extract(epoch FROM r.window_start + make_interval(secs => window_seconds) - now())))::integer,
         updated_at = now()
   WHERE /* own rows */ r.user_id = auth.uid() AND r.endpoint = 'accounts-api:manual-sync'
  RETURNING r.retry_after_seconds INTO wait_seconds;
  RETURN jsonb_build_object('allowed', false, 'retryAfterSeconds', wait_seconds, 'regions', regions);
END
$$;

-- EXECUTE: `authenticated` only, whatever default privileges granted.
DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
BEGIN
  FOR fn IN SELECT p.oid::regprocedure FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR grantee IN
      SELECT DISTINCT acl.grantee::regrole
        FROM pg_proc p, aclexplode(p.proacl) acl
       WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
    LOOP
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated', fn);
  END LOOP;
END
$$;

-- What the functions do as the caller, each write with its own-row policy.
GRANT INSERT (id, email) ON public.users TO authenticated;
DROP POLICY IF EXISTS users_owner_insert_policy ON public.users;
CREATE POLICY users_owner_insert_policy ON public.users
  FOR INSERT TO authenticated
  WITH CHECK (id = auth.uid());

GRANT SELECT (last_refreshed_at) ON public.oauth_tokens TO authenticated;
GRANT DELETE ON public.oauth_tokens TO authenticated;
DROP POLICY IF EXISTS oauth_tokens_owner_delete_policy ON public.oauth_tokens;
CREATE POLICY oauth_tokens_owner_delete_policy ON public.oauth_tokens
  FOR DELETE TO authenticated
  USING (user_id = auth.uid());

GRANT SELECT (region) ON public.user_accounts TO authenticated;
GRANT UPDATE (status, sync_error_message, updated_at) ON public.user_accounts TO authenticated;
DROP POLICY IF EXISTS user_accounts_owner_update_policy ON public.user_accounts;
CREATE POLICY user_accounts_owner_update_policy ON public.user_accounts
  FOR UPDATE TO authenticated
  USING (user_id = auth.uid())
  WITH CHECK (user_id = auth.uid());

-- Down Migration
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.users, public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';
DROP POLICY IF EXISTS user_accounts_owner_update_policy ON public.user_accounts;
REVOKE UPDATE (status, sync_error_message, updated_at) ON public.user_accounts FROM authenticated;
REVOKE SELECT (region) ON public.user_accounts FROM authenticated;
DROP POLICY IF EXISTS oauth_tokens_owner_delete_policy ON public.oauth_tokens;
REVOKE DELETE ON public.oauth_tokens FROM authenticated;
REVOKE SELECT (last_refreshed_at) ON public.oauth_tokens FROM authenticated;
DROP POLICY IF EXISTS users_owner_insert_policy ON public.users;
REVOKE INSERT (id, email) ON public.users FROM authenticated;
DROP SCHEMA IF EXISTS api CASCADE;
