-- Up Migration
--
-- The shared rate budget of 0015 made cheap, fair and unbreakable by its callers.
--
-- 1. Reservations sized to what a worker sends, and no thundering herd.
-- reserve_amazon_requests() hands out up to `p_wanted` consecutive slots starting within the
-- horizon, as before, but the horizon may now be a few seconds (a worker takes up to that much
-- of the schedule in one call: one call per batch instead of one per half second), and a caller
-- that gets no slot is given a time of its own to ask again (`retry_at`): when a batch of its
-- size fits, and never before the previous refused caller's time plus one batch. Refused
-- callers wait in a queue (`queue_until`, the last time handed out) instead of all waking at
-- the next free slot together and all but one getting nothing again. A batch is granted once
-- at least half of what the caller needs fits. A 429 clears the queue (the pause moves every
-- time). The caller's first slot then is returned as `first_slot_at` (the one it can expect),
-- with the budget's `paused_until` and the horizon the database applied.
--
-- 2. Clamps the database applies whatever the caller asks: a horizon of at most 6 s, a lead of
-- at most 1 s, a tolerance of at most 1 s, a pause of at most 900 s; slots per reservation at
-- most what the horizon holds at the rate; a ceiling between 0.05 and 1,000 requests per
-- second, and never a rate below 0.05/s (one request in 20 s): a tiny ceiling cannot push the
-- schedule hours ahead. The schedule's frontier is never further than the largest horizon
-- plus one interval at the current rate from now, so a ceiling raised again (or a rate grown
-- back) takes effect at the next reservation. Arguments that are not numbers (NULL, NaN,
-- infinite, negative, no slot wanted) are still refused (22023).
--
-- 3. The rate is kept as a share of the ceiling (amazon_rate_now): a ceiling raised in the
-- configuration applies at once, in the same proportion as any cut still growing back.
--
-- 4. One cut per wave of 429s. amazon_requests_throttled() takes, besides the time the request
-- was sent, when its slot was granted (`p_granted_at`): a 429 for a request whose slot was
-- granted before the last cut (at the old rate, still being sent when the cut came) does not
-- cut again. It also records the 429 in rate_limit_tracking at once when `p_record` and the
-- caller acts as the jobs' role accounts_worker (the API's role has no privilege there, and its
-- store passes false): the endpoint-wide row of
-- `<endpoint>:<region>` counts the hit and stores the pause actually in force
-- (`retry_after_seconds` = the budget's paused_until − now, rounded up: Retry-After doubled per
-- 429 in a row as the limiter applies it), so the next invocation, and a run that is killed,
-- know it. The two new arguments have defaults: the previous callers' 8 arguments still work.
--
-- 5. release_amazon_requests(): a worker that finishes gives back the unused end of its last
-- batch when nobody reserved after it (the frontier is still that batch's end, and the range
-- lies inside the batch granted last, `last_grant_from`).
--
-- Privileges: the new columns are read and written by the functions, which are SECURITY
-- INVOKER as in 0015 (search_path pinned): SELECT and UPDATE of `queue_until` and
-- `last_grant_from` for accounts_worker and amazon_rate_budget_user (0018), EXECUTE of the
-- redefined functions given back to both (a dropped function loses its grants), and of
-- release_amazon_requests to accounts_worker only (the API reserves one slot at a time and
-- has nothing to give back). EXECUTE is taken from PUBLIC and from any role default
-- privileges gave it to, as in 0015.
--
-- Locks: ADD COLUMN (nullable, no default: no rewrite) and the grants take ACCESS EXCLUSIVE
-- on amazon_rate_budget (a few rows) for milliseconds, behind lock_timeout. DROP and CREATE
-- FUNCTION run in this migration's transaction: callers see the old functions or the new.
-- Idempotent: IF NOT EXISTS / IF EXISTS / CREATE OR REPLACE throughout.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

ALTER TABLE amazon_rate_budget ADD COLUMN IF NOT EXISTS queue_until timestamptz;
ALTER TABLE amazon_rate_budget ADD COLUMN IF NOT EXISTS last_grant_from timestamptz;

GRANT SELECT (queue_until, last_grant_from), UPDATE (queue_until, last_grant_from)
  ON amazon_rate_budget TO accounts_worker, amazon_rate_budget_user;

-- The allowed rate now: the stored share of the stored ceiling, grown back linearly since
-- rate_at, applied to the ceiling passed now; never below 0.05 requests per second.
CREATE OR REPLACE FUNCTION public.amazon_rate_now(
  b public.amazon_rate_budget, ceiling double precision, recovery_per_second double precision, at_time timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT greatest(0.05, ceiling * least(1.0, b.rate_per_second / b.ceiling_per_second
                                             + recovery_per_second * greatest(0, extract(epoch FROM at_time - b.rate_at)::double precision)))
$$;

DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision);

-- Reserves up to `p_wanted` consecutive slots of the schedule (as many as start within the
-- horizon, at most what the horizon holds), when at least half of them fit and the first
-- starts within p_max_wait_ms; otherwise nothing (granted 0) and `retry_at`, this caller's own
-- time to ask again (a place in the queue of refused callers, kept only when its first slot
-- would still come within p_max_wait_ms). No slot starts before now + p_lead_ms.
CREATE FUNCTION public.reserve_amazon_requests(
  p_endpoint text, p_region text, p_ceiling double precision, p_wanted integer,
  p_max_wait_ms double precision, p_tolerance_ms double precision, p_recovery_per_second double precision,
  p_lead_ms double precision, p_horizon_ms double precision)
RETURNS TABLE (granted integer, first_slot_at timestamptz, interval_ms double precision, rate_per_second double precision,
               retry_at timestamptz, paused_until timestamptz, horizon_ms double precision)
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  -- The clamps (see the header): whatever the caller asks.
  max_horizon CONSTANT double precision := 6000;
  b public.amazon_rate_budget;
  now_at timestamptz;
  ceiling double precision;
  horizon double precision;
  lead double precision;
  tolerance double precision;
  max_wait double precision;
  rate double precision;
  step double precision;
  start_at timestamptz;
  fits integer;
  need integer;
  given integer := 0;
  wake timestamptz;
  first_at timestamptz;
  queue timestamptz;
BEGIN
  IF p_wanted IS NULL OR p_wanted < 1
     OR NOT (p_ceiling > 0 AND p_ceiling < 'Infinity'::float8)
     OR NOT (p_max_wait_ms >= 0 AND p_max_wait_ms <= 'Infinity'::float8)
     OR NOT (p_tolerance_ms >= 0 AND p_tolerance_ms < 'Infinity'::float8)
     OR NOT (p_recovery_per_second >= 0 AND p_recovery_per_second < 'Infinity'::float8)
     OR NOT (p_lead_ms >= 0 AND p_lead_ms < 'Infinity'::float8)
     OR NOT (p_horizon_ms >= 0 AND p_horizon_ms < 'Infinity'::float8) THEN
    RAISE EXCEPTION 'reserve_amazon_requests: invalid argument' USING ERRCODE = '22023';
  END IF;
  ceiling := least(1000, greatest(0.05, p_ceiling));
  horizon := least(max_horizon, p_horizon_ms);
  lead := least(1000, p_lead_ms);
  tolerance := least(1000, p_tolerance_ms);
  max_wait := least(86400000, p_max_wait_ms);
  INSERT INTO amazon_rate_budget AS r (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  VALUES (p_endpoint, p_region, ceiling, ceiling, clock_timestamp(), clock_timestamp())
  ON CONFLICT ON CONSTRAINT amazon_rate_budget_pkey DO NOTHING;
  SELECT * INTO STRICT b FROM amazon_rate_budget WHERE endpoint = p_endpoint AND region = p_region FOR UPDATE;
  now_at := clock_timestamp();
  rate := public.amazon_rate_now(b, ceiling, least(1, p_recovery_per_second), now_at);
  step := (1000 + tolerance) / rate;
  -- Nobody holds a slot beyond the largest horizon: a frontier further out (a tiny ceiling
  -- earlier, a rate cut since grown back) is brought back to it.
  start_at := greatest(least(b.next_slot_at, now_at + make_interval(secs => (max_horizon + step) / 1000)),
                       now_at + make_interval(secs => lead / 1000), coalesce(b.paused_until, now_at));
  need := least(p_wanted, floor(horizon / step)::integer + 1);
  fits := floor(extract(epoch FROM now_at + make_interval(secs => horizon / 1000) - start_at) * 1000 / step)::integer + 1;
  queue := b.queue_until;
  IF fits >= greatest(1, ceil(need / 2.0)::integer) AND start_at <= now_at + make_interval(secs => max_wait / 1000) THEN
    given := least(need, fits);
    first_at := start_at;
  ELSE
    -- When `need` slots fit, and after the caller refused before this one has had its batch.
    wake := greatest(now_at, start_at - make_interval(secs => (horizon - (need - 1) * step) / 1000));
    IF queue IS NOT NULL AND queue + make_interval(secs => need * step / 1000) > wake THEN
      wake := queue + make_interval(secs => need * step / 1000);
    END IF;
    first_at := greatest(start_at, wake + make_interval(secs => (horizon - need * step) / 1000));
    -- A caller that will not come back for it (its first slot would be too late) takes no place.
    IF first_at <= now_at + make_interval(secs => max_wait / 1000) THEN
      queue := wake;
    END IF;
  END IF;
  -- One statement for every answer: the ceiling as last passed, the rate now, and what changed.
  UPDATE amazon_rate_budget
     SET ceiling_per_second = ceiling, rate_per_second = rate, rate_at = now_at,
         next_slot_at = CASE WHEN given > 0 THEN start_at + make_interval(secs => given * step / 1000) ELSE b.next_slot_at END,
         last_grant_from = CASE WHEN given > 0 THEN start_at ELSE b.last_grant_from END,
         queue_until = queue, updated_at = now_at
   WHERE endpoint = p_endpoint AND region = p_region;
  RETURN QUERY SELECT given, first_at, step, rate, CASE WHEN given = 0 THEN wake END, b.paused_until, horizon;
END
$$;

DROP FUNCTION IF EXISTS public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision);

-- Amazon answered 429 to a request sent at p_sent_at on a slot granted at p_granted_at
-- (p_sent_at when not known): pause the endpoint for p_pause_seconds (for every invocation)
-- and, unless the rate was cut after that slot was granted, multiply the rate by p_decrease
-- (never below p_min_fraction of the ceiling, nor below 0.05/s). With p_record, the 429 and
-- the pause now in force go to rate_limit_tracking at once. Returns the rate and the pause.
CREATE FUNCTION public.amazon_requests_throttled(
  p_endpoint text, p_region text, p_ceiling double precision, p_sent_at timestamptz, p_pause_seconds double precision,
  p_decrease double precision, p_min_fraction double precision, p_recovery_per_second double precision,
  p_granted_at timestamptz DEFAULT NULL, p_record boolean DEFAULT false)
RETURNS TABLE (rate_per_second double precision, paused_until timestamptz, rate_cut boolean)
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
  b public.amazon_rate_budget;
  now_at timestamptz;
  ceiling double precision;
  rate double precision;
  cut boolean;
  pause_end timestamptz;
BEGIN
  IF p_sent_at IS NULL OR p_record IS NULL
     OR NOT (p_ceiling > 0 AND p_ceiling < 'Infinity'::float8)
     OR NOT (p_pause_seconds >= 0 AND p_pause_seconds < 'Infinity'::float8)
     OR NOT (p_decrease > 0 AND p_decrease <= 1)
     OR NOT (p_min_fraction > 0 AND p_min_fraction <= 1)
     OR NOT (p_recovery_per_second >= 0 AND p_recovery_per_second < 'Infinity'::float8) THEN
    RAISE EXCEPTION 'amazon_requests_throttled: invalid argument' USING ERRCODE = '22023';
  END IF;
  ceiling := least(1000, greatest(0.05, p_ceiling));
  INSERT INTO amazon_rate_budget AS r (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  VALUES (p_endpoint, p_region, ceiling, ceiling, clock_timestamp(), clock_timestamp())
  ON CONFLICT ON CONSTRAINT amazon_rate_budget_pkey DO NOTHING;
  SELECT * INTO STRICT b FROM amazon_rate_budget WHERE endpoint = p_endpoint AND region = p_region FOR UPDATE;
  now_at := clock_timestamp();
  rate := public.amazon_rate_now(b, ceiling, least(1, p_recovery_per_second), now_at);
  cut := b.last_cut_at IS NULL OR b.last_cut_at < least(p_sent_at, coalesce(p_granted_at, p_sent_at));
  IF cut THEN
    rate := greatest(0.05, ceiling * p_min_fraction, rate * p_decrease);
  END IF;
  pause_end := greatest(coalesce(b.paused_until, now_at), now_at + make_interval(secs => least(900, p_pause_seconds)));
  UPDATE amazon_rate_budget
     SET ceiling_per_second = ceiling, rate_per_second = rate, rate_at = now_at,
         last_cut_at = CASE WHEN cut THEN now_at ELSE b.last_cut_at END,
         paused_until = pause_end,
         next_slot_at = greatest(b.next_slot_at, pause_end),
         -- Every place in the queue was computed before the pause.
         queue_until = NULL,
         throttled_count = b.throttled_count + 1,
         updated_at = now_at
   WHERE endpoint = p_endpoint AND region = p_region;
  -- Only for the jobs' role (the API's login may be given rows of its own there, not these).
  IF p_record AND pg_has_role(current_user, 'accounts_worker', 'USAGE') THEN
    -- As recordRateLimitUsage (lambda/shared/amazon/usage-store.ts) counts: per hour window.
    INSERT INTO public.rate_limit_tracking AS t
           (user_id, endpoint, limit_hit_count, last_limit_hit, retry_after_seconds, window_start, updated_at)
    VALUES (NULL, p_endpoint || ':' || p_region, 1, now_at, ceil(extract(epoch FROM pause_end - now_at))::integer, now_at, now_at)
    ON CONFLICT ON CONSTRAINT rate_limit_tracking_endpoint_user_key DO UPDATE SET
      request_count = CASE WHEN t.window_start < now_at - interval '3600 seconds' THEN 0 ELSE t.request_count END,
      limit_hit_count = CASE WHEN t.window_start < now_at - interval '3600 seconds' THEN 1 ELSE t.limit_hit_count + 1 END,
      window_start = CASE WHEN t.window_start < now_at - interval '3600 seconds' THEN now_at ELSE t.window_start END,
      last_limit_hit = EXCLUDED.last_limit_hit,
      retry_after_seconds = EXCLUDED.retry_after_seconds,
      updated_at = now_at;
  END IF;
  RETURN QUERY SELECT rate, pause_end, cut;
END
$$;

-- A worker done with its work gives back the unused end of the batch granted last, from
-- p_from to p_until (its end): only while nobody has reserved after it, and only slots of that
-- batch. Returns whether they were given back.
CREATE OR REPLACE FUNCTION public.release_amazon_requests(
  p_endpoint text, p_region text, p_from timestamptz, p_until timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY INVOKER
SET search_path = public, pg_temp
AS $$
DECLARE
  done integer;
BEGIN
  IF p_from IS NULL OR p_until IS NULL OR NOT p_from < p_until THEN
    RAISE EXCEPTION 'release_amazon_requests: invalid argument' USING ERRCODE = '22023';
  END IF;
  UPDATE amazon_rate_budget b
     SET next_slot_at = greatest(p_from, clock_timestamp()), updated_at = clock_timestamp()
   WHERE b.endpoint = p_endpoint AND b.region = p_region
     AND b.next_slot_at BETWEEN p_until - interval '2 milliseconds' AND p_until + interval '2 milliseconds'
     AND b.last_grant_from IS NOT NULL AND p_from >= b.last_grant_from;
  GET DIAGNOSTICS done = ROW_COUNT;
  RETURN done > 0;
END
$$;

DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
BEGIN
  FOREACH fn IN ARRAY ARRAY[
    'public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision)',
    'public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision, timestamptz, boolean)',
    'public.release_amazon_requests(text, text, timestamptz, timestamptz)'
  ]::regprocedure[] LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    -- Default privileges (Supabase's schema `public`) may have granted EXECUTE to named roles.
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
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision)
  TO accounts_worker, amazon_rate_budget_user;
GRANT EXECUTE ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision, timestamptz, boolean)
  TO accounts_worker, amazon_rate_budget_user;
GRANT EXECUTE ON FUNCTION public.release_amazon_requests(text, text, timestamptz, timestamptz) TO accounts_worker;

-- Down Migration
--
-- Back to 0015's functions (as 0018 granted them) and columns.

SET LOCAL lock_timeout = '500ms';

DROP FUNCTION IF EXISTS public.release_amazon_requests(text, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision, timestamptz, boolean);
DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision);

CREATE OR REPLACE FUNCTION public.amazon_rate_now(
  b public.amazon_rate_budget, ceiling double precision, recovery_per_second double precision, at_time timestamptz)
RETURNS double precision
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT least(ceiling,
               b.rate_per_second + ceiling * recovery_per_second * greatest(0, extract(epoch FROM at_time - b.rate_at)::double precision))
$$;

CREATE FUNCTION public.reserve_amazon_requests(
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

CREATE FUNCTION public.amazon_requests_throttled(
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

REVOKE ALL ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) FROM PUBLIC;
REVOKE ALL ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision)
  TO accounts_worker, amazon_rate_budget_user;
GRANT EXECUTE ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision)
  TO accounts_worker, amazon_rate_budget_user;

REVOKE ALL (queue_until, last_grant_from) ON amazon_rate_budget FROM accounts_worker, amazon_rate_budget_user;
ALTER TABLE amazon_rate_budget DROP COLUMN IF EXISTS last_grant_from;
ALTER TABLE amazon_rate_budget DROP COLUMN IF EXISTS queue_until;
