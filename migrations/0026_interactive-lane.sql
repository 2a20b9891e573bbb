-- Up Migration
--
-- An interactive lane in the shared rate budget (issue 25: a rate budget that is fair).
--
-- The jobs reserve batches of slots up to 6 s ahead on one schedule per endpoint and region
-- (0022, 0025). A request made for someone waiting (the token route's refresh, the accounts
-- API's code exchange) that drew from the same schedule waited behind those batches: up to
-- 6 s, or a 503 once past its deadline. Amazon's limit leaves no room for it there: while the
-- jobs hold the schedule at the full rate, any further request in those seconds would be one
-- too many. So a small part of the rate is kept out of the jobs' schedule instead: the jobs
-- draw from the endpoint's row at the ceiling less the lane (lambda/shared/amazon/api-share.ts,
-- `jobsCeiling`: LWA 10/s per region is 9/s for the jobs and 1/s for the lane), and an
-- interactive request takes a slot of the lane's own row, `lwa-token:interactive`, paced at
-- the lane's rate and never reserved ahead (one slot, at most 500 ms away). Two schedules
-- each spaced for its own rate send at most their sum in any second.
--
-- 1. The endpoint CHECK of amazon_rate_budget admits the lane rows (`lwa-token:interactive`,
--    and `ads-profiles:interactive` for an Ads lane, unused today).
-- 2. reserve_amazon_requests(): a pool row (`<endpoint>:<pool>`: the lane, the API's quota of
--    0020) is never served before its endpoint's pause ends, nor paced faster than its
--    endpoint's rate as a share of the ceiling (a 429 is reported to the endpoint's row and
--    holds the lane back with it). The endpoint's row is read without a lock. Nothing else
--    changes (same signature, arguments and answer as 0025).
--
-- Privileges: none change. CREATE OR REPLACE keeps the function's grants (EXECUTE for
-- accounts_worker and amazon_rate_budget_user only, 0025); the lane rows are rows of the same
-- table, reached through the column grants both roles already hold (0015, 0018, 0022); the
-- function stays SECURITY INVOKER with its search_path pinned.
--
-- Locks: the CHECK is replaced NOT VALID (ACCESS EXCLUSIVE on amazon_rate_budget, a handful
-- of rows, for milliseconds, behind lock_timeout) and validated in the same transaction (a scan
-- of those rows); CREATE OR REPLACE FUNCTION takes no lock on the table and runs in this
-- migration's transaction, so callers see the old function or the new one.
-- Idempotent: DROP CONSTRAINT IF EXISTS before the ADD, CREATE OR REPLACE FUNCTION.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

ALTER TABLE public.amazon_rate_budget DROP CONSTRAINT IF EXISTS amazon_rate_budget_endpoint_check;
ALTER TABLE public.amazon_rate_budget ADD CONSTRAINT amazon_rate_budget_endpoint_check
  CHECK (endpoint IN ('lwa-token', 'ads-profiles', 'lwa-token:api', 'ads-profiles:api',
                      'lwa-token:interactive', 'ads-profiles:interactive')) NOT VALID;
-- Validated at once: the table holds a handful of rows (one per endpoint, region and pool).
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE public.amazon_rate_budget VALIDATE CONSTRAINT amazon_rate_budget_endpoint_check;

-- As 0025's, with the pool rows held to their endpoint's pause and rate (see above).
CREATE OR REPLACE FUNCTION public.reserve_amazon_requests(
  p_endpoint text, p_region text, p_ceiling double precision, p_wanted integer,
  p_max_wait_ms double precision, p_tolerance_ms double precision, p_recovery_per_second double precision,
  p_lead_ms double precision, p_horizon_ms double precision, p_ticket timestamptz DEFAULT NULL)
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
  -- A pool's endpoint row (`lwa-token` for `lwa-token:interactive`): its pause and its rate cut hold for the pool.
  e public.amazon_rate_budget;
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
  behind boolean;
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
  -- A pool row (`<endpoint>:<pool>`) is never paced faster, nor served earlier, than its
  -- endpoint allows: the endpoint's pause (Amazon's 429s, reported there) and its rate cut (as
  -- a share of the ceiling) apply to the pool too. Read without a lock: a report landing in the
  -- same instant applies from the next reservation.
  IF strpos(p_endpoint, ':') > 0 THEN
    SELECT * INTO e FROM amazon_rate_budget WHERE endpoint = split_part(p_endpoint, ':', 1) AND region = p_region;
    IF FOUND THEN
      rate := least(rate, public.amazon_rate_now(e, ceiling, least(1, p_recovery_per_second), now_at));
      IF e.paused_until > coalesce(b.paused_until, now_at) THEN
        b.paused_until := e.paused_until;
      END IF;
    END IF;
  END IF;
  step := (1000 + tolerance) / rate;
  -- Nobody holds a slot beyond the largest horizon: a frontier further out (a tiny ceiling
  -- earlier, a rate cut since grown back) is brought back to it.
  start_at := greatest(least(b.next_slot_at, now_at + make_interval(secs => (max_horizon + step) / 1000)),
                       now_at + make_interval(secs => lead / 1000), coalesce(b.paused_until, now_at));
  need := least(p_wanted, floor(horizon / step)::integer + 1);
  fits := floor(extract(epoch FROM now_at + make_interval(secs => horizon / 1000) - start_at) * 1000 / step)::integer + 1;
  queue := b.queue_until;
  -- Callers refused before are still to come (the last place handed out is ahead): a caller
  -- without a place of its own (no ticket) asks behind them instead of taking their slots.
  behind := queue IS NOT NULL AND queue > now_at AND p_ticket IS NULL;
  IF NOT behind AND fits >= greatest(1, ceil(need / 2.0)::integer)
     AND start_at <= now_at + make_interval(secs => max_wait / 1000) THEN
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

-- Down Migration
--
-- Back to 0025's function and 0020's CHECK (lane rows, if any, are deleted first).

SET LOCAL lock_timeout = '500ms';

DELETE FROM public.amazon_rate_budget WHERE endpoint IN ('lwa-token:interactive', 'ads-profiles:interactive');
ALTER TABLE public.amazon_rate_budget DROP CONSTRAINT IF EXISTS amazon_rate_budget_endpoint_check;
ALTER TABLE public.amazon_rate_budget ADD CONSTRAINT amazon_rate_budget_endpoint_check
  CHECK (endpoint IN ('lwa-token', 'ads-profiles', 'lwa-token:api', 'ads-profiles:api')) NOT VALID;
-- squawk-ignore constraint-missing-not-valid
ALTER TABLE public.amazon_rate_budget VALIDATE CONSTRAINT amazon_rate_budget_endpoint_check;

CREATE OR REPLACE FUNCTION public.reserve_amazon_requests(
  p_endpoint text, p_region text, p_ceiling double precision, p_wanted integer,
  p_max_wait_ms double precision, p_tolerance_ms double precision, p_recovery_per_second double precision,
  p_lead_ms double precision, p_horizon_ms double precision, p_ticket timestamptz DEFAULT NULL)
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
  behind boolean;
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
  -- Callers refused before are still to come (the last place handed out is ahead): a caller
  -- without a place of its own (no ticket) asks behind them instead of taking their slots.
  behind := queue IS NOT NULL AND queue > now_at AND p_ticket IS NULL;
  IF NOT behind AND fits >= greatest(1, ceil(need / 2.0)::integer)
     AND start_at <= now_at + make_interval(secs => max_wait / 1000) THEN
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
