-- Up Migration
--
-- A blip never turns into a lost connection.
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
-- accounts_worker, per column as in 0011, 0014 and 0016: refresh_refusal_count SELECT (the
-- claims return it, the write-back adds to it) and UPDATE (the write-back).
-- test/migrations/worker-privileges.expected.ts lists each privilege with its statement.
-- api.store_connection keeps its signature, owner and grants (CREATE OR REPLACE).
--
-- Locks: ADD COLUMN with a constant default is a catalogue change (PostgreSQL 11+: no rewrite,
-- no scan; ACCESS EXCLUSIVE for milliseconds); CREATE OR REPLACE FUNCTION and GRANT change
-- catalogue rows only; all behind lock_timeout as in 0016. Idempotent: IF NOT EXISTS, OR
-- REPLACE (which keeps each function's owner and grants), and GRANT.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

ALTER TABLE oauth_tokens ADD COLUMN IF NOT EXISTS refresh_refusal_count integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN oauth_tokens.refresh_refusal_count IS
  'Definite refusals of the refresh by Login with Amazon in a row (not 5xx, timeouts, malformed answers or 429s); five turn proactive refresh off.';

GRANT SELECT (refresh_refusal_count), UPDATE (refresh_refusal_count) ON oauth_tokens TO accounts_worker;

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

-- 0013's function, now also clearing the refusal count.
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
        sync_next_attempt_at = now(),
        sync_retry_count = 0,
        sync_last_error = NULL,
        updated_at = now()
  RETURNING t.id INTO stored;
  RETURN stored;
END
$$;

-- Down Migration
--
-- The functions as 0012 and 0013 left them, then the column and its grants.
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

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

REVOKE SELECT (refresh_refusal_count), UPDATE (refresh_refusal_count) ON oauth_tokens FROM accounts_worker;
ALTER TABLE oauth_tokens DROP COLUMN IF EXISTS refresh_refusal_count;
