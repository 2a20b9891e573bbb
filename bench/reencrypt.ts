/**
 * The token re-encryption (lambda/token-reencrypt/, docs/token-encryption.md) on a table of
 * `rows` connections whose tokens are all `enc:v1` (the format before key rings, so every one
 * is decrypted and written again as `enc:v2` under the new current key), while one connection
 * updates random oauth_tokens rows back to back, as bench/migrate-bench.ts measures write
 * stalls: the longest of those writes is the longest stall the re-encryption caused.
 *
 *   npm run bench:reencrypt                            # 1,000,000 rows, Data API path
 *   npm run bench:reencrypt -- --rows 100000 --path pg # smaller, node-postgres
 *   npm run bench:reencrypt -- --json out.json         # also the figures as JSON
 *
 * `npm run bench` runs it at 20,000 rows. The Data API path is the deployed one
 * (DataApiDatabase → @aws-sdk/client-rds-data → the Data API emulator → PostgreSQL 17, as the
 * jobs' login); `--path pg` runs the same core on node-postgres. Target: at 1,000,000 rows no
 * write to oauth_tokens waits longer than 1 s for the re-encryption's row locks (the longest
 * write is reported too: on a shared machine it also holds the time the writer was not scheduled).
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { DataApiDatabase, PgDatabase, type Database } from '../lambda/shared/db';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { encryptToken, parseTokenKey, TokenCipher, TokenKeyRing } from '../lambda/shared/token-crypto';
import { runTokenReencryption } from '../lambda/token-reencrypt/core';
import { countKeyUsage } from '../lambda/token-reencrypt/store';
import { startLocalWorld } from '../local/world';

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
  /** Every value read back under the new key as what was stored (a sample of 1,000 rows). */
  readonly verified: number;
  /** The longest lock wait ≤ 1 s and every row re-encrypted. */
  readonly targetMet: boolean;
}

/** Distinct v1 ciphertexts the table's rows cycle through (v1 binds no row, so any row may hold any). */
const POOL = 1000;
/** Characters of each plaintext token (Amazon's are a few hundred). */
const TOKEN_CHARS = 400;

export async function measureReencryption(
  options: { rows?: number; path?: 'data-api' | 'pg'; progress?: (line: string) => void } = {},
): Promise<ReencryptionBenchResult> {
  const rows = options.rows ?? 1_000_000;
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
    const writer = startWriter(world.url, ids);
    const baselineStart = performance.now();
    await new Promise((r) => setTimeout(r, BASELINE_MS));
    const baselineEnd = performance.now();
    const lockWaits = startLockWaitMonitor(world.url);
    progress(
      `  re-encrypting on the ${path === 'pg' ? 'node-postgres' : 'Data API'} path while a writer updates oauth_tokens …`,
    );
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
    await lockWaits.stop();
    await writer.stop();
    const baselineMaxWriteMs = writer.samples
      .filter((x) => x.at >= baselineStart && x.at + x.ms <= baselineEnd)
      .reduce((max, x) => Math.max(max, x.ms), 0);
    if ('close' in db && typeof db.close === 'function') await (db as PgDatabase).close();
    const during = writer.samples.filter((s) => s.at + s.ms >= started && s.at <= ended);
    const maxWriteStallMs = during.reduce((max, s) => Math.max(max, s.ms), 0);

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
      maxWriteStallMs,
      maxLockWaitMs: lockWaits.maxMs(),
      baselineMaxWriteMs,
      verified,
      // What the re-encryption causes is the writes' wait for its row locks; the rest of a slow
      // write is the machine (on a shared one, other processes), reported beside it.
      targetMet: lockWaits.maxMs() <= 1000 && summary.reencrypted === rows,
    };
  } finally {
    await world.close();
  }
}

/** The writer alone before the re-encryption starts. */
const BASELINE_MS = 5_000;
const WRITER = 'reencrypt-bench-writer';

/** One connection updating random oauth_tokens rows back to back; each write's start and latency. */
function startWriter(url: string, ids: readonly string[]) {
  let running = true;
  const samples: Array<{ at: number; ms: number }> = [];
  const loop = withClient({ connectionString: url, application_name: WRITER }, async (c) => {
    let i = 0;
    while (running) {
      const id = ids[i++ % ids.length];
      const t0 = performance.now();
      await c.query('UPDATE oauth_tokens SET updated_at = now() WHERE id = $1', [id]);
      samples.push({ at: t0, ms: performance.now() - t0 });
    }
  });
  return {
    samples,
    async stop() {
      running = false;
      await loop;
    },
  };
}

/** Polls the writer's backend: while it waits for a lock, how long its statement has been waiting (the server's clock). */
function startLockWaitMonitor(url: string) {
  let running = true;
  let max = 0;
  const loop = withClient(url, async (c) => {
    while (running) {
      const { rows } = await c.query<{ ms: number }>(
        `SELECT extract(epoch FROM clock_timestamp() - query_start) * 1000 AS ms FROM pg_stat_activity
          WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [WRITER],
      );
      for (const r of rows) max = Math.max(max, Number(r.ms));
      await new Promise((r) => setTimeout(r, 2));
    }
  });
  return {
    maxMs: () => max,
    async stop() {
      running = false;
      await loop;
    },
  };
}

async function withClient<T>(
  config: string | { connectionString: string; application_name: string },
  use: (c: Client) => Promise<T>,
): Promise<T> {
  const c = new Client(typeof config === 'string' ? { connectionString: config } : config);
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
  return [
    '| re-encryption | path | rows | seconds | rows/s | batches | Data API calls | per 1,000 rows | writes to oauth_tokens meanwhile | longest write stall | of it waiting for a lock | longest write before (writer alone) |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    `| enc:v1 → enc:v2 (new current key) | ${r.path === 'pg' ? 'node-postgres' : 'Data API'} | ${fmt(r.rows)} | ${fmt(r.seconds, 1)} | ${fmt(r.rowsPerSecond)} | ${fmt(r.batches)} | ${fmt(r.dataApiCalls)} | ${fmt(r.dataApiCallsPer1000Rows, 1)} | ${fmt(r.writes)} | ${fmt(r.maxWriteStallMs)} ms | ${fmt(r.maxLockWaitMs)} ms | ${fmt(r.baselineMaxWriteMs)} ms |`,
    '',
    `Target (no write to oauth_tokens waits over 1 s for the re-encryption's locks, every row re-encrypted): ${r.targetMet ? 'met' : 'NOT MET'}; ${r.verified} sampled tokens read back under the new key.`,
  ].join('\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const rows = Number(arg('rows') ?? 1_000_000);
  const path = (arg('path') ?? 'data-api') as 'data-api' | 'pg';
  if (!(rows > 0) || !['data-api', 'pg'].includes(path)) {
    process.stderr.write('Usage: npm run bench:reencrypt -- [--rows <n>] [--path data-api|pg] [--json <file>]\n');
    process.exit(2);
  }
  const result = await measureReencryption({ rows, path, progress: (line) => process.stderr.write(`${line}\n`) });
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
