-- Up Migration
--
-- Token encryption keys that can be rotated (docs/token-encryption.md).
--
-- Every write of a token now stores `enc:v2:<key id>:…` (AES-256-GCM under the key ring's
-- current key, bound to its row and column); `enc:v1:` and legacy plaintext stay readable.
--
-- 1. api.store_connection (0021's function) accepts `enc:v2:` as well as `enc:v1:`: it still
--    refuses anything that is not encrypted. Same signature, owner and grants (CREATE OR REPLACE).
-- 2. connect_sessions.code_verifier's CHECK accepts `enc:v2:` as well (the API encrypts the
--    PKCE verifier under the ring's current key, bound to the session's user and region).
-- 3. The re-connection trigger (0021's function) ignores an update made by the token
--    re-encryption: that job rewrites a connection's refresh token under the current key, which
--    is not a re-connection, so a connection whose refresh is off stays off. The job marks its
--    own statement with set_config('accounts.token_reencryption', 'on', true) (transaction-local:
--    a Data API statement is its own transaction). Anyone who can write oauth_tokens can set it;
--    all it does is skip the re-enabling, which only a genuine re-connection needs.
--
-- Locks: SHARE UPDATE EXCLUSIVE on oauth_tokens first, as 0021 (blocks no writer, cancels a
-- running autovacuum); CREATE OR REPLACE FUNCTION changes catalogue rows only. connect_sessions
-- takes ACCESS EXCLUSIVE for the DROP/ADD CONSTRAINT (NOT VALID, no scan), then is validated
-- in the same transaction: a scan of its few short-lived rows (unexpired sessions only), as
-- when 0020 created the CHECK; every check of the schema is validated.
-- All behind lock_timeout. Idempotent: OR REPLACE, DROP CONSTRAINT IF EXISTS before ADD.

SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

ALTER TABLE connect_sessions
  DROP CONSTRAINT IF EXISTS connect_sessions_code_verifier_check,
  ADD CONSTRAINT connect_sessions_code_verifier_check
    CHECK (left(code_verifier, 7) IN ('enc:v1:', 'enc:v2:')) NOT VALID;
-- Validated at once (every check in this schema is validated): connect_sessions holds only
-- unexpired sessions, a few rows per user in ten minutes, so the scan is short.
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE connect_sessions VALIDATE CONSTRAINT connect_sessions_code_verifier_check;

-- 0021's function; an update made by the token re-encryption is not a re-connection.
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
    -- The token re-encryption (lambda/token-reencrypt) rewrites the same token under another
    -- key: not a re-connection. It says so for its own statement only (set_config, local).
    IF coalesce(current_setting('accounts.token_reencryption', true), '') = 'on' THEN
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

-- 0021's function, accepting enc:v2 tokens too.
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
     OR left(p_access_token, 7) NOT IN ('enc:v1:', 'enc:v2:')
     OR left(p_refresh_token, 7) NOT IN ('enc:v1:', 'enc:v2:') THEN
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
-- 0021's functions and 0020's CHECK, validated (connect_sessions holds a few short-lived rows;
-- ACCESS EXCLUSIVE on it for that scan only). Refused while a session holds an `enc:v2:`
-- verifier: wait for the sessions to expire (minutes), or delete them. Stored `enc:v2:` tokens stay
-- readable only by code that knows v2: roll the code back before this.
SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

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

-- A scan of connect_sessions' few short-lived rows, as when 0020 created the CHECK.
ALTER TABLE connect_sessions
  DROP CONSTRAINT IF EXISTS connect_sessions_code_verifier_check,
  -- squawk-ignore constraint-missing-not-valid
  ADD CONSTRAINT connect_sessions_code_verifier_check CHECK (left(code_verifier, 7) = 'enc:v1:');
