-- Up Migration
--
-- One request budget per Amazon endpoint and region, shared by every invocation.
--
-- Until now each Lambda container paced its own calls (a token bucket in memory): two
-- invocations at once sent Amazon twice the configured rate, and a 429 slowed only the
-- container that received it. `amazon_rate_budget` holds the pace in the database instead, as
-- a virtual schedule (the generic cell rate algorithm): `next_slot_at` is the first moment no
-- invocation has been promised yet. An invocation reserves a few slots at a time with
-- reserve_amazon_requests(): they start at greatest(now, next_slot_at, paused_until) and are
-- spaced by the slot interval, and next_slot_at moves past them. So however many invocations
-- draw from it, the slots they hold never overlap, and
--   * nothing accumulates while nobody calls (no burst after a quiet period);
--   * a crashed invocation's unused slots simply pass: a reservation is a few seconds of
--     schedule at most, and slots in the past are never used (the client drops a slot it
--     cannot use within its tolerance);
--   * a 429 (amazon_requests_throttled()) cuts the rate for everyone, once per wave of 429s
--     (a 429 for a request sent before the last cut is already accounted for), and pauses the
--     endpoint for every invocation; the rate grows back linearly with time.
-- The interval is (1000 ms + tolerance) / rate: a slot used up to `tolerance` late can then
-- never put more than the rate's worth of requests into any one-second window.
--
-- The clock is the database's (clock_timestamp(), read after the row lock): one clock for all
-- invocations, however much their own drift.
--
-- The configured ceiling is passed on every call (it is per environment, in cdk.json) and
-- stored for operators; the row is created on first use.
--
-- Privileges: RLS on, no policy and no grant for anyone but the jobs' role (the table is not
-- per user; `authenticated` and `anon` must not see or change it, whatever default
-- privileges gave them). The functions are SECURITY INVOKER with a pinned search_path: they
-- act with the caller's privileges, and EXECUTE is taken from PUBLIC (functions are
-- executable by PUBLIC by default) and given to accounts_worker only.
--
-- Locks: a new table and functions; nothing existing is touched.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

CREATE TABLE IF NOT EXISTS amazon_rate_budget (
  endpoint text NOT NULL CONSTRAINT amazon_rate_budget_endpoint_check CHECK (endpoint IN ('lwa-token', 'ads-profiles')),
  region text NOT NULL CONSTRAINT amazon_rate_budget_region_check CHECK (region IN ('NA', 'EU', 'FE')),
  -- Requests per second when Amazon does not push back (the configuration's, as last passed).
  ceiling_per_second double precision NOT NULL CONSTRAINT amazon_rate_budget_ceiling_check CHECK (ceiling_per_second > 0),
  -- The allowed rate as of rate_at (below the ceiling after 429s; it grows back with time).
  rate_per_second double precision NOT NULL CONSTRAINT amazon_rate_budget_rate_check CHECK (rate_per_second > 0),
  rate_at timestamptz NOT NULL,
  -- The first moment not yet promised to any invocation.
  next_slot_at timestamptz NOT NULL,
  paused_until timestamptz,
  last_cut_at timestamptz,
  throttled_count bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT amazon_rate_budget_pkey PRIMARY KEY (endpoint, region)
);

ALTER TABLE amazon_rate_budget ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
  from_roles text := 'PUBLIC, authenticated' || CASE WHEN to_regrole('anon') IS NULL THEN '' ELSE ', anon' END;
BEGIN
  EXECUTE format('REVOKE ALL ON TABLE public.amazon_rate_budget FROM %s', from_roles);
END
$$;

DROP POLICY IF EXISTS amazon_rate_budget_worker ON amazon_rate_budget;
CREATE POLICY amazon_rate_budget_worker ON amazon_rate_budget
  FOR ALL TO accounts_worker
  USING (true) WITH CHECK (true);

GRANT SELECT (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until,
              last_cut_at, throttled_count, updated_at)
  ON amazon_rate_budget TO accounts_worker;
GRANT INSERT (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  ON amazon_rate_budget TO accounts_worker;
GRANT UPDATE (ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until, last_cut_at,
              throttled_count, updated_at)
  ON amazon_rate_budget TO accounts_worker;

-- The allowed rate now: the stored rate grown back linearly towards the ceiling since rate_at.
CREATE OR REPLACE FUNCTION public.amazon_rate_now(
  b public.amazon_rate_budget, ceiling double precision, recovery_per_second double precision, at_time timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT least(ceiling,
               b.rate_per_second + ceiling * recovery_per_second * greatest(0, extract(epoch FROM at_time - b.rate_at)::double precision))
$$;

-- Reserves up to `wanted` consecutive slots (as many as start within p_horizon_ms from now)
-- when the first can start within max_wait_ms; otherwise reserves nothing (granted 0) and says
-- when the first free slot is (the caller waits until it is within the horizon and asks again). No slot starts before
-- now + p_lead_ms: the answer's way back to the caller, so its first slot is not already late. Returns the first slot,
-- the interval between slots and the rate they were spaced for.
CREATE OR REPLACE FUNCTION public.reserve_amazon_requests(
  p_endpoint text, p_region text, p_ceiling double precision, p_wanted integer,
  p_max_wait_ms double precision, p_tolerance_ms double precision, p_recovery_per_second double precision,
  p_lead_ms double precision, p_horizon_ms double precision)
RETURNS TABLE (granted integer, first_slot_at timestamptz, interval_ms double precision, rate_per_second double precision)
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  b public.amazon_rate_budget;
  now_at timestamptz;
  rate double precision;
  step double precision;
  start_at timestamptz;
  fits integer;
BEGIN
  IF p_ceiling IS NULL OR NOT p_ceiling > 0 OR p_wanted IS NULL OR p_wanted < 1 OR p_wanted > 10000
     OR p_max_wait_ms IS NULL OR p_max_wait_ms < 0 OR p_tolerance_ms IS NULL OR p_tolerance_ms < 0
     OR p_recovery_per_second IS NULL OR p_recovery_per_second < 0
     OR p_lead_ms IS NULL OR p_lead_ms < 0 OR p_lead_ms > 10000
     OR p_horizon_ms IS NULL OR p_horizon_ms < 0 OR p_horizon_ms > 60000 THEN
    RAISE EXCEPTION 'reserve_amazon_requests: invalid argument' USING ERRCODE = '22023';
  END IF;
  INSERT INTO amazon_rate_budget AS r (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  VALUES (p_endpoint, p_region, p_ceiling, p_ceiling, clock_timestamp(), clock_timestamp())
  ON CONFLICT ON CONSTRAINT amazon_rate_budget_pkey DO NOTHING;
  SELECT * INTO STRICT b FROM amazon_rate_budget WHERE endpoint = p_endpoint AND region = p_region FOR UPDATE;
  now_at := clock_timestamp();
  rate := public.amazon_rate_now(b, p_ceiling, p_recovery_per_second, now_at);
  step := (1000 + p_tolerance_ms) / rate;
  start_at := greatest(b.next_slot_at, now_at + make_interval(secs => p_lead_ms / 1000), coalesce(b.paused_until, now_at));
  -- Slots are handed out at most p_horizon_ms ahead, whoever asks: all invocations together
  -- never hold more than that much of the schedule, so a pause after a 429 is kept by
  -- everyone within that time.
  fits := floor(extract(epoch FROM now_at + make_interval(secs => p_horizon_ms / 1000) - start_at) * 1000 / step)::integer + 1;
  IF start_at > now_at + make_interval(secs => p_max_wait_ms / 1000) OR fits < 1 THEN
    RETURN QUERY SELECT 0, start_at, step, rate;
    RETURN;
  END IF;
  UPDATE amazon_rate_budget
     SET ceiling_per_second = p_ceiling, rate_per_second = rate, rate_at = now_at,
         next_slot_at = start_at + make_interval(secs => least(p_wanted, fits) * step / 1000), updated_at = now_at
   WHERE endpoint = p_endpoint AND region = p_region;
  RETURN QUERY SELECT least(p_wanted, fits), start_at, step, rate;
END
$$;

-- Amazon answered 429 to a request sent at p_sent_at: pause the endpoint for p_pause_seconds
-- (for every invocation: no slot starts before the pause ends) and, unless the rate was
-- already cut after that request went out, multiply the rate by p_decrease (never below
-- p_min_fraction of the ceiling). Returns the rate and the pause now in force.
CREATE OR REPLACE FUNCTION public.amazon_requests_throttled(
  p_endpoint text, p_region text, p_ceiling double precision, p_sent_at timestamptz, p_pause_seconds double precision,
  p_decrease double precision, p_min_fraction double precision, p_recovery_per_second double precision)
RETURNS TABLE (rate_per_second double precision, paused_until timestamptz, rate_cut boolean)
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  b public.amazon_rate_budget;
  now_at timestamptz;
  rate double precision;
  cut boolean;
  pause_end timestamptz;
BEGIN
  IF p_ceiling IS NULL OR NOT p_ceiling > 0 OR p_sent_at IS NULL OR p_pause_seconds IS NULL OR p_pause_seconds < 0
     OR p_decrease IS NULL OR NOT (p_decrease > 0 AND p_decrease <= 1)
     OR p_min_fraction IS NULL OR NOT (p_min_fraction > 0 AND p_min_fraction <= 1)
     OR p_recovery_per_second IS NULL OR p_recovery_per_second < 0 THEN
    RAISE EXCEPTION 'amazon_requests_throttled: invalid argument' USING ERRCODE = '22023';
  END IF;
  INSERT INTO amazon_rate_budget AS r (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  VALUES (p_endpoint, p_region, p_ceiling, p_ceiling, clock_timestamp(), clock_timestamp())
  ON CONFLICT ON CONSTRAINT amazon_rate_budget_pkey DO NOTHING;
  SELECT * INTO STRICT b FROM amazon_rate_budget WHERE endpoint = p_endpoint AND region = p_region FOR UPDATE;
  now_at := clock_timestamp();
  rate := public.amazon_rate_now(b, p_ceiling, p_recovery_per_second, now_at);
  cut := b.last_cut_at IS NULL OR b.last_cut_at < p_sent_at;
  IF cut THEN
    rate := greatest(p_ceiling * p_min_fraction, rate * p_decrease);
  END IF;
  pause_end := greatest(coalesce(b.paused_until, now_at), now_at + make_interval(secs => p_pause_seconds));
  UPDATE amazon_rate_budget
     SET ceiling_per_second = p_ceiling, rate_per_second = rate, rate_at = now_at,
         last_cut_at = CASE WHEN cut THEN now_at ELSE b.last_cut_at END,
         paused_until = pause_end,
         next_slot_at = greatest(b.next_slot_at, pause_end),
         throttled_count = b.throttled_count + 1,
         updated_at = now_at
   WHERE endpoint = p_endpoint AND region = p_region;
  RETURN QUERY SELECT rate, pause_end, cut;
END
$$;

REVOKE ALL ON FUNCTION public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision) FROM PUBLIC;
DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
BEGIN
  -- Default privileges (Supabase's schema `public`) may have granted EXECUTE to named roles.
  FOREACH fn IN ARRAY ARRAY[
    'public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz)',
    'public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision)',
    'public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision)'
  ]::regprocedure[] LOOP
    FOR grantee IN
      SELECT DISTINCT acl.grantee::regrole
        FROM pg_proc p, aclexplode(p.proacl) acl
       WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
    LOOP
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
  END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz) TO accounts_worker;
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) TO accounts_worker;
GRANT EXECUTE ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision) TO accounts_worker;

-- Down Migration

SET LOCAL lock_timeout = '500ms';

DROP FUNCTION IF EXISTS public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision);
DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision);
DROP FUNCTION IF EXISTS public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz);
DROP TABLE IF EXISTS amazon_rate_budget;
