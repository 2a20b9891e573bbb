import { Client } from 'pg';
import { runMigrations } from '../../lambda/migrate/run-migrations';
import type { TestPostgres } from '../../local/postgres/embedded-postgres';
import { migrationFailure, useMigrationRuns } from '../support/migration-runs';
import { withClient } from '../support/schema';

// The migration Lambda never outlives its invocation: every statement, lock wait and the wait
// for node-pg-migrate's advisory lock is capped by the time the function has left (minus the
// reserve it keeps to report back), and the server checks for a vanished client.

/** node-pg-migrate's advisory lock key (PG_MIGRATE_LOCK_ID in its runner). */
const MIGRATE_LOCK_ID = '7241865325823964';
const RESERVE_MS = 30_000;
/** What the function has left beyond its reserve in these tests. */
const BUDGET_MS = 1_500;

let pg: TestPostgres;
const migrationsDir = useMigrationRuns((server) => (pg = server), 'deadline-migrations-');

/** A Lambda's remaining time: the reserve plus BUDGET_MS from now, counting down. */
function lambdaClock(): () => number {
  const deadline = Date.now() + RESERVE_MS + BUDGET_MS;
  return () => deadline - Date.now();
}

async function applied(url: string): Promise<string[]> {
  return withClient(url, async (c) => {
    const exists = (await c.query(`SELECT to_regclass('pgmigrations') IS NOT NULL AS e`)).rows[0].e;
    return exists ? (await c.query('SELECT name FROM pgmigrations ORDER BY id')).rows.map((r) => r.name) : [];
  });
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
  const dir = migrationsDir({ '0001_widgets.sql': 'CREATE TABLE widgets (id int);' });
  const holder = new Client({ connectionString: url });
  await holder.connect();
  try {
    await holder.query(`SELECT pg_advisory_lock(${MIGRATE_LOCK_ID})`);
    const remainingTimeMs = lambdaClock();
    const error = await migrationFailure(
      runMigrations({ database: url, dir, remainingTimeMs, reserveMs: RESERVE_MS, sleep: async () => undefined }),
    );
    expect(remainingTimeMs()).toBeGreaterThan(0); // it gave up while the function still had its reserve
    expect(error.migration).toBeUndefined();
    expect(error.message).toMatch(/gave up waiting for the migration lock/);
    expect(error.message).toMatch(/another session holds node-pg-migrate's advisory lock/);
    expect(await applied(url)).toEqual([]);
    expect(await running(url, 'pg_advisory_lock')).toBe(0); // the server is not still waiting for it
  } finally {
    await holder.end();
  }
  // Once the lock is free the same run succeeds.
  expect(
    (await runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(), reserveMs: RESERVE_MS })).applied,
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
  const dir = migrationsDir({ '0001_fast.sql': 'CREATE TABLE fast (id int);', '0002_slow.sql': sql });
  const remainingTimeMs = lambdaClock();
  const error = await migrationFailure(runMigrations({ database: url, dir, remainingTimeMs, reserveMs: RESERVE_MS }));
  expect(remainingTimeMs()).toBeGreaterThan(0);
  expect(error.migration).toBe('0002_slow');
  expect(error.code).toBe('57014'); // query_canceled
  expect(error.message).toMatch(/^Migration 0002_slow failed: cancelled after \d+ ms, the time the function had left/);
  expect(await applied(url)).toEqual(['0001_fast']);
  expect(await running(url, 'pg_sleep(60')).toBe(0);
});

test('the run gives up at once when the function has no time left beyond its reserve', async () => {
  const url = await pg.createDatabase();
  const dir = migrationsDir({ '0001_widgets.sql': 'CREATE TABLE widgets (id int);' });
  const error = await migrationFailure(
    runMigrations({ database: url, dir, remainingTimeMs: () => RESERVE_MS, reserveMs: RESERVE_MS }),
  );
  expect(error.message).toMatch(/no time left to run migrations/);
  expect(await applied(url)).toEqual([]);
});

test('the migration session has the caps and asks the server to check for a vanished client', async () => {
  const url = await pg.createDatabase();
  const dir = migrationsDir({
    '0001_settings.sql': `CREATE TABLE settings AS SELECT name, setting, unit FROM pg_settings
       WHERE name IN ('client_connection_check_interval', 'statement_timeout', 'lock_timeout');`,
  });
  await runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(), reserveMs: RESERVE_MS });
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
