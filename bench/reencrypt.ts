/**
 * The token re-encryption (lambda/token-reencrypt/, docs/token-encryption.md) on a table of
 * `rows` connections whose tokens are all `enc:v1` (the format before key rings, so every one
 * is decrypted and written again as `enc:v2` under the new current key), while one connection
 * updates random oauth_tokens rows back to back, as bench/migrate-bench.ts measures write
 * stalls. The writer runs in a process of its own (bench/reencrypt-writer.ts), as every other
 * writer of the table does in AWS, so its writes' times are the database's, not this process's
 * event loop busy with the re-encryption's crypto. The writes' latencies are reported alone
 * (the writer for `--baseline-seconds` before the run: the machine's own noise) and while the
 * re-encryption ran, as percentiles and the longest, with the longest wait for a row lock.
 *
 *   npm run bench:reencrypt                            # 1,000,000 rows, Data API path
 *   npm run bench:reencrypt -- --rows 100000 --path pg # smaller, node-postgres
 *   npm run bench:reencrypt -- --baseline-seconds 120  # the writer alone for longer first (5 s)
 *   npm run bench:reencrypt -- --json out.json         # also the figures as JSON
 *
 * `npm run bench` runs it at 20,000 rows. The Data API path is the deployed one
 * (DataApiDatabase → @aws-sdk/client-rds-data → the Data API emulator → PostgreSQL 17, as the
 * jobs' login); `--path pg` runs the same core on node-postgres. Target: at 1,000,000 rows no
 * write to oauth_tokens waits longer than 1 s for the re-encryption's row locks (the longest
 * write is reported beside it: it also holds the database's and the machine's load, the
 * re-encryption's own and, on a shared machine, other processes').
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { DataApiDatabase, PgDatabase, type Database } from '../lambda/shared/db';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { encryptToken, parseTokenKey, TokenCipher, TokenKeyRing } from '../lambda/shared/token-crypto';
import { runTokenReencryption } from '../lambda/token-reencrypt/core';
import { countKeyUsage } from '../lambda/token-reencrypt/store';
import { startLocalWorld } from '../local/world';
import { epochNow, startWriterProcess } from './reencrypt-writer';

export interface ReencryptionBenchResult {
  readonly path: 'data-api' | 'pg';
  readonly rows: number;
  readonly seedSeconds: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly batches: number;
  readonly dataApiCalls: number;
  readonly dataApiCallsPer1000Rows: number;
  /** Writes to oauth_tokens by the concurrent writer while the re-encryption ran. */
  readonly writes: number;
  /** The longest of them, in ms: the longest write stall. */
  readonly maxWriteStallMs: number;
  /**
   * The longest time one of those writes was seen waiting for a row lock (pg_stat_activity,
   * polled): the part of a stall the re-encryption's locks caused; the rest is the machine.
   */
  readonly maxLockWaitMs: number;
  /** The longest write of the same writer alone, for `baselineSeconds` before the run (the machine's own noise). */
  readonly baselineMaxWriteMs: number;
  /** How long the writer ran alone before the re-encryption started. */
  readonly baselineSeconds: number;
  /** The writes' latencies while the re-encryption ran, and alone before it. */
  readonly during: WriteStats;
  readonly alone: WriteStats;
  /** The longest lock wait seen while the writer ran alone (0 unless something else holds its rows). */
  readonly baselineMaxLockWaitMs: number;
  /**
   * The longest delay of this process's event loop while the re-encryption ran (the core's
   * crypto and row parsing): what a writer in this process would have added to its writes.
   */
  readonly maxEventLoopDelayMs: number;
  /**
   * The longest write in each whole window of `baselineSeconds` while the re-encryption ran (in
   * order): each comparable with the writer's longest alone, a window of the same length.
   */
  readonly windowMaxWriteMs: readonly number[];
  /** Every value read back under the new key as what was stored (a sample of 1,000 rows). */
  readonly verified: number;
  /** The longest lock wait ≤ 1 s and every row re-encrypted. */
  readonly targetMet: boolean;
}

/** Latencies of a window's writes, in ms. */
export interface WriteStats {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
  /** Writes that took longer than 100 ms, and longer than 1 s. */
  readonly over100ms: number;
  readonly over1s: number;
}

export function writeStats(ms: readonly number[]): WriteStats {
  const sorted = [...ms].sort((a, b) => a - b);
  // Nearest rank: the smallest value at least q of the writes did not exceed.
  const at = (q: number) =>
    sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return {
    count: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    max: sorted.length === 0 ? 0 : sorted[sorted.length - 1],
    over100ms: sorted.filter((x) => x > 100).length,
    over1s: sorted.filter((x) => x > 1000).length,
  };
}

/** The longest write starting in each whole window of `windowMs` from `from` to `to`. */
export function windowMaxima(
  writes: ReadonlyArray<{ at: number; ms: number }>,
  from: number,
  to: number,
  windowMs: number,
): number[] {
  const maxima = Array.from({ length: Math.floor((to - from) / windowMs) }, () => 0);
  for (const w of writes) {
    const i = Math.floor((w.at - from) / windowMs);
    if (i >= 0 && i < maxima.length) maxima[i] = Math.max(maxima[i], w.ms);
  }
  return maxima;
}

/** Distinct v1 ciphertexts the table's rows cycle through (v1 binds no row, so any row may hold any). */
const POOL = 1000;
/** Characters of each plaintext token (Amazon's are a few hundred). */
const TOKEN_CHARS = 400;

export async function measureReencryption(
  options: {
    rows?: number;
    path?: 'data-api' | 'pg';
    /** Seconds the writer runs alone before the re-encryption starts. @default 5 */
    baselineSeconds?: number;
    progress?: (line: string) => void;
  } = {},
): Promise<ReencryptionBenchResult> {
  const rows = options.rows ?? 1_000_000;
  const baselineSeconds = options.baselineSeconds ?? 5;
  const path = options.path ?? 'data-api';
  const progress = options.progress ?? (() => undefined);
  const world = await startLocalWorld();
  try {
    const oldKey = parseTokenKey(world.keyBase64);
    const pool = Array.from({ length: POOL }, (_, i) => {
      const plain = `Atzr|bench-${i}-${randomBytes(TOKEN_CHARS).toString('base64url')}`.slice(0, TOKEN_CHARS);
      return { plain, stored: encryptToken(plain, oldKey) };
    });
    progress(`  seeding ${rows.toLocaleString('en-US')} connections (enc:v1) …`);
    const seedStart = performance.now();
    await withClient(world.url, async (c) => {
      // The seed only: no triggers (the event outbox's rows are not what is measured).
      await c.query('SET session_replication_role = replica');
      await c.query(
        `INSERT INTO users (email) SELECT 'reencrypt' || g || '@example.com' FROM generate_series(1, $1) g`,
        [rows],
      );
      await c.query(
        `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
         SELECT g.id, p.v[1 + (g.n % $2)], p.v[1 + ((g.n + 1) % $2)], now() + interval '1 hour',
                (ARRAY['NA', 'EU', 'FE'])[1 + g.n % 3]
           FROM (SELECT id, row_number() OVER () AS n FROM users) g, (SELECT $1::text[] AS v) p`,
        [pool.map((p) => p.stored), POOL],
      );
      await c.query('VACUUM ANALYZE users, oauth_tokens');
    });
    const seedSeconds = (performance.now() - seedStart) / 1000;

    const ring = new TokenKeyRing({ legacy: oldKey, next: randomBytes(32) }, 'next');
    const cipher = new TokenCipher(ring);
    const db: Database =
      path === 'pg'
        ? new PgDatabase({ connection: world.workerUrl })
        : new DataApiDatabase({ client: world.emulator.createClient(), ...world.emulator.target });
    const ids = await withClient(world.url, async (c) =>
      (await c.query<{ id: string }>(`SELECT id FROM oauth_tokens TABLESAMPLE SYSTEM (1) LIMIT 20000`)).rows.map(
        (r) => r.id,
      ),
    );
    const writer = await startWriterProcess(world.url, ids);
    const baselineStart = epochNow();
    await new Promise((r) => setTimeout(r, baselineSeconds * 1000));
    const baselineEnd = epochNow();
    progress(
      `  re-encrypting on the ${path === 'pg' ? 'node-postgres' : 'Data API'} path while a writer updates oauth_tokens …`,
    );
    const loopDelay = monitorEventLoopDelay({ resolution: 10 });
    loopDelay.enable();
    const startedAt = epochNow();
    const started = performance.now();
    let lastNote = started;
    const summary = await runTokenReencryption({
      db,
      cipher,
      logger: silentLogger,
      metrics: new MetricTotals(),
      remainingTimeMs: () => 3_600_000,
      onBatch: ({ reencrypted }) => {
        const now = performance.now();
        if (now - lastNote > 10_000) {
          lastNote = now;
          progress(`    ${reencrypted.toLocaleString('en-US')} rows …`);
        }
      },
    });
    const ended = performance.now();
    const endedAt = epochNow();
    loopDelay.disable();
    const record = await writer.stop();
    // A write belongs to the run if any of it overlapped the run; to the baseline if all of it was before.
    const alone = record.writes.filter((x) => x.at >= baselineStart && x.at + x.ms <= baselineEnd);
    const during = record.writes.filter((x) => x.at + x.ms >= startedAt && x.at <= endedAt);
    const waitsDuring = record.lockWaits.filter((x) => x.at >= startedAt && x.at <= endedAt);
    const waitsAlone = record.lockWaits.filter((x) => x.at >= baselineStart && x.at <= baselineEnd);
    if ('close' in db && typeof db.close === 'function') await (db as PgDatabase).close();
    const duringStats = writeStats(during.map((x) => x.ms));
    const aloneStats = writeStats(alone.map((x) => x.ms));
    const maxLockWaitMs = waitsDuring.reduce((max, x) => Math.max(max, x.ms), 0);

    // Everything is under the new key, and reads back as what was stored.
    const usage = await countKeyUsage(world.admin, 'next');
    if (usage.staleConnections !== 0 || usage.v2.next !== rows * 2)
      throw new Error(`re-encryption left ${usage.staleConnections} connections: ${JSON.stringify(usage)}`);
    const plainOf = new Map(pool.map((p) => [p.stored, p.plain]));
    const sample = await world.admin.query<{ user_id: string; region: string; access_token: string }>(
      `SELECT user_id, region, access_token FROM oauth_tokens ORDER BY random() LIMIT 1000`,
    );
    const plains = new Set(plainOf.values());
    let verified = 0;
    for (const r of sample.rows) {
      const plain = await cipher.decrypt(r.access_token, {
        table: 'oauth_tokens',
        userId: r.user_id,
        region: r.region,
        column: 'access_token',
      });
      if (!plains.has(plain)) throw new Error('a re-encrypted token reads as something never stored');
      verified += 1;
    }
    const seconds = (ended - started) / 1000;
    return {
      path,
      rows,
      seedSeconds,
      seconds,
      rowsPerSecond: summary.reencrypted / seconds,
      batches: summary.batches,
      dataApiCalls: summary.databaseCalls,
      dataApiCallsPer1000Rows: (summary.databaseCalls / summary.reencrypted) * 1000,
      writes: during.length,
      maxWriteStallMs: duringStats.max,
      maxLockWaitMs,
      baselineMaxWriteMs: aloneStats.max,
      baselineSeconds,
      during: duringStats,
      alone: aloneStats,
      baselineMaxLockWaitMs: waitsAlone.reduce((max, x) => Math.max(max, x.ms), 0),
      maxEventLoopDelayMs: loopDelay.max / 1e6,
      windowMaxWriteMs: windowMaxima(during, startedAt, endedAt, baselineSeconds * 1000),
      verified,
      // What the re-encryption causes directly is the writes' wait for its row locks; the rest of
      // a slow write is the database's and the machine's load (the re-encryption's own, and on a
      // shared machine other processes'), reported beside it with the writer alone for comparison.
      targetMet: maxLockWaitMs <= 1000 && summary.reencrypted === rows,
    };
  } finally {
    await world.close();
  }
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

const fmt = (n: number, digits = 0) =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

export function renderReencryptionMarkdown(r: ReencryptionBenchResult): string {
  const ms = (n: number) => `${fmt(n, n < 10 ? 1 : 0)} ms`;
  const stats = (label: string, w: WriteStats, lockWait: number) =>
    `| ${label} | ${fmt(w.count)} | ${ms(w.p50)} | ${ms(w.p99)} | ${ms(w.p999)} | ${ms(w.max)} | ${fmt(w.over100ms)} | ${fmt(w.over1s)} | ${ms(lockWait)} |`;
  return [
    '| re-encryption | path | rows | seconds | rows/s | batches | Data API calls | per 1,000 rows |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| enc:v1 → enc:v2 (new current key) | ${r.path === 'pg' ? 'node-postgres' : 'Data API'} | ${fmt(r.rows)} | ${fmt(r.seconds, 1)} | ${fmt(r.rowsPerSecond)} | ${fmt(r.batches)} | ${fmt(r.dataApiCalls)} | ${fmt(r.dataApiCallsPer1000Rows, 1)} |`,
    '',
    '| writes to oauth_tokens (a writer in its own process) | writes | p50 | p99 | p99.9 | longest | over 100 ms | over 1 s | longest lock wait |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    stats(`alone, ${fmt(r.baselineSeconds)} s before the run`, r.alone, r.baselineMaxLockWaitMs),
    stats('while the re-encryption ran', r.during, r.maxLockWaitMs),
    '',
    `Target (no write to oauth_tokens waits over 1 s for the re-encryption's locks, every row re-encrypted): ${r.targetMet ? 'met' : 'NOT MET'}; longest write while it ran ${ms(r.maxWriteStallMs)} (${r.maxWriteStallMs <= 1000 ? 'within' : 'over'} 1 s); ${r.verified} sampled tokens read back under the new key. The bench's own event loop (the re-encryption core) was held up to ${ms(r.maxEventLoopDelayMs)} at a time. Longest write in each ${fmt(r.baselineSeconds)}-s window of the run (the writer alone: ${ms(r.alone.max)}): ${r.windowMaxWriteMs.length === 0 ? 'the run was shorter than one window' : r.windowMaxWriteMs.map((x) => fmt(x)).join(', ') + ' ms'}.`,
  ].join('\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const rows = Number(arg('rows') ?? 1_000_000);
  const path = (arg('path') ?? 'data-api') as 'data-api' | 'pg';
  const baselineSeconds = Number(arg('baseline-seconds') ?? 5);
  if (!(rows > 0) || !['data-api', 'pg'].includes(path) || !(baselineSeconds > 0)) {
    process.stderr.write(
      'Usage: npm run bench:reencrypt -- [--rows <n>] [--path data-api|pg] [--baseline-seconds <s>] [--json <file>]\n',
    );
    process.exit(2);
  }
  const loadBefore = loadavg();
  const result = await measureReencryption({
    rows,
    path,
    baselineSeconds,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(
    `Measured ${new Date().toISOString()} on ${cpus().length} CPUs, Node ${process.versions.node}; load average ${loadBefore.map((x) => x.toFixed(2)).join(' ')} before, ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')} after.\n\n`,
  );
  process.stdout.write(`${renderReencryptionMarkdown(result)}\n`);
  const json = arg('json');
  if (json) writeFileSync(json, `${JSON.stringify(result, null, 2)}\n`);
  if (!result.targetMet) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
