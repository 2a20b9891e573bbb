-- Up Migration
--
-- A signed-in user may read its own rate-limit counters, no longer write them; the API's role
-- writes them.
--
-- The specification gives `rate_limit_tracking` a FOR ALL policy for `authenticated` (own rows),
-- and 0009 granted the role INSERT and UPDATE of the counters so that a manual sync's per-user
-- limit could be recorded under the caller. Since 0019 the manual sync runs only through
-- api.request_manual_sync, as `accounts_api_caller` (the API's login; the function runs as its
-- caller), but the grants stayed with every signed-in user: on Supabase any holder of a user's
-- JWT could, through PostgREST, rewrite its own counters, e.g. move `window_start` back and lift
-- the manual-sync limit the API enforces. As 0019 did for the writes of connect and disconnect,
-- this moves the counters' INSERT and UPDATE from `authenticated` to `accounts_api_caller`.
-- The specification's intent (each user sees and is counted in its own rows, nobody else's)
-- is kept: its policy stays as it is (FOR ALL TO authenticated, own rows, with 0009's WITH
-- CHECK), and it applies to `accounts_api_caller`, a member of `authenticated`, so the API's
-- writes still land only on the claims' user. `authenticated` keeps SELECT of its own rows.
-- The jobs (accounts_worker) are not affected.
--
-- Locks: GRANT and REVOKE change catalogue rows only (no lock on the table's data, nothing
-- rewritten). Idempotent: a GRANT held or a REVOKE not held does nothing.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

-- A table-level REVOKE also takes back the privilege on each column (PostgreSQL's REVOKE).
REVOKE INSERT, UPDATE, DELETE ON public.rate_limit_tracking FROM authenticated;
GRANT INSERT (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start)
  ON public.rate_limit_tracking TO accounts_api_caller;
GRANT UPDATE (request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start, updated_at)
  ON public.rate_limit_tracking TO accounts_api_caller;

-- Down Migration
--
-- Back to 0009's grants (with which a signed-in user could lift its own manual-sync limit).
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';
REVOKE INSERT, UPDATE ON public.rate_limit_tracking FROM accounts_api_caller;
GRANT INSERT (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start)
  ON public.rate_limit_tracking TO authenticated;
GRANT UPDATE (request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start, updated_at)
  ON public.rate_limit_tracking TO authenticated;
