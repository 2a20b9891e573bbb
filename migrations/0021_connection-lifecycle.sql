-- Up Migration
--
-- A blip never turns into a lost connection, and a connection's lifecycle round-trips.
--
-- 1. Refusals, not blips, turn refresh off.
--
-- oauth_tokens.refresh_refusal_count: Amazon's definite refusals of a connection's refresh in a
-- row (invalid_client, unauthorized_client, invalid_request, unsupported_grant_type). The token
-- refresh and the on-demand token route share one outcome policy
-- (lambda/token-refresh/outcome.ts): only these refusals count towards turning refresh off
-- (five in a row; invalid_grant at once), while a 5xx, a timeout, a malformed answer or a 429
-- only backs the connection off. refresh_failure_count keeps its meaning (failures of any kind
-- but a 429 in a row: the backoff's exponent, `refresh_failing` in the API). A success clears
-- both; so does storing new tokens (api.store_connection, and the re-connection trigger of
-- 0007/0012 for the web app's own writes), both redefined here with that one change.
--
-- Existing rows get 0: their past failures were of any kind, and none of them is known to be
-- a refusal.
--
-- 2. Reconnecting brings the region's accounts back. api.store_connection (connect's upsert)
-- now puts the region's accounts back to 'pending' (an 'inactive' one included: disconnect set
-- them so) and due at once, so the next sync decides what is active as for a new connection:
-- the profiles Amazon lists become 'active', the others 'inactive' (missing from Amazon).
--
-- 3. Work started under an earlier connection never lands on a later one.
-- oauth_tokens.connection_generation starts at 1 and api.store_connection's upsert adds one.
-- The account sync's claim returns it, and every statement of its write-back writes only
-- where both the sync lease and the generation are still the claim's (the token refresh's
-- write-back already compares the refresh token's md5). The upsert also clears the sync lease
-- (as it always cleared the refresh lease), so the sync connect starts claims at once instead
-- of waiting for the old run's lease to expire, and it closes the region's history rows still
-- 'started' ('failed', reason 'superseded: …'): the old run can no longer close them.
--
-- 4. Disconnecting closes the region's running sync. A trigger AFTER DELETE on oauth_tokens
-- (whoever deletes: api.disconnect, or the web app) closes that (user, region)'s history rows
-- still 'started' ('failed', reason 'disconnected: …') and sets its accounts 'in_progress' to
-- 'failed' with a message; the dead run's write-back finds no connection and writes nothing.
-- SECURITY DEFINER with a fixed search_path (the API's role may update neither column),
-- executable by its owner only, like 0007's trigger function.
--
-- accounts_worker, per column as in 0011, 0014 and 0016: refresh_refusal_count SELECT (the
-- claims return it, the write-back adds to it) and UPDATE (the write-back);
-- connection_generation SELECT only (the sync's claim returns it, its write-back compares it).
-- test/migrations/worker-privileges.expected.ts lists each privilege with its statement.
-- api.store_connection keeps its signature, owner and grants (CREATE OR REPLACE).
--
-- Locks: first SHARE UPDATE EXCLUSIVE on oauth_tokens (up to 20 s; blocks no writer, cancels a
-- running autovacuum); then ADD COLUMN with a constant default, a catalogue change (PostgreSQL
-- 11+: no rewrite, no scan; ACCESS EXCLUSIVE for milliseconds); CREATE TRIGGER takes SHARE ROW EXCLUSIVE on
-- oauth_tokens for a catalogue change; CREATE OR REPLACE FUNCTION and GRANT change catalogue
-- rows only; all behind lock_timeout as in 0016. Idempotent: IF NOT EXISTS, OR REPLACE (which
-- keeps each function's owner and grants), DROP TRIGGER IF EXISTS before CREATE, and GRANT.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for.
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

ALTER TABLE oauth_tokens ADD COLUMN IF NOT EXISTS refresh_refusal_count integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN oauth_tokens.refresh_refusal_count IS
  'Definite refusals of the refresh by Login with Amazon in a row (not 5xx, timeouts, malformed answers or 429s); five turn proactive refresh off.';

GRANT SELECT (refresh_refusal_count), UPDATE (refresh_refusal_count) ON oauth_tokens TO accounts_worker;

ALTER TABLE oauth_tokens ADD COLUMN IF NOT EXISTS connection_generation integer NOT NULL DEFAULT 1;

COMMENT ON COLUMN oauth_tokens.connection_generation IS
  'Adds one each time the connection is stored again (api.store_connection): a write-back of work claimed under another generation writes nothing.';

GRANT SELECT (connection_generation) ON oauth_tokens TO accounts_worker;

CREATE OR REPLACE FUNCTION public.oauth_tokens_disconnected() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
BEGIN
  UPDATE account_sync_history h
     SET sync_status = 'failed', completed_at = greatest(now(), h.started_at),
         error_details = jsonb_build_object(
           'reason', 'disconnected: the connection was removed while this sync was running', 'disconnected', true)
   WHERE h.sync_status = 'started' AND h.metadata->>'userId' = OLD.user_id::text
     AND (h.region = OLD.region OR h.region IS NULL);
  UPDATE user_accounts ua
     SET sync_status = 'failed',
         sync_error_message = 'disconnected: the connection was removed while this account was being synced',
         updated_at = now()
   WHERE ua.user_id = OLD.user_id AND ua.region = OLD.region AND ua.sync_status = 'in_progress';
  RETURN OLD;
END
$$;

DO $$
DECLARE
  grantee regrole;
BEGIN
  -- Executable by its owner only: nobody calls a trigger function (Supabase grants EXECUTE on
  -- new functions to its roles).
  REVOKE ALL ON FUNCTION public.oauth_tokens_disconnected() FROM PUBLIC;
  FOR grantee IN
    SELECT DISTINCT acl.grantee::regrole
      FROM pg_proc p, aclexplode(p.proacl) acl
     WHERE p.oid = 'public.oauth_tokens_disconnected()'::regprocedure
       AND acl.grantee <> 0 AND acl.grantee <> p.proowner
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION public.oauth_tokens_disconnected() FROM %s', grantee);
  END LOOP;
END
$$;

DROP TRIGGER IF EXISTS oauth_tokens_disconnected ON oauth_tokens;
CREATE TRIGGER oauth_tokens_disconnected
  AFTER DELETE ON oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION public.oauth_tokens_disconnected();

-- 0012's function (re-connection per region), now also clearing the refusal count.
CREATE OR REPLACE FUNCTION public.oauth_tokens_reconnected() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.refresh_token IS NOT DISTINCT FROM OLD.refresh_token OR OLD.proactive_refresh_enabled THEN
      RETURN NEW;
    END IF;
    NEW.proactive_refresh_enabled := true;
    NEW.refresh_failure_count := 0;
    NEW.refresh_refusal_count := 0;
    NEW.last_refresh_error := NULL;
    NEW.next_refresh_attempt_at := NULL;
    NEW.refresh_lease_owner := NULL;
    NEW.refresh_lease_expires_at := NULL;
    NEW.sync_next_attempt_at := now();
    NEW.sync_retry_count := 0;
    NEW.sync_last_error := NULL;
  ELSIF NOT NEW.proactive_refresh_enabled THEN
    RETURN NEW; -- an INSERT that deliberately starts with refresh off
  END IF;
  UPDATE user_accounts
     SET sync_status = 'pending', sync_error_message = NULL, sync_retry_count = 0,
         next_sync_at = now(), updated_at = now()
   WHERE user_id = NEW.user_id AND sync_status = 'reauth_required' AND region = NEW.region;
  RETURN NEW;
END
$$;

-- 0013's function: also clears the refusal count and the sync lease, adds one to the
-- generation, closes the region's running sync and puts its accounts back to pending.
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
        refresh_refusal_count = 0,
        last_refresh_error = NULL,
        next_refresh_attempt_at = NULL,
        refresh_lease_owner = NULL,
        refresh_lease_expires_at = NULL,
        sync_lease_owner = NULL,
        sync_lease_expires_at = NULL,
        connection_generation = t.connection_generation + 1,
        sync_next_attempt_at = now(),
        sync_retry_count = 0,
        sync_last_error = NULL,
        updated_at = now()
  RETURNING t.id INTO stored;
  -- A sync still running for this region was started under the connection just replaced: its
  -- write-back will find another generation and write nothing, so its history row is closed here.
  UPDATE public.account_sync_history h
     SET sync_status = 'failed', completed_at = greatest(now(), h.started_at),
         error_details = jsonb_build_object(
           'reason', 'superseded: the connection was stored again while this sync was running', 'superseded', true)
   WHERE h.sync_status = 'started' AND h.metadata->>'userId' = caller::text
     AND (h.region = p_region OR h.region IS NULL);
  -- The next sync decides what is active, as for a new connection.
  UPDATE public.user_accounts ua
     SET status = CASE WHEN ua.status = 'inactive' THEN 'pending' ELSE ua.status END,
         sync_status = 'pending', sync_error_message = NULL, sync_retry_count = 0,
         next_sync_at = now(), updated_at = now()
   WHERE ua.user_id = caller AND ua.region = p_region;
  RETURN stored;
END
$$;

-- Down Migration
--
-- The functions as 0012 and 0013 left them, then the trigger, the columns and their grants.
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for.
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

DROP TRIGGER IF EXISTS oauth_tokens_disconnected ON oauth_tokens;
DROP FUNCTION IF EXISTS public.oauth_tokens_disconnected();

CREATE OR REPLACE FUNCTION public.oauth_tokens_reconnected() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.refresh_token IS NOT DISTINCT FROM OLD.refresh_token OR OLD.proactive_refresh_enabled THEN
      RETURN NEW;
    END IF;
    NEW.proactive_refresh_enabled := true;
    NEW.refresh_failure_count := 0;
    NEW.last_refresh_error := NULL;
    NEW.next_refresh_attempt_at := NULL;
    NEW.refresh_lease_owner := NULL;
    NEW.refresh_lease_expires_at := NULL;
    NEW.sync_next_attempt_at := now();
    NEW.sync_retry_count := 0;
    NEW.sync_last_error := NULL;
  ELSIF NOT NEW.proactive_refresh_enabled THEN
    RETURN NEW; -- an INSERT that deliberately starts with refresh off
  END IF;
  UPDATE user_accounts
     SET sync_status = 'pending', sync_error_message = NULL, sync_retry_count = 0,
         next_sync_at = now(), updated_at = now()
   WHERE user_id = NEW.user_id AND sync_status = 'reauth_required' AND region = NEW.region;
  RETURN NEW;
END
$$;

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

REVOKE SELECT (connection_generation) ON oauth_tokens FROM accounts_worker;
ALTER TABLE oauth_tokens DROP COLUMN IF EXISTS connection_generation;
REVOKE SELECT (refresh_refusal_count), UPDATE (refresh_refusal_count) ON oauth_tokens FROM accounts_worker;
ALTER TABLE oauth_tokens DROP COLUMN IF EXISTS refresh_refusal_count;
