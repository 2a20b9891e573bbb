/**
 * `npm run bench:scale` keeps its promises, at the `--quick` sizes: the same code, small tables.
 * What it promises: Amazon's limit per region is never exceeded (the fake Amazon's own count),
 * every used connection holds a valid token (the model), the model is checked against the
 * measured run, and the figures shown are the ones measured. No assertion on speed: whether the
 * replay agrees within its tolerance depends on how busy the machine is, so the test checks that
 * each check is computed from its figures, not that it passed.
 */
import { MODEL_DEFAULTS, ModelOptions, runModel } from '../../bench/scale-model';
import { REGIONS } from '../../bench/scale-measure';
import {
  atMost,
  checkDigits,
  defaultOptions,
  deployedLimits,
  renderScaleMarkdown,
  ScaleReport,
  simulateScale,
  verdictsFor,
  within,
} from '../../bench/simulate-scale';
import { fmt } from '../../bench/report';

let report: ScaleReport;

beforeAll(async () => {
  report = await simulateScale({ ...defaultOptions(true), progress: () => undefined });
}, 240_000);

describe('measured', () => {
  test('each size is seeded as stated and its claim and write-back were timed', () => {
    const o = report.options;
    expect(report.sizes.map((s) => s.connections)).toEqual(o.sizes);
    for (const s of report.sizes) {
      expect(s.counts.connections).toBe(s.connections);
      // Most connections idle with an expired token: what the windowed claim must step over.
      expect(s.counts.idleExpired).toBeGreaterThan(s.connections / 2);
      expect(s.counts.dueInWindow).toBeGreaterThan(0);
      expect(s.claim.calls).toBe(o.claimBatches);
      expect(s.writeBack.calls).toBe(o.claimBatches);
      expect(s.claim.meanMs).toBeGreaterThan(0);
    }
  });

  test('the real cores never sent the fake Amazon more than the configured rate per region, and it refused nothing', () => {
    const r = report.rateRun;
    const limits = deployedLimits();
    expect([r.lwaPerSecond, r.adsPerSecond]).toEqual([limits.lwa, limits.ads]);
    for (const region of REGIONS) {
      expect(r.busiest.lwa[region]).toBeLessThanOrEqual(r.lwaPerSecond);
      expect(r.busiest.ads[region]).toBeLessThanOrEqual(r.adsPerSecond);
      expect(r.busiest.lwa[region]).toBeGreaterThan(0);
      expect(r.busiest.ads[region]).toBeGreaterThan(0);
    }
    expect(r.refused).toEqual({ lwa: 0, ads: 0 });
    expect(r.failed).toBe(0);
    // One Amazon call per item, and the rate, not the data, bounded the run.
    expect(r.lwaCalls).toBe(r.refreshed);
    expect(r.adsCalls).toBe(r.synced);
    expect(r.refreshed).toBeLessThan(r.dueConnections);
    expect(r.synced).toBeLessThan(r.dueConnections);
  });
});

test('the real cores over 12 h of schedule: an idle connection costs one refresh per sync, a used one about one per token lifetime, as the model says', () => {
  const c = report.cycles;
  expect(c.idleSyncs).toBeGreaterThanOrEqual(c.idleConnections);
  expect(c.idleRefreshes).toBe(c.idleSyncs);
  expect(c.perUsedConnectionHour).toBeGreaterThanOrEqual(1);
  expect(c.perUsedConnectionHour).toBeLessThanOrEqual(1.2);
  for (const name of ['cycles: refreshes per used connection-hour', 'cycles: refreshes per idle connection per sync'])
    expect(report.checks.find((x) => x.name.startsWith(name))?.ok).toBe(true);
});

describe('checked', () => {
  test('every check is computed from the figures it names, and the report is ok only when all are', () => {
    const r = report.rateRun;
    const byName = Object.fromEntries(report.checks.map((c) => [c.name, c]));
    expect(byName['replay: tokens refreshed']).toEqual(
      within('replay: tokens refreshed', r.refreshed, report.replay.totals.refreshed, 0.2),
    );
    expect(byName['replay: connections synced']).toEqual(
      within('replay: connections synced', r.synced, report.replay.totals.synced, 0.2),
    );
    expect(byName['replay: LWA requests']).toEqual(
      within('replay: LWA requests', r.lwaCalls, report.replay.totals.lwa, 0.2),
    );
    expect(byName['replay: token refresh Data API calls']).toEqual(
      within('replay: token refresh Data API calls', r.dataApi.refresh, report.replay.totals.refreshCalls, 0.5),
    );
    expect(byName['measured: busiest second, LWA EU']).toEqual(
      atMost('measured: busiest second, LWA EU', r.busiest.lwa.EU, r.lwaPerSecond),
    );
    // The replay is the measured run's own shape: its connections, rates and budget parameters.
    expect(report.replay.options).toMatchObject({
      initial: 'all-due',
      connections: r.dueConnections,
      lwaPerSecond: r.lwaPerSecond,
      adsPerSecond: r.adsPerSecond,
    });
    expect(report.replay.options.costs.budgetCallsPerRequest.lwa).toBeCloseTo(r.reservations.refresh / r.lwaCalls, 9);
    expect(report.ok).toBe(report.checks.every((c) => c.ok) && report.verdicts.every((v) => v.ok));
  });

  test('a disagreement beyond the tolerance fails the check', () => {
    expect(within('x', 100, 100, 0.2).ok).toBe(true);
    expect(within('x', 121, 100, 0.2).ok).toBe(false);
    expect(within('x', 79, 100, 0.2).ok).toBe(false);
    expect(atMost('x', 11, 10).ok).toBe(false);
  });
});

describe('modelled', () => {
  test('at the model size and at the configured limits, no use finds an expired token and Amazon gets at most its rate', () => {
    for (const m of [report.model, report.capacity.model]) {
      expect(m.uses).toBeGreaterThan(0);
      expect(m.usesWithExpiredToken).toBe(0);
      expect(m.usedExpiredAtTicks).toBe(0);
      expect(m.busiestSecond.lwa).toBeLessThanOrEqual(m.options.lwaPerSecond);
      expect(m.busiestSecond.ads).toBeLessThanOrEqual(m.options.adsPerSecond);
    }
    expect(report.capacity.model.options).toMatchObject({
      connections: report.capacity.connections,
      lwaPerSecond: report.options.lwaPerSecond,
      adsPerSecond: report.options.adsPerSecond,
    });
    expect(report.verdicts.filter((v) => !v.ok)).toEqual([]);
  });

  test('half as many connections again as the stated capacity break the promise: the capacity is the limit', () => {
    const beyond = report.capacity.beyond;
    expect(beyond.options.connections).toBe(Math.round(report.capacity.connections * 1.5));
    expect(verdictsFor('beyond', beyond).some((v) => !v.ok)).toBe(true);
  });

  test('the table shows every check, every promise and the measured figures', () => {
    const markdown = renderScaleMarkdown(report);
    for (const c of report.checks)
      expect(markdown).toContain(`| ${c.name} | ${fmt(c.measured, checkDigits(c.measured))} |`);
    for (const v of report.verdicts)
      expect(markdown).toContain(`| ${v.name} | ${fmt(v.value, 0)} | ${v.ok ? 'ok' : '**FAILED**'} |`);
    for (const s of report.sizes) expect(markdown).toContain(`| ${fmt(s.connections, 0)} | `);
    expect(markdown).toContain(
      `| ${fmt(report.capacity.connections, 0)} | ${report.options.lwaPerSecond} / ${report.options.adsPerSecond} |`,
    );
  });
});

describe('the model on its own', () => {
  const small = (o: Partial<ModelOptions>): ModelOptions => ({
    ...MODEL_DEFAULTS,
    connections: 3_000,
    lwaPerSecond: 5,
    adsPerSecond: 5,
    warmupHours: 6,
    hours: 3,
    ...o,
  });

  test('with the rate it needs, used connections always hold a valid token and the sync keeps its cycle', () => {
    const m = runModel(small({}));
    expect(m.uses).toBeGreaterThan(0);
    expect(verdictsFor('m', m).filter((v) => !v.ok)).toEqual([]);
    expect(m.totals.refreshed).toBeGreaterThan(0);
    expect(m.totals.synced).toBeGreaterThan(0);
  });

  test('with too little LWA rate, used connections find expired tokens', () => {
    const m = runModel(small({ connections: 60_000, lwaPerSecond: 0.5 }));
    expect(m.usesWithExpiredToken).toBeGreaterThan(0);
    expect(m.busiestSecond.lwa).toBeLessThanOrEqual(1);
    expect(verdictsFor('m', m).find((v) => v.name.endsWith('expired token'))?.ok).toBe(false);
  });

  test('with too little Ads rate, the sync falls behind its cycle', () => {
    const m = runModel(small({ connections: 60_000, lwaPerSecond: 50, adsPerSecond: 0.5 }));
    expect(m.maxSyncLagSeconds).toBeGreaterThan(3600);
    expect(m.busiestSecond.ads).toBeLessThanOrEqual(1);
    expect(verdictsFor('m', m).find((v) => v.name.includes('sync wait'))?.ok).toBe(false);
  });

  test("the budget's slots are spaced for its tolerance: at most rate × 1000 ÷ (1000 + tolerance) per second on average", () => {
    const m = runModel(small({ connections: 60_000, lwaPerSecond: 10, budgetToleranceMs: 300, hours: 1 }));
    const perSecond = Math.max(...REGIONS.map((r) => m.perRegionHour[r].lwa)) / 3600;
    expect(perSecond).toBeLessThanOrEqual((10 * 1000) / 1300 + 1e-9);
    expect(m.busiestSecond.lwa).toBeLessThanOrEqual(10);
  });
});
