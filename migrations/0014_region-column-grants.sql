-- Up Migration
--
-- The privileges the region columns of 0012 need, per column as in 0009 and 0011.
--
-- * accounts_worker (the jobs): the account sync's unit of work is now a connection (one user
--   in one region), so its statements read user_accounts.region (the connection's accounts,
--   inactive marking only within the synced region), write it on the upsert (a new profile is
--   inserted with its region; a known one takes the region whose profiles list it), and
--   record and read account_sync_history.region (the history row says which connection it
--   was for; a claim closes only that connection's abandoned rows). The token refresh flags
--   only the failing connection's region 'reauth_required', which reads the same column.
--   test/migrations/worker-privileges.expected.ts lists each privilege with its statement.
-- * authenticated: reads every column of its own user_accounts (0009), so region too; 0013
--   (the accounts API, which lists accounts by region) grants it, with the rest of what the
--   API reads, and takes it back in its own Down. Granting it here as well would let this
--   Down take away a privilege 0013 still relies on.
--
-- Numbered 0014 because 0013 belongs to the accounts API. GRANT and REVOKE change catalogue
-- rows only; the limits only make a stuck migration fail fast.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

GRANT SELECT (region), INSERT (region), UPDATE (region) ON user_accounts TO accounts_worker;
GRANT SELECT (region), INSERT (region) ON account_sync_history TO accounts_worker;

-- Down Migration
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';
REVOKE SELECT (region), INSERT (region) ON account_sync_history FROM accounts_worker;
REVOKE SELECT (region), INSERT (region), UPDATE (region) ON user_accounts FROM accounts_worker;
