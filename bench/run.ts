/**
 * `npm run bench`: the performance table, measured in this run on this machine.
 *
 *   npm run bench                     # the table (a few minutes)
 *   npm run bench -- --json out.json  # also write the same figures as JSON
 *   npm run bench -- --quick          # tiny sizes, to try the pipeline (figures not meaningful)
 *
 * First the Lambda bundles (bench/bundles.ts): the prod stack's index.js sizes and module load
 * times. Then token refresh and account sync, each at concurrency 1, 8 and 32, run through the real job
 * cores on the Data API path (DataApiDatabase → @aws-sdk/client-rds-data → the Data API
 * emulator → PostgreSQL 17) against the fake Amazon answering after `--latency` ms (100);
 * then the naive baseline (bench/naive.ts) of both jobs; then the migration figures from
 * bench/results/migrate.json when `npm run bench:migrate` has written it. Each concurrency
 * level gets enough items to run `--seconds` (12) at its ceiling, concurrency ÷ latency.
 * Last, each job paced as in AWS by the shared rate budget in the database at 10 requests/s per
 * region, with the fake Amazon enforcing that limit: the rate Amazon saw and the budget's own
 * Data API calls. Then the budget alone (bench/budget-cost.ts) at 10 and 80 requests/s with 1, 4
 * and 16 workers: its database calls per 1,000 requests. After the table: the accounts API, its
 * connect flow, the event publisher, and the token re-encryption at 20,000 rows
 * (bench/reencrypt.ts; `npm run bench:reencrypt` runs it at 1,000,000).
 * The Amazon clients get limits far above the ceiling (BENCH_LIMITS) so the client-side rate
 * limiter is not what is measured; production's limits are discussed in the README's "Scale" section.
 */
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  BudgetMeasurement,
  JobMeasurement,
  measureAccountSync,
  measureNaiveAccountSync,
  measureNaiveTokenRefresh,
  measureTokenRefresh,
  measureWithSharedBudget,
} from './jobs';
import { measureAccountsApi, measureConnectFlow, renderApiMarkdown, renderConnectFlowMarkdown } from './api';
import { measureBundles } from './bundles';
import { BudgetCostMeasurement, measureBudgetCosts } from './budget-cost';
import { measureEventPublisher, renderEventPublisherMarkdown } from './events';
import { measureReencryption, renderReencryptionMarkdown } from './reencrypt';
import { BenchReport, buildReport, MigrationFigures, renderMarkdown } from './report';
import { startBenchWorld } from './world';

export interface BenchOptions {
  /** Fake Amazon latency per call. @default 100 */
  readonly latencyMs: number;
  /** Concurrency levels of the job cores. @default [1, 8, 32] */
  readonly concurrencies: readonly number[];
  /** Seconds each level should run at its ceiling (sets its item count). @default 12 */
  readonly secondsAtCeiling: number;
  /** Rows of each naive baseline run. @default 100 */
  readonly naiveItems: number;
  /** Where bench/migrate-bench.ts leaves its figures. */
  readonly migrationFile: string;
  /** Synthesize the prod stack and measure the Lambda bundles (bench/bundles.ts). @default true */
  readonly bundles: boolean;
  /**
   * The shared-budget runs: Amazon's limit per region (the prod stack's LWA limit; the same for
   * Ads here) and how many seconds of work at that limit each job gets. @default 10 and 10
   */
  readonly budgetRatePerSecond: number;
  readonly budgetSeconds: number;
  /**
   * The budget alone (bench/budget-cost.ts): its rates, worker counts and seconds of requests
   * at each rate. @default [10, 80], [1, 4, 16], 20
   */
  readonly budgetCostRates: readonly number[];
  readonly budgetCostWorkers: readonly number[];
  readonly budgetCostSeconds: number;
  /** Progress lines (stderr). */
  readonly progress: (line: string) => void;
}

export const DEFAULT_OPTIONS: BenchOptions = {
  latencyMs: 100,
  concurrencies: [1, 8, 32],
  secondsAtCeiling: 12,
  naiveItems: 100,
  migrationFile: join(__dirname, 'results', 'migrate.json'),
  bundles: true,
  budgetRatePerSecond: 10,
  budgetSeconds: 10,
  budgetCostRates: [10, 80],
  budgetCostWorkers: [1, 4, 16],
  budgetCostSeconds: 20,
  progress: (line) => process.stderr.write(`${line}\n`),
};

/** Runs every measurement once and returns the report (the table and the JSON come from it). */
export async function runBench(options: Partial<BenchOptions> = {}): Promise<BenchReport> {
  const o = { ...DEFAULT_OPTIONS, ...options };
  const started = performance.now();
  const loadAverageBefore = loadavg();
  const measuredAt = new Date().toISOString();
  // First, while nothing else of the bench runs: module load times are sensitive to load.
  const bundles = o.bundles ? measureBundles({ progress: o.progress }) : null;
  o.progress('Starting PostgreSQL 17, the Data API emulator and the fake Amazon…');
  const world = await startBenchWorld();
  const runs: JobMeasurement[] = [];
  const budget: BudgetMeasurement[] = [];
  const budgetCost: BudgetCostMeasurement[] = [];
  const note = (r: JobMeasurement) =>
    o.progress(
      `  ${r.job} ${r.way} c=${r.concurrency}: ${r.items} in ${r.seconds.toFixed(1)} s = ${r.perSecond.toFixed(1)}/s (${r.percentOfCeiling.toFixed(0)}% of ceiling), ${r.dataApiCalls} Data API calls, machine CPU ${r.machineBusyPercent.toFixed(0)}% busy`,
    );
  try {
    const itemsFor = (c: number) => Math.max(4, Math.ceil((c / (o.latencyMs / 1000)) * o.secondsAtCeiling));
    for (const concurrency of o.concurrencies) {
      o.progress(`Token refresh, concurrency ${concurrency}…`);
      runs.push(
        await measureTokenRefresh(world, { concurrency, items: itemsFor(concurrency), latencyMs: o.latencyMs }),
      );
      note(runs[runs.length - 1]);
    }
    for (const concurrency of o.concurrencies) {
      o.progress(`Account sync, concurrency ${concurrency}…`);
      runs.push(await measureAccountSync(world, { concurrency, items: itemsFor(concurrency), latencyMs: o.latencyMs }));
      note(runs[runs.length - 1]);
    }
    o.progress('Naive token refresh…');
    runs.push(await measureNaiveTokenRefresh(world, { items: o.naiveItems, latencyMs: o.latencyMs }));
    note(runs[runs.length - 1]);
    o.progress('Naive account sync…');
    runs.push(await measureNaiveAccountSync(world, { items: o.naiveItems, latencyMs: o.latencyMs }));
    note(runs[runs.length - 1]);
    for (const job of ['token-refresh', 'account-sync'] as const) {
      o.progress(`${job} paced by the shared rate budget at ${o.budgetRatePerSecond}/s per region…`);
      const b = await measureWithSharedBudget(world, {
        job,
        ratePerSecond: o.budgetRatePerSecond,
        concurrency: 16, // the cores' production default
        items: Math.max(3, Math.round(o.budgetRatePerSecond * 3 * o.budgetSeconds)),
        latencyMs: o.latencyMs,
      });
      budget.push(b);
      o.progress(
        `  ${b.items} in ${b.seconds.toFixed(1)} s = ${b.perSecond.toFixed(1)}/s (${b.percentOfLimit.toFixed(0)}% of ${b.limitPerSecond}/s), busiest second ${JSON.stringify(b.busiestSecond)}, ${b.refused} refused, Data API calls ${b.jobDataApiCalls} + ${b.budgetDataApiCalls} for the budget`,
      );
    }
    budgetCost.push(
      ...(await measureBudgetCosts(world, {
        rates: o.budgetCostRates,
        workers: o.budgetCostWorkers,
        seconds: o.budgetCostSeconds,
        progress: o.progress,
      })),
    );
  } finally {
    await world.close();
  }
  const order = (r: JobMeasurement) => (r.job === 'token-refresh' ? 0 : 2) + (r.way === 'naive' ? 1 : 0);
  return buildReport({
    measuredAt,
    machine: { cpus: cpus().length, node: process.versions.node, loadAverageBefore, loadAverageAfter: loadavg() },
    latencyMs: o.latencyMs,
    runs: [...runs].sort((a, b) => order(a) - order(b) || a.concurrency - b.concurrency),
    migration: readMigrationFigures(o.migrationFile),
    bundles,
    budget,
    budgetCost,
    totalSeconds: (performance.now() - started) / 1000,
  });
}

export function readMigrationFigures(file: string): MigrationFigures | null {
  if (!existsSync(file)) return null;
  const figures = JSON.parse(readFileSync(file, 'utf8')) as MigrationFigures;
  return { ...figures, measuredAt: statSync(file).mtime.toISOString() };
}

/** `--json FILE`: the report's figures, the same ones the table shows. */
export function writeJsonReport(report: BenchReport, file: string): void {
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const options: Partial<BenchOptions> = quick
    ? { secondsAtCeiling: 1, naiveItems: 8, budgetSeconds: 1, budgetCostSeconds: 1 }
    : {};
  const latency = arg('latency');
  const report = await runBench({ ...options, ...(latency ? { latencyMs: Number(latency) } : {}) });
  process.stdout.write(`${renderMarkdown(report)}\n`);
  process.stderr.write('Accounts API (GET /v1/accounts, 50 items, Data API path)…\n');
  const api = await measureAccountsApi({
    ...(quick ? { users: 4, accountsPerUser: 60, requests: 40 } : {}),
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`\n${renderApiMarkdown(api)}\n`);
  process.stderr.write('Accounts API connect flow (session → consent → connect, Data API path, fake Amazon)…\n');
  const connectFlow = await measureConnectFlow({
    connects: quick ? 10 : 100,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`\n${renderConnectFlowMarkdown(connectFlow)}\n`);
  process.stderr.write('Event publisher (outbox → PutEvents, Data API path)…\n');
  const events = await measureEventPublisher({
    connections: quick ? 30 : 500,
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`\n${renderEventPublisherMarkdown(events)}\n`);
  process.stderr.write(
    'Token re-encryption (enc:v1 → enc:v2 under a new key, Data API path, a writer on oauth_tokens)…\n',
  );
  const reencryption = await measureReencryption({
    rows: quick ? 2_000 : 20_000,
    path: 'data-api',
    progress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`\n${renderReencryptionMarkdown(reencryption)}\n`);
  const json = arg('json');
  if (json) {
    writeJsonReport(report, json);
    process.stderr.write(`Figures written to ${json}\n`);
  }
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
