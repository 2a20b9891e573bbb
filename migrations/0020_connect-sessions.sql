-- Up Migration
--
-- Connect sessions: an authorization code is bound to the user who started connecting.
--
-- POST /v1/connections/sessions makes a session: the caller, the region, the redirect URI
-- (one of the environment's allowed ones), a server-made `state` (kept here only as its
-- SHA-256 digest: the state itself travels through the browser) and the PKCE code verifier
-- (encrypted by the API with the token key, `enc:v1:`), valid for a few minutes and good for
-- one connect. POST /v1/connections then claims the session by its state: it must be the
-- caller's, for that region, unexpired and unused; only then is the code exchanged at Amazon,
-- with the session's verifier and redirect URI. A code issued for someone else's consent
-- cannot be connected: its state is not the caller's, and Amazon refuses it without the
-- verifier of the session it was issued for.
--
-- Everything that can refuse a connect runs here, before Amazon is called:
-- * the users row: a session is only made for a caller whose users row exists or can be
--   created from the token's email claim (created here, in the caller's name). A missing
--   email claim and an email another user has are one and the same refusal
--   ('accounts-api: user not creatable'), so the answer does not tell whether the address is
--   registered;
-- * the per-user limits: sessions made and connects tried per window, recorded in
--   rate_limit_tracking like the manual sync's limit (endpoints 'accounts-api:connect-session'
--   and 'accounts-api:connect'), refused with the seconds to wait;
-- * the state (claim_connect_session marks it used: single use).
--
-- Isolation. connect_sessions has Row Level Security on and forced, with one policy: a row is
-- visible to and writable by the user of `auth.uid()` only. Nobody but its owner holds any
-- privilege on it (not anon, not authenticated: the web client never reads a verifier, not
-- even its own encrypted one). The two functions that use it are SECURITY DEFINER (the table
-- has no grant to go through otherwise): each reads the caller from `auth.uid()` (refusing a
-- call without one), touches only that caller's rows (`user_id = caller` in every statement,
-- not marked `/* own rows */`: unlike the SECURITY INVOKER functions of 0013, these do not
-- rely on RLS alone, as their owner may be a superuser whom RLS does not restrict; wherever the
-- owner is not one, as on Aurora, the forced policy applies too), takes no user id as an argument, and returns only what the API needs: the
-- expiry, or the session's redirect URI and encrypted verifier. search_path is pinned and
-- every name is schema-qualified.
--
-- EXECUTE on the new functions: revoked from PUBLIC and every other grantee, granted to
-- `accounts_api_caller` (the accounts API's role, 0019) or, on a database where that role does
-- not exist yet, to `authenticated` as the other api functions of 0013.
--
-- The API's share of the Amazon budget (lambda/shared/amazon/api-share.ts): amazon_rate_budget
-- also holds a quota row per endpoint and region for API traffic (`lwa-token:api`,
-- `ads-profiles:api`), paced at a share of the ceiling, so that the API can never take more than
-- that share of a region's budget from the scheduled jobs. Only the endpoint CHECK changes (the
-- API's budget role of 0018 already reaches every row).
--
-- Locks: a new table, index, policy and functions; on amazon_rate_budget (a handful of rows)
-- the CHECK is replaced NOT VALID (ACCESS EXCLUSIVE for milliseconds, behind lock_timeout) and
-- validated in the same transaction: a scan of those few rows. Nothing else existing is rewritten or scanned.
-- Idempotent: IF NOT EXISTS / CREATE OR REPLACE / DROP … IF EXISTS throughout.

SET LOCAL statement_timeout = '30s';
-- The foreign key to users (SHARE ROW EXCLUSIVE on users) and the CHECK on amazon_rate_budget
-- need locks an autovacuum of those tables holds off; SHARE UPDATE EXCLUSIVE first, waited for
-- up to 20 s, makes the server cancel such an autovacuum after deadlock_timeout (1 s), which a
-- 500 ms lock_timeout alone never waits for (as 0021 does); writers do not queue behind it.
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.users, public.amazon_rate_budget IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

CREATE TABLE IF NOT EXISTS public.connect_sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES public.users (id) ON DELETE CASCADE,
  region text NOT NULL CONSTRAINT connect_sessions_region_check CHECK (region IN ('NA', 'EU', 'FE')),
  redirect_uri text NOT NULL CONSTRAINT connect_sessions_redirect_uri_check CHECK (length(redirect_uri) BETWEEN 1 AND 2048),
  -- SHA-256 of the state, hex.
  state_digest text NOT NULL CONSTRAINT connect_sessions_state_digest_check CHECK (state_digest ~ '^[0-9a-f]{64}$'),
  -- The PKCE code verifier, encrypted with the token key (enc:v1:).
  code_verifier text NOT NULL CONSTRAINT connect_sessions_code_verifier_check CHECK (left(code_verifier, 7) = 'enc:v1:'),
  expires_at timestamptz NOT NULL,
  used_at timestamptz,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT connect_sessions_state_digest_key UNIQUE (state_digest)
);

CREATE INDEX IF NOT EXISTS idx_connect_sessions_user ON public.connect_sessions (user_id, expires_at);

COMMENT ON TABLE public.connect_sessions IS
  'POST /v1/connections/sessions: who started connecting which region, with which redirect URI, state digest and encrypted PKCE verifier; single use, minutes long.';

ALTER TABLE public.connect_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.connect_sessions FORCE ROW LEVEL SECURITY;

DO $$
DECLARE
  from_roles text := 'PUBLIC, authenticated' || CASE WHEN to_regrole('anon') IS NULL THEN '' ELSE ', anon' END;
BEGIN
  EXECUTE format('REVOKE ALL ON TABLE public.connect_sessions FROM %s', from_roles);
END
$$;

DROP POLICY IF EXISTS connect_sessions_owner_policy ON public.connect_sessions;
CREATE POLICY connect_sessions_owner_policy ON public.connect_sessions
  FOR ALL
  USING (user_id = auth.uid())
  WITH CHECK (user_id = auth.uid());

ALTER TABLE public.amazon_rate_budget DROP CONSTRAINT IF EXISTS amazon_rate_budget_endpoint_check;
ALTER TABLE public.amazon_rate_budget ADD CONSTRAINT amazon_rate_budget_endpoint_check
  CHECK (endpoint IN ('lwa-token', 'ads-profiles', 'lwa-token:api', 'ads-profiles:api')) NOT VALID;
-- Validated at once: the table holds a handful of rows (one per endpoint, region and pool).
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE public.amazon_rate_budget VALIDATE CONSTRAINT amazon_rate_budget_endpoint_check;

-- A fixed-window limit per caller in rate_limit_tracking: at most `max_count` hits of
-- `p_endpoint` per `window_seconds`. Returns 0 when this hit is allowed (counted), else the
-- seconds until the window ends (the refusal counted in limit_hit_count).
CREATE OR REPLACE FUNCTION api.take_user_limit(p_endpoint text, max_count integer, window_seconds integer)
RETURNS integer
  LANGUAGE plpgsql VOLATILE
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  granted boolean;
  wait_seconds integer;
BEGIN
  IF max_count IS NULL OR max_count < 1 OR window_seconds IS NULL OR window_seconds < 1 THEN
    RAISE EXCEPTION 'accounts-api: invalid limit' USING ERRCODE = '22023';
  END IF;
  INSERT INTO public.rate_limit_tracking AS r (user_id, endpoint, request_count, window_start)
  VALUES (auth.uid(), p_endpoint, 1, now())
  ON CONFLICT ON CONSTRAINT rate_limit_tracking_endpoint_user_key DO UPDATE
    SET request_count = CASE WHEN r.window_start <= now() - make_interval(secs => window_seconds) THEN 1
                             ELSE r.request_count + 1 END,
        window_start = CASE WHEN r.window_start <= now() - make_interval(secs => window_seconds) THEN now()
                            ELSE r.window_start END,
        updated_at = now()
    WHERE r.window_start <= now() - make_interval(secs => window_seconds) OR r.request_count < max_count
  RETURNING true INTO granted;
  IF granted THEN
    RETURN 0;
  END IF;
  UPDATE public.rate_limit_tracking r
     SET limit_hit_count = r.limit_hit_count + 1,
         last_limit_hit = now(),
         retry_after_seconds = greatest(1, ceil(extract(epoch FROM r.window_start + make_interval(secs => window_seconds) - now())))::integer,
         updated_at = now()
   WHERE r.user_id = auth.uid() AND r.endpoint = p_endpoint -- the caller's row (run as the definer: no RLS)
  RETURNING r.retry_after_seconds INTO wait_seconds;
  RETURN coalesce(wait_seconds, 1);
END
$$;

-- POST /v1/connections/sessions: the caller's users row (created from the claims' email when
-- missing), the session limit, then the session. Returns {"allowed": true, "expiresAt": …} or
-- {"allowed": false, "retryAfterSeconds": n}. The caller's spent sessions are deleted on the way.
CREATE OR REPLACE FUNCTION api.create_connect_session(
  claims jsonb, p_region text, p_redirect_uri text, p_state_digest text, p_code_verifier text,
  ttl_seconds integer, max_sessions integer, window_seconds integer
) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller uuid;
  email text := nullif(claims ->> 'email', '');
  wait_seconds integer;
  expires timestamptz;
BEGIN
  PERFORM api.set_claims(claims);
  caller := auth.uid();
  IF caller IS NULL THEN
    RAISE EXCEPTION 'accounts-api: no caller' USING ERRCODE = '42501';
  END IF;
  IF p_region IS NULL OR p_region NOT IN ('NA', 'EU', 'FE') THEN
    RAISE EXCEPTION 'accounts-api: invalid region' USING ERRCODE = '22023';
  END IF;
  IF ttl_seconds IS NULL OR ttl_seconds < 1 OR ttl_seconds > 3600 THEN
    RAISE EXCEPTION 'accounts-api: invalid limit' USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.users u WHERE u.id = caller) THEN
    IF email IS NULL THEN
      RAISE EXCEPTION 'accounts-api: user not creatable' USING ERRCODE = '22023';
    END IF;
    BEGIN
      INSERT INTO public.users (id, email) VALUES (caller, email) ON CONFLICT (id) DO NOTHING;
    EXCEPTION WHEN unique_violation THEN
      RAISE EXCEPTION 'accounts-api: user not creatable' USING ERRCODE = '23505';
    END;
  END IF;
  wait_seconds := api.take_user_limit('accounts-api:connect-session', max_sessions, window_seconds);
  IF wait_seconds > 0 THEN
    RETURN jsonb_build_object('allowed', false, 'retryAfterSeconds', wait_seconds);
  END IF;
  DELETE FROM public.connect_sessions s
   WHERE s.user_id = caller AND (s.used_at IS NOT NULL OR s.expires_at <= now());
  expires := now() + make_interval(secs => ttl_seconds);
  INSERT INTO public.connect_sessions (user_id, region, redirect_uri, state_digest, code_verifier, expires_at)
  VALUES (caller, p_region, p_redirect_uri, p_state_digest, p_code_verifier, expires);
  RETURN jsonb_build_object('allowed', true, 'expiresAt', expires);
END
$$;

-- POST /v1/connections, before Amazon is called: the connect limit, then the session of this
-- state (the caller's, this region's, unexpired, unused), marked used. Returns
-- {"outcome": "ok", "redirectUri": …, "codeVerifier": <enc:v1:…>}, {"outcome": "limited",
-- "retryAfterSeconds": n} or {"outcome": "invalid"} (no such session of the caller's: unknown,
-- another user's, another region's, expired or used, all alike).
CREATE OR REPLACE FUNCTION api.claim_connect_session(
  claims jsonb, p_region text, p_state_digest text, max_connects integer, window_seconds integer
) RETURNS jsonb
  LANGUAGE plpgsql VOLATILE
  SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  caller uuid;
  wait_seconds integer;
  uri text;
  verifier text;
BEGIN
  PERFORM api.set_claims(claims);
  caller := auth.uid();
  IF caller IS NULL THEN
    RAISE EXCEPTION 'accounts-api: no caller' USING ERRCODE = '42501';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM public.users u WHERE u.id = caller) THEN
    -- Nobody without a users row has a session (a session creates it).
    RETURN jsonb_build_object('outcome', 'invalid');
  END IF;
  wait_seconds := api.take_user_limit('accounts-api:connect', max_connects, window_seconds);
  IF wait_seconds > 0 THEN
    RETURN jsonb_build_object('outcome', 'limited', 'retryAfterSeconds', wait_seconds);
  END IF;
  UPDATE public.connect_sessions s
     SET used_at = now()
   WHERE s.user_id = caller
     AND s.state_digest = p_state_digest
     AND s.region = p_region
     AND s.used_at IS NULL
     AND s.expires_at > now()
  RETURNING s.redirect_uri, s.code_verifier INTO uri, verifier;
  IF uri IS NULL THEN
    RETURN jsonb_build_object('outcome', 'invalid');
  END IF;
  RETURN jsonb_build_object('outcome', 'ok', 'redirectUri', uri, 'codeVerifier', verifier);
END
$$;

-- EXECUTE: the accounts API's role only (see the header).
DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
  api_role text := CASE WHEN to_regrole('accounts_api_caller') IS NULL THEN 'authenticated' ELSE 'accounts_api_caller' END;
BEGIN
  FOR fn IN SELECT unnest(ARRAY[
    'api.take_user_limit(text, integer, integer)'::regprocedure,
    'api.create_connect_session(jsonb, text, text, text, text, integer, integer, integer)'::regprocedure,
    'api.claim_connect_session(jsonb, text, text, integer, integer)'::regprocedure])
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR grantee IN
      SELECT DISTINCT acl.grantee::regrole
        FROM pg_proc p, aclexplode(p.proacl) acl
       WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
    LOOP
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
  END LOOP;
  -- take_user_limit runs inside the two SECURITY DEFINER functions (as their owner) only.
  EXECUTE format('GRANT EXECUTE ON FUNCTION api.create_connect_session(jsonb, text, text, text, text, integer, integer, integer) TO %I', api_role);
  EXECUTE format('GRANT EXECUTE ON FUNCTION api.claim_connect_session(jsonb, text, text, integer, integer) TO %I', api_role);
END
$$;

-- Down Migration

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

DROP FUNCTION IF EXISTS api.claim_connect_session(jsonb, text, text, integer, integer);
DROP FUNCTION IF EXISTS api.create_connect_session(jsonb, text, text, text, text, integer, integer, integer);
DROP FUNCTION IF EXISTS api.take_user_limit(text, integer, integer);
DROP TABLE IF EXISTS public.connect_sessions;
DELETE FROM public.amazon_rate_budget WHERE endpoint LIKE '%:api';
ALTER TABLE public.amazon_rate_budget DROP CONSTRAINT IF EXISTS amazon_rate_budget_endpoint_check;
ALTER TABLE public.amazon_rate_budget ADD CONSTRAINT amazon_rate_budget_endpoint_check
  CHECK (endpoint IN ('lwa-token', 'ads-profiles')) NOT VALID;
-- Validated, as 0015 made it (the ':api' rows are gone; a handful of rows to scan).
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE public.amazon_rate_budget VALIDATE CONSTRAINT amazon_rate_budget_endpoint_check;
