import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { runMigrations } from '../../../lambda/migrate/run-migrations';
import type { TestPostgres } from '../../../local/postgres/embedded-postgres';
import { migrationFailure, useMigrationRuns } from '../../support/migration-runs';
import { pollUntil } from '../../support/poll';
import { ROOT } from '../../support/root';
import { appliedMigrations, withClient } from '../../support/schema';

// Migration steps that need a lock writers queue behind (migrations/lib/online.js's lockStep,
// used by 0004, 0012 and the NOT VALID check helper) retry a busy lock instead of failing the
// deploy, up to the run's deadline (the Lambda's remaining time) or `migrations.lock_wait`
// (the CLI); a step that gives up applies nothing, names itself, and leaves node-pg-migrate's
// advisory lock free for the next runner.

const run = promisify(execFile);
const ONLINE = JSON.stringify(resolve(ROOT, 'migrations', 'lib', 'online.js'));
const RESERVE_MS = 30_000;

let pg: TestPostgres;
const migrations = useMigrationRuns((server) => (pg = server), 'online-');

/** A Lambda's remaining time: the reserve plus `budgetMs` from now, counting down. */
function lambdaClock(budgetMs: number): () => number {
  const deadline = Date.now() + RESERVE_MS + budgetMs;
  return () => deadline - Date.now();
}

/** `npm run migrate -- …` (node-pg-migrate's CLI on the repository's migrations), with `env` added. */
function npmMigrate(url: string, args: string[], env: Record<string, string> = {}) {
  return run('npm', ['run', '--silent', 'migrate', '--', ...args], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: url, ...env },
  });
}

/** A session holding `lock` (a LOCK TABLE mode) on `table` in an open transaction. */
async function holdLock(url: string, table: string, mode: string): Promise<Client> {
  const holder = new Client({ connectionString: url });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query(`LOCK TABLE ${table} IN ${mode} MODE`);
  return holder;
}

/**
 * Resolves once another session runs a statement containing `text` and is in `waitEvent`
 * (PgSleep: pausing between tries; a lock wait: waiting for a lock). Rejects if `settled`
 * reports the migration already finished (it gave up instead of waiting), or if no such
 * session is seen within a minute.
 */
async function untilWaiting(url: string, text: string, waitEvent: 'PgSleep' | 'Lock', settled: () => boolean) {
  await untilSeen(
    url,
    `SELECT 1 FROM pg_stat_activity
      WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%' || $1 || '%'
        AND (wait_event = $2 OR wait_event_type = $2)`,
    [text, waitEvent],
    () => (settled() ? `the migration finished before it was seen waiting (${waitEvent})` : undefined),
  );
}

/** Resolves once a session waits for a lock on `table` (rejects as untilWaiting does). */
async function untilLockWaiter(url: string, table: string, settled: () => boolean) {
  await untilSeen(url, `SELECT 1 FROM pg_locks WHERE NOT granted AND relation = $1::regclass`, [table], () =>
    settled() ? `the migration finished before it was seen waiting for ${table}` : undefined,
  );
}

/** Polls `query` on one connection until it returns a row (rejects on `abort`'s reason or after a minute). */
async function untilSeen(url: string, query: string, values: unknown[], abort: () => string | undefined) {
  await withClient(url, async (c) => {
    const rows = await pollUntil(
      async () => (await c.query(query, values)).rows,
      (found) => found.length > 0,
      { timeoutMs: 60_000, intervalMs: 20, abort },
    );
    if (rows.length === 0) throw new Error(`not seen within a minute: ${query}`);
  });
}

/** Sessions holding node-pg-migrate's advisory lock (or any advisory lock). */
async function advisoryLocks(url: string): Promise<number> {
  return withClient(
    url,
    async (c) => (await c.query(`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory'`)).rows[0].n,
  );
}

async function columns(url: string, table: string): Promise<string[]> {
  return withClient(url, async (c) =>
    (
      await c.query(
        `SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position`,
        [table],
      )
    ).rows.map((r) => r.column_name),
  );
}

function tracked<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const p = promise.finally(() => {
    done = true;
  });
  p.catch(() => undefined); // observed by the test later
  return { promise: p, settled: () => done };
}

/** Scratch migrations: two tables, then one lockStep that changes both. */
function scratch(): string {
  return migrations({
    '0001_tables.sql': 'CREATE TABLE widgets (id int); CREATE TABLE gadgets (id int);',
    '0002_colours.js': `const { lockStep } = require(${ONLINE});
exports.up = (pgm) => {
  pgm.noTransaction();
  pgm.sql(lockStep({
    step: '0002_colours: add columns',
    tables: ['widgets', 'gadgets'],
    body: 'ALTER TABLE widgets ADD COLUMN colour text; ALTER TABLE gadgets ADD COLUMN colour text;',
  }));
};
exports.down = false;
`,
  });
}

describe('a lock step (migrations/lib/online.js)', () => {
  test('waits out a writer that holds its table for longer than one lock_timeout, then applies', async () => {
    const url = await pg.createDatabase();
    const dir = scratch();
    await runMigrations({ database: url, dir, count: 1 });
    // An open write transaction on gadgets: ALTER TABLE's ACCESS EXCLUSIVE must wait for it.
    const writer = await holdLock(url, 'gadgets', 'ROW EXCLUSIVE');
    const migration = tracked(runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(120_000) }));
    try {
      // Pausing between tries: one 500 ms lock_timeout has passed and the step was not failed.
      await untilWaiting(url, '$locked$', 'PgSleep', migration.settled);
    } finally {
      await writer.query('COMMIT');
      await writer.end();
    }
    expect(await migration.promise).toEqual({ applied: ['0002_colours'], attempts: 1 });
    expect(await columns(url, 'widgets')).toEqual(['id', 'colour']);
    expect(await columns(url, 'gadgets')).toEqual(['id', 'colour']);
  });

  test('waits behind a SHARE UPDATE EXCLUSIVE holder (what autovacuum holds) without making writers wait', async () => {
    const url = await pg.createDatabase();
    const dir = scratch();
    await runMigrations({ database: url, dir, count: 1 });
    await withClient(url, (c) => c.query('INSERT INTO widgets VALUES (1)'));
    const vacuum = await holdLock(url, 'widgets', 'SHARE UPDATE EXCLUSIVE');
    const migration = tracked(runMigrations({ database: url, dir }));
    try {
      await untilWaiting(url, '$locked$', 'Lock', migration.settled);
      // Longer than a lock_timeout of the old steps (500 ms), after which they failed.
      await vacuum.query('SELECT pg_sleep(1)');
      expect(migration.settled()).toBe(false);
      // A writer is not queued behind the waiting step.
      await withClient(url, (c) => c.query('UPDATE widgets SET id = 2'));
      expect(migration.settled()).toBe(false);
    } finally {
      await vacuum.query('COMMIT');
      await vacuum.end();
    }
    expect((await migration.promise).applied).toEqual(['0002_colours']);
  });

  test('a holder that outlasts the deadline fails the step cleanly: named, nothing applied, the advisory lock free', async () => {
    const url = await pg.createDatabase();
    const dir = scratch();
    await runMigrations({ database: url, dir, count: 1 });
    // widgets is free, gadgets is held: each try adds widgets.colour, then waits for gadgets.
    const reader = await holdLock(url, 'gadgets', 'ACCESS SHARE');
    let error;
    try {
      error = await migrationFailure(
        runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(4_000), reserveMs: RESERVE_MS }),
      );
      expect(await advisoryLocks(url)).toBe(0);
    } finally {
      await reader.query('ROLLBACK');
      await reader.end();
    }
    expect(error.migration).toBe('0002_colours');
    expect(error.code).toBe('55P03');
    expect(error.message).toMatch(
      /^Migration 0002_colours failed: 0002_colours: add columns: gave up after \d+ tries of 500ms waiting for locks on widgets, gadgets/,
    );
    expect(await appliedMigrations(url)).toEqual(['0001_tables']);
    expect(await columns(url, 'widgets')).toEqual(['id']); // the first ALTER of the step was rolled back
    // A second runner gets node-pg-migrate's advisory lock and applies the migration.
    expect((await runMigrations({ database: url, dir, remainingTimeMs: lambdaClock(60_000) })).applied).toEqual([
      '0002_colours',
    ]);
  });
});

describe('a batched backfill (keysetBackfill)', () => {
  test('waits out a writer holding one of its rows past one lock_timeout, then backfills every row', async () => {
    const url = await pg.createDatabase();
    const dir = migrations({
      '0001_items.sql': `CREATE TABLE items (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), done boolean);
        INSERT INTO items (done) SELECT NULL FROM generate_series(1, 30);`,
      '0002_backfill.js': `const { keysetBackfill } = require(${ONLINE});
exports.up = (pgm) => {
  pgm.noTransaction();
  pgm.sql(keysetBackfill({ table: 'items', alias: 'i', set: 'done = true', where: 'i.done IS NULL', batchSize: 10 }));
};
exports.down = false;
`,
    });
    await runMigrations({ database: url, dir, count: 1 });
    // A writer in the middle of a transaction on the 15th row (in the backfill's second batch).
    const writer = new Client({ connectionString: url });
    await writer.connect();
    await writer.query('BEGIN');
    await writer.query(
      'SELECT 1 FROM items WHERE id = (SELECT id FROM items ORDER BY id OFFSET 14 LIMIT 1) FOR UPDATE',
    );
    // No retries of the run: the backfill must wait the writer out itself.
    const migration = tracked(runMigrations({ database: url, dir, lockRetries: 0 }));
    try {
      await untilWaiting(url, '$backfill$', 'PgSleep', migration.settled);
    } finally {
      await writer.query('COMMIT');
      await writer.end();
    }
    expect(await migration.promise).toEqual({ applied: ['0002_backfill'], attempts: 1 });
    const left = await withClient(
      url,
      async (c) => (await c.query('SELECT count(*)::int AS n FROM items WHERE done IS NULL')).rows[0].n,
    );
    expect(left).toBe(0);
  });
});

describe('the repository migrations through `npm run migrate` (no runner around them)', () => {
  test('0004 waits out a writer holding user_accounts past its lock_timeout and applies', async () => {
    const url = await pg.createDatabase();
    await runMigrations({ database: url, count: 3 });
    const writer = await holdLock(url, 'user_accounts', 'ROW EXCLUSIVE');
    const cli = tracked(npmMigrate(url, ['up', '1']));
    try {
      await untilWaiting(url, '$locked$', 'PgSleep', cli.settled);
    } finally {
      await writer.query('COMMIT');
      await writer.end();
    }
    await cli.promise;
    expect((await appliedMigrations(url)).at(-1)).toBe('0004_backfill-sync-state');
  });

  test('0003 (an SQL migration) waits behind SHARE UPDATE EXCLUSIVE, what autovacuum holds, past its lock_timeout', async () => {
    const url = await pg.createDatabase();
    await runMigrations({ database: url, count: 2 });
    const vacuum = await holdLock(url, 'user_accounts', 'SHARE UPDATE EXCLUSIVE');
    const cli = tracked(npmMigrate(url, ['up', '1']));
    try {
      await untilLockWaiter(url, 'user_accounts', cli.settled);
      await vacuum.query('SELECT pg_sleep(1)'); // longer than its 500 ms lock_timeout
      expect(cli.settled()).toBe(false);
    } finally {
      await vacuum.query('COMMIT');
      await vacuum.end();
    }
    await cli.promise;
    expect((await appliedMigrations(url)).at(-1)).toBe('0003_token-refresh-and-account-sync-schema');
  });

  test('past migrations.lock_wait, 0004 fails naming itself, applies nothing of the step, and frees the advisory lock', async () => {
    const url = await pg.createDatabase();
    await runMigrations({ database: url, count: 3 });
    const reader = await holdLock(url, 'user_accounts', 'ACCESS SHARE');
    let failure: { code?: number; stdout?: string; stderr?: string } | undefined;
    try {
      failure = await npmMigrate(url, ['up', '1'], { PGOPTIONS: '-c migrations.lock_wait=2s' }).then(
        () => undefined,
        (e: unknown) => e as typeof failure,
      );
    } finally {
      await reader.query('ROLLBACK');
      await reader.end();
    }
    expect(failure?.code).toBeGreaterThan(0);
    const output = `${failure?.stdout}\n${failure?.stderr}`;
    expect(output).toContain('### MIGRATION 0004_backfill-sync-state (UP) ###');
    expect(output).toMatch(
      /0004_backfill-sync-state: ADD CONSTRAINT user_accounts_sync_status_not_null: gave up after/,
    );
    expect(await appliedMigrations(url)).toHaveLength(3);
    const constraints = await withClient(
      url,
      async (c) =>
        (
          await c.query(
            `SELECT conname FROM pg_constraint WHERE conrelid = 'user_accounts'::regclass AND conname LIKE '%not_null'`,
          )
        ).rows,
    );
    expect(constraints).toEqual([]);
    expect(await advisoryLocks(url)).toBe(0);
    // The next runner proceeds.
    await npmMigrate(url, ['up', '1']);
    expect((await appliedMigrations(url)).at(-1)).toBe('0004_backfill-sync-state');
  });
});
