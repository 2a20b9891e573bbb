import { runMigrations, type RunMigrationsOptions } from '../../lambda/migrate/run-migrations';
import type { TestPostgres } from '../../local/postgres/embedded-postgres';
import { migrationFailure, useMigrationRuns } from '../support/migration-runs';
import { appliedMigrations, withClient } from '../support/schema';

// runMigrations on small migrations of the test's own (the repository's are
// test/migrations/lifecycle.test.ts's): what it returns, how it retries, how it fails, what
// its session looks like.

let pg: TestPostgres;
const migrations = useMigrationRuns((server) => (pg = server), 'run-migrations-');
afterEach(() => jest.restoreAllMocks());

const sqlUpDown = (up: string, down: string) => `-- Up Migration\n${up}\n-- Down Migration\n${down}\n`;

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
    '0001_a.sql': sqlUpDown('CREATE TABLE a (id int);', 'DROP TABLE a;'),
    '0002_b.sql': sqlUpDown('CREATE TABLE b (id int);', 'DROP TABLE b;'),
    '0003_c.sql': sqlUpDown('CREATE TABLE c (id int);', 'DROP TABLE c;'),
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
