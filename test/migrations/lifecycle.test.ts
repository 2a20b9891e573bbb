import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { DEFAULT_MIGRATIONS_DIR, MigrationError, runMigrations } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { appliedMigrations, snapshotSchema, withClient } from '../support/schema';

const run = promisify(execFile);
const ROOT = resolve(__dirname, '..', '..');
/** Every migration in the repository, in order (later issues add their own after these). */
const ALL = readdirSync(DEFAULT_MIGRATIONS_DIR, { withFileTypes: true })
  .filter((d) => d.isFile())
  .map((d) => d.name.replace(/\.(sql|js)$/, ''))
  .sort();

test('the spec is applied by the first five migrations, the baseline first', () => {
  expect(ALL.slice(0, 5)).toEqual([
    '0001_baseline',
    '0002_backup-pre-spec',
    '0003_token-refresh-and-account-sync-schema',
    '0004_backfill-sync-state',
    '0005_spec-indexes',
  ]);
});

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

/** The repository's migrations in a temporary folder, to add a migration of a test's own. */
function copyOfMigrations(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'migrations-'));
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function npmMigrate(url: string, ...args: string[]) {
  return run('npm', ['run', '--silent', 'migrate', '--', ...args], {
    cwd: ROOT,
    env: { ...process.env, DATABASE_URL: url },
  });
}

test('the stock CLI applies the baseline alone with `up 1`, then the rest with `up`', async () => {
  const url = await pg.createDatabase();
  await npmMigrate(url, 'up', '1');
  expect(await appliedMigrations(url)).toEqual(['0001_baseline']);
  const baseline = await snapshotSchema(url);
  expect(Object.keys(baseline.rls).sort()).toEqual(['oauth_tokens', 'user_accounts', 'users']);
  expect(baseline.columns['user_accounts.sync_status']).toBeUndefined();

  await npmMigrate(url, 'up');
  expect(await appliedMigrations(url)).toEqual(expect.arrayContaining(ALL));
  const viaCli = await snapshotSchema(url);
  const viaRunner = await pg.createDatabase();
  await runMigrations({ database: viaRunner });
  expect(viaCli).toEqual(await snapshotSchema(viaRunner));
});

test('re-running up is a no-op', async () => {
  const url = await pg.createDatabase();
  const first = await runMigrations({ database: url });
  expect(first.applied).toEqual(expect.arrayContaining(ALL));
  const before = await snapshotSchema(url);
  const second = await runMigrations({ database: url });
  expect(second.applied).toEqual([]);
  expect(await snapshotSchema(url)).toEqual(before);
});

test('up → down (all) → up ends in the same schema', async () => {
  const url = await pg.createDatabase();
  const { applied } = await runMigrations({ database: url });
  const before = await snapshotSchema(url);
  const down = await runMigrations({ database: url, direction: 'down', count: applied.length });
  expect(down.applied).toEqual([...applied].reverse());
  const empty = await snapshotSchema(url);
  expect(Object.keys(empty.columns)).toEqual([]);
  await runMigrations({ database: url });
  expect(await snapshotSchema(url)).toEqual(before);
});

test('each migration steps down and up again on its own', async () => {
  const url = await pg.createDatabase();
  const { applied } = await runMigrations({ database: url });
  for (let i = applied.length - 1; i >= 0; i--) {
    const before = await snapshotSchema(url);
    await runMigrations({ database: url, direction: 'down', count: 1 });
    expect(await appliedMigrations(url)).toEqual(applied.slice(0, i));
    await runMigrations({ database: url, count: 1 });
    expect(await snapshotSchema(url)).toEqual(before);
    await runMigrations({ database: url, direction: 'down', count: 1 });
  }
});

test('two runners started at once apply each migration exactly once', async () => {
  const url = await pg.createDatabase();
  const [a, b] = await Promise.all([runMigrations({ database: url }), runMigrations({ database: url })]);
  expect([...a.applied, ...b.applied].sort()).toEqual([...ALL].sort());
  expect(await appliedMigrations(url)).toEqual(ALL);
});

test('a failing migration leaves the database exactly at the previous version, and names itself', async () => {
  const url = await pg.createDatabase();
  const { dir, cleanup } = copyOfMigrations();
  try {
    await runMigrations({ database: url, dir });
    const before = await snapshotSchema(url);
    const applied = await appliedMigrations(url);
    writeFileSync(
      join(dir, '9999_broken.sql'),
      '-- Up Migration\nALTER TABLE users ADD COLUMN half_done integer;\nCREATE TABLE half_done (id int);\nSELECT 1 / 0;\n-- Down Migration\n',
    );
    const error = await runMigrations({ database: url, dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as MigrationError).migration).toBe('9999_broken');
    expect((error as MigrationError).databaseMessage).toBe('division by zero');
    expect((error as MigrationError).message).toBe('Migration 9999_broken failed: division by zero');
    expect(await appliedMigrations(url)).toEqual(applied);
    expect(await snapshotSchema(url)).toEqual(before);
  } finally {
    cleanup();
  }
});

test('a migration that cannot get its lock in time is retried instead of stalling writers', async () => {
  const url = await pg.createDatabase();
  await runMigrations({ database: url, count: 2 });
  // A long transaction holds a lock that conflicts with 0003's ALTER TABLE; 0003 gives up
  // after its lock_timeout, and the runner tries again once the holder has finished.
  const holder = new Client({ connectionString: url });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE user_accounts IN ACCESS SHARE MODE');
  const warnings: string[] = [];
  let released = false;
  const result = await runMigrations({
    database: url,
    retryBaseDelayMs: 10,
    logger: { info: () => undefined, warn: (m) => warnings.push(m), error: () => undefined },
    sleep: async () => {
      if (!released) {
        released = true;
        await holder.query('COMMIT');
      }
    },
  });
  await holder.end();
  expect(result.attempts).toBe(2);
  expect(warnings.some((w) => w.includes('0003_token-refresh-and-account-sync-schema') && w.includes('55P03'))).toBe(
    true,
  );
  expect(result.applied).toEqual(ALL.slice(2));
});

test('a lock timeout that never clears fails with the migration name once retries are spent', async () => {
  const url = await pg.createDatabase();
  await runMigrations({ database: url, count: 2 });
  const holder = new Client({ connectionString: url });
  await holder.connect();
  await holder.query('BEGIN');
  await holder.query('LOCK TABLE oauth_tokens IN ACCESS SHARE MODE');
  try {
    const error = await runMigrations({ database: url, lockRetries: 2, sleep: async () => undefined }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as MigrationError).migration).toBe('0003_token-refresh-and-account-sync-schema');
    expect((error as MigrationError).code).toBe('55P03');
    expect(await appliedMigrations(url)).toEqual(ALL.slice(0, 2));
  } finally {
    await holder.query('ROLLBACK');
    await holder.end();
  }
});

test('an interrupted concurrent index build is rebuilt, not kept invalid', async () => {
  const url = await pg.createDatabase();
  await runMigrations({ database: url, count: 4 });
  // Simulate what a failed CREATE INDEX CONCURRENTLY leaves behind: an INVALID index.
  await withClient(url, async (c) => {
    await c.query('CREATE INDEX idx_user_accounts_metadata ON user_accounts USING gin (metadata)');
    await c.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_user_accounts_metadata'::regclass`);
  });
  await runMigrations({ database: url });
  const valid = await withClient(
    url,
    async (c) =>
      (await c.query(`SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_user_accounts_metadata'::regclass`))
        .rows[0].indisvalid,
  );
  expect(valid).toBe(true);
});

test('duplicate (user, Amazon profile) rows fail the unique index build clearly and change nothing else', async () => {
  const url = await pg.createDatabase();
  await runMigrations({ database: url, count: 4 });
  await withClient(url, async (c) => {
    const user = (await c.query(`INSERT INTO users (email) VALUES ('dup@example.com') RETURNING id`)).rows[0].id;
    await c.query(`INSERT INTO user_accounts (user_id, amazon_account_id) VALUES ($1, '42'), ($1, '42')`, [user]);
  });
  const error = await runMigrations({ database: url }).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(MigrationError);
  expect((error as MigrationError).migration).toBe('0005_spec-indexes');
  expect((error as MigrationError).databaseMessage).toMatch(
    /could not create unique index "idx_user_accounts_user_amazon"/,
  );
  expect(await appliedMigrations(url)).toEqual(ALL.slice(0, 4));
});
