-- Up Migration
--
-- The accounts API's own Login with Amazon call (the authorization-code exchange of
-- POST /v1/connections) draws from the shared rate budget of 0015, like every job invocation:
-- until now its login (`accounts_api`, a member of `authenticated`) could not call the budget's
-- functions, so its requests to the token endpoint were paced per container only.
--
-- What it needs, and nothing more, goes to a new NOLOGIN role `amazon_rate_budget_user`:
-- the migration custom resource makes the API's login a member (ensureApiLogin, after the
-- migrations; the login's name is the deploy's, not known here). Not to `authenticated`: that
-- role is also the end users' (Supabase clients), who must not be able to move the schedule.
-- * EXECUTE on reserve_amazon_requests, amazon_requests_throttled and amazon_rate_now. They
--   are SECURITY INVOKER (0015: owned by the migration user, search_path pinned to
--   public, pg_temp), so they act with the caller's privileges, hence:
-- * on amazon_rate_budget, per column, what the two functions read and write (the same as
--   accounts_worker's in 0015: `SELECT *` into the row, the INSERT of a new budget row, the
--   UPDATE of the schedule), and an RLS policy for this role (RLS is on, without a policy it
--   would see no row);
-- * USAGE on schema public (where PUBLIC has none).
-- Nothing on any other table, and nothing on rate_limit_tracking (the API does not record
-- usage there).
--
-- Locks: CREATE ROLE, GRANT and CREATE POLICY are catalogue changes (CREATE POLICY takes
-- ACCESS EXCLUSIVE on amazon_rate_budget for milliseconds), behind lock_timeout.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

-- Roles are cluster-wide: another database of the cluster may have made it already.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'amazon_rate_budget_user') THEN
    CREATE ROLE amazon_rate_budget_user NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO amazon_rate_budget_user;

GRANT SELECT (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until,
              last_cut_at, throttled_count, updated_at)
  ON amazon_rate_budget TO amazon_rate_budget_user;
GRANT INSERT (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at)
  ON amazon_rate_budget TO amazon_rate_budget_user;
GRANT UPDATE (ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until, last_cut_at,
              throttled_count, updated_at)
  ON amazon_rate_budget TO amazon_rate_budget_user;

DROP POLICY IF EXISTS amazon_rate_budget_api ON amazon_rate_budget;
CREATE POLICY amazon_rate_budget_api ON amazon_rate_budget
  FOR ALL TO amazon_rate_budget_user
  USING (true) WITH CHECK (true);

GRANT EXECUTE ON FUNCTION public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz) TO amazon_rate_budget_user;
GRANT EXECUTE ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) TO amazon_rate_budget_user;
GRANT EXECUTE ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision) TO amazon_rate_budget_user;

-- Down Migration

SET LOCAL lock_timeout = '500ms';

DROP POLICY IF EXISTS amazon_rate_budget_api ON amazon_rate_budget;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'amazon_rate_budget_user') THEN
    REVOKE ALL ON FUNCTION public.amazon_rate_now(public.amazon_rate_budget, double precision, double precision, timestamptz) FROM amazon_rate_budget_user;
    REVOKE ALL ON FUNCTION public.reserve_amazon_requests(text, text, double precision, integer, double precision, double precision, double precision, double precision, double precision) FROM amazon_rate_budget_user;
    REVOKE ALL ON FUNCTION public.amazon_requests_throttled(text, text, double precision, timestamptz, double precision, double precision, double precision, double precision) FROM amazon_rate_budget_user;
    REVOKE ALL ON amazon_rate_budget FROM amazon_rate_budget_user;
    REVOKE USAGE ON SCHEMA public FROM amazon_rate_budget_user;
    -- Other databases of the cluster may still use the role: it stays (it holds nothing here).
  END IF;
END
$$;
