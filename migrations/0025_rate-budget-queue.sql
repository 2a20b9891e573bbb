-- Up Migration
--
-- The shared budget's queue of refused callers is kept (issue 25: database calls per request
-- flat in the number of workers).
--
-- Since 0022 a refused caller is given its own time to ask again (`retry_at`, the queue's last
-- place in `queue_until`), but any caller that came by in the meantime was still served first:
-- a worker back for the last few slots of its claim took them in front of the caller whose time
-- had come, which then got a batch a few slots short, came back for those in front of the next
-- one, and so on (measured: 16 workers at 10/s, each with one batch of work, 49 calls for 880
-- requests, 56 per 1,000, every second batch short by one to four slots).
--
-- reserve_amazon_requests() takes the time it gave a refused caller back as `p_ticket` (new,
-- last, DEFAULT NULL: the 9-argument calls keep working). While the queue's last place is
-- still ahead (`queue_until` > now), a caller without a ticket is not served but queued behind
-- (as when its batch does not fit); a caller with one is served as before. A 429 clears the
-- queue (0022), after which every ticket is as good as none. Nothing else changes.
--
-- Privileges: the 10-argument function is created in place of 0022's 9-argument one (a
-- default argument makes a new signature), with 0022's grants: EXECUTE for accounts_worker and
-- amazon_rate_budget_user only, taken from PUBLIC and from any role default privileges gave it
-- to. SECURITY INVOKER, search_path pinned, as before.
--
-- Locks: DROP and CREATE FUNCTION take no lock on amazon_rate_budget; they run in this
-- migration's transaction, so callers see the old function or the new one. Idempotent: DROP
-- FUNCTION IF EXISTS for both signatures before the CREATE.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision);
DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision, timestamptz);

-- Reserves up to `p_wanted` consecutive slots of the schedule (as many as start within the
-- horizon, at most what the horizon holds), when at least half of them fit, the first starts
-- within p_max_wait_ms, and no refused caller is still to come before this one (`p_ticket`:
-- the time this caller was given when it was refused); otherwise nothing (granted 0) and
-- `retry_at`, this caller's own time to ask again (a place in the queue, kept only when its
-- first slot would still come within p_max_wait_ms). No slot starts before now + p_lead_ms.
CREATE FUNCTION public.reserve_amazon_requests(
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

DO $$
DECLARE
  fn regprocedure := 'public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision, timestamptz)';
  grantee regrole;
BEGIN
  EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
  -- Default privileges (Supabase's schema `public`) may have granted EXECUTE to named roles.
  FOR grantee IN
    SELECT DISTINCT acl.grantee::regrole
      FROM pg_proc p, aclexplode(p.proacl) acl
     WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
  END LOOP;
END
$$;
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision, timestamptz)
  TO accounts_worker, amazon_rate_budget_user;

-- Down Migration
--
-- Back to 0022's function (9 arguments, no ticket), with its grants.

SET LOCAL lock_timeout = '500ms';

DROP FUNCTION IF EXISTS public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision, timestamptz);

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

REVOKE ALL ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision)
  TO accounts_worker, amazon_rate_budget_user;
