/**
 * The benchmark's code works and its figures come from real runs: `runBench` at tiny sizes
 * (the same code `npm run bench` runs), then every figure is checked against the counts it is
 * computed from. No assertion on speed: tests check behaviour, never wall-clock time.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JobMeasurement } from '../../bench/jobs';
import { BenchReport, fmt, renderMarkdown } from '../../bench/report';
import { readMigrationFigures, runBench, writeJsonReport } from '../../bench/run';
import { expectedAccountsFor } from '../../bench/jobs';

const LATENCY_MS = 10;
const NAIVE_ITEMS = 6;
const BUDGET_RATE = 20;
let report: BenchReport;

beforeAll(async () => {
  report = await runBench({
    latencyMs: LATENCY_MS,
    concurrencies: [1, 32],
    secondsAtCeiling: 0.05, // 5 items at concurrency 1, 160 at 32
    naiveItems: NAIVE_ITEMS,
    migrationFile: join(mkdtempSync(join(tmpdir(), 'bench-')), 'missing.json'),
    bundles: false, // test/bench/bundles.test.ts
    budgetRatePerSecond: BUDGET_RATE,
    budgetSeconds: 0.2, // 12 items per job, 3 regions at 20/s
    budgetCostRates: [BUDGET_RATE],
    budgetCostWorkers: [1, 4],
    budgetCostSeconds: 0.5, // 10 requests (12 with 4 workers: 3 each)
    progress: () => undefined,
  });
}, 60_000);

const run = (job: JobMeasurement['job'], way: JobMeasurement['way'], concurrency = 1) => {
  const r = report.runs.find((x) => x.job === job && x.way === way && x.concurrency === concurrency);
  if (!r) throw new Error(`no ${job} ${way} run at ${concurrency}`);
  return r;
};

// The work each run was given: 5 items at concurrency 1 and 160 at 32 (secondsAtCeiling above).
const GIVEN = [
  ['token-refresh', 'core', 1, 5],
  ['token-refresh', 'core', 32, 160],
  ['token-refresh', 'naive', 1, NAIVE_ITEMS],
  ['account-sync', 'core', 1, 5],
  ['account-sync', 'core', 32, 160],
  ['account-sync', 'naive', 1, NAIVE_ITEMS],
];

test('every run did the work it was given, and its rates are computed from it', () => {
  expect(report.runs.map((r) => [r.job, r.way, r.concurrency, r.items])).toEqual(GIVEN);
  for (const r of report.runs) {
    expect(r.amazonCalls).toBe(r.items); // one real Amazon call per token or user
    expect(r.perSecond).toBeCloseTo(r.items / r.seconds, 6);
    expect(r.ceilingPerSecond).toBeCloseTo(r.concurrency / (LATENCY_MS / 1000), 6);
    expect(r.percentOfCeiling).toBeCloseTo((r.perSecond / r.ceilingPerSecond) * 100, 6);
    expect(r.seconds).toBeGreaterThan(0);
    expect(r.machineBusyPercent).toBeGreaterThanOrEqual(0);
    expect(r.machineBusyPercent).toBeLessThanOrEqual(100);
  }
  for (const r of report.runs.filter((x) => x.job === 'account-sync')) {
    expect(r.accounts).toBe(expectedAccountsFor(r.items));
    expect(r.accountsPerSecond).toBeCloseTo(r.accounts / r.seconds, 6);
  }
});

test('Data API calls are the calls the emulator received, and calls per 1,000 follow from them', () => {
  for (const r of report.runs) {
    expect(r.dataApiCalls).toBeGreaterThan(0);
    expect(r.emulatorCalls).toBe(r.dataApiCalls);
    expect(r.callsPer1000).toBeCloseTo((r.dataApiCalls / r.items) * 1000, 6);
  }
  // The cores batch: a run of 160 costs a handful of calls, not one per item.
  expect(run('token-refresh', 'core', 32).dataApiCalls).toBeLessThan(10);
  expect(run('account-sync', 'core', 32).dataApiCalls).toBeLessThan(10);
  // The naive way is row by row: token refresh = one SELECT and one UPDATE per token, plus the
  // SELECT that finds nothing left; account sync = SELECT, one upsert per account, the history
  // row (opened, then closed, as the jobs' login may write it) and the schedule UPDATE per user,
  // plus the last SELECT.
  expect(run('token-refresh', 'naive').dataApiCalls).toBe(2 * NAIVE_ITEMS + 1);
  const naiveSync = run('account-sync', 'naive');
  expect(naiveSync.dataApiCalls).toBe(4 * NAIVE_ITEMS + naiveSync.accounts + 1);
});

test('ratios are taken against the naive run of the same job, and every target is checked', () => {
  for (const job of ['token-refresh', 'account-sync'] as const) {
    const naive = run(job, 'naive');
    const core = run(job, 'core', 32);
    expect(naive.timesNaive).toBeCloseTo(1, 6);
    expect(core.timesNaive).toBeCloseTo(core.perSecond / naive.perSecond, 6);
  }
  expect(report.targets.map((t) => t.name)).toEqual([
    'token-refresh: throughput at concurrency 32',
    'token-refresh: Data API calls per 1,000 tokens (concurrency 32 run)',
    'token-refresh: throughput against the naive baseline',
    'account-sync: throughput at concurrency 32',
    'account-sync: Data API calls per 1,000 users (concurrency 32 run)',
    'account-sync: throughput against the naive baseline',
    'shared budget at 20/s, 1 worker(s): database calls per 1,000 requests',
    'shared budget at 20/s, 4 worker(s): database calls per 1,000 requests',
  ]);
  const calls = report.targets[1];
  expect(calls.met).toBe(run('token-refresh', 'core', 32).callsPer1000 <= 30);
  const ceiling = report.targets[3];
  expect(ceiling.met).toBe(run('account-sync', 'core', 32).percentOfCeiling >= 80);
  expect(report.migration).toBeNull();
});

test('the table shows every run and every target', () => {
  const markdown = renderMarkdown(report);
  expect(markdown).toContain('| Job | Way | Concurrency |');
  expect(markdown.match(/^\| (token-refresh|account-sync) \| (job core|naive)/gm)).toHaveLength(report.runs.length);
  for (const t of report.targets)
    expect(markdown).toContain(`| ${t.name} | ${t.measured} | ${t.target} | ${t.met ? 'met' : '**NOT MET**'} |`);
  expect(markdown).toContain('bench/results/migrate.json not found');
});

test('`--json` writes the measured figures, the ones the table shows', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'bench-')), 'bench.json');
  writeJsonReport(report, file);
  const json = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
  expect(json.latencyMs).toBe(LATENCY_MS);
  expect(json.runs.map((r) => [r.job, r.way, r.concurrency, r.items])).toEqual(GIVEN);
  const markdown = renderMarkdown(report);
  for (const r of json.runs) {
    // JSON turns Infinity and NaN into null: every figure must have survived as a number.
    for (const [key, value] of Object.entries(r))
      if (key !== 'timesNaive' && typeof value !== 'string') expect([key, Number.isFinite(value)]).toEqual([key, true]);
    expect(r.amazonCalls).toBe(r.items);
    expect(r.emulatorCalls).toBe(r.dataApiCalls);
    expect(r.callsPer1000).toBeCloseTo((r.dataApiCalls / r.items) * 1000, 6);
    expect(r.ceilingPerSecond).toBeCloseTo(r.concurrency / (LATENCY_MS / 1000), 6);
    expect(r.percentOfCeiling).toBeCloseTo((r.items / r.seconds / r.ceilingPerSecond) * 100, 6);
    if (r.job === 'account-sync') expect(r.accounts).toBe(expectedAccountsFor(r.items));
    // The row of the same run in the table shows the same counts.
    expect(markdown).toContain(
      `| ${r.job} | ${r.way === 'core' ? 'job core (batched)' : 'naive (row by row)'} | ${r.concurrency} | ${fmt(r.items, 0)} `,
    );
    expect(markdown).toMatch(
      new RegExp(
        `\\| ${fmt(r.percentOfCeiling, 0)}% \\| ${fmt(r.dataApiCalls, 0)} \\| ${fmt(r.callsPer1000, 1).replace('.', '\\.')} \\|`,
      ),
    );
  }
  const at32 = (job: string) => json.runs.find((r) => r.job === job && r.way === 'core' && r.concurrency === 32);
  const callTarget = json.targets.find((t) => t.name.startsWith('token-refresh: Data API calls per 1,000'));
  expect(callTarget).toMatchObject({
    measured: fmt(at32('token-refresh')!.callsPer1000, 1),
    met: at32('token-refresh')!.callsPer1000 <= 30,
  });
  expect(json.targets.map((t) => t.name)).toEqual(report.targets.map((t) => t.name));
});

test('the shared-budget runs did their work through the budget, and their figures follow from the counts', () => {
  expect(report.budget.map((b) => [b.job, b.ratePerSecond, b.regions])).toEqual([
    ['token-refresh', BUDGET_RATE, 3],
    ['account-sync', BUDGET_RATE, 3],
  ]);
  for (const b of report.budget) {
    // Every item went through Amazon (12 given; a 429 would have made one fail and shown here).
    expect(b.items + b.refused).toBe(12);
    expect(b.limitPerSecond).toBe(BUDGET_RATE * 3);
    expect(b.perSecond).toBeCloseTo(b.items / b.seconds, 6);
    expect(b.percentOfLimit).toBeCloseTo((b.perSecond / b.limitPerSecond) * 100, 6);
    expect(Object.keys(b.busiestSecond)).toEqual(['NA', 'EU', 'FE']);
    // The seeded connections are spread over the regions, and only this run's calls are counted.
    for (const n of Object.values(b.busiestSecond)) expect(n).toBeGreaterThanOrEqual(1);
    expect(Object.values(b.busiestSecond).reduce((a, n) => a + n, 0)).toBeLessThanOrEqual(12 + b.refused);
    // The budget reserves slots in the database: at least one call, never more than one per request.
    expect(b.budgetDataApiCalls).toBeGreaterThan(0);
    expect(b.budgetDataApiCalls).toBeLessThanOrEqual(b.items + b.refused + 3);
    expect(b.budgetCallsPer1000).toBeCloseTo((b.budgetDataApiCalls / b.items) * 1000, 6);
    expect(b.jobDataApiCalls).toBeGreaterThan(0);
  }
  const markdown = renderMarkdown(report);
  expect(markdown).toContain('| Job, paced by the shared rate budget |');
  expect(markdown).toContain(`| token-refresh | ${BUDGET_RATE}/s | 16 | ${report.budget[0].items} tokens |`);
});

test('the budget alone: its database calls are its reservations and releases, per 1,000 requests as counted', () => {
  expect(report.budgetCost.map((c) => [c.ratePerSecond, c.workers, c.requests])).toEqual([
    [BUDGET_RATE, 1, 10],
    [BUDGET_RATE, 4, 12],
  ]);
  for (const c of report.budgetCost) {
    expect(c.databaseCalls).toBe(c.reservations + c.releases);
    expect(c.reservations).toBeGreaterThanOrEqual(c.workers);
    expect(c.refusals).toBeLessThan(c.reservations);
    expect(c.callsPer1000).toBeCloseTo((c.databaseCalls / c.requests) * 1000, 6);
    expect(c.busiestSecond).toBeLessThanOrEqual(BUDGET_RATE);
  }
  const markdown = renderMarkdown(report);
  expect(markdown).toContain('| Shared budget alone |');
  expect(markdown).toContain(`| ${BUDGET_RATE}/s | 4 | 12 |`);
  expect(report.targets.filter((t) => t.name.startsWith('shared budget at'))).toHaveLength(2);
});

test('migration figures are read from the migrations benchmark file when it exists', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'bench-')), 'migrate.json');
  writeFileSync(
    file,
    JSON.stringify({
      rows: 1000,
      totalSeconds: 2,
      seedSeconds: 1,
      writes: {},
      maxStallMs: { users: 12, oauth_tokens: 40, user_accounts: 3 },
      steps: [
        { name: '0001_baseline', seconds: 1.5, locks: { users: 'AccessExclusiveLock' }, maxStallMs: { users: 12 } },
      ],
      targetMet: true,
    }),
  );
  const migration = readMigrationFigures(file);
  expect(migration).toMatchObject({ rows: 1000, targetMet: true });
  const markdown = renderMarkdown({ ...report, migration });
  expect(markdown).toContain(
    '| migration | 0001_baseline | – | 1,000 rows/table | 1.5 | longest write stall 12 ms (users AccessExclusiveLock) |',
  );
});
