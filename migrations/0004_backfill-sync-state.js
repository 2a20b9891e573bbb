// Spec "Step 3: Data Migration", made to match rows and to run online.
//
// * Migration 0003 left sync_status and next_sync_at NULL on the rows that existed before it
//   (see its header for why the spec's own UPDATE would match nothing). This backfill applies
//   the spec's CASE to exactly those rows: active -> completed, pending -> pending, anything
//   else -> failed.
// * next_sync_at: the spec sets every account to NOW() + 1 hour. With a million accounts that
//   makes one thundering herd an hour after the deploy. Accounts keep the spec's "not before an
//   hour from now" and are spread over the hour after that, by a hash of the user id, so a
//   user's accounts come due together (the sync job's unit of work is a user).
// * Batches of at most 5,000 rows in key order (fewer while batches run slow, see
//   lib/online.js), each committed on its own (COMMIT inside the DO block, which is why this
//   migration runs outside a transaction): a row lock is held for one batch only, and a write
//   to an existing account waits at most one batch. The backfill only touches rows that are
//   still NULL, so re-running it after an interruption resumes.
// * Then NOT NULL, without a long lock: a CHECK (col IS NOT NULL) constraint is added NOT VALID
//   (brief lock, no scan), validated (SHARE UPDATE EXCLUSIVE: writes continue during the scan),
//   and SET NOT NULL uses the validated constraint instead of scanning the table again.
// * The CHECK constraints 0003 added NOT VALID are validated here the same way.
// * Steps that take a lock writers queue behind (ADD CONSTRAINT, SET NOT NULL) go through
//   lockStep (migrations/lib/online.js): SHARE UPDATE EXCLUSIVE first (which gets a running
//   autovacuum out of the way without making writers wait), then each try under a 500 ms
//   lock_timeout, retried after a pause until the migration's time limit, so a busy table
//   delays the step instead of failing the deploy. A backfill batch that waits on a row lock is
//   retried the same way.
// Every step is idempotent, so the runner can retry the migration after a lock timeout.
//
// Changed after release (applied databases are unaffected): the lock-needing steps used to give
// up after one 500 ms lock_timeout, which on a busy database (autovacuum on user_accounts, woken
// by the backfill, yields only after deadlock_timeout, 1 s) failed the migration; they now
// retry as above. What the migration produces is unchanged.

const { addNotValidCheck, keysetBackfill, lockStep } = require('./lib/online');

const MIGRATION = '0004_backfill-sync-state';

const backfill = keysetBackfill({
  table: 'user_accounts',
  alias: 'ua',
  set: `sync_status = coalesce(ua.sync_status, CASE
            WHEN ua.status = 'active' THEN 'completed'
            WHEN ua.status = 'pending' THEN 'pending'
            ELSE 'failed'
          END),
        next_sync_at = coalesce(ua.next_sync_at,
          now() + interval '1 hour' + make_interval(secs => abs(hashtext(ua.user_id::text)::bigint) % 3600))`,
  where: 'ua.sync_status IS NULL OR ua.next_sync_at IS NULL',
});

exports.up = (pgm) => {
  pgm.noTransaction();
  // Session settings (no transaction to scope them to). Each step below that takes a lock which
  // blocks writes retries under its own 500 ms lock_timeout (lockStep); VALIDATE CONSTRAINT
  // takes SHARE UPDATE EXCLUSIVE, which writers do not queue behind, so it may wait longer.
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '60min';");
  pgm.sql(backfill);
  pgm.sql(
    addNotValidCheck(MIGRATION, 'user_accounts', 'user_accounts_sync_status_not_null', 'sync_status IS NOT NULL'),
  );
  pgm.sql(
    addNotValidCheck(MIGRATION, 'user_accounts', 'user_accounts_next_sync_at_not_null', 'next_sync_at IS NOT NULL'),
  );
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_sync_status_not_null;');
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_next_sync_at_not_null;');
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_sync_status_check;');
  pgm.sql('ALTER TABLE user_accounts VALIDATE CONSTRAINT user_accounts_sync_retry_count_check;');
  pgm.sql('ALTER TABLE oauth_tokens VALIDATE CONSTRAINT oauth_tokens_refresh_failure_count_check;');
  // One short transaction: SET NOT NULL finds the validated CHECKs and skips the scan; the
  // helper CHECKs are then redundant.
  pgm.sql(
    lockStep({
      step: `${MIGRATION}: SET NOT NULL`,
      tables: ['user_accounts'],
      body: `
ALTER TABLE user_accounts
  ALTER COLUMN sync_status SET NOT NULL,
  ALTER COLUMN next_sync_at SET NOT NULL;
ALTER TABLE user_accounts
  DROP CONSTRAINT IF EXISTS user_accounts_sync_status_not_null,
  DROP CONSTRAINT IF EXISTS user_accounts_next_sync_at_not_null;`,
    }),
  );
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
};

// Down: back to exactly what 0003 left: the columns nullable again and 0003's checks not yet
// validated (dropped and re-added NOT VALID; a brief lock, no scan). The backfilled values
// stay: they are valid data, and 0003's down drops the columns anyway.
exports.down = (pgm) => {
  pgm.sql(`
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';
-- Restoring the nullability 0003 created is what "down" means here.
ALTER TABLE user_accounts
  -- squawk-ignore ban-drop-not-null
  ALTER COLUMN sync_status DROP NOT NULL,
  -- squawk-ignore ban-drop-not-null
  ALTER COLUMN next_sync_at DROP NOT NULL,
  DROP CONSTRAINT user_accounts_sync_status_check,
  ADD CONSTRAINT user_accounts_sync_status_check
    CHECK (sync_status IN ('pending', 'in_progress', 'completed', 'failed', 'reauth_required')) NOT VALID,
  DROP CONSTRAINT user_accounts_sync_retry_count_check,
  ADD CONSTRAINT user_accounts_sync_retry_count_check CHECK (sync_retry_count >= 0) NOT VALID;
ALTER TABLE oauth_tokens
  DROP CONSTRAINT oauth_tokens_refresh_failure_count_check,
  ADD CONSTRAINT oauth_tokens_refresh_failure_count_check CHECK (refresh_failure_count >= 0) NOT VALID;`);
};
