// The specification's indexes on the big, pre-existing tables (and one the jobs need), built
// online.
//
// * CREATE INDEX CONCURRENTLY instead of CREATE INDEX: a plain CREATE INDEX holds a SHARE lock,
//   blocking every write to the table for the whole build (seconds to minutes at a million
//   rows). CONCURRENTLY cannot run inside a transaction, hence noTransaction().
// * A concurrent build that fails (or is interrupted) leaves an INVALID index behind, and
//   "IF NOT EXISTS" would then keep the broken one. Before each build, an invalid index of
//   that name is dropped (also CONCURRENTLY).
// * idx_user_accounts_user_amazon is UNIQUE: DESIGN.md fixes one user_accounts row per
//   (user, Amazon profile), and the account sync upserts on that pair. If existing data has
//   duplicates the build fails with PostgreSQL's "could not create unique index" message
//   naming the duplicate key, the migration is not recorded, and nothing else changed.
// * idx_oauth_tokens_expires_at keeps the spec's predicate (proactive_refresh_enabled = TRUE),
//   which is the token refresh job's claim query.

const indexes = [
  {
    name: 'idx_oauth_tokens_expires_at',
    table: 'oauth_tokens',
    definition: 'ON oauth_tokens (expires_at) WHERE proactive_refresh_enabled = TRUE',
  },
  {
    name: 'idx_user_accounts_user_amazon',
    table: 'user_accounts',
    unique: true,
    definition: 'ON user_accounts (user_id, amazon_account_id)',
  },
  { name: 'idx_user_accounts_metadata', table: 'user_accounts', definition: 'ON user_accounts USING GIN (metadata)' },
  // Not in the spec: the account sync's due query ("next_sync_at has passed") over every
  // account would otherwise scan the table every run.
  { name: 'idx_user_accounts_next_sync_at', table: 'user_accounts', definition: 'ON user_accounts (next_sync_at)' },
];

const { createIndexesConcurrently, dropIndexesConcurrently } = require('./lib/online');

exports.indexes = indexes;

exports.up = async (pgm) => {
  pgm.noTransaction();
  await createIndexesConcurrently(pgm, indexes);
};

exports.down = (pgm) => {
  pgm.noTransaction();
  dropIndexesConcurrently(pgm, indexes);
};
