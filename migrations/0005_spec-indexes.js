/* eslint-disable */
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
  { name: 'idx_oauth_tokens_expires_at', table: 'oauth_tokens',
    definition: 'ON oauth_tokens (expires_at) WHERE proactive_refresh_enabled = TRUE' },
  { name: 'idx_user_accounts_user_amazon', table: 'user_accounts', unique: true,
    definition: 'ON user_accounts (user_id, amazon_account_id)' },
  { name: 'idx_user_accounts_metadata', table: 'user_accounts',
    definition: 'ON user_accounts USING GIN (metadata)' },
  // Not in the spec: the account sync's due query ("next_sync_at has passed") over every
  // account would otherwise scan the table every run.
  { name: 'idx_user_accounts_next_sync_at', table: 'user_accounts',
    definition: 'ON user_accounts (next_sync_at)' },
];

exports.indexes = indexes;

exports.up = async (pgm) => {
  pgm.noTransaction();
  const { rows } = await pgm.db.query(
    `SELECT c.relname AS name FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
     WHERE NOT i.indisvalid AND c.relname = ANY($1)`,
    [indexes.map((index) => index.name)],
  );
  const invalid = new Set((rows || []).map((row) => row.name));
  // SHARE UPDATE EXCLUSIVE does not block writes, so waiting for it (and for older
  // transactions, which a concurrent build must outlive) may take a while without harm.
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '4h';");
  for (const index of indexes) {
    if (invalid.has(index.name)) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name};`);
    pgm.sql(`CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX CONCURRENTLY IF NOT EXISTS ${index.name} ${index.definition};`);
  }
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
};

exports.down = (pgm) => {
  pgm.noTransaction();
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '1h';");
  for (const index of [...indexes].reverse()) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name};`);
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
};
