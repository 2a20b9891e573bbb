// Completes 0007 online (outside a transaction, like 0004 and 0005):
// * users without any account yet become due for their first account sync
//   (sync_next_attempt_at = now()); users with accounts keep following their accounts'
//   next_sync_at (spread over an hour by 0004), so the first deploy is not one thundering herd.
//   Batches of at most 5,000 tokens in key order (fewer while batches run slow), each committed on its own; re-running resumes.
// * 0007's CHECK is validated under SHARE UPDATE EXCLUSIVE (writes continue).
// * The indexes the jobs' claim queries use, built CONCURRENTLY: the account sync's due users
//   (sync_next_attempt_at, partial: most rows are NULL) and the refresh/sync leases are read
//   through the existing indexes.
// * The backfill's batches retry a row lock they waited 500 ms for, and down's catalogue change
//   retries its lock, until the migration's time limit (migrations/lib/online.js); changed after
//   release (applied databases are unaffected): they used to fail the migration instead. What
//   it produces is unchanged.
const { createIndexesConcurrently, dropIndexesConcurrently, keysetBackfill, lockStep } = require('./lib/online');

const indexes = [
  {
    name: 'idx_oauth_tokens_sync_next_attempt_at',
    table: 'oauth_tokens',
    definition: 'ON oauth_tokens (sync_next_attempt_at) WHERE sync_next_attempt_at IS NOT NULL',
  },
];

const backfill = keysetBackfill({
  table: 'oauth_tokens',
  alias: 't',
  set: 'sync_next_attempt_at = now()',
  where: 't.sync_next_attempt_at IS NULL AND NOT EXISTS (SELECT 1 FROM user_accounts ua WHERE ua.user_id = t.user_id)',
});

exports.up = async (pgm) => {
  pgm.noTransaction();
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '60min';");
  pgm.sql(backfill);
  pgm.sql('ALTER TABLE oauth_tokens VALIDATE CONSTRAINT oauth_tokens_sync_retry_count_check;');
  await createIndexesConcurrently(pgm, indexes);
};

// Down: the indexes go, and the CHECK is back to NOT VALID as 0007 left it. The backfilled
// schedule stays (0007's down drops the column).
exports.down = (pgm) => {
  pgm.noTransaction();
  dropIndexesConcurrently(pgm, indexes);
  pgm.sql(
    lockStep({
      step: '0008_job-schedule-backfill-and-indexes (down): CHECK back to NOT VALID',
      tables: ['oauth_tokens'],
      body: `
ALTER TABLE oauth_tokens
  DROP CONSTRAINT oauth_tokens_sync_retry_count_check,
  ADD CONSTRAINT oauth_tokens_sync_retry_count_check CHECK (sync_retry_count >= 0) NOT VALID;`,
    }),
  );
};
