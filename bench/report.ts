/**
 * Turns one benchmark run's measurements into the markdown table `npm run bench` prints and
 * the JSON `--json FILE` writes: ratios against the naive baseline and the targets checked.
 */
import { type BundleFigures, renderBundles } from './bundles';
import type { BudgetMeasurement, JobMeasurement, JobName } from './jobs';
import type { BudgetCostMeasurement } from './budget-cost';

/** bench/migrate-bench.ts's result file (`npm run bench:migrate`), when it exists. */
export interface MigrationFigures {
  readonly rows: number;
  readonly totalSeconds: number;
  readonly maxStallMs: Record<string, number>;
  readonly steps: ReadonlyArray<{
    name: string;
    seconds: number;
    locks: Record<string, string>;
    maxStallMs: Record<string, number>;
  }>;
  readonly targetMet: boolean;
  /** When the file was written (its mtime). */
  readonly measuredAt?: string;
}

export interface Target {
  readonly name: string;
  readonly measured: string;
  readonly target: string;
  readonly met: boolean;
}

export interface BenchReport {
  readonly measuredAt: string;
  readonly machine: {
    readonly cpus: number;
    readonly node: string;
    readonly loadAverageBefore: number[];
    readonly loadAverageAfter: number[];
  };
  readonly latencyMs: number;
  readonly runs: ReadonlyArray<JobMeasurement & { readonly timesNaive: number | null }>;
  readonly targets: readonly Target[];
  readonly migration: MigrationFigures | null;
  /** The Lambda bundles' sizes and load times (bench/bundles.ts), when measured. */
  readonly bundles: readonly BundleFigures[] | null;
  /** The jobs paced by the shared rate budget at production-like limits. */
  readonly budget: readonly BudgetMeasurement[];
  /** The budget alone: its database calls per 1,000 requests with 1 or many invocations. */
  readonly budgetCost: readonly BudgetCostMeasurement[];
  readonly totalSeconds: number;
}

export const TARGETS = {
  percentOfCeilingAt32: 80,
  maxCallsPer1000: 30,
  minTimesNaive: 10,
  /** The shared budget's database calls per 1,000 Amazon requests (0.05 per request). */
  maxBudgetCallsPer1000: 50,
} as const;

export function buildReport(o: {
  measuredAt: string;
  machine: BenchReport['machine'];
  latencyMs: number;
  runs: readonly JobMeasurement[];
  migration: MigrationFigures | null;
  bundles?: readonly BundleFigures[] | null;
  budget?: readonly BudgetMeasurement[];
  budgetCost?: readonly BudgetCostMeasurement[];
  totalSeconds: number;
}): BenchReport {
  const naive = (job: JobName) => o.runs.find((r) => r.job === job && r.way === 'naive');
  const runs = o.runs.map((r) => {
    const base = naive(r.job);
    return { ...r, timesNaive: base ? r.perSecond / base.perSecond : null };
  });
  const targets: Target[] = [];
  for (const job of ['token-refresh', 'account-sync'] as const) {
    const unit = job === 'token-refresh' ? 'tokens' : 'users';
    const at32 = runs.find((r) => r.job === job && r.way === 'core' && r.concurrency === 32);
    if (!at32) continue;
    targets.push({
      name: `${job}: throughput at concurrency 32`,
      measured: `${fmt(at32.perSecond, 1)} ${unit}/s = ${fmt(at32.percentOfCeiling, 0)}% of ${fmt(at32.ceilingPerSecond, 0)}/s`,
      target: `≥ ${TARGETS.percentOfCeilingAt32}% of concurrency ÷ latency`,
      met: at32.percentOfCeiling >= TARGETS.percentOfCeilingAt32,
    });
    targets.push({
      name: `${job}: Data API calls per 1,000 ${unit} (concurrency 32 run)`,
      measured: fmt(at32.callsPer1000, 1),
      target: `≤ ${TARGETS.maxCallsPer1000}`,
      met: at32.callsPer1000 <= TARGETS.maxCallsPer1000,
    });
    if (at32.timesNaive !== null) {
      targets.push({
        name: `${job}: throughput against the naive baseline`,
        measured: `${fmt(at32.timesNaive, 1)}×`,
        target: `≥ ${TARGETS.minTimesNaive}×`,
        met: at32.timesNaive >= TARGETS.minTimesNaive,
      });
    }
  }
  if (o.migration) {
    const worst = Math.max(...Object.values(o.migration.maxStallMs));
    targets.push({
      name: `migrations on ${fmt(o.migration.rows, 0)} rows per table: longest write stall`,
      measured: `${fmt(worst, 0)} ms`,
      target: '< 1,000 ms',
      met: o.migration.targetMet && worst < 1000,
    });
  }
  for (const b of o.bundles ?? []) {
    targets.push({
      name: `${b.name} Lambda bundle: index.js, minified`,
      measured: `${fmt(b.bytes / 1000, 0)} KB`,
      target: `≤ ${fmt(b.maxBytes / 1000, 0)} KB`,
      met: b.bytes <= b.maxBytes,
    });
  }
  for (const c of o.budgetCost ?? []) {
    targets.push({
      name: `shared budget at ${fmt(c.ratePerSecond, 0)}/s, ${c.workers} worker(s): database calls per 1,000 requests`,
      measured: fmt(c.callsPer1000, 1),
      target: `≤ ${TARGETS.maxBudgetCallsPer1000}`,
      met: c.callsPer1000 <= TARGETS.maxBudgetCallsPer1000,
    });
  }
  const bundles = o.bundles ?? null;
  return {
    measuredAt: o.measuredAt,
    machine: o.machine,
    latencyMs: o.latencyMs,
    runs,
    targets,
    migration: o.migration,
    bundles,
    budget: o.budget ?? [],
    budgetCost: o.budgetCost ?? [],
    totalSeconds: o.totalSeconds,
  };
}

/** The markdown `npm run bench` prints. */
export function renderMarkdown(report: BenchReport): string {
  const lines: string[] = [];
  const m = report.machine;
  lines.push(
    `Measured ${report.measuredAt} in one run of \`npm run bench\` (${fmt(report.totalSeconds, 0)} s) on ${m.cpus} CPUs, Node ${m.node}; load average ${m.loadAverageBefore.map((v) => v.toFixed(2)).join(' ')} before, ${m.loadAverageAfter.map((v) => v.toFixed(2)).join(' ')} after.`,
    `Fake Amazon latency ${report.latencyMs} ms per call; Data API path (DataApiDatabase → real SDK client → emulator → PostgreSQL 17); client rate limits raised so the limiter is not the bottleneck.`,
    '',
    '| Job | Way | Concurrency | Items | Seconds | Throughput | Ceiling (concurrency ÷ latency) | % of ceiling | Data API calls | Calls per 1,000 | × naive | Machine CPU busy |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const r of report.runs) {
    const sync = r.job === 'account-sync';
    const unit = sync ? 'users' : 'tokens';
    lines.push(
      [
        '',
        r.job,
        r.way === 'core' ? 'job core (batched)' : 'naive (row by row)',
        r.concurrency,
        sync ? `${fmt(r.items, 0)} users (${fmt(r.accounts, 0)} accounts)` : `${fmt(r.items, 0)} tokens`,
        fmt(r.seconds, 1),
        sync
          ? `${fmt(r.perSecond, 1)} users/s (${fmt(r.accountsPerSecond, 1)} accounts/s)`
          : `${fmt(r.perSecond, 1)} tokens/s`,
        `${fmt(r.ceilingPerSecond, 0)} ${unit}/s`,
        `${fmt(r.percentOfCeiling, 0)}%`,
        fmt(r.dataApiCalls, 0),
        fmt(r.callsPer1000, 1),
        r.timesNaive === null ? '–' : `${fmt(r.timesNaive, 1)}×`,
        `${fmt(r.machineBusyPercent, 0)}%`,
        '',
      ]
        .join(' | ')
        .trim(),
    );
  }
  if (report.migration) {
    const mg = report.migration;
    for (const step of mg.steps) {
      const stall = Math.max(0, ...Object.values(step.maxStallMs));
      const locks = Object.entries(step.locks)
        .map(([t, l]) => `${t} ${l}`)
        .join(', ');
      lines.push(
        `| migration | ${step.name} | – | ${fmt(mg.rows, 0)} rows/table | ${fmt(step.seconds, 1)} | longest write stall ${fmt(stall, 0)} ms${locks ? ` (${locks})` : ''} | – | – | – | – | – | – |`,
      );
    }
  }
  if (report.bundles) lines.push('', ...renderBundles(report.bundles));
  if (report.budget.length > 0) lines.push('', ...renderBudget(report.budget));
  if (report.budgetCost.length > 0) lines.push('', ...renderBudgetCost(report.budgetCost));
  lines.push('');
  lines.push('| Target | Measured | Target | Result |', '|---|---|---|---|');
  for (const t of report.targets)
    lines.push(`| ${t.name} | ${t.measured} | ${t.target} | ${t.met ? 'met' : '**NOT MET**'} |`);
  lines.push('');
  lines.push(
    "Calls per 1,000 include each run's fixed calls (read endpoint pauses or flag re-authorisations, the last empty claim, record rate-limit usage); a batch of 500 tokens costs 1 claim + 1 set-based write-back, a batch of 250 users 1 claim + 1 write-back, plus one more write-back for every 10 s (token refresh) or 3 s (account sync) a batch takes (finished outcomes are written promptly, so short runs at low concurrency show more calls per 1,000).",
  );
  lines.push(
    "Machine CPU busy: the share of both cores' time that was busy during the run, every process counted (the emulator, the fake Amazon, PostgreSQL and whatever else runs on the machine): near 100% means the figures are bounded by this machine, not by the job.",
  );
  if (report.migration) {
    lines.push(
      `Migration rows: from bench/results/migrate.json (\`npm run bench:migrate\`, measured ${report.migration.measuredAt ?? 'earlier'}, not re-run here: it takes minutes).`,
    );
  } else {
    lines.push('Migration figures: bench/results/migrate.json not found (run `npm run bench:migrate` to produce it).');
  }
  return lines.join('\n');
}

/** The shared-budget runs: Amazon's rate as Amazon saw it, and what the budget cost in Data API calls. */
export function renderBudget(runs: readonly BudgetMeasurement[]): string[] {
  const lines = [
    '| Job, paced by the shared rate budget | Limit per region | Concurrency | Items | Seconds | Throughput | % of the limit (all regions) | Busiest second at Amazon, per region | 429s | Data API calls: job | Data API calls: budget | Budget calls per 1,000 |',
    '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|',
  ];
  for (const r of runs) {
    const unit = r.job === 'token-refresh' ? 'tokens' : 'users';
    lines.push(
      [
        '',
        r.job,
        `${fmt(r.ratePerSecond, 0)}/s`,
        r.concurrency,
        `${fmt(r.items, 0)} ${unit}`,
        fmt(r.seconds, 1),
        `${fmt(r.perSecond, 1)} ${unit}/s`,
        `${fmt(r.percentOfLimit, 0)}% of ${fmt(r.limitPerSecond, 0)}/s`,
        Object.entries(r.busiestSecond)
          .map(([region, n]) => `${region} ${n}`)
          .join(', '),
        fmt(r.refused, 0),
        fmt(r.jobDataApiCalls, 0),
        fmt(r.budgetDataApiCalls, 0),
        fmt(r.budgetCallsPer1000, 1),
        '',
      ]
        .join(' | ')
        .trim(),
    );
  }
  lines.push(
    '',
    "The Amazon clients as a job invocation has them in AWS: every request waits for a slot of the budget in the database (`amazon_rate_budget`), reserved in batches of what the run will send, at most 6 s ahead; the fake Amazon enforces the same limit per region and answers 429 above it. The budget's reservations are Data API calls of their own, on top of the job's.",
  );
  return lines;
}

/** The budget alone (bench/budget-cost.ts): its database calls per 1,000 requests, 1 to many workers. */
export function renderBudgetCost(runs: readonly BudgetCostMeasurement[]): string[] {
  const lines = [
    '| Shared budget alone | Workers | Requests | Seconds | Busiest second | Reservations | Of which refused | Releases | Database calls | Per 1,000 requests |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of runs)
    lines.push(
      [
        '',
        `${fmt(r.ratePerSecond, 0)}/s`,
        r.workers,
        fmt(r.requests, 0),
        fmt(r.seconds, 1),
        fmt(r.busiestSecond, 0),
        fmt(r.reservations, 0),
        fmt(r.refusals, 0),
        fmt(r.releases, 0),
        fmt(r.databaseCalls, 0),
        fmt(r.callsPer1000, 1),
        '',
      ]
        .join(' | ')
        .trim(),
    );
  lines.push(
    '',
    'Workers: invocations each with its own Data API connection and budget client, taking an equal share of the requests 8 at a time and saying how many they have left (as a run does with its claim), then giving back what they did not use; slots only, no Amazon call. Database calls: every reservation (granted or refused: a refused worker is given its own time to ask again) and release, through the Data API path.',
  );
  return lines;
}

export function fmt(value: number, digits: number): string {
  if (!Number.isFinite(value)) return '∞';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
