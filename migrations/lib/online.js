// Helpers for migrations that must run outside a transaction to keep big tables writable.
// node-pg-migrate only loads files directly in migrations/, so this folder is not a migration.

/**
 * Queues CREATE [UNIQUE] INDEX CONCURRENTLY for each index, after dropping (also concurrently)
 * an INVALID index of the same name: a concurrent build that failed or was interrupted leaves
 * one behind, and "IF NOT EXISTS" would otherwise keep the broken index forever.
 * The caller must have called pgm.noTransaction().
 */
async function createIndexesConcurrently(pgm, indexes) {
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
    pgm.sql(
      `CREATE ${index.unique ? 'UNIQUE ' : ''}INDEX CONCURRENTLY IF NOT EXISTS ${index.name} ${index.definition};`,
    );
  }
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
}

/** Queues DROP INDEX CONCURRENTLY for each index, last first. */
function dropIndexesConcurrently(pgm, indexes) {
  pgm.sql("SET lock_timeout = '5min';");
  pgm.sql("SET statement_timeout = '1h';");
  for (const index of [...indexes].reverse()) pgm.sql(`DROP INDEX CONCURRENTLY IF EXISTS ${index.name};`);
  pgm.sql('RESET lock_timeout;');
  pgm.sql('RESET statement_timeout;');
}

/**
 * A DO block that updates `table` (aliased `alias`, keyed by uuid `id`) in batches of
 * `batchSize` rows in key order, committing after each batch, so row locks are held for one
 * batch only and a concurrent write waits at most that long. `set` and `where` are SQL over
 * `alias`; `where` must select only rows that still need the change, so that re-running the
 * block after an interruption resumes. Must run outside a transaction (pgm.noTransaction()),
 * as the only statement of its query, for COMMIT inside DO to be allowed.
 */
function keysetBackfill({ table, alias, set, where, batchSize = 5000 }) {
  return `
DO $backfill$
DECLARE
  last_id uuid := '00000000-0000-0000-0000-000000000000';
  batch_last uuid;
BEGIN
  LOOP
    SET LOCAL lock_timeout = '500ms';
    WITH batch AS (
      SELECT id FROM ${table} WHERE id > last_id ORDER BY id LIMIT ${batchSize}
    ), updated AS (
      UPDATE ${table} ${alias} SET ${set}
        FROM batch
       WHERE ${alias}.id = batch.id AND (${where})
    )
    SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) INTO batch_last;
    EXIT WHEN batch_last IS NULL;
    last_id := batch_last;
    COMMIT;
  END LOOP;
END
$backfill$;`;
}

module.exports = { createIndexesConcurrently, dropIndexesConcurrently, keysetBackfill };
