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
 * How long a lock-needing step keeps retrying (see lockStep), as SQL: until the run's deadline
 * when the runner set one (runMigrations sets `migrations.deadline`, epoch seconds, from the
 * migration function's remaining time), else for `migrations.lock_wait` from the step's start
 * (default 5 minutes; `PGOPTIONS='-c migrations.lock_wait=10min' npm run migrate -- up`).
 */
const DEADLINE = `coalesce(
    to_timestamp(nullif(current_setting('migrations.deadline', true), '')::double precision),
    clock_timestamp() + coalesce(nullif(current_setting('migrations.lock_wait', true), ''), '5min')::interval)`;

/** The lock_timeout of each try: writers queue behind a waiting ACCESS EXCLUSIVE for at most this. */
const TRY_LOCK_TIMEOUT = '500ms';
/** How long a backfill batch (and so a writer waiting on one of its rows) should take at most. */
const BATCH_TARGET = '200ms';
/** The pause between tries, during which writers run freely. */
const PAUSE_SECONDS = 0.5;

/**
 * A DO block that runs `body` (PL/pgSQL: DDL needing a lock that writers queue behind, such as
 * ACCESS EXCLUSIVE for ALTER TABLE) in one transaction, without making writers wait long and
 * without failing the deploy because a lock was busy for a moment:
 *
 * 1. First it takes SHARE UPDATE EXCLUSIVE on `tables`, waiting up to the deadline. Writers do
 *    not queue behind that wait (it does not conflict with their ROW EXCLUSIVE), and it is what
 *    gets autovacuum out of the way: a running autovacuum holds SHARE UPDATE EXCLUSIVE and is
 *    cancelled by the server once a lock request has waited `deadlock_timeout` (1 s) behind it,
 *    and autovacuum skips a table it cannot lock, so it cannot come back during the step.
 * 2. Then `body` runs in a sub-transaction under lock_timeout = 500 ms (writers wait behind it at
 *    most that long). On lock_not_available (55P03) the sub-transaction is rolled back, so it
 *    releases the locks it took and undoes what it did, and after a 500 ms pause (writers catch
 *    up) `body` is tried again, until the deadline (DEADLINE).
 * 3. Past the deadline it fails with lock_not_available naming `step`, the tables and the tries;
 *    nothing of `body` is applied, and the session is left outside any transaction (the runner
 *    can release node-pg-migrate's advisory lock on it).
 *
 * `body` goes in verbatim (not re-indented: function bodies it creates keep their text).
 * `body` must be idempotent only as far as the migration as a whole must be (a step that failed
 * applied nothing). Must be the only statement of its query, outside a transaction
 * (pgm.noTransaction()); it runs as one transaction of its own.
 */
function lockStep({ step, tables, body }) {
  const quoted = tables.join(', ');
  return `
DO $locked$
DECLARE
  deadline timestamptz := ${DEADLINE};
  tries integer := 0;
  wait_ms bigint;
BEGIN
  wait_ms := greatest(1, floor(extract(epoch FROM deadline - clock_timestamp()) * 1000));
  PERFORM set_config('lock_timeout', wait_ms || 'ms', true);
  BEGIN
    LOCK TABLE ${quoted} IN SHARE UPDATE EXCLUSIVE MODE;
  EXCEPTION WHEN lock_not_available THEN
    RAISE EXCEPTION '%: gave up after % ms waiting for SHARE UPDATE EXCLUSIVE on ${quoted} (the migration''s time limit)', ${sqlString(step)}, wait_ms
      USING ERRCODE = 'lock_not_available',
            HINT = 'Another session holds a lock on the table(s) for longer than the migration may wait; nothing of this step was applied.';
  END;
  LOOP
    tries := tries + 1;
    BEGIN
      SET LOCAL lock_timeout = '${TRY_LOCK_TIMEOUT}';
${body.trim()}
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      IF clock_timestamp() + make_interval(secs => ${PAUSE_SECONDS}) + interval '${TRY_LOCK_TIMEOUT}' > deadline THEN
        RAISE EXCEPTION '%: gave up after % tries of ${TRY_LOCK_TIMEOUT} waiting for locks on ${quoted} (the migration''s time limit)', ${sqlString(step)}, tries
          USING ERRCODE = 'lock_not_available',
                HINT = 'Other sessions kept a conflicting lock on the table(s); nothing of this step was applied.';
      END IF;
    END;
    PERFORM pg_sleep(${PAUSE_SECONDS});
  END LOOP;
END
$locked$;`;
}

/**
 * ADD CONSTRAINT name CHECK (expression) NOT VALID (a catalogue change: ACCESS EXCLUSIVE for
 * milliseconds, no scan), through lockStep; skipped when the constraint is already there.
 */
function addNotValidCheck(step, table, name, expression) {
  return lockStep({
    step: `${step}: ADD CONSTRAINT ${name}`,
    tables: [table],
    body: addNotValidCheckBody(table, name, expression),
  });
}

/** The PL/pgSQL of addNotValidCheck, for a lockStep body of several statements. */
function addNotValidCheckBody(table, name, expression) {
  return `IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = '${name}' AND conrelid = '${table}'::regclass) THEN
  ALTER TABLE ${table} ADD CONSTRAINT ${name} CHECK (${expression}) NOT VALID;
END IF;`;
}

function sqlString(text) {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * A DO block that updates `table` (aliased `alias`, keyed by uuid `id`) in batches of at most
 * `batchSize` rows in key order, committing after each batch, so row locks are held for one
 * batch only and a concurrent write waits at most that long. A batch that took longer than
 * BATCH_TARGET (a busy or slow server) halves the next batch, down to 100 rows, and a quick
 * one doubles it again up to `batchSize`, so that wait stays short whatever the load. `set` and `where` are SQL over
 * `alias`; `where` must select only rows that still need the change, so that re-running the
 * block after an interruption resumes. A batch that waits longer than 500 ms for a lock (a
 * row a writer holds) is rolled back and tried again after a pause, like lockStep's tries,
 * until the deadline (DEADLINE). Must run outside a transaction (pgm.noTransaction()), as the
 * only statement of its query, for COMMIT inside DO to be allowed.
 */
function keysetBackfill({ table, alias, set, where, batchSize = 5000 }) {
  return `
DO $backfill$
DECLARE
  last_id uuid := '00000000-0000-0000-0000-000000000000';
  batch_last uuid;
  batch_size integer := ${batchSize};
  batch_started timestamptz;
  busy boolean;
  tries integer := 0;
  deadline timestamptz;
BEGIN
  LOOP
    busy := false;
    batch_started := clock_timestamp();
    BEGIN
      SET LOCAL lock_timeout = '${TRY_LOCK_TIMEOUT}';
      WITH batch AS (
        SELECT id FROM ${table} WHERE id > last_id ORDER BY id LIMIT batch_size
      ), updated AS (
        UPDATE ${table} ${alias} SET ${set}
          FROM batch
         WHERE ${alias}.id = batch.id AND (${where})
      )
      SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1) INTO batch_last;
    EXCEPTION WHEN lock_not_available THEN
      busy := true;
    END;
    IF busy THEN
      tries := tries + 1;
      deadline := coalesce(deadline, ${DEADLINE});
      IF clock_timestamp() + make_interval(secs => ${PAUSE_SECONDS}) + interval '${TRY_LOCK_TIMEOUT}' > deadline THEN
        RAISE EXCEPTION 'backfill of ${table}: gave up after % tries of ${TRY_LOCK_TIMEOUT} waiting for row locks (the migration''s time limit)', tries
          USING ERRCODE = 'lock_not_available',
                HINT = 'The batches committed so far stay; running the migration again resumes after them.';
      END IF;
      PERFORM pg_sleep(${PAUSE_SECONDS});
      CONTINUE;
    END IF;
    tries := 0;
    deadline := NULL;
    EXIT WHEN batch_last IS NULL;
    last_id := batch_last;
    COMMIT;
    IF clock_timestamp() - batch_started > interval '${BATCH_TARGET}' THEN
      batch_size := greatest(100, batch_size / 2);
    ELSIF clock_timestamp() - batch_started < interval '${BATCH_TARGET}' / 4 THEN
      batch_size := least(${batchSize}, batch_size * 2);
    END IF;
  END LOOP;
END
$backfill$;`;
}

module.exports = {
  addNotValidCheck,
  addNotValidCheckBody,
  createIndexesConcurrently,
  dropIndexesConcurrently,
  keysetBackfill,
  lockStep,
};
