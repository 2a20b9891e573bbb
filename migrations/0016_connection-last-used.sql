-- Up Migration
--
-- Refresh what is used. oauth_tokens.last_used_at is when the connection's access token was
-- last used or wanted: the account sync sets it on every connection it claims, and on every
-- due connection it must leave until the token refresh renews its expiring token (later, the
-- product's on-demand token route sets it too). The token refresh's proactive run can then be
-- limited to connections used within a window configured per environment
-- (`jobs.proactiveRefreshUsedWithinHours` in cdk.json); idle connections are refreshed when
-- they are next wanted. proactive_refresh_enabled keeps its meaning (FALSE: re-authorisation
-- needed or switched off) and is not touched.
--
-- Existing rows keep NULL, and the refresh treats NULL as "used": nothing changes for existing
-- data when this is applied, whatever the window says. A connection whose last_used_at is NULL
-- is refreshed as before until a use sets it (then the window decides). No backfill: setting
-- now() on every row would rewrite the table for nothing and say the same thing.
--
-- Locks: ADD COLUMN of a nullable column without a default is a catalogue change (ACCESS
-- EXCLUSIVE held for milliseconds, no rewrite, no scan), behind lock_timeout as in 0010.
--
-- accounts_worker (the jobs), per column as in 0011 and 0014:
-- * SELECT: the token refresh's claim and its dry-run count read it (the window);
-- * UPDATE: the account sync's claim records the use.
-- test/migrations/worker-privileges.expected.ts lists each privilege with its statement.
-- Numbered 0016: 0013 to 0015 belong to other changes (accounts API, region grants, shared
-- rate budget).

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

ALTER TABLE oauth_tokens ADD COLUMN IF NOT EXISTS last_used_at timestamptz;

COMMENT ON COLUMN oauth_tokens.last_used_at IS
  'When the access token was last used or wanted (account sync, on-demand route). NULL: not recorded yet, treated as used by the proactive refresh.';

GRANT SELECT (last_used_at), UPDATE (last_used_at) ON oauth_tokens TO accounts_worker;

-- Down Migration

SET LOCAL statement_timeout = '30s';
-- Autovacuum out of the way first (as lockStep in migrations/lib/online.js): waiting for SHARE
-- UPDATE EXCLUSIVE blocks no writer and makes the server cancel an autovacuum running on the
-- table after deadlock_timeout (1 s), which a 500 ms lock_timeout alone never waits for; and
-- autovacuum skips a table it cannot lock. Added after release (how, not what, it applies).
SET LOCAL lock_timeout = '20s';
LOCK TABLE oauth_tokens IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

REVOKE SELECT (last_used_at), UPDATE (last_used_at) ON oauth_tokens FROM accounts_worker;
ALTER TABLE oauth_tokens DROP COLUMN IF EXISTS last_used_at;
