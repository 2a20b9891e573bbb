import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Client } from 'pg';
import { DEFAULT_MIGRATIONS_DIR, runMigrations } from '../../lambda/migrate/run-migrations';
import { freePort, type TestPostgres } from '../../local/postgres/embedded-postgres';
import { migrationFailure, useMigrationRuns } from '../support/migration-runs';
import { appliedMigrations, withClient } from '../support/schema';

// runMigrations' behaviours that a mutation run of lambda/migrate/run-migrations.ts found
// untested (docs/mutation.md): each test here fails on the mutant it is named after.

let pg: TestPostgres;
const migrations = useMigrationRuns((server) => (pg = server), 'run-migrations-mutants-');

const sql = (up: string, down = '') => `-- Up Migration\n${up}\n-- Down Migration\n${down}\n`;

test('a pending migration older than an applied one is refused (checkOrder), and nothing is applied', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0002_b.sql': sql('CREATE TABLE b (id int);') });
  await runMigrations({ database: url, dir });
  writeFileSync(join(dir, '0001_a.sql'), sql('CREATE TABLE a (id int);'));
  const error = await migrationFailure(runMigrations({ database: url, dir, sleep: async () => undefined }));
  expect(error.message).toMatch(/0001_a/);
  expect(await appliedMigrations(url)).toEqual(['0002_b']);
});

test('a failing down migration is named', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': sql('CREATE TABLE a (id int);', 'DROP TABLE a;'),
    '0002_b.sql': sql('CREATE TABLE b (id int);', 'DROP TABLE no_such_table;'),
  });
  await runMigrations({ database: url, dir });
  const error = await migrationFailure(runMigrations({ database: url, dir, direction: 'down', count: 2 }));
  expect(error.migration).toBe('0002_b');
  expect(error.message).toBe('Migration 0002_b failed: table "no_such_table" does not exist');
  expect(await appliedMigrations(url)).toEqual(['0001_a', '0002_b']);
});

test('with less time left than the reserve, the message says 0 ms, not a negative time', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.sql': sql('CREATE TABLE a (id int);') });
  const error = await migrationFailure(
    runMigrations({ database: url, dir, remainingTimeMs: () => 5_000, reserveMs: 30_000 }),
  );
  expect(error.message).toBe(
    "Migration (before any migration) failed: no time left to run migrations (attempt 1; 0 ms of the function's time left after its reserve)",
  );
  expect(error.code).toBeUndefined();
  expect(await appliedMigrations(url)).toEqual([]);
});

/** A migration that fails with `code` on its first `failures` runs (a sequence counts them). */
async function flaky(url: string, failures: number, code: string): Promise<string> {
  await withClient(url, (c) => c.query('CREATE SEQUENCE attempts'));
  return sql(`DO $$ BEGIN
    IF nextval('attempts') <= ${failures} THEN RAISE EXCEPTION 'not this time' USING ERRCODE = '${code}'; END IF;
  END $$;
  CREATE TABLE flaky (id int);`);
}

/** A Lambda clock that answers the given times left, one per call, then the last one again. */
function clock(...answers: number[]): () => number {
  return () => (answers.length > 1 ? answers.shift()! : answers[0]);
}

const RESERVE = 30_000;

test('the default folder is the repository’s migrations/', () => {
  expect(DEFAULT_MIGRATIONS_DIR).toBe(resolve(__dirname, '..', '..', 'migrations'));
});

test('without an injected sleep, the retry waits with setTimeout for half to all of the base delay, then runs again', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_flaky.sql': await flaky(url, 1, '55P03') });
  const timers = jest.spyOn(global, 'setTimeout');
  try {
    expect(await runMigrations({ database: url, dir, retryBaseDelayMs: 300 })).toEqual({
      applied: ['0001_flaky'],
      attempts: 2,
    });
    const delays = timers.mock.calls.map(([, ms]) => ms ?? 0);
    expect(delays.filter((ms) => ms >= 150 && ms <= 300)).toHaveLength(1);
  } finally {
    timers.mockRestore();
  }
});

test('a lock timeout before any migration is retried, and the log says where it happened', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.sql': sql('CREATE TABLE a (id int);') });
  await runMigrations({ database: url, dir });
  writeFileSync(join(dir, '0002_b.sql'), sql('CREATE TABLE b (id int);'));
  // The run sets no lock_timeout without a deadline: the database's default applies.
  await withClient(url, (c) =>
    c.query(`ALTER DATABASE "${new URL(url).pathname.slice(1)}" SET lock_timeout = '200ms'`),
  );
  const holder = new Client({ connectionString: url });
  await holder.connect();
  const warnings: string[] = [];
  const logger = {
    debug: () => undefined,
    info: () => undefined,
    warn: (m: string) => void warnings.push(m),
    error: () => undefined,
  };
  try {
    // node-pg-migrate reads its table before the first migration: a lock on it times out there.
    await holder.query('BEGIN; LOCK TABLE pgmigrations IN ACCESS EXCLUSIVE MODE');
    const result = await runMigrations({
      database: url,
      dir,
      logger: logger,
      sleep: async () => void (await holder.query('COMMIT')),
    });
    expect(result).toEqual({ applied: ['0002_b'], attempts: 2 });
    expect(warnings).toEqual(['Before any migration, attempt 1 hit 55P03; retrying']);
  } finally {
    await holder.end();
  }
});

test('out of time after a lock timeout, the error names the migration the next attempt would have resumed', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': sql('CREATE TABLE a (id int);'),
    '0002_flaky.sql': await flaky(url, 1, '55P03'),
  });
  // The first attempt's budget, the look after it failed (1 s beyond the reserve: a retry),
  // then the second attempt's: 500 ms, too little to start.
  const error = await migrationFailure(
    runMigrations({
      database: url,
      dir,
      reserveMs: RESERVE,
      remainingTimeMs: clock(RESERVE + 60_000, RESERVE + 1_000, RESERVE + 500),
      sleep: async () => undefined,
    }),
  );
  expect(error.migration).toBe('0002_flaky');
  expect(error.message).toBe(
    "Migration 0002_flaky failed: no time left to run migrations (attempt 2; 500 ms of the function's time left after its reserve)",
  );
  expect(await appliedMigrations(url)).toEqual(['0001_a']);
});

test('a JS migration whose action throws is named, not the migration before it; a thrown null is reported as such', async () => {
  const url = await pg.createDatabase();
  // node-pg-migrate announces a migration only after its action returned: without the
  // loader's report, 0001_a (applied) would be named.
  const dir = migrations({
    '0001_a.sql': sql('CREATE TABLE a (id int);'),
    '0002_null.js': 'exports.up = () => { throw null; };\n',
  });
  const error = await migrationFailure(runMigrations({ database: url, dir }));
  expect(error.message).toBe('Migration 0002_null failed: null');
  expect(error.code).toBeUndefined();
  expect(await appliedMigrations(url)).toEqual(['0001_a']);
});

test('JS migrations keep their shape: without down, up is run in reverse; down: false refuses; a callback action completes', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_kept.js': "exports.up = (pgm) => { pgm.createTable('a', { id: 'int' }); };\nexports.down = false;\n",
    '0002_no_down.js': "exports.up = (pgm) => { pgm.createTable('b', { id: 'int' }); };\n",
    '0003_callback.js':
      "exports.up = (pgm, done) => { pgm.createTable('c', { id: 'int' }); setImmediate(done); };\n" +
      "exports.down = (pgm, done) => { pgm.dropTable('c'); done(); };\n",
  });
  const tables = () =>
    withClient(url, async (c) =>
      (
        await c.query<{ t: string }>(
          "SELECT tablename AS t FROM pg_tables WHERE tablename IN ('a', 'b', 'c') ORDER BY 1",
        )
      ).rows.map((r) => r.t),
    );
  expect(await runMigrations({ database: url, dir })).toEqual({
    applied: ['0001_kept', '0002_no_down', '0003_callback'],
    attempts: 1,
  });
  expect(await tables()).toEqual(['a', 'b', 'c']);
  expect(await runMigrations({ database: url, dir, direction: 'down', count: 2 })).toEqual({
    applied: ['0003_callback', '0002_no_down'],
    attempts: 1,
  });
  expect(await tables()).toEqual(['a']);
  const refused = await migrationFailure(runMigrations({ database: url, dir, direction: 'down' }));
  expect(refused.message).toMatch(/disabled down migration on file: 0001_kept/);
  expect(await tables()).toEqual(['a']);
  expect(await appliedMigrations(url)).toEqual(['0001_kept']);
});

test('a JS migration applied before a retried one is counted once', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_js.js': "exports.up = (pgm) => { pgm.createTable('a', { id: 'int' }); };\n",
    '0002_flaky.sql': await flaky(url, 1, '55P03'),
  });
  expect(await runMigrations({ database: url, dir, sleep: async () => undefined })).toEqual({
    applied: ['0001_js', '0002_flaky'],
    attempts: 2,
  });
});

test('every refused TypeScript or ESM file is named', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.ts': 'export {};\n', '0002_b.ts': 'export {};\n' });
  const error = await migrationFailure(runMigrations({ database: url, dir }));
  expect(error.message).toMatch(/0001_a\.ts, 0002_b\.ts: migrations must be \.sql or CommonJS \.js files/);
});

test('with a deadline and time to spare, a lock timeout is retried; with exactly 1 s left after the reserve too', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_flaky.sql': await flaky(url, 1, '55P03') });
  // Budget of the first attempt, the look after it failed (1 s beyond the reserve: not out of
  // time), then the second attempt's budget.
  const result = await runMigrations({
    database: url,
    dir,
    reserveMs: RESERVE,
    remainingTimeMs: clock(RESERVE + 60_000, RESERVE + 1_000, RESERVE + 60_000),
    sleep: async () => undefined,
  });
  expect(result).toEqual({ applied: ['0001_flaky'], attempts: 2 });
});

test('out of time before any migration, an error other than a lock wait is reported as it is', async () => {
  const error = await migrationFailure(
    runMigrations({
      database: pg.url('no_such_database'),
      dir: migrations({ '0001_a.sql': sql('CREATE TABLE a (id int);') }),
      reserveMs: RESERVE,
      remainingTimeMs: clock(RESERVE + 60_000, RESERVE),
    }),
  );
  expect(error.code).toBe('3D000');
  expect(error.message).toBe('Migration (before any migration) failed: database "no_such_database" does not exist');
});

test('a lock wait given up at the deadline keeps the database error as its cause', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.sql': sql('CREATE TABLE a (id int);') });
  const holder = new Client({ connectionString: url });
  await holder.connect();
  try {
    await holder.query('SELECT pg_advisory_lock(7241865325823964)'); // node-pg-migrate's lock
    // 3 s beyond the reserve: the first look at the clock must still find more than 1 s on a busy machine.
    const deadline = Date.now() + RESERVE + 3_000;
    const error = await migrationFailure(
      runMigrations({ database: url, dir, reserveMs: RESERVE, remainingTimeMs: () => deadline - Date.now() }),
    );
    expect(error.message).toMatch(/failed: gave up waiting for the migration lock/);
    expect(['55P03', '57014']).toContain((error.cause as { code?: string }).code);
  } finally {
    await holder.end();
  }
});

test('a statement cancelled at the deadline says what to do, with the database error as its cause', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_slow.sql': sql('SELECT pg_sleep(600);') });
  // 3 s beyond the reserve: the first look at the clock must still find more than 1 s on a busy machine.
  const deadline = Date.now() + RESERVE + 3_000;
  const error = await migrationFailure(
    runMigrations({ database: url, dir, reserveMs: RESERVE, remainingTimeMs: () => deadline - Date.now() }),
  );
  expect(error.message).toMatch(
    /the time the function had left \(.+\); run a migration this long by hand before the deploy$/,
  );
  expect((error.cause as { code?: string }).code).toBe('57014');
});

test('a connection error is not taken for a SQLSTATE (Node’s ECONNREFUSED has five capitals in a row)', async () => {
  const port = await freePort();
  const error = await migrationFailure(
    runMigrations({
      database: `postgres://nobody:nothing@127.0.0.1:${port}/none`,
      dir: migrations({ '0001_a.sql': sql('CREATE TABLE a (id int);') }),
    }),
  );
  expect((error.cause as { code?: string }).code).toBe('ECONNREFUSED');
  expect(error.code).toBeUndefined();
});

test('the message is the innermost cause’s; a cause chain that loops is still reported', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_nested.js': `exports.up = () => { throw new Error('outer', { cause: new Error('inner') }); };\n`,
  });
  const nested = await migrationFailure(runMigrations({ database: url, dir }));
  expect(nested.databaseMessage).toBe('inner');
  const loopDir = migrations({
    '0001_loop.js': `exports.up = () => { const e = new Error('loops'); e.cause = e; throw e; };\n`,
  });
  const loop = await migrationFailure(runMigrations({ database: await pg.createDatabase(), dir: loopDir }));
  expect(loop.databaseMessage).toBe('loops');
  expect(loop.code).toBeUndefined();
});

test.each(['.mts', '.cts', '.mjs'])('a %s migration is refused like a .ts one, and nothing is applied', async (ext) => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': sql('CREATE TABLE a (id int);'),
    [`0002_b${ext}`]: 'export const up = () => undefined;\n',
  });
  const error = await migrationFailure(runMigrations({ database: url, dir }));
  expect(error.message).toContain(`0002_b${ext}: migrations must be .sql or CommonJS .js files`);
  expect(await appliedMigrations(url)).toEqual([]);
});

test('a .cjs migration is loaded like a .js one: applied, and named when its action throws', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.cjs': `exports.up = (pgm) => { pgm.sql('CREATE TABLE a (id int)'); };\n` });
  expect(await runMigrations({ database: url, dir })).toEqual({ applied: ['0001_a'], attempts: 1 });
  writeFileSync(join(dir, '0002_b.cjs'), `exports.up = () => { throw new Error('not today'); };\n`);
  const error = await migrationFailure(runMigrations({ database: url, dir }));
  expect(error.migration).toBe('0002_b');
  expect(error.databaseMessage).toBe('not today');
  expect(await appliedMigrations(url)).toEqual(['0001_a']);
});
