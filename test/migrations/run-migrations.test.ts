import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { DEFAULT_MIGRATIONS_DIR, runMigrations, type RunMigrationsOptions } from '../../lambda/migrate/run-migrations';
import { freePort, type TestPostgres } from '../../local/postgres/embedded-postgres';
import { migrationFailure, useMigrationRuns } from '../support/migration-runs';
import { ROOT } from '../support/root';
import { appliedMigrations, withClient } from '../support/schema';

// runMigrations (lambda/migrate/run-migrations.ts) on small migrations of the test's own (the
// repository's are test/migrations/lifecycle.test.ts's): what it returns, how it retries, how
// it fails, what its session looks like, and how the function's deadline caps it.

let pg: TestPostgres;
const migrations = useMigrationRuns((server) => (pg = server), 'run-migrations-');
afterEach(() => jest.restoreAllMocks());

const sql = (up: string, down = '') => `-- Up Migration\n${up}\n-- Down Migration\n${down}\n`;

function recordingLogger() {
  const lines: [string, string][] = [];
  const at = (level: string) => (message: string) => void lines.push([level, message]);
  return { lines, logger: { info: at('info'), warn: at('warn'), error: at('error') } };
}

/**
 * A migration that fails with `code` on its first `failures` runs, then succeeds. The count
 * lives in a sequence, which a rolled back transaction does not undo.
 */
async function flaky(url: string, failures: number, code: string): Promise<string> {
  await withClient(url, (c) => c.query('CREATE SEQUENCE attempts'));
  return `DO $$ BEGIN
    IF nextval('attempts') <= ${failures} THEN RAISE EXCEPTION 'not this time' USING ERRCODE = '${code}'; END IF;
  END $$;
  CREATE TABLE flaky (id int);`;
}

test('applies the pending migrations in order and names them; a second run applies nothing', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': 'CREATE TABLE a (id int);',
    '0002_b.js': `exports.up = (pgm) => { pgm.sql('CREATE TABLE b (id int)'); };\nexports.down = false;\n`,
    '0003_c.cjs': `exports.up = (pgm) => { pgm.sql('CREATE TABLE c (id int)'); };\n`,
  });
  expect(await runMigrations({ database: url, dir })).toEqual({ applied: ['0001_a', '0002_b', '0003_c'], attempts: 1 });
  expect(await appliedMigrations(url)).toEqual(['0001_a', '0002_b', '0003_c']);
  expect(await runMigrations({ database: url, dir })).toEqual({ applied: [], attempts: 1 });
});

test('`count` applies that many; down undoes one by default, or `count`', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': sql('CREATE TABLE a (id int);', 'DROP TABLE a;'),
    '0002_b.sql': sql('CREATE TABLE b (id int);', 'DROP TABLE b;'),
    '0003_c.sql': sql('CREATE TABLE c (id int);', 'DROP TABLE c;'),
  });
  expect((await runMigrations({ database: url, dir, count: 2 })).applied).toEqual(['0001_a', '0002_b']);
  expect((await runMigrations({ database: url, dir, direction: 'up' })).applied).toEqual(['0003_c']);
  expect((await runMigrations({ database: url, dir, direction: 'down' })).applied).toEqual(['0003_c']);
  expect(await appliedMigrations(url)).toEqual(['0001_a', '0002_b']);
  expect((await runMigrations({ database: url, dir, direction: 'down', count: 2 })).applied).toEqual([
    '0002_b',
    '0001_a',
  ]);
  expect(await appliedMigrations(url)).toEqual([]);
});

test('a failing migration is named with the database message and code; the ones before it stay applied', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({
    '0001_a.sql': 'CREATE TABLE a (id int);',
    '0002_broken.sql': 'ALTER TABLE no_such_table ADD COLUMN x int;',
    '0003_c.sql': 'CREATE TABLE c (id int);',
  });
  const { lines, logger } = recordingLogger();
  const sleep = jest.fn(async () => undefined);
  const error = await migrationFailure(runMigrations({ database: url, dir, logger, sleep }));
  expect(error.name).toBe('MigrationError');
  expect(error.migration).toBe('0002_broken');
  expect(error.code).toBe('42P01'); // undefined_table: not retried
  expect(error.databaseMessage).toBe('relation "no_such_table" does not exist');
  expect(error.message).toBe('Migration 0002_broken failed: relation "no_such_table" does not exist');
  expect((error.cause as { code?: string }).code).toBe('42P01');
  expect(sleep).not.toHaveBeenCalled();
  expect(await appliedMigrations(url)).toEqual(['0001_a']);
  // node-pg-migrate's progress goes to the logger, at its own levels.
  expect(lines).toContainEqual(['info', '### MIGRATION 0001_a (UP) ###']);
  expect(lines).toContainEqual(['info', '### MIGRATION 0002_broken (UP) ###']);
  expect(lines.filter(([level]) => level === 'error').length).toBeGreaterThan(0);
});

test('an error before any migration says so', async () => {
  const error = await migrationFailure(runMigrations({ database: pg.url('no_such_database'), dir: migrations({}) }));
  expect(error.migration).toBeUndefined();
  expect(error.code).toBe('3D000');
  expect(error.message).toBe('Migration (before any migration) failed: database "no_such_database" does not exist');
});

test.each([
  ['lock_not_available', '55P03'],
  ['cannot_connect_now', '57P03'],
  ['deadlock_detected', '40P01'],
])('%s is retried with doubling, jittered delays; the run resumes where it stopped', async (_name, code) => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.sql': 'CREATE TABLE a (id int);', '0002_flaky.sql': await flaky(url, 3, code) });
  jest.spyOn(Math, 'random').mockReturnValue(1);
  const delays: number[] = [];
  const { lines, logger } = recordingLogger();
  const result = await runMigrations({
    database: url,
    dir,
    logger,
    retryBaseDelayMs: 100,
    sleep: async (ms) => void delays.push(ms),
  });
  expect(result).toEqual({ applied: ['0001_a', '0002_flaky'], attempts: 4 });
  expect(delays).toEqual([100, 200, 400]);
  expect(lines).toContainEqual(['warn', `Migration 0002_flaky attempt 1 hit ${code}; retrying`]);
  expect(lines).toContainEqual(['warn', `Migration 0002_flaky attempt 3 hit ${code}; retrying`]);
  expect(await appliedMigrations(url)).toEqual(['0001_a', '0002_flaky']);
});

test('by default 5 retries, 1 s doubling up to 30 s, half to full of it; then the migration fails', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_flaky.sql': await flaky(url, 100, '55P03') });
  jest.spyOn(Math, 'random').mockReturnValue(1);
  const delays: number[] = [];
  const error = await migrationFailure(
    runMigrations({ database: url, dir, sleep: async (ms) => void delays.push(ms) }),
  );
  expect(delays).toEqual([1000, 2000, 4000, 8000, 16000]);
  expect(error.migration).toBe('0001_flaky');
  expect(error.code).toBe('55P03');
  expect(error.message).toBe('Migration 0001_flaky failed: not this time');

  const url2 = await pg.createDatabase();
  const dir2 = migrations({ '0001_flaky.sql': await flaky(url2, 100, '55P03') });
  jest.spyOn(Math, 'random').mockReturnValue(0);
  const halves: number[] = [];
  await migrationFailure(
    runMigrations({
      database: url2,
      dir: dir2,
      lockRetries: 7,
      retryBaseDelayMs: 5000,
      sleep: async (ms) => void halves.push(ms),
    }),
  );
  expect(halves).toEqual([2500, 5000, 10000, 15000, 15000, 15000, 15000]);
});

test('TypeScript and ESM migrations are refused with a clear message', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_a.ts': 'export const up = () => undefined;\n' });
  const error = await migrationFailure(runMigrations({ database: url, dir }));
  expect(error.message).toMatch(/0001_a\.ts: migrations must be \.sql or CommonJS \.js files/);
});

test('the session keeps the caller’s name and options, adds a unique suffix, and has no caps without a deadline', async () => {
  const url = await pg.createDatabase();
  const parsed = new URL(url);
  const database: RunMigrationsOptions['database'] = {
    host: parsed.hostname,
    port: Number(parsed.port),
    user: pg.user,
    password: pg.password,
    database: parsed.pathname.slice(1),
    application_name: 'deploy',
    options: '-c work_mem=7MB',
  };
  const record = `CREATE TABLE IF NOT EXISTS seen (name text, work_mem text, statement_timeout text, check_interval text);
    INSERT INTO seen SELECT current_setting('application_name'), current_setting('work_mem'),
      current_setting('statement_timeout'), current_setting('client_connection_check_interval');`;
  await runMigrations({ database, dir: migrations({ '0001_seen.sql': record }) });
  await runMigrations({ database: url, dir: migrations({ '0001_seen.sql': '', '0002_seen.sql': record }) });
  const seen = await withClient(url, async (c) => (await c.query('SELECT * FROM seen')).rows);
  expect(seen).toEqual([
    {
      name: expect.stringMatching(/^deploy-[0-9a-f]{12}$/),
      work_mem: '7MB',
      statement_timeout: '0',
      check_interval: '10s',
    },
    {
      name: expect.stringMatching(/^schema-migration-[0-9a-f]{12}$/),
      work_mem: '4MB',
      statement_timeout: '0',
      check_interval: '10s',
    },
  ]);
});

test('a session the server ends is a named failure, not a crash; no session is left when the run returns', async () => {
  const url = await pg.createDatabase();
  const sessions = () =>
    withClient(url, async (c) =>
      Number(
        (
          await c.query(
            `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'schema-migration-%'`,
          )
        ).rows[0].count,
      ),
    );
  await runMigrations({ database: url, dir: migrations({ '0001_a.sql': 'CREATE TABLE a (id int);' }) });
  expect(await sessions()).toBe(0);
  // The server ends the run's own session mid-migration (as a failover or an operator would):
  // the client then emits 'error', which would end the process if nothing listened.
  const error = await migrationFailure(
    runMigrations({
      database: url,
      dir: migrations({
        '0001_a.sql': 'CREATE TABLE a (id int);',
        '0002_ended.sql': 'SELECT pg_terminate_backend(pg_backend_pid());',
      }),
    }),
  );
  expect(error.migration).toBe('0002_ended');
  expect(error.code).toBe('57P01');
  expect(await appliedMigrations(url)).toEqual(['0001_a']);
  expect(await sessions()).toBe(0);
});

test('with a deadline, a lock timeout that keeps the run busy past its budget is not retried', async () => {
  const url = await pg.createDatabase();
  const dir = migrations({ '0001_flaky.sql': await flaky(url, 100, '55P03') });
  let remaining = 60_000;
  const sleep = jest.fn(async () => undefined);
  const error = await migrationFailure(
    runMigrations({
      database: url,
      dir,
      reserveMs: 10_000,
      // The first look sees 50 s beyond the reserve; by the time the migration failed, none.
      remainingTimeMs: () => {
        const now = remaining;
        remaining = 10_500;
        return now;
      },
      sleep,
    }),
  );
  expect(sleep).not.toHaveBeenCalled();
  expect(error.code).toBe('55P03');
  expect(error.message).toBe('Migration 0001_flaky failed: not this time');
});

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

/** A Lambda clock that answers the given times left, one per call, then the last one again. */
function clock(...answers: number[]): () => number {
  return () => (answers.length > 1 ? answers.shift()! : answers[0]);
}

const RESERVE = 30_000;

test('the default folder is the repository’s migrations/', () => {
  expect(DEFAULT_MIGRATIONS_DIR).toBe(join(ROOT, 'migrations'));
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

// The migration Lambda never outlives its invocation: every statement, lock wait and the wait
// for node-pg-migrate's advisory lock is capped by the time the function has left (minus the
// reserve it keeps to report back), and the server checks for a vanished client.
describe('against the function’s deadline', () => {
  /** node-pg-migrate's advisory lock key (PG_MIGRATE_LOCK_ID in its runner). */
  const MIGRATE_LOCK_ID = '7241865325823964';
  /** What the function has left beyond its reserve in these tests. */
  const BUDGET_MS = 1_500;

  /** A Lambda's remaining time: the reserve plus BUDGET_MS from now, counting down. */
  function lambdaClock(): () => number {
    const deadline = Date.now() + RESERVE + BUDGET_MS;
    return () => deadline - Date.now();
  }

  async function running(url: string, text: string): Promise<number> {
    return withClient(
      url,
      async (c) =>
        (
          await c.query(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
            [text],
          )
        ).rows[0].n,
    );
  }

  test('with another session holding the migration lock, the run gives up before its deadline with a clear error', async () => {
    const url = await pg.createDatabase();
    const dir = migrations({ '0001_widgets.sql': 'CREATE TABLE widgets (id int);' });
    const holder = new Client({ connectionString: url });
    await holder.connect();
    try {
      await holder.query(`SELECT pg_advisory_lock(${MIGRATE_LOCK_ID})`);
      const remainingTimeMs = lambdaClock();
      const error = await migrationFailure(
        runMigrations({ database: url, dir, remainingTimeMs, reserveMs: RESERVE, sleep: async () => undefined }),
      );
      expect(remainingTimeMs()).toBeGreaterThan(0); // it gave up while the function still had its reserve
      expect(error.migration).toBeUndefined();
      expect(error.message).toMatch(/gave up waiting for the migration lock/);
      expect(error.message).toMatch(/another session holds node-pg-migrate's advisory lock/);
      expect(await appliedMigrations(url)).toEqual([]);
      expect(await running(url, 'pg_advisory_lock')).toBe(0); // the server is not still waiting for it
    } finally {
      await holder.end();
    }
    // Once the lock is free the same run succeeds.
    expect(
      (await runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(), reserveMs: RESERVE })).applied,
    ).toEqual(['0001_widgets']);
  });

  test.each([
    ['a long statement', 'SELECT pg_sleep(600);'],
    [
      'a long statement in a migration that raises its own statement_timeout',
      "SET LOCAL statement_timeout = '60min';\nSELECT pg_sleep(601);",
    ],
  ])('%s is cancelled at the cap', async (_, sql) => {
    const url = await pg.createDatabase();
    const dir = migrations({ '0001_fast.sql': 'CREATE TABLE fast (id int);', '0002_slow.sql': sql });
    const remainingTimeMs = lambdaClock();
    const error = await migrationFailure(runMigrations({ database: url, dir, remainingTimeMs, reserveMs: RESERVE }));
    expect(remainingTimeMs()).toBeGreaterThan(0);
    expect(error.migration).toBe('0002_slow');
    expect(error.code).toBe('57014'); // query_canceled
    expect(error.message).toMatch(
      /^Migration 0002_slow failed: cancelled after \d+ ms, the time the function had left/,
    );
    expect(await appliedMigrations(url)).toEqual(['0001_fast']);
    expect(await running(url, 'pg_sleep(60')).toBe(0);
  });

  test('the run gives up at once when the function has no time left beyond its reserve', async () => {
    const url = await pg.createDatabase();
    const dir = migrations({ '0001_widgets.sql': 'CREATE TABLE widgets (id int);' });
    const error = await migrationFailure(
      runMigrations({ database: url, dir, remainingTimeMs: () => RESERVE, reserveMs: RESERVE }),
    );
    expect(error.message).toMatch(/no time left to run migrations/);
    expect(await appliedMigrations(url)).toEqual([]);
  });

  test('the migration session has the caps and asks the server to check for a vanished client', async () => {
    const url = await pg.createDatabase();
    const dir = migrations({
      '0001_settings.sql': `CREATE TABLE settings AS SELECT name, setting, unit FROM pg_settings
         WHERE name IN ('client_connection_check_interval', 'statement_timeout', 'lock_timeout');`,
    });
    await runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(), reserveMs: RESERVE });
    const settings = await withClient(url, async (c) =>
      Object.fromEntries((await c.query('SELECT name, setting, unit FROM settings')).rows.map((r) => [r.name, r])),
    );
    expect(settings.client_connection_check_interval).toEqual({
      name: 'client_connection_check_interval',
      setting: '10000',
      unit: 'ms',
    });
    for (const name of ['statement_timeout', 'lock_timeout']) {
      const ms = Number(settings[name].setting);
      expect(ms).toBeGreaterThan(0);
      expect(ms).toBeLessThanOrEqual(BUDGET_MS);
    }
  });
});
