/**
 * `npm run bench:scale`: how many connections one environment serves, measured as far as this
 * machine allows and modelled beyond, with the model checked against the measurements.
 *
 *   npm run bench:scale                          # 100,000, 300,000 and 1,000,000 connections
 *   npm run bench:scale -- --quick               # small sizes (the smoke test's)
 *   npm run bench:scale -- --json out.json       # also write the figures as JSON
 *   npm run bench:scale -- --sizes 100000,300000 --model-connections 1000000 --used 0.1
 *   npm run bench:scale -- --lwa 10 --ads 5 --model-lwa 80 --model-ads 30 --workers 4
 *
 * 1. Measured (bench/scale-measure.ts), on PostgreSQL 17 through the Data API emulator: for each
 *    size, the steady state of an environment whose proactive refresh covers connections used
 *    within the last hour (bench/scale-seed.ts; `--used` of them used by the product, the rest
 *    idle, last touched by the 6-hourly account sync), and the token refresh's windowed claim
 *    and write-back of 500 timed on it. Then, on the largest table, the real token refresh and
 *    account sync cores run at once for `--seconds` against the fake Amazon limited to `--lwa`
 *    and `--ads` requests per second per region (default: cdk.json's prod `amazonLimits`), the
 *    cores drawing from the shared budget at the same rates: the fake's busiest second per
 *    region must not exceed the rate and no call may be refused.
 * 2. Modelled (bench/scale-model.ts): `--model-connections` connections over `--hours` hours of
 *    virtual time (after a 6-hour warm-up), one second at a time, at `--model-lwa` and
 *    `--model-ads` per region: the product's uses through the on-demand route, the scheduled
 *    token refresh, the account sync, one budget per endpoint and region. It must show no use of
 *    an expired token and an account sync that keeps its cycle. Then the connections one
 *    environment serves at the configured limits (`--lwa`, `--ads`), estimated from the model's
 *    requests per connection and confirmed by a model run at that size.
 * 3. Checked: the model replays the measured run (same connections, rates and seconds); its
 *    refreshes, syncs and Amazon requests must be within 20 % of the measured ones and its Data
 *    API calls within 50 % (the write-back cadence is approximated). Any failed check ends the
 *    run with an error after printing the figures.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startLocalWorld } from '../local/world';
import { fmt } from './report';
import { MODEL_DEFAULTS, ModelOptions, ModelResult, runModel } from './scale-model';
import { CycleMeasurement, measureRefreshCycles } from './scale-cycles';
import {
  measureRateRun,
  measureSize,
  RATE_RUN_TOLERANCE_MS,
  RateRunMeasurement,
  REGIONS,
  SizeMeasurement,
} from './scale-measure';

export interface ScaleOptions {
  readonly sizes: readonly number[];
  readonly usedShare: number;
  readonly usedWithinSeconds: number;
  readonly claimBatches: number;
  /** The configured limits per region (requests per second). */
  readonly lwaPerSecond: number;
  readonly adsPerSecond: number;
  readonly rateRunSeconds: number;
  readonly modelConnections: number;
  readonly modelLwaPerSecond: number;
  readonly modelAdsPerSecond: number;
  readonly modelHours: number;
  readonly modelWarmupHours: number;
  /**
   * Invocations of each job working at once in the model (the fan-out: SQS consumers with a
   * maximum concurrency); each does at most concurrency 16 ÷ Amazon latency items per second.
   */
  readonly modelWorkers: number;
  readonly progress: (line: string) => void;
}

/** cdk.json's prod amazonLimits: the rates an environment is deployed with. */
export function deployedLimits(): { lwa: number; ads: number } {
  const cdk = JSON.parse(readFileSync(join(__dirname, '..', 'cdk.json'), 'utf8')) as {
    context: {
      environments: Record<string, { amazonLimits: { lwaRequestsPerSecond: number; adsRequestsPerSecond: number } }>;
    };
  };
  const limits = cdk.context.environments.prod.amazonLimits;
  return { lwa: limits.lwaRequestsPerSecond, ads: limits.adsRequestsPerSecond };
}

export function defaultOptions(quick: boolean): ScaleOptions {
  const limits = deployedLimits();
  const common = {
    usedShare: 0.1,
    usedWithinSeconds: 3600,
    lwaPerSecond: limits.lwa,
    adsPerSecond: limits.ads,
    progress: (line: string) => process.stderr.write(`${line}\n`),
  };
  return quick
    ? {
        ...common,
        sizes: [2_000, 6_000],
        claimBatches: 1,
        rateRunSeconds: 20,
        modelConnections: 6_000,
        modelLwaPerSecond: 2,
        modelAdsPerSecond: 1,
        modelHours: 6,
        modelWarmupHours: 6,
        modelWorkers: 1,
      }
    : {
        ...common,
        sizes: [100_000, 300_000, 1_000_000],
        claimBatches: 4,
        rateRunSeconds: 60,
        modelConnections: 1_000_000,
        modelLwaPerSecond: 80,
        modelAdsPerSecond: 30,
        modelHours: 12,
        modelWarmupHours: 6,
        modelWorkers: 4,
      };
}

export interface Check {
  readonly name: string;
  readonly measured: number;
  readonly expected: number;
  /** Largest accepted |measured − expected| ÷ expected, or an upper bound when `atMost`. */
  readonly tolerance: number;
  readonly atMost?: boolean;
  readonly ok: boolean;
}

export interface Verdict {
  readonly name: string;
  readonly value: number;
  readonly ok: boolean;
}

export interface ScaleReport {
  readonly measuredAt: string;
  readonly options: Omit<ScaleOptions, 'progress'>;
  readonly sizes: readonly SizeMeasurement[];
  readonly rateRun: RateRunMeasurement;
  /** The refreshes a used and an idle connection cost, measured with the real cores over hours of schedule. */
  readonly cycles: CycleMeasurement;
  readonly replay: ModelResult;
  readonly model: ModelResult;
  /** Connections one environment serves at the configured limits, and the model run that confirms it. */
  readonly capacity: { readonly connections: number; readonly model: ModelResult; readonly beyond: ModelResult };
  /** Database seconds per hour the token refresh's claims and write-backs cost at the model's size (from the measured costs). */
  readonly refreshDatabaseSecondsPerHour: number;
  readonly checks: readonly Check[];
  readonly verdicts: readonly Verdict[];
  readonly ok: boolean;
}

export function within(name: string, measured: number, expected: number, tolerance: number): Check {
  const ok = expected === 0 ? measured === 0 : Math.abs(measured - expected) / expected <= tolerance;
  return { name, measured, expected, tolerance, ok };
}

/** Decimals a check's measured figure is shown with: counts as they are, small ratios to two. */
export function checkDigits(measured: number): number {
  return Number.isInteger(measured) || measured >= 10 ? 0 : 2;
}

export function atMost(name: string, measured: number, limit: number): Check {
  return { name, measured, expected: limit, tolerance: 0, atMost: true, ok: measured <= limit };
}

/** A model run's promises: no use of an expired token, the sync keeps its cycle, the budget held. */
export function verdictsFor(label: string, m: ModelResult): Verdict[] {
  const o = m.options;
  return [
    {
      name: `${label}: uses that found an expired token`,
      value: m.usesWithExpiredToken,
      ok: m.usesWithExpiredToken === 0,
    },
    {
      name: `${label}: used connections expired at a refresh tick`,
      value: m.usedExpiredAtTicks,
      ok: m.usedExpiredAtTicks === 0,
    },
    {
      name: `${label}: busiest second, LWA requests per region`,
      value: m.busiestSecond.lwa,
      ok: m.busiestSecond.lwa <= o.lwaPerSecond,
    },
    {
      name: `${label}: busiest second, Ads requests per region`,
      value: m.busiestSecond.ads,
      ok: m.busiestSecond.ads <= o.adsPerSecond,
    },
    // The sync keeps its 6-hour cycle: no connection waits more than an hour past its time
    // (an expiring one waits for the next refresh tick and the sync after it: ~30 minutes).
    { name: `${label}: longest sync wait past due (s)`, value: m.maxSyncLagSeconds, ok: m.maxSyncLagSeconds <= 3600 },
  ];
}

/**
 * Login with Amazon requests within 10 % of the minimum (one refresh per used connection per
 * token lifetime, one per idle connection per sync cycle); the value is the percentage.
 */
export function refreshVerdict(label: string, m: ModelResult): Verdict {
  const percent = (100 * m.refreshes.perHour) / m.refreshes.minimumPerHour;
  return { name: `${label}: LWA requests, % of the minimum`, value: percent, ok: percent <= 110 };
}

/** Linear interpolation (and extrapolation from the last two) of a measured cost by table size. */
export function costAt(sizes: readonly SizeMeasurement[], pick: (s: SizeMeasurement) => number, n: number): number {
  const pts = [...sizes].sort((a, b) => a.connections - b.connections);
  if (pts.length === 1) return pick(pts[0]);
  let i = pts.findIndex((p) => p.connections >= n);
  if (i <= 0) i = i === 0 ? 1 : pts.length - 1;
  const a = pts[i - 1];
  const b = pts[i];
  return pick(a) + ((pick(b) - pick(a)) * (n - a.connections)) / (b.connections - a.connections);
}

function modelOptions(
  o: ScaleOptions,
  costs: ModelOptions['costs'],
  connections: number,
  lwa: number,
  ads: number,
): ModelOptions {
  return {
    ...MODEL_DEFAULTS,
    costs,
    connections,
    usedShare: o.usedShare,
    usedWithinSeconds: o.usedWithinSeconds,
    lwaPerSecond: lwa,
    adsPerSecond: ads,
    refresh: {
      ...MODEL_DEFAULTS.refresh,
      ceilingPerSecond: MODEL_DEFAULTS.refresh.ceilingPerSecond * o.modelWorkers,
      fixedCalls: MODEL_DEFAULTS.refresh.fixedCalls * o.modelWorkers,
    },
    sync: {
      ...MODEL_DEFAULTS.sync,
      ceilingPerSecond: MODEL_DEFAULTS.sync.ceilingPerSecond * o.modelWorkers,
      fixedCalls: MODEL_DEFAULTS.sync.fixedCalls * o.modelWorkers,
    },
    hours: o.modelHours,
    warmupHours: o.modelWarmupHours,
  };
}

export async function simulateScale(o: ScaleOptions): Promise<ScaleReport> {
  const measuredAt = new Date().toISOString();
  o.progress('Starting PostgreSQL 17, the Data API emulator and the fake Amazon…');
  const world = await startLocalWorld();
  const sizes: SizeMeasurement[] = [];
  let rateRun: RateRunMeasurement;
  let cycles: CycleMeasurement;
  try {
    o.progress('Refreshes per connection: 6 used and 12 idle connections over 12 h of schedule, the real cores…');
    cycles = await measureRefreshCycles(world, {
      used: 6,
      idle: 12,
      hours: 12,
      usedWithinSeconds: o.usedWithinSeconds,
    });
    o.progress(
      `  ${fmt(cycles.perUsedConnectionHour, 2)} per used connection-hour, ${fmt(cycles.perIdleConnectionSync, 2)} per idle connection per sync`,
    );
    await world.reset();
    for (const connections of o.sizes) {
      o.progress(`Seeding ${fmt(connections, 0)} connections (${o.usedShare * 100} % used) and timing the claim…`);
      const s = await measureSize(world, {
        connections,
        usedShare: o.usedShare,
        usedWithinSeconds: o.usedWithinSeconds,
        batches: o.claimBatches,
      });
      o.progress(
        `  seeded in ${fmt(s.seedSeconds, 0)} s; claim ${fmt(s.claim.meanMs, 0)} ms, write-back ${fmt(s.writeBack.meanMs, 0)} ms (mean of ${s.claim.calls})`,
      );
      sizes.push(s);
    }
    const largest = o.sizes[o.sizes.length - 1];
    const due = Math.ceil(1.3 * 3 * o.lwaPerSecond * o.rateRunSeconds);
    o.progress(
      `Rate run on ${fmt(largest, 0)} connections: ${fmt(due, 0)} due, ${o.rateRunSeconds} s, LWA ${o.lwaPerSecond}/s and Ads ${o.adsPerSecond}/s per region…`,
    );
    rateRun = await measureRateRun(world, {
      due,
      seconds: o.rateRunSeconds,
      lwaPerSecond: o.lwaPerSecond,
      adsPerSecond: o.adsPerSecond,
      tableConnections: largest,
      usedWithinSeconds: o.usedWithinSeconds,
    });
    o.progress(`  ${rateRun.refreshed} refreshed, ${rateRun.synced} synced`);
  } finally {
    await world.close();
  }

  // Measured parameters of the model: the shared budget's reservations per Amazon request.
  const costs = {
    ...MODEL_DEFAULTS.costs,
    budgetCallsPerRequest: {
      lwa: rateRun.reservations.refresh / Math.max(1, rateRun.lwaCalls),
      ads: rateRun.reservations.sync / Math.max(1, rateRun.adsCalls),
    },
  };
  // The model replays the measured run: the same connections, rates and seconds, each job
  // starting when its first call reached the fake Amazon.
  const work = o.rateRunSeconds - 1; // the cores stop claiming with 1 s left (reserveMs)
  const replay = runModel({
    ...MODEL_DEFAULTS,
    costs,
    budgetToleranceMs: RATE_RUN_TOLERANCE_MS,
    initial: 'all-due',
    connections: rateRun.dueConnections,
    lwaPerSecond: o.lwaPerSecond,
    adsPerSecond: o.adsPerSecond,
    hours: o.rateRunSeconds / 3600,
    refresh: {
      ...MODEL_DEFAULTS.refresh,
      workSeconds: work,
      startSeconds: Math.round(rateRun.firstCallAfterSeconds.lwa),
    },
    sync: { ...MODEL_DEFAULTS.sync, workSeconds: work, startSeconds: Math.round(rateRun.firstCallAfterSeconds.ads) },
  });
  const checks: Check[] = [
    within('replay: tokens refreshed', rateRun.refreshed, replay.totals.refreshed, 0.2),
    within('replay: connections synced', rateRun.synced, replay.totals.synced, 0.2),
    within('replay: LWA requests', rateRun.lwaCalls, replay.totals.lwa, 0.2),
    within('replay: Ads requests', rateRun.adsCalls, replay.totals.ads, 0.2),
    within('replay: token refresh Data API calls', rateRun.dataApi.refresh, replay.totals.refreshCalls, 0.5),
    within('replay: account sync Data API calls', rateRun.dataApi.sync, replay.totals.syncCalls, 0.5),
    atMost('measured: failed items', rateRun.failed, 0),
    atMost('measured: calls the fake Amazon refused (429)', rateRun.refused.lwa + rateRun.refused.ads, 0),
    ...REGIONS.flatMap((r) => [
      atMost(`measured: busiest second, LWA ${r}`, rateRun.busiest.lwa[r], o.lwaPerSecond),
      atMost(`measured: busiest second, Ads ${r}`, rateRun.busiest.ads[r], o.adsPerSecond),
    ]),
  ];

  o.progress(
    `Model: ${fmt(o.modelConnections, 0)} connections, ${o.modelWarmupHours} h warm-up + ${o.modelHours} h, LWA ${o.modelLwaPerSecond}/s and Ads ${o.modelAdsPerSecond}/s per region…`,
  );
  const model = runModel(modelOptions(o, costs, o.modelConnections, o.modelLwaPerSecond, o.modelAdsPerSecond));
  o.progress(`  modelled in ${fmt(model.modelSeconds, 0)} s`);

  // Connections served at the configured limits: the model's requests per connection and
  // working second, against the limits' allowance in the jobs' working time, 10 % kept back.
  const perRegion = o.modelConnections / 3;
  const busiestRegion = (f: (p: ModelResult['perRegionHour']['NA']) => number) =>
    Math.max(...REGIONS.map((r) => f(model.perRegionHour[r])));
  const lwaNeed = busiestRegion((p) => p.lwa) / perRegion; // per connection-hour
  const adsNeed = busiestRegion((p) => p.ads) / perRegion;
  const refreshDuty = MODEL_DEFAULTS.refresh.workSeconds / MODEL_DEFAULTS.refresh.everySeconds;
  const syncDuty = MODEL_DEFAULTS.sync.workSeconds / MODEL_DEFAULTS.sync.everySeconds;
  const perRegionCapacity = Math.min(
    (o.lwaPerSecond * 3600 * refreshDuty) / lwaNeed,
    (o.adsPerSecond * 3600 * syncDuty) / adsNeed,
  );
  // 30 % kept back: each sync of an idle connection also needs an LWA slot on demand, which the
  // proactive refresh competes for while both work (the model run below confirms the figure).
  const capacityConnections = Math.floor((perRegionCapacity * 3 * 0.7) / 1000) * 1000;
  o.progress(
    `Confirming ${fmt(capacityConnections, 0)} connections at LWA ${o.lwaPerSecond}/s, Ads ${o.adsPerSecond}/s…`,
  );
  const capacityModel = runModel(modelOptions(o, costs, capacityConnections, o.lwaPerSecond, o.adsPerSecond));
  const beyond = runModel(
    modelOptions(o, costs, Math.round(capacityConnections * 1.5), o.lwaPerSecond, o.adsPerSecond),
  );

  const claimMs = costAt(sizes, (s) => s.claim.meanMs, o.modelConnections);
  const writeBackMs = costAt(sizes, (s) => s.writeBack.meanMs, o.modelConnections);
  const refreshDatabaseSecondsPerHour =
    (model.perHour.refreshClaims * claimMs + model.perHour.refreshWriteBacks * writeBackMs) / 1000;

  const verdicts = [
    ...verdictsFor('model', model),
    refreshVerdict('model', model),
    ...verdictsFor('at the configured limits', capacityModel),
  ];
  // The model's ratios against the real cores' (10 %: the model's counted hours begin mid-cycle).
  checks.push(
    within(
      'cycles: refreshes per used connection-hour, measured vs model',
      cycles.perUsedConnectionHour,
      model.refreshes.perUsedConnectionHour,
      0.1,
    ),
    within(
      'cycles: refreshes per idle connection per sync cycle, measured vs model',
      cycles.perIdleConnectionSync,
      model.refreshes.perIdleConnectionCycle,
      0.1,
    ),
  );
  const ok = checks.every((c) => c.ok) && verdicts.every((v) => v.ok);
  return {
    measuredAt,
    options: { ...o, progress: undefined } as Omit<ScaleOptions, 'progress'>,
    sizes,
    rateRun,
    cycles,
    replay,
    model,
    capacity: { connections: capacityConnections, model: capacityModel, beyond },
    refreshDatabaseSecondsPerHour,
    checks,
    verdicts,
    ok,
  };
}

const pct = (x: number) => `${fmt(x * 100, 0)} %`;

function refreshRow(label: string, x: ModelResult): string {
  const f = x.refreshes;
  return `| ${label} | ${fmt(x.options.connections, 0)} | ${fmt(f.perUsedConnectionHour, 2)} (${fmt(f.minimumPerUsedConnectionHour, 2)}) | ${fmt(f.perIdleConnectionCycle, 2)} (${fmt(f.minimumPerIdleConnectionCycle, 2)}) | ${fmt(f.perHour, 0)} (${fmt(f.minimumPerHour, 0)}) | ${fmt(f.perHour / f.minimumPerHour, 2)} × |`;
}

export function renderScaleMarkdown(r: ScaleReport): string {
  const o = r.options;
  const m = r.model;
  const lines: string[] = [];
  lines.push(
    `Measured ${r.measuredAt} by \`npm run bench:scale\` (Data API path, PostgreSQL 17, fake Amazon; ${pct(o.usedShare)} of connections used by the product, proactive refresh for connections used within ${o.usedWithinSeconds / 3600} h).`,
    '',
    '**Measured: the windowed claim and the write-back on the steady state** (batches of 500, one Data API call each)',
    '',
    '| Connections | Used or never recorded | Idle, token expired | Due now | Seeding | Claim of 500, mean (max) | Write-back of 500, mean (max) |',
    '|---:|---:|---:|---:|---:|---:|---:|',
  );
  for (const s of r.sizes)
    lines.push(
      `| ${fmt(s.connections, 0)} | ${fmt(s.counts.used + s.counts.neverRecorded, 0)} | ${fmt(s.counts.idleExpired, 0)} | ${fmt(s.counts.dueInWindow, 0)} | ${fmt(s.seedSeconds, 0)} s | ${fmt(s.claim.meanMs, 0)} ms (${fmt(s.claim.maxMs, 0)}) | ${fmt(s.writeBack.meanMs, 0)} ms (${fmt(s.writeBack.maxMs, 0)}) |`,
    );
  const rr = r.rateRun;
  lines.push(
    '',
    `**Measured: the real cores against Amazon's limit** (${fmt(rr.tableConnections, 0)} connections in the table, ${fmt(rr.dueConnections, 0)} of them due; one token refresh and one account sync invocation at once for ${rr.seconds} s; fake Amazon limited to LWA ${rr.lwaPerSecond}/s and Ads ${rr.adsPerSecond}/s per region, 100 and 150 ms per call)`,
    '',
    '| | Refreshed | Synced | LWA calls | Ads calls | Busiest second LWA (NA/EU/FE) | Busiest second Ads (NA/EU/FE) | Refused (429) | Data API calls (refresh/sync) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
    `| measured | ${fmt(rr.refreshed, 0)} | ${fmt(rr.synced, 0)} | ${fmt(rr.lwaCalls, 0)} | ${fmt(rr.adsCalls, 0)} | ${REGIONS.map((x) => rr.busiest.lwa[x]).join('/')} (limit ${rr.lwaPerSecond}) | ${REGIONS.map((x) => rr.busiest.ads[x]).join('/')} (limit ${rr.adsPerSecond}) | ${rr.refused.lwa + rr.refused.ads} | ${rr.dataApi.refresh}/${rr.dataApi.sync} |`,
    `| model replay | ${fmt(r.replay.totals.refreshed, 0)} | ${fmt(r.replay.totals.synced, 0)} | ${fmt(r.replay.totals.lwa, 0)} | ${fmt(r.replay.totals.ads, 0)} | ${r.replay.busiestSecond.lwa} | ${r.replay.busiestSecond.ads} | – | ${r.replay.totals.refreshCalls}/${r.replay.totals.syncCalls} |`,
    '',
    '| Check | Measured | Expected | Tolerance | Result |',
    '|---|---:|---:|---:|---|',
  );
  for (const c of r.checks)
    lines.push(
      `| ${c.name} | ${fmt(c.measured, checkDigits(c.measured))} | ${c.atMost ? `≤ ${fmt(c.expected, 0)}` : fmt(c.expected, c.expected < 10 ? 2 : 0)} | ${c.atMost ? '–' : `± ${pct(c.tolerance)}`} | ${c.ok ? 'ok' : '**FAILED**'} |`,
    );
  const row = (label: string, x: ModelResult) => {
    const lwa = Math.max(...REGIONS.map((g) => x.perRegionHour[g].lwa));
    const onDemand = Math.max(...REGIONS.map((g) => x.perRegionHour[g].lwaOnDemand));
    const ads = Math.max(...REGIONS.map((g) => x.perRegionHour[g].ads));
    const opt = x.options;
    return `| ${label} | ${fmt(opt.connections, 0)} | ${opt.lwaPerSecond} / ${opt.adsPerSecond} | ${fmt(lwa, 0)} (${fmt(lwa / 3600, 1)}/s; on demand ${fmt(onDemand, 0)}) | ${x.busiestSecond.lwa} | ${fmt(ads, 0)} (${fmt(ads / 3600, 1)}/s) | ${x.busiestSecond.ads} | ${fmt(x.usesWithExpiredToken, 0)} of ${fmt(x.uses, 0)} | ${fmt(x.maxSyncLagSeconds / 60, 0)} min | ${fmt(x.perHour.dataApi.refresh + x.perHour.dataApi.sync, 0)} + route ${fmt(x.perHour.dataApi.route, 0)} | ${fmt(x.perHour.rowsWritten, 0)} |`;
  };
  lines.push(
    '',
    `**Modelled** (${o.modelWarmupHours} h warm-up, then ${o.modelHours} h counted; per hour, the busiest region; the product uses each used connection every ${MODEL_DEFAULTS.useIntervalSeconds / 60} min through the on-demand route; ${o.modelWorkers} worker(s) per job, each at most ${MODEL_DEFAULTS.refresh.ceilingPerSecond} refreshes or ${MODEL_DEFAULTS.sync.ceilingPerSecond} syncs per second; the budget's slots spaced for a ${MODEL_DEFAULTS.budgetToleranceMs} ms tolerance)`,
    '',
    '| Run | Connections | Limit per region LWA / Ads (req/s) | LWA requests per hour | Busiest second LWA | Ads requests per hour | Busiest second Ads | Uses that found an expired token | Longest sync wait past due | Data API calls per hour: jobs + route | Rows written per hour |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    row('model', m),
    row('at the configured limits', r.capacity.model),
    row('× 1.5 beyond them', r.capacity.beyond),
    '',
    `**Modelled: Login with Amazon refreshes against the minimum** (one per used connection per ${MODEL_DEFAULTS.tokenLifetimeSeconds / 60}-minute token lifetime, one per idle connection per ${MODEL_DEFAULTS.sync.intervalSeconds / 3600}-hour sync cycle)`,
    '',
    '| Run | Connections | Per used connection-hour (minimum) | Per idle connection per sync cycle (minimum) | LWA requests per hour, all regions (minimum) | Of the minimum |',
    '|---|---:|---:|---:|---:|---:|',
    refreshRow('model', m),
    refreshRow('at the configured limits', r.capacity.model),
    `| measured: the real cores, ${r.cycles.hours} h of schedule | ${r.cycles.usedConnections} used + ${r.cycles.idleConnections} idle | ${fmt(r.cycles.perUsedConnectionHour, 2)} (1.00) | ${fmt(r.cycles.perIdleConnectionSync, 2)} (1.00) | – | – |`,
    '',
    `Token refresh database time at ${fmt(o.modelConnections, 0)} connections: ${fmt(m.perHour.refreshClaims, 0)} claims and ${fmt(m.perHour.refreshWriteBacks, 0)} write-backs per hour at the measured costs (interpolated by size) ≈ ${fmt(r.refreshDatabaseSecondsPerHour, 0)} s of database time per hour.`,
    '',
    '| Promise | Value | Result |',
    '|---|---:|---|',
  );
  for (const v of r.verdicts) lines.push(`| ${v.name} | ${fmt(v.value, 0)} | ${v.ok ? 'ok' : '**FAILED**'} |`);
  lines.push('', r.ok ? 'Every check passed.' : '**Some checks FAILED** (see above).');
  return lines.join('\n');
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const base = defaultOptions(process.argv.includes('--quick'));
  const num = (name: string, fallback: number) => (arg(name) === undefined ? fallback : Number(arg(name)));
  const options: ScaleOptions = {
    ...base,
    sizes: arg('sizes') ? arg('sizes')!.split(',').map(Number) : base.sizes,
    usedShare: num('used', base.usedShare),
    lwaPerSecond: num('lwa', base.lwaPerSecond),
    adsPerSecond: num('ads', base.adsPerSecond),
    rateRunSeconds: num('seconds', base.rateRunSeconds),
    modelConnections: num('model-connections', base.modelConnections),
    modelLwaPerSecond: num('model-lwa', base.modelLwaPerSecond),
    modelAdsPerSecond: num('model-ads', base.modelAdsPerSecond),
    modelHours: num('hours', base.modelHours),
    modelWorkers: num('workers', base.modelWorkers),
  };
  const started = performance.now();
  const report = await simulateScale(options);
  process.stdout.write(`${renderScaleMarkdown(report)}\n`);
  process.stderr.write(`(${fmt((performance.now() - started) / 1000, 0)} s)\n`);
  const text = `${JSON.stringify(report, null, 2)}\n`;
  const resultsDir = join(__dirname, 'results');
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'scale.json'), text);
  const json = arg('json');
  if (json) writeFileSync(json, text);
  if (!report.ok) process.exitCode = 1;
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
