/**
 * Migration benchmark: applies every migration to a database holding ROWS users, oauth_tokens
 * and user_accounts while one connection per table writes continuously, and reports per step:
 * how long it took, the strongest lock it was seen holding on each table, and the longest
 * write stall on each table while it ran. Target: every migration applies, in one run of the
 * runner, and no write stalls longer than 1 s.
 *
 * Autovacuum is as eager as on a busy production database (AUTOVACUUM: it wakes every second
 * and vacuums a table once 1 % of its rows changed), so the migrations' lock-needing steps meet
 * a running autovacuum on the tables they alter, as they would in production.
 *
 *   npm run bench:migrate                    # 1,000,000 rows per table
 *   npm run bench:migrate -- --rows 100000   # smaller
 *   npm run bench:migrate -- --json out.json # also write the figures as JSON
 *
 * The figures are also written to bench/results/migrate.json for `npm run bench`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from 'pg';
import { runMigrations } from '../lambda/migrate/run-migrations';
import { startPostgres } from '../local/postgres/embedded-postgres';

const TABLES = ['users', 'oauth_tokens', 'user_accounts'] as const;

/**
 * Server settings for an autovacuum as eager as a busy database's: it wakes each second, and a
 * table qualifies after 1 % of its rows (plus 1,000) changed or were inserted. Cost-based
 * delay is PostgreSQL's default for autovacuum (2 ms), so a run on a million rows lasts seconds.
 */
export const AUTOVACUUM: Record<string, string> = {
  autovacuum: 'on',
  autovacuum_naptime: '1s',
  autovacuum_vacuum_scale_factor: '0.01',
  autovacuum_vacuum_threshold: '1000',
  autovacuum_vacuum_insert_scale_factor: '0.01',
  autovacuum_vacuum_insert_threshold: '1000',
  autovacuum_analyze_scale_factor: '0.01',
  autovacuum_analyze_threshold: '1000',
};
type Table = (typeof TABLES)[number];

/** PostgreSQL's table lock modes, weakest first. */
const LOCK_MODES = [
  'AccessShareLock',
  'RowShareLock',
  'RowExclusiveLock',
  'ShareUpdateExclusiveLock',
  'ShareLock',
  'ShareRowExclusiveLock',
  'ExclusiveLock',
  'AccessExclusiveLock',
];
/** Modes that block a plain INSERT/UPDATE/DELETE (which takes RowExclusiveLock). */
const BLOCKS_WRITES = new Set(['ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock']);

interface Step {
  name: string;
  start: number;
  end: number;
  locks: Partial<Record<Table, string>>;
  maxStallMs: Partial<Record<Table, number>>;
}

export interface MigrateBenchResult {
  rows: number;
  totalSeconds: number;
  seedSeconds: number;
  /** Runs of the migration runner: more than 1 when a step gave up on a lock (lock_timeout) and was retried. */
  attempts: number;
  /** Autovacuum and autoanalyze runs on the three tables while the migrations ran (pg_stat_user_tables). */
  autovacuumRuns?: number;
  /** The server's autovacuum_naptime during the run (AUTOVACUUM). */
  autovacuumNaptime?: string;
  writes: Record<Table, number>;
  maxStallMs: Record<Table, number>;
  steps: Array<{
    name: string;
    seconds: number;
    locks: Partial<Record<Table, string>>;
    maxStallMs: Partial<Record<Table, number>>;
  }>;
  targetMet: boolean;
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function seed(url: string, rows: number): Promise<void> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`INSERT INTO users (email) SELECT 'user' || g || '@example.com' FROM generate_series(1, $1) g`, [
      rows,
    ]);
    await c.query(`
      INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
      SELECT id, 'enc:v1:' || md5(id::text), 'enc:v1:' || md5(email), now() + (random() * interval '2 hours'),
             (ARRAY['NA', 'EU', 'FE'])[1 + (hashtext(email) & 3) % 3]
      FROM users`);
    await c.query(`
      INSERT INTO user_accounts (user_id, amazon_account_id, status, metadata)
      SELECT id, (hashtext(email)::bigint & 2147483647)::text,
             (ARRAY['active', 'pending', 'inactive'])[1 + (hashtext(email) & 7) % 3],
             jsonb_build_object('countryCode', 'US', 'accountType', 'seller', 'accountName', email)
      FROM users`);
    await c.query('VACUUM ANALYZE users, oauth_tokens, user_accounts');
  } finally {
    await c.end();
  }
}

/** One connection per table, updating random existing rows back to back; records each write's latency. */
function startWriters(url: string, ids: Record<Table, string[]>) {
  let running = true;
  const samples: Record<Table, Array<{ at: number; ms: number }>> = { users: [], oauth_tokens: [], user_accounts: [] };
  const statements: Record<Table, string> = {
    users: 'UPDATE users SET email = email WHERE id = $1',
    oauth_tokens: 'UPDATE oauth_tokens SET updated_at = now() WHERE id = $1',
    user_accounts: 'UPDATE user_accounts SET updated_at = now() WHERE id = $1',
  };
  const loops = TABLES.map(async (table) => {
    const c = new Client({ connectionString: url, application_name: `writer-${table}` });
    await c.connect();
    try {
      let i = 0;
      while (running) {
        const id = ids[table][i++ % ids[table].length];
        const t0 = performance.now();
        await c.query(statements[table], [id]);
        samples[table].push({ at: t0, ms: performance.now() - t0 });
      }
    } finally {
      await c.end();
    }
  });
  return {
    samples,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** Polls pg_locks for the migration's backend and keeps the strongest lock seen per table and time. */
function startLockMonitor(url: string) {
  let running = true;
  const seen: Array<{ at: number; table: Table; mode: string }> = [];
  const loop = (async () => {
    const c = new Client({ connectionString: url });
    await c.connect();
    try {
      while (running) {
        const { rows } = await c.query<{ relname: Table; mode: string }>(
          `SELECT c.relname, l.mode FROM pg_locks l
           JOIN pg_class c ON c.oid = l.relation
           JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE a.application_name LIKE 'migrate-bench%' AND l.locktype = 'relation' AND l.granted AND c.relname = ANY($1)`,
          [TABLES],
        );
        const at = performance.now();
        for (const r of rows) seen.push({ at, table: r.relname, mode: r.mode });
        await new Promise((r) => setTimeout(r, 2));
      }
    } finally {
      await c.end();
    }
  })();
  return {
    seen,
    async stop() {
      running = false;
      await loop;
    },
  };
}

async function withClient<T>(url: string, use: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    return await use(c);
  } finally {
    await c.end();
  }
}

/** Autovacuum and autoanalyze runs so far on the benchmark's tables. */
function autovacuumRuns(url: string): Promise<number> {
  return withClient(
    url,
    async (c) =>
      (
        await c.query<{ n: number }>(
          `SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::int AS n
             FROM pg_stat_user_tables WHERE relname = ANY($1)`,
          [TABLES],
        )
      ).rows[0].n,
  );
}

/** The longest write (a reduce: the samples are too many to spread into Math.max). */
function longest(samples: ReadonlyArray<{ ms: number }>): number {
  return samples.reduce((max, s) => Math.max(max, s.ms), 0);
}

function strongest(a: string | undefined, b: string): string {
  return a === undefined || LOCK_MODES.indexOf(b) > LOCK_MODES.indexOf(a) ? b : a;
}

export async function runMigrateBench(
  rows: number,
  log: (line: string) => void = console.log,
): Promise<MigrateBenchResult> {
  const pg = await startPostgres({ settings: { maintenance_work_mem: '256MB', max_wal_size: '4GB', ...AUTOVACUUM } });
  try {
    const url = await pg.createDatabase('bench');
    await runMigrations({ database: url, count: 1 });
    log(`seeding ${rows.toLocaleString('en-US')} rows into each of users, oauth_tokens, user_accounts ...`);
    const seedStart = performance.now();
    await seed(url, rows);
    const seedSeconds = (performance.now() - seedStart) / 1000;

    const ids = {} as Record<Table, string[]>;
    const c = new Client({ connectionString: url });
    await c.connect();
    for (const table of TABLES)
      ids[table] = (
        await c.query<{ id: string }>(`SELECT id FROM ${table} TABLESAMPLE SYSTEM (1) LIMIT 20000`)
      ).rows.map((r) => r.id);
    await c.end();

    const autovacuumBefore = await autovacuumRuns(url);
    const writers = startWriters(url, ids);
    const locks = startLockMonitor(url);
    await new Promise((r) => setTimeout(r, 500)); // writers warm up before the first step

    const steps: Step[] = [];
    const migrateStart = performance.now();
    log('applying migrations while writers run ...');
    const { attempts } = await runMigrations({
      database: { connectionString: url, application_name: 'migrate-bench' },
      logger: {
        info: (m) => {
          const match = /^### MIGRATION (.+) \(UP\) ###$/.exec(m);
          if (!match) return;
          const now = performance.now();
          if (steps.length) steps[steps.length - 1].end = now;
          steps.push({ name: match[1], start: now, end: now, locks: {}, maxStallMs: {} });
          log(`  ${match[1]}`);
        },
        warn: (m) => {
          if (m.includes('retrying')) log(`  ${m}`);
        },
        error: () => undefined,
      },
    });
    const migrateEnd = performance.now();
    if (steps.length) steps[steps.length - 1].end = migrateEnd;
    await new Promise((r) => setTimeout(r, 300));
    await locks.stop();
    await writers.stop();
    const autovacuumDuring = (await autovacuumRuns(url)) - autovacuumBefore;
    const naptime = await withClient(
      url,
      async (c) => (await c.query<{ s: string }>(`SELECT current_setting('autovacuum_naptime') AS s`)).rows[0].s,
    );

    const maxStallMs = {} as Record<Table, number>;
    const writes = {} as Record<Table, number>;
    for (const table of TABLES) {
      const during = writers.samples[table].filter((s) => s.at >= migrateStart && s.at <= migrateEnd);
      writes[table] = during.length;
      maxStallMs[table] = longest(during);
      for (const step of steps) {
        // A write belongs to the step during which it started or that it waited through.
        const inStep = writers.samples[table].filter((s) => s.at + s.ms >= step.start && s.at <= step.end);
        step.maxStallMs[table] = longest(inStep);
      }
    }
    for (const seen of locks.seen) {
      const step = steps.find((s) => seen.at >= s.start && seen.at <= s.end);
      if (step) step.locks[seen.table] = strongest(step.locks[seen.table], seen.mode);
    }
    const result: MigrateBenchResult = {
      rows,
      seedSeconds,
      totalSeconds: (migrateEnd - migrateStart) / 1000,
      attempts,
      autovacuumRuns: autovacuumDuring,
      autovacuumNaptime: naptime,
      writes,
      maxStallMs,
      steps: steps.map((s) => ({
        name: s.name,
        seconds: (s.end - s.start) / 1000,
        locks: s.locks,
        maxStallMs: s.maxStallMs,
      })),
      targetMet: attempts === 1 && TABLES.every((t) => maxStallMs[t] <= 1000),
    };
    return result;
  } finally {
    await pg.stop();
  }
}

export function formatMigrateBench(r: MigrateBenchResult): string {
  const lockCell = (mode: string | undefined) =>
    mode ? `${mode.replace(/Lock$/, '')}${BLOCKS_WRITES.has(mode) ? ' (blocks writes)' : ''}` : '-';
  const ms = (v: number | undefined) => (v === undefined ? '-' : `${v.toFixed(0)} ms`);
  const lines = [
    `Migrations on ${r.rows.toLocaleString('en-US')} rows per table (seeded in ${r.seedSeconds.toFixed(1)} s); total ${r.totalSeconds.toFixed(1)} s`,
    '',
    '| step | time | lock on users | lock on oauth_tokens | lock on user_accounts | longest write stall (users / oauth_tokens / user_accounts) |',
    '| --- | ---: | --- | --- | --- | --- |',
    ...r.steps.map(
      (s) =>
        `| ${s.name} | ${s.seconds.toFixed(2)} s | ${lockCell(s.locks.users)} | ${lockCell(s.locks.oauth_tokens)} | ${lockCell(s.locks.user_accounts)} | ${ms(s.maxStallMs.users)} / ${ms(s.maxStallMs.oauth_tokens)} / ${ms(s.maxStallMs.user_accounts)} |`,
    ),
    `| **all** | **${r.totalSeconds.toFixed(1)} s** | | | | **${ms(r.maxStallMs.users)} / ${ms(r.maxStallMs.oauth_tokens)} / ${ms(r.maxStallMs.user_accounts)}** |`,
    '',
    `writes completed during the migration: users ${r.writes.users}, oauth_tokens ${r.writes.oauth_tokens}, user_accounts ${r.writes.user_accounts}`,
    `autovacuum (naptime ${r.autovacuumNaptime ?? '?'}, 1 % scale factors): ${r.autovacuumRuns ?? '?'} autovacuum/autoanalyze runs on the three tables during the migrations`,
    `runner attempts: ${r.attempts}${r.attempts > 1 ? ' (a migration failed on a lock and the runner retried it; a retried step appears twice above)' : ''}`,
    `target (every migration applies in one run of the runner, no write stall above 1 s): ${r.targetMet ? 'met' : 'NOT MET'}`,
  ];
  return lines.join('\n');
}

async function main() {
  const rows = Number(arg('rows') ?? 1_000_000);
  if (!Number.isInteger(rows) || rows < 1) throw new Error(`--rows must be a positive integer, got ${arg('rows')}`);
  const result = await runMigrateBench(rows);
  console.log('');
  console.log(formatMigrateBench(result));
  const resultsDir = join(__dirname, 'results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'migrate.json'), `${JSON.stringify(result, null, 2)}\n`);
  const json = arg('json');
  if (json) writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
  if (!result.targetMet) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((error) => {
    console.error(error);
    process.exit(1);
  });
}
