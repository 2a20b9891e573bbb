-- Up Migration
--
-- What the scheduled jobs need beyond the specification (DESIGN.md, "Behaviour the jobs must
-- have"):
--
-- * Token refresh leases. A token is claimed by setting refresh_lease_owner (the invocation's
--   id) and refresh_lease_expires_at in the same statement that selects it (FOR UPDATE SKIP
--   LOCKED), so overlapping invocations never refresh the same token twice; a run that dies
--   leaves a lease that simply expires. next_refresh_attempt_at holds the backoff after a
--   failure or a 429, and last_refreshed_at the last success (for operators).
-- * account_sync_leases: the account sync's unit of work is a user, and a user with no account
--   yet has no user_accounts row to lease or to hold a retry schedule. One row per user that
--   has been synced: the lease, plus next_attempt_at / retry_count / last_error for the
--   account-less case (users with accounts keep their schedule on the accounts, as the spec
--   says).
-- * Re-connection. When the web app stores new tokens for a user whose refresh was turned off
--   (invalid_grant or repeated failures), refresh must start again and the accounts flagged
--   'reauth_required' must be synced again. The web app only writes the tokens, so a trigger
--   does it: a new refresh_token on a row with proactive refresh off (the jobs never write a
--   refresh token there) turns refresh back on, clears the failures and puts the user's
--   flagged accounts back to 'pending', due now. SECURITY DEFINER so that it works whatever
--   role the web app writes with (user_accounts has RLS), with a fixed search_path.
--
-- Locks: ADD COLUMN without default and CREATE TRIGGER are catalogue changes (ACCESS EXCLUSIVE
-- and SHARE ROW EXCLUSIVE, held for milliseconds) behind lock_timeout, like 0003.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

ALTER TABLE oauth_tokens
  ADD COLUMN IF NOT EXISTS refresh_lease_owner uuid,
  ADD COLUMN IF NOT EXISTS refresh_lease_expires_at timestamptz,
  ADD COLUMN IF NOT EXISTS next_refresh_attempt_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_refreshed_at timestamptz;

CREATE TABLE IF NOT EXISTS account_sync_leases (
  user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
  lease_owner uuid,
  lease_expires_at timestamptz,
  next_attempt_at timestamptz,
  retry_count integer NOT NULL DEFAULT 0
    CONSTRAINT account_sync_leases_retry_count_check CHECK (retry_count >= 0),
  last_error text,
  updated_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE account_sync_leases ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON account_sync_leases FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON account_sync_leases TO accounts_worker;
CREATE POLICY accounts_worker_all ON account_sync_leases
  FOR ALL TO accounts_worker USING (true) WITH CHECK (true);

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
  ELSIF NOT NEW.proactive_refresh_enabled THEN
    RETURN NEW; -- an INSERT that deliberately starts with refresh off
  END IF;
  UPDATE user_accounts
     SET sync_status = 'pending', sync_error_message = NULL, sync_retry_count = 0,
         next_sync_at = now(), updated_at = now()
   WHERE user_id = NEW.user_id AND sync_status = 'reauth_required';
  UPDATE account_sync_leases SET next_attempt_at = NULL, retry_count = 0, last_error = NULL, updated_at = now()
   WHERE user_id = NEW.user_id;
  RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION public.oauth_tokens_reconnected() FROM PUBLIC;

CREATE TRIGGER oauth_tokens_reconnected
  BEFORE INSERT OR UPDATE OF refresh_token ON oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION public.oauth_tokens_reconnected();

-- Down Migration
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';
DROP TRIGGER IF EXISTS oauth_tokens_reconnected ON oauth_tokens;
DROP FUNCTION IF EXISTS public.oauth_tokens_reconnected();
DROP TABLE IF EXISTS account_sync_leases;
ALTER TABLE oauth_tokens
  DROP COLUMN IF EXISTS last_refreshed_at,
  DROP COLUMN IF EXISTS next_refresh_attempt_at,
  DROP COLUMN IF EXISTS refresh_lease_expires_at,
  DROP COLUMN IF EXISTS refresh_lease_owner;
