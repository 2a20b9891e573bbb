// Connections per region: a user may connect Amazon once per Ads region (NA, EU, FE).
//
// Amazon Ads is regional: each region has its own Login with Amazon consent and token
// endpoint, and GET /v2/profiles on a region's host lists only that region's profiles. So a
// connection (an oauth_tokens row) is per (user, region), and every account belongs to the
// connection of its region. Runs outside a transaction (CONCURRENTLY, batched backfill); every
// step is idempotent, so the runner can retry it after a lock timeout or an interruption.
//
// * oauth_tokens: at most one row per (user_id, region), enforced by the constraint
//   oauth_tokens_user_id_region_key (the contract other systems rely on: the web app and the
//   accounts API upsert ON CONFLICT (user_id, region)). Its unique index is built
//   CONCURRENTLY first (no write is blocked while it scans a million rows), then one short
//   transaction under lock_timeout drops the old UNIQUE (user_id) and attaches the new index
//   as the constraint (USING INDEX: a catalogue change, no scan). Lookups by user_id alone use
//   the new index's leading column.
// * user_accounts.region text NOT NULL, CHECK (region IN ('NA', 'EU', 'FE')): the region of the
//   connection the account belongs to, so hot queries ("this connection's accounts") never
//   parse metadata. Existing rows are backfilled in batches of at most 1,000 (fewer while
//   batches run slow, see lib/online.js) in key order, each committed on its own (smaller
//   than 0004's 5,000: every row also looks up the user's connection and updates the GIN
//   index of 0005, so a batch holds its row locks longer), with:
//     1. metadata->>'region' when it is NA, EU or FE: the account sync has always written the
//        region of the host that returned the profile there, so this is what Amazon said;
//     2. else the region of the user's connection: before this migration a user had exactly
//        one, and it is the only connection that can have listed the account;
//     3. else 'NA'. Such a user has accounts but no connection at all, so nothing can tell
//        the region; 'NA' is oauth_tokens.region's default (the region a connection gets when
//        the writer names none), and a wrong guess corrects itself: the account sync's upsert
//        sets region to the region whose profiles returned the account.
//   NOT NULL without a long lock, as 0004: a CHECK (region IS NOT NULL) added NOT VALID,
//   validated under SHARE UPDATE EXCLUSIVE (writes continue), SET NOT NULL (uses the validated
//   check instead of scanning again), then the helper check is dropped.
// * Writers that do not name the region (code from before this migration, which a failed
//   deploy rolls back to while this migration stays applied): a BEFORE INSERT trigger fills a
//   missing region with the same rule as the backfill (the first connection's region when a
//   user has several). It is installed before the backfill, so rows inserted while the
//   backfill runs are never left NULL. Current code always names the region.
// * idx_user_accounts_user_region (user_id, region), built CONCURRENTLY: "this user's accounts
//   in this region" (the account sync's claim and write-back, the token refresh's
//   reauth_required flagging, the re-connection trigger).
// * account_sync_history.region (nullable, checked): which connection a sync was for. Rows
//   written before this migration keep NULL (they were for the user's only connection).
// * The re-connection trigger of 0007 now works per connection: storing a new refresh token on
//   a connection whose refresh was off turns only that connection back on, and only that
//   region's reauth_required accounts go back to 'pending'.
// * Privileges: the new trigger function is SECURITY DEFINER, so, as 0009 does for 0007's,
//   every grantee's EXECUTE is taken back (Supabase's default privileges grant it to anon,
//   authenticated and service_role; nobody calls a trigger function). The columns' grants to
//   `authenticated` and to the jobs' role are in 0014, with the statements that need them.
//
// * Every step that takes a lock writers queue behind (the catalogue changes, SET NOT NULL, the
//   constraint swap) goes through lockStep (migrations/lib/online.js): SHARE UPDATE EXCLUSIVE
//   first (gets a running autovacuum out of the way without making writers wait), then tries
//   under a 500 ms lock_timeout, retried after a pause until the migration's time limit; a
//   backfill batch that waits on a row lock is retried the same way. Changed after release
//   (applied databases are unaffected): these steps used to give up after one 500 ms
//   lock_timeout, which failed the migration on a busy database (autovacuum on user_accounts,
//   woken by the backfill, yields only after deadlock_timeout, 1 s). What it produces is
//   unchanged.
//
// Down refuses while any user has connections in two regions (the old UNIQUE (user_id) could
// not hold them); it names how many and what to do. Otherwise it builds UNIQUE (user_id)
// concurrently and swaps the constraints back, and removes the columns, trigger and index.

const {
  addNotValidCheck,
  addNotValidCheckBody,
  createIndexesConcurrently,
  dropIndexesConcurrently,
  keysetBackfill,
  lockStep,
} = require('./lib/online');

const MIGRATION = '0012_connections-per-region';

const REGIONS = "('NA', 'EU', 'FE')";

const indexes = [
  {
    name: 'oauth_tokens_user_id_region_key',
    table: 'oauth_tokens',
    unique: true,
    definition: 'ON oauth_tokens (user_id, region)',
  },
  { name: 'idx_user_accounts_user_region', table: 'user_accounts', definition: 'ON user_accounts (user_id, region)' },
];

const oldUniqueIndex = [
  { name: 'oauth_tokens_user_id_key', table: 'oauth_tokens', unique: true, definition: 'ON oauth_tokens (user_id)' },
];

/** The backfill's rule (see the header), as an expression over user_accounts `ua`. */
const derivedRegion = `coalesce(
          CASE WHEN ua.metadata->>'region' IN ${REGIONS} THEN ua.metadata->>'region' END,
          (SELECT t.region FROM oauth_tokens t WHERE t.user_id = ua.user_id ORDER BY t.created_at, t.id LIMIT 1),
          'NA')`;

const backfill = keysetBackfill({
  table: 'user_accounts',
  alias: 'ua',
  set: `region = ${derivedRegion}`,
  where: 'ua.region IS NULL',
  batchSize: 1000,
});

/** The re-connection trigger function; `perRegion` false gives back 0007's body. */
const reconnectedFunction = (perRegion) => `
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
   WHERE user_id = NEW.user_id AND sync_status = 'reauth_required'${perRegion ? ' AND region = NEW.region' : ''};
  RETURN NEW;
END
$$;`;

// Security definer: it reads the user's connections whatever role inserts the account.
const defaultRegionFunction = `
CREATE OR REPLACE FUNCTION public.user_accounts_default_region() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
BEGIN
  IF NEW.region IS NULL THEN
    IF NEW.metadata->>'region' IN ${REGIONS} THEN
      NEW.region := NEW.metadata->>'region';
    ELSE
      SELECT t.region INTO NEW.region FROM oauth_tokens t WHERE t.user_id = NEW.user_id ORDER BY t.created_at, t.id LIMIT 1;
      NEW.region := coalesce(NEW.region, 'NA');
    END IF;
  END IF;
  RETURN NEW;
END
$$;`;

exports.indexes = indexes;

exports.up = async (pgm) => {
  pgm.noTransaction();
  // Catalogue changes only (ADD COLUMN without a default, NOT VALID checks, functions,
  // triggers, a grant): ACCESS EXCLUSIVE for milliseconds, one transaction, through lockStep.
  pgm.sql(
    lockStep({
      step: `${MIGRATION}: columns, checks and triggers`,
      tables: ['user_accounts', 'account_sync_history'],
      body: `
ALTER TABLE user_accounts ADD COLUMN IF NOT EXISTS region text;
ALTER TABLE account_sync_history ADD COLUMN IF NOT EXISTS region text;
${addNotValidCheckBody('user_accounts', 'user_accounts_region_check', `region IN ${REGIONS}`)}
${addNotValidCheckBody('account_sync_history', 'account_sync_history_region_check', `region IN ${REGIONS}`)}
${defaultRegionFunction}
DECLARE
  grantee regrole;
BEGIN
  REVOKE ALL ON FUNCTION public.user_accounts_default_region() FROM PUBLIC;
  FOR grantee IN
    SELECT DISTINCT acl.grantee::regrole
      FROM pg_proc p, aclexplode(p.proacl) acl
     WHERE p.oid = 'public.user_accounts_default_region()'::regprocedure
       AND acl.grantee <> 0 AND acl.grantee <> p.proowner
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION public.user_accounts_default_region() FROM %s', grantee);
  END LOOP;
END;
DROP TRIGGER IF EXISTS user_accounts_default_region ON user_accounts;
CREATE TRIGGER user_accounts_default_region
  BEFORE INSERT ON user_accounts
  FOR EACH ROW EXECUTE FUNCTION public.user_accounts_default_region();
${reconnectedFunction(true)}`,
    }),
  );
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '60min';");
  pgm.sql(backfill);
  pgm.sql(addNotValidCheck(MIGRATION, 'user_accounts', 'user_accounts_region_not_null', 'region IS NOT NULL'));
  // SHARE UPDATE EXCLUSIVE: writes continue during the scans.
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_region_not_null;');
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_region_check;');
  pgm.sql('ALTER TABLE account_sync_history VALIDATE CONSTRAINT account_sync_history_region_check;');
  pgm.sql(
    lockStep({
      step: `${MIGRATION}: SET NOT NULL`,
      tables: ['user_accounts'],
      body: `
ALTER TABLE user_accounts ALTER COLUMN region SET NOT NULL;
ALTER TABLE user_accounts DROP CONSTRAINT IF EXISTS user_accounts_region_not_null;`,
    }),
  );
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
  await createIndexesConcurrently(pgm, indexes);
  // The swap: both are catalogue changes (the old constraint's index is dropped, the new,
  // already valid index becomes the constraint); skipped when already done.
  pgm.sql(
    lockStep({
      step: `${MIGRATION}: constraint swap`,
      tables: ['oauth_tokens'],
      body: `
IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'oauth_tokens_user_id_region_key'
                AND conrelid = 'oauth_tokens'::regclass) THEN
  ALTER TABLE oauth_tokens
    DROP CONSTRAINT IF EXISTS oauth_tokens_user_id_key,
    ADD CONSTRAINT oauth_tokens_user_id_region_key UNIQUE USING INDEX oauth_tokens_user_id_region_key;
END IF;`,
    }),
  );
};

exports.down = async (pgm) => {
  pgm.noTransaction();
  pgm.sql(`
DO $refuse$
DECLARE
  users_with_several integer;
BEGIN
  SELECT count(*) INTO users_with_several
    FROM (SELECT user_id FROM oauth_tokens GROUP BY user_id HAVING count(*) > 1) s;
  IF users_with_several > 0 THEN
    RAISE EXCEPTION 'cannot undo 0012_connections-per-region: % user(s) have connections in more than one region, which UNIQUE (user_id) cannot hold', users_with_several
      USING HINT = 'Keep one oauth_tokens row per user (delete the others) before migrating down.';
  END IF;
END
$refuse$;`);
  await createIndexesConcurrently(pgm, oldUniqueIndex);
  pgm.sql(
    lockStep({
      step: `${MIGRATION}: constraint swap back`,
      tables: ['oauth_tokens'],
      body: `
IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'oauth_tokens_user_id_key'
                AND conrelid = 'oauth_tokens'::regclass) THEN
  ALTER TABLE oauth_tokens
    DROP CONSTRAINT IF EXISTS oauth_tokens_user_id_region_key,
    ADD CONSTRAINT oauth_tokens_user_id_key UNIQUE USING INDEX oauth_tokens_user_id_key;
END IF;`,
    }),
  );
  dropIndexesConcurrently(pgm, indexes);
  pgm.sql(
    lockStep({
      step: `${MIGRATION} (down): columns and triggers`,
      tables: ['user_accounts', 'account_sync_history'],
      body: `
${reconnectedFunction(false)}
DROP TRIGGER IF EXISTS user_accounts_default_region ON user_accounts;
DROP FUNCTION IF EXISTS public.user_accounts_default_region();
ALTER TABLE account_sync_history DROP COLUMN IF EXISTS region;
ALTER TABLE user_accounts DROP COLUMN IF EXISTS region;`,
    }),
  );
};
