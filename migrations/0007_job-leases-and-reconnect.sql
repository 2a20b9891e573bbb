-- Up Migration
--
-- What the scheduled jobs need beyond the specification (docs/architecture.md, "How the jobs
-- behave"). All of it is per user, and oauth_tokens has exactly one row per user, so it lives
-- there:
--
-- * Token refresh: refresh_lease_owner / refresh_lease_expires_at. A token is claimed by
--   setting them in the same statement that selects it (FOR UPDATE SKIP LOCKED), so
--   overlapping invocations never refresh the same token twice, and a run that dies leaves a
--   lease that simply expires. next_refresh_attempt_at holds the backoff after a failure or a
--   429; last_refreshed_at the last success (for operators).
-- * Account sync: the unit of work is a user (one Amazon call lists all of a user's
--   profiles), claimed the same way through sync_lease_owner / sync_lease_expires_at.
--   sync_next_attempt_at is the user's own schedule: the accounts keep theirs in
--   user_accounts.next_sync_at as the spec says, but a user with no account yet has no row to
--   hold one. New tokens are due at once (DEFAULT now(), set for new rows only: existing rows
--   get theirs from the batched backfill in 0008, which makes the users without accounts
--   due); sync_retry_count / sync_last_error mirror the accounts' columns for that case.
-- * Re-connection. When the web app stores new tokens for a user whose refresh was turned off
--   (invalid_grant or repeated failures), refresh must start again and the accounts flagged
--   'reauth_required' must be synced again. The web app only writes the tokens, so a trigger
--   does it: a new refresh_token on a row with proactive refresh off (the jobs never write a
--   refresh token there) turns refresh back on, clears the failures, makes the user due for
--   a sync and puts the flagged accounts back to 'pending', due now. SECURITY DEFINER so that
--   it works whatever role the web app writes with (user_accounts has RLS), with a fixed
--   search_path.
--
-- Locks: ADD COLUMN (no default for existing rows, or a constant one) and CREATE TRIGGER are
-- catalogue changes (ACCESS EXCLUSIVE and SHARE ROW EXCLUSIVE, held for milliseconds) behind
-- lock_timeout, like 0003. The accounts_worker role of 0006 already has SELECT, UPDATE on
-- oauth_tokens, which covers the new columns.

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

ALTER TABLE oauth_tokens
  ADD COLUMN IF NOT EXISTS refresh_lease_owner uuid,
  ADD COLUMN IF NOT EXISTS refresh_lease_expires_at timestamptz,
  ADD COLUMN IF NOT EXISTS next_refresh_attempt_at timestamptz,
  ADD COLUMN IF NOT EXISTS last_refreshed_at timestamptz,
  ADD COLUMN IF NOT EXISTS sync_lease_owner uuid,
  ADD COLUMN IF NOT EXISTS sync_lease_expires_at timestamptz,
  ADD COLUMN IF NOT EXISTS sync_next_attempt_at timestamptz,
  ALTER COLUMN sync_next_attempt_at SET DEFAULT now(),
  ADD COLUMN IF NOT EXISTS sync_retry_count integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS sync_last_error text,
  ADD CONSTRAINT oauth_tokens_sync_retry_count_check CHECK (sync_retry_count >= 0) NOT VALID;

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
   WHERE user_id = NEW.user_id AND sync_status = 'reauth_required';
  RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION public.oauth_tokens_reconnected() FROM PUBLIC;

CREATE TRIGGER oauth_tokens_reconnected
  BEFORE INSERT OR UPDATE OF refresh_token ON oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION public.oauth_tokens_reconnected();

-- Down Migration
SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';
DROP TRIGGER IF EXISTS oauth_tokens_reconnected ON oauth_tokens;
DROP FUNCTION IF EXISTS public.oauth_tokens_reconnected();
ALTER TABLE oauth_tokens
  DROP CONSTRAINT IF EXISTS oauth_tokens_sync_retry_count_check,
  DROP COLUMN IF EXISTS sync_last_error,
  DROP COLUMN IF EXISTS sync_retry_count,
  DROP COLUMN IF EXISTS sync_next_attempt_at,
  DROP COLUMN IF EXISTS sync_lease_expires_at,
  DROP COLUMN IF EXISTS sync_lease_owner,
  DROP COLUMN IF EXISTS last_refreshed_at,
  DROP COLUMN IF EXISTS next_refresh_attempt_at,
  DROP COLUMN IF EXISTS refresh_lease_expires_at,
  DROP COLUMN IF EXISTS refresh_lease_owner;
