/**
 * `npm run bench:scale`: the job cores at environment scale, by simulation. Not part of `npm test`
 * (it takes several minutes).
 *
 *   npm run bench:scale                                   # 100,000 users (one token each, 250,000 accounts)
 *   npm run bench:scale -- --users 20000 --json out.json  # smaller; also write the figures as JSON
 *   npm run bench:scale -- --concurrency 16               # the cores' production default
 *
 * Seeds USERS users whose tokens are all due for refresh and whose accounts (1-4 each, 2.5 on
 * average) are all due for sync — the worst case, everything due at once — then runs, as
 * scheduled Lambda invocations would, the token refresh core in invocations of 4 minutes (the
 * function's timeout) until nothing is due, then the account sync core in invocations of 10
 * minutes. The invocations run back to back here; in AWS they start on the schedule (every 5 and
 * 15 minutes). Each invocation gets `remainingTimeMs` counting down from its timeout, so the
 * cores' own stop-and-release logic decides when an invocation ends.
 *
 * Database: the Data API path (DataApiDatabase → @aws-sdk/client-rds-data → the Data API
 * emulator → PostgreSQL 17), the path production uses, so the calls counted are Data API calls
 * and every batch goes through the Data API's request/response limits (1 MiB per response,
 * BatchExecute chunks). node-postgres would be faster here but would hide exactly those costs.
 * Amazon: the fake Amazon with a latency per call (LWA 100 ms, Ads 150 ms by default: assumed,
 * Amazon publishes no latency figures), client rate limits raised out of the way (BENCH_LIMITS)
 * so the figures show what the cores, the database path and latency allow; Amazon's own rate
 * limits are applied on paper in docs/scale.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runAccountSync } from '../lambda/account-sync/core';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import { busyPercentSince, cpuTimes } from './jobs';
import { fmt } from './report';
import { CallTimes, emptyTimes, TimedDatabase, timeCalls } from './timed';
import { startBenchWorld } from './world';

export interface ScaleOptions {
  readonly users: number;
  readonly concurrency: number;
  readonly lwaLatencyMs: number;
  readonly adsLatencyMs: number;
  /** Lambda timeouts (lib/scheduled-jobs.ts). */
  readonly refreshInvocationMs: number;
  readonly syncInvocationMs: number;
  readonly progress: (line: string) => void;
}

export const DEFAULT_SCALE_OPTIONS: ScaleOptions = {
  users: 100_000,
  concurrency: 32,
  lwaLatencyMs: 100,
  adsLatencyMs: 150,
  refreshInvocationMs: 4 * 60_000,
  syncInvocationMs: 10 * 60_000,
  progress: (line) => process.stderr.write(`${line}\n`),
};

export interface InvocationFigures {
  readonly items: number;
  readonly seconds: number;
  readonly released: number;
  readonly dataApiCalls: number;
}

export interface JobScaleFigures {
  readonly job: 'token-refresh' | 'account-sync';
  readonly items: number;
  readonly accounts: number;
  readonly failed: number;
  readonly invocations: readonly InvocationFigures[];
  readonly seconds: number;
  readonly perSecond: number;
  readonly accountsPerSecond: number;
  readonly ceilingPerSecond: number;
  readonly percentOfCeiling: number;
  readonly dataApiCalls: number;
  readonly callsPer1000: number;
  /** Wall time the core spent waiting for the database (calls are sequential within a run). */
  readonly databaseSeconds: number;
  readonly databaseCallMaxMs: number;
  /** Database time per statement (port calls; a batch call may be several BatchExecute requests). */
  readonly statements: ReadonlyArray<{
    readonly statement: string;
    readonly calls: number;
    readonly totalSeconds: number;
    readonly meanMs: number;
    readonly maxMs: number;
  }>;
  /** Mean duration of one Amazon call as the core saw it (fake latency + client + queueing). */
  readonly amazonCallMeanMs: number;
  readonly machineBusyPercent: number;
  /** Seconds one environment needs for 100,000 items at this rate. */
  readonly secondsPer100k: number;
}

export interface ScaleReport {
  readonly measuredAt: string;
  readonly options: Omit<ScaleOptions, 'progress'>;
  readonly seedSeconds: number;
  readonly tokenRefresh: JobScaleFigures;
  readonly accountSync: JobScaleFigures;
}

export async function simulateScale(options: Partial<ScaleOptions> = {}): Promise<ScaleReport> {
  const o = { ...DEFAULT_SCALE_OPTIONS, ...options };
  const measuredAt = new Date().toISOString();
  o.progress('Starting PostgreSQL 17, the Data API emulator and the fake Amazon…');
  const w = await startBenchWorld();
  try {
    await w.reset({ lwaMs: o.lwaLatencyMs, adsMs: o.adsLatencyMs });
    o.progress(`Seeding ${fmt(o.users, 0)} users (tokens due for refresh, accounts due for sync)…`);
    const seedStarted = performance.now();
    const seeded = await w.seedBothDue(o.users);
    if (seeded !== o.users) throw new Error(`Seeded ${seeded} users, expected ${o.users}`);
    await w.admin.query('VACUUM ANALYZE oauth_tokens, user_accounts, users');
    const seedSeconds = (performance.now() - seedStarted) / 1000;
    o.progress(`  seeded in ${seedSeconds.toFixed(0)} s`);

    const tokenRefresh = await simulateJob(
      'token-refresh',
      o.refreshInvocationMs,
      o.lwaLatencyMs,
      async (remainingTimeMs, db, times) => {
        const s = await runTokenRefresh({
          db,
          lwa: timeCalls(w.lwa(), times),
          cipher: w.cipher,
          logger: silentLogger,
          metrics: new MetricTotals(),
          remainingTimeMs,
          settings: { concurrency: o.concurrency },
        });
        return {
          items: s.refreshed,
          accounts: 0,
          failed: s.failed + s.rateLimited,
          released: s.released,
          claimed: s.claimed,
        };
      },
    );
    const accountSync = await simulateJob(
      'account-sync',
      o.syncInvocationMs,
      o.adsLatencyMs,
      async (remainingTimeMs, db, times) => {
        const s = await runAccountSync({
          db,
          ads: timeCalls(w.ads(), times),
          cipher: w.cipher,
          logger: silentLogger,
          metrics: new MetricTotals(),
          remainingTimeMs,
          settings: { concurrency: o.concurrency },
        });
        return {
          items: s.usersSynced,
          accounts: s.accountsSynced,
          failed: s.usersFailed,
          released: s.usersReleased,
          claimed: s.usersClaimed,
        };
      },
    );
    return {
      measuredAt,
      options: { ...o, progress: undefined } as Omit<ScaleOptions, 'progress'>,
      seedSeconds,
      tokenRefresh,
      accountSync,
    };
  } finally {
    await w.close();
  }

  async function simulateJob(
    job: 'token-refresh' | 'account-sync',
    invocationMs: number,
    latencyMs: number,
    invoke: (
      remainingTimeMs: () => number,
      db: TimedDatabase,
      amazonTimes: CallTimes,
    ) => Promise<{ items: number; accounts: number; failed: number; released: number; claimed: number }>,
  ): Promise<JobScaleFigures> {
    o.progress(
      `${job}: invocations of ${invocationMs / 60_000} min, concurrency ${o.concurrency}, Amazon latency ${latencyMs} ms…`,
    );
    const db = new TimedDatabase(w.dataApi());
    const amazonTimes = emptyTimes();
    const invocations: InvocationFigures[] = [];
    const cpu0 = cpuTimes();
    const started = performance.now();
    let items = 0;
    let accounts = 0;
    let failed = 0;
    for (;;) {
      const invocationStarted = performance.now();
      const callsBefore = db.callCounts().total;
      const r = await invoke(() => invocationMs - (performance.now() - invocationStarted), db, amazonTimes);
      const inv = {
        items: r.items,
        seconds: (performance.now() - invocationStarted) / 1000,
        released: r.released,
        dataApiCalls: db.callCounts().total - callsBefore,
      };
      if (r.claimed === 0) break; // nothing was due: the previous invocation finished the work
      invocations.push(inv);
      items += r.items;
      accounts += r.accounts;
      failed += r.failed;
      o.progress(
        `  invocation ${invocations.length}: ${fmt(r.items, 0)} in ${inv.seconds.toFixed(0)} s (${fmt(r.items / inv.seconds, 1)}/s), ${r.released} released, ${inv.dataApiCalls} Data API calls; ${fmt(items, 0)} of ${fmt(o.users, 0)} done`,
      );
      if (failed > 0) throw new Error(`${job}: ${failed} items failed; the simulation expects none`);
    }
    const seconds = (performance.now() - started) / 1000;
    if (items !== o.users) throw new Error(`${job}: processed ${items}, expected ${o.users}`);
    const perSecond = items / seconds;
    const ceilingPerSecond = o.concurrency / (latencyMs / 1000);
    const dataApiCalls = db.callCounts().total;
    return {
      job,
      items,
      accounts,
      failed,
      invocations,
      seconds,
      perSecond,
      accountsPerSecond: accounts / seconds,
      ceilingPerSecond,
      percentOfCeiling: (perSecond / ceilingPerSecond) * 100,
      dataApiCalls,
      callsPer1000: (dataApiCalls / items) * 1000,
      databaseSeconds: db.times.totalMs / 1000,
      databaseCallMaxMs: db.times.maxMs,
      statements: [...db.byStatement]
        .map(([statement, t]) => ({
          statement,
          calls: t.calls,
          totalSeconds: t.totalMs / 1000,
          meanMs: t.calls ? t.totalMs / t.calls : 0,
          maxMs: t.maxMs,
        }))
        .sort((a, b) => b.totalSeconds - a.totalSeconds),
      amazonCallMeanMs: amazonTimes.calls ? amazonTimes.totalMs / amazonTimes.calls : 0,
      machineBusyPercent: busyPercentSince(cpu0),
      secondsPer100k: (100_000 / items) * seconds,
    };
  }
}

export function renderScaleMarkdown(r: ScaleReport): string {
  const o = r.options;
  const lines = [
    `Measured ${r.measuredAt} by \`npm run bench:scale\`: ${fmt(o.users, 0)} users (one token each, ${fmt(r.accountSync.accounts, 0)} accounts), everything due at once; concurrency ${o.concurrency}; fake Amazon latency LWA ${o.lwaLatencyMs} ms, Ads ${o.adsLatencyMs} ms; Data API path; client rate limits raised out of the way. Seeding took ${fmt(r.seedSeconds, 0)} s (not counted).`,
    '',
    '| Job | Items | Invocations (timeout) | Wall time | Throughput | % of concurrency ÷ latency | Data API calls | Calls per 1,000 | Time waiting for the database | Slowest database call | Mean Amazon call | Machine CPU busy | Time per 100,000 |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const [j, timeoutMin] of [
    [r.tokenRefresh, o.refreshInvocationMs / 60_000],
    [r.accountSync, o.syncInvocationMs / 60_000],
  ] as const) {
    const sync = j.job === 'account-sync';
    lines.push(
      `| ${j.job} | ${fmt(j.items, 0)} ${sync ? `users (${fmt(j.accounts, 0)} accounts)` : 'tokens'} | ${j.invocations.length} (${timeoutMin} min) | ${fmt(j.seconds, 0)} s | ${fmt(j.perSecond, 1)} ${sync ? `users/s (${fmt(j.accountsPerSecond, 1)} accounts/s)` : 'tokens/s'} | ${fmt(j.percentOfCeiling, 0)}% of ${fmt(j.ceilingPerSecond, 0)}/s | ${fmt(j.dataApiCalls, 0)} | ${fmt(j.callsPer1000, 1)} | ${fmt(j.databaseSeconds, 0)} s (${fmt((j.databaseSeconds / j.seconds) * 100, 0)}%) | ${fmt(j.databaseCallMaxMs, 0)} ms | ${fmt(j.amazonCallMeanMs, 0)} ms | ${fmt(j.machineBusyPercent, 0)}% | ${fmt(j.secondsPer100k / 60, 1)} min |`,
    );
  }
  lines.push('');
  lines.push('', '| Job | Statement (port call) | Calls | Total | Mean | Slowest |', '|---|---|---:|---:|---:|---:|');
  for (const j of [r.tokenRefresh, r.accountSync]) {
    for (const st of j.statements) {
      lines.push(
        `| ${j.job} | \`${st.statement.replace(/\|/g, '\\|')}…\` | ${fmt(st.calls, 0)} | ${fmt(st.totalSeconds, 1)} s | ${fmt(st.meanMs, 0)} ms | ${fmt(st.maxMs, 0)} ms |`,
      );
    }
  }
  lines.push('');
  for (const j of [r.tokenRefresh, r.accountSync]) {
    lines.push(
      `${j.job} invocations: ${j.invocations.map((i) => `${fmt(i.items, 0)} in ${fmt(i.seconds, 0)} s${i.released ? ` (${i.released} released)` : ''}`).join('; ')}.`,
    );
  }
  return lines.join('\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const num = (name: string) => (arg(name) === undefined ? undefined : Number(arg(name)));
  const options: Partial<ScaleOptions> = Object.fromEntries(
    Object.entries({
      users: num('users'),
      concurrency: num('concurrency'),
      lwaLatencyMs: num('lwa-latency'),
      adsLatencyMs: num('ads-latency'),
    }).filter(([, v]) => v !== undefined),
  );
  const report = await simulateScale(options);
  process.stdout.write(`${renderScaleMarkdown(report)}\n`);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const resultsDir = join(__dirname, 'results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'scale.json'), text);
  const json = arg('json');
  if (json) writeFileSync(json, text);
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
