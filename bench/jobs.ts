/**
 * One measured run of a job (the real core, or the naive baseline) on the benchmark world.
 * Every figure comes from the run itself: items counted by the core's summary and checked
 * against the database and the fake Amazon's counters; Data API calls from the adapter's
 * `callCounts()` and checked against the calls the emulator received.
 */
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';
import { runAccountSync } from '../lambda/account-sync/core';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import { naiveAccountSync, naiveTokenRefresh } from './naive';
import { profilesFor, SEED_CHUNK } from './seeding';
import type { DataApiDatabase } from '../lambda/shared/db';
import type { ServerCounters } from './servers';
import type { BenchWorld } from './world';

export type JobName = 'token-refresh' | 'account-sync';
export type Way = 'core' | 'naive';

export interface JobMeasurement {
  readonly job: JobName;
  readonly way: Way;
  /** Amazon calls in flight at once (1 for the naive baseline). */
  readonly concurrency: number;
  /** Latency the fake Amazon added to every call. */
  readonly latencyMs: number;
  /** Tokens refreshed, or users synced. */
  readonly items: number;
  /** Accounts upserted (account sync). */
  readonly accounts: number;
  readonly seconds: number;
  /** items ÷ seconds */
  readonly perSecond: number;
  /** accounts ÷ seconds (account sync) */
  readonly accountsPerSecond: number;
  /** concurrency ÷ latency: the most a run can do when only Amazon's latency counts. */
  readonly ceilingPerSecond: number;
  /** perSecond ÷ ceilingPerSecond × 100 */
  readonly percentOfCeiling: number;
  /** Data API calls the adapter made (callCounts().total, retries included). */
  readonly dataApiCalls: number;
  /** Calls the Data API emulator received in the same span (must equal dataApiCalls). */
  readonly emulatorCalls: number;
  /** dataApiCalls ÷ items × 1000 */
  readonly callsPer1000: number;
  /** Calls the fake Amazon received. */
  readonly amazonCalls: number;
  /** Share of the machine's CPU time (all cores, every process) that was busy during the run. */
  readonly machineBusyPercent: number;
}

export interface RunOptions {
  readonly concurrency: number;
  readonly items: number;
  readonly latencyMs: number;
}

/** Machine-wide CPU time counters (every core, every process), to tell how busy the machine was. */
export function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const cpu of cpus()) {
    const t = cpu.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

export function busyPercentSince(before: { busy: number; total: number }): number {
  const now = cpuTimes();
  const total = now.total - before.total;
  return total > 0 ? ((now.busy - before.busy) / total) * 100 : 0;
}

function measurement(
  base: Pick<
    JobMeasurement,
    | 'job'
    | 'way'
    | 'concurrency'
    | 'latencyMs'
    | 'items'
    | 'accounts'
    | 'seconds'
    | 'dataApiCalls'
    | 'emulatorCalls'
    | 'amazonCalls'
    | 'machineBusyPercent'
  >,
): JobMeasurement {
  const perSecond = base.items / base.seconds;
  const ceilingPerSecond = base.latencyMs > 0 ? base.concurrency / (base.latencyMs / 1000) : Infinity;
  return {
    ...base,
    perSecond,
    accountsPerSecond: base.accounts / base.seconds,
    ceilingPerSecond,
    percentOfCeiling: (perSecond / ceilingPerSecond) * 100,
    callsPer1000: base.items > 0 ? (base.dataApiCalls / base.items) * 1000 : 0,
  };
}

/** Fails loudly when a run did not do exactly the work it was given. */
function expectEqual(what: string, actual: number, expected: number): void {
  if (actual !== expected) throw new Error(`Benchmark run is not valid: ${what} was ${actual}, expected ${expected}`);
}

interface TimedRun<R> {
  readonly result: R;
  /** The Data API adapter the run used (its callCounts() are the run's calls). */
  readonly db: DataApiDatabase;
  readonly seconds: number;
  readonly machineBusyPercent: number;
  /** Calls the fake Amazon's `api` received during the run. */
  readonly amazonCalls: number;
  /** Calls the Data API emulator received during the run. */
  readonly emulatorCalls: number;
}

/**
 * What every measured run shares: the world reset to the given latency and seeded, then the run
 * timed, with the machine's CPU and the fake Amazon's and the emulator's counters read around it.
 */
async function timedRun<R>(
  w: BenchWorld,
  latencyMs: number,
  seed: () => Promise<void>,
  api: 'lwa' | 'ads',
  run: (db: DataApiDatabase) => Promise<R>,
): Promise<TimedRun<R>> {
  await w.reset({ lwaMs: latencyMs, adsMs: latencyMs });
  await seed();
  const db = w.dataApi();
  const before = await w.counters();
  const cpu0 = cpuTimes();
  const started = performance.now();
  const result = await run(db);
  const seconds = (performance.now() - started) / 1000;
  const machineBusyPercent = busyPercentSince(cpu0);
  const after = await w.counters();
  const calls = (c: ServerCounters) => (api === 'lwa' ? c.lwaCalls : c.adsCalls);
  return {
    result,
    db,
    seconds,
    machineBusyPercent,
    amazonCalls: calls(after) - calls(before),
    emulatorCalls: after.emulatorCalls - before.emulatorCalls,
  };
}

/** The figures of a timed run that go into its measurement as they are. */
function figuresOf(
  t: TimedRun<unknown>,
): Pick<JobMeasurement, 'seconds' | 'machineBusyPercent' | 'amazonCalls' | 'emulatorCalls'> {
  return {
    seconds: t.seconds,
    machineBusyPercent: t.machineBusyPercent,
    amazonCalls: t.amazonCalls,
    emulatorCalls: t.emulatorCalls,
  };
}

/** The collaborators a core gets in the benchmark: silent logs, plenty of time, the given concurrency. */
export function benchRuntime(w: BenchWorld, concurrency: number, remainingTimeMs: () => number = () => 15 * 60_000) {
  return {
    cipher: w.cipher,
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs,
    settings: { concurrency },
  };
}

const seedTokens = (w: BenchWorld, items: number) => async () =>
  expectEqual('tokens seeded', await w.seedRefreshDue(items), items);
const seedUsers = (w: BenchWorld, items: number) => async () =>
  expectEqual('users seeded', await w.seedSyncDue(items), items);

/** Seeds `items` due tokens and runs the token refresh core once over them. */
export async function measureTokenRefresh(w: BenchWorld, o: RunOptions): Promise<JobMeasurement> {
  const lwa = w.lwa();
  const t = await timedRun(w, o.latencyMs, seedTokens(w, o.items), 'lwa', (db) =>
    runTokenRefresh({ db, lwa, ...benchRuntime(w, o.concurrency) }),
  );
  expectEqual('tokens refreshed', t.result.refreshed, o.items);
  expectEqual('LWA calls', t.amazonCalls, o.items);
  const { rows } = await w.admin.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM oauth_tokens WHERE last_refreshed_at IS NOT NULL AND refresh_lease_owner IS NULL',
  );
  expectEqual('rows written back', rows[0].n, o.items);
  return measurement({
    ...figuresOf(t),
    job: 'token-refresh',
    way: 'core',
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    items: t.result.refreshed,
    accounts: 0,
    dataApiCalls: t.db.callCounts().total,
  });
}

/** Seeds `items` users due for sync (2.5 accounts each on average) and runs the account sync core once. */
export async function measureAccountSync(w: BenchWorld, o: RunOptions): Promise<JobMeasurement> {
  const ads = w.ads();
  const t = await timedRun(w, o.latencyMs, seedUsers(w, o.items), 'ads', (db) =>
    runAccountSync({ db, ads, lwa: w.lwa(), ...benchRuntime(w, o.concurrency) }),
  );
  expectEqual('connections synced', t.result.connectionsSynced, o.items);
  expectEqual('accounts synced', t.result.accountsSynced, expectedAccountsFor(o.items));
  expectEqual('Ads API calls', t.amazonCalls, o.items);
  const { rows } = await w.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM account_sync_history WHERE sync_status = 'success'",
  );
  expectEqual('history rows closed', rows[0].n, o.items);
  return measurement({
    ...figuresOf(t),
    job: 'account-sync',
    way: 'core',
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    items: t.result.connectionsSynced,
    accounts: t.result.accountsSynced,
    dataApiCalls: t.db.callCounts().total,
  });
}

/** The naive token refresh over `items` due tokens (concurrency is always 1). */
export async function measureNaiveTokenRefresh(
  w: BenchWorld,
  o: Omit<RunOptions, 'concurrency'>,
): Promise<JobMeasurement> {
  const t = await timedRun(w, o.latencyMs, seedTokens(w, o.items), 'lwa', (db) =>
    naiveTokenRefresh({ db, lwa: w.lwa(), cipher: w.cipher }),
  );
  expectEqual('tokens refreshed (naive)', t.result.succeeded, o.items);
  expectEqual('LWA calls (naive)', t.amazonCalls, o.items);
  return measurement({
    ...figuresOf(t),
    job: 'token-refresh',
    way: 'naive',
    concurrency: 1,
    latencyMs: o.latencyMs,
    items: t.result.succeeded,
    accounts: 0,
    seconds: t.result.seconds,
    dataApiCalls: t.result.databaseCalls,
  });
}

/** The naive account sync over `items` due users. */
export async function measureNaiveAccountSync(
  w: BenchWorld,
  o: Omit<RunOptions, 'concurrency'>,
): Promise<JobMeasurement> {
  const t = await timedRun(w, o.latencyMs, seedUsers(w, o.items), 'ads', (db) =>
    naiveAccountSync({ db, ads: w.ads(), cipher: w.cipher }),
  );
  expectEqual('users synced (naive)', t.result.succeeded, o.items);
  expectEqual('accounts synced (naive)', t.result.accounts, expectedAccountsFor(o.items));
  expectEqual('Ads API calls (naive)', t.amazonCalls, o.items);
  return measurement({
    ...figuresOf(t),
    job: 'account-sync',
    way: 'naive',
    concurrency: 1,
    latencyMs: o.latencyMs,
    items: t.result.succeeded,
    accounts: t.result.accounts,
    seconds: t.result.seconds,
    dataApiCalls: t.result.databaseCalls,
  });
}

/** Accounts the seeded users have at Amazon (1-2-3-4 profiles per user, per 5,000-user chunk). */
export function expectedAccountsFor(users: number): number {
  let total = 0;
  for (let start = 0; start < users; start += SEED_CHUNK) {
    const n = Math.min(SEED_CHUNK, users - start);
    for (let i = 0; i < n; i++) total += profilesFor(i);
  }
  return total;
}

/**
 * A job run as it is paced in AWS: the Amazon clients limited to `ratePerSecond` per endpoint
 * and region through the shared rate budget in the database, with the fake Amazon enforcing
 * the same limit (a call over it is answered 429). Shows what the budget costs in Data API calls
 * and that the rate Amazon sees stays under the limit.
 */
export interface BudgetMeasurement {
  readonly job: JobName;
  /** Requests per second per region: the budget's ceiling and the fake Amazon's own limit. */
  readonly ratePerSecond: number;
  readonly regions: number;
  readonly concurrency: number;
  readonly latencyMs: number;
  /** Tokens refreshed, or users (connections) synced. */
  readonly items: number;
  readonly seconds: number;
  readonly perSecond: number;
  /** ratePerSecond × regions: the most the budget lets through. */
  readonly limitPerSecond: number;
  /** perSecond ÷ limitPerSecond × 100 */
  readonly percentOfLimit: number;
  /** The most calls the fake Amazon received within any one second, per region of the job's endpoint. */
  readonly busiestSecond: Readonly<Record<string, number>>;
  /** Calls the fake Amazon refused (429) for exceeding its limit. */
  readonly refused: number;
  /** Data API calls of the job itself (claims, write-backs…). */
  readonly jobDataApiCalls: number;
  /** Data API calls of the budget (reservations, 429 reports). */
  readonly budgetDataApiCalls: number;
  /** budgetDataApiCalls ÷ items × 1000 */
  readonly budgetCallsPer1000: number;
}

export async function measureWithSharedBudget(
  w: BenchWorld,
  o: { job: JobName; ratePerSecond: number; concurrency: number; items: number; latencyMs: number },
): Promise<BudgetMeasurement> {
  await w.reset({ lwaMs: o.latencyMs, adsMs: o.latencyMs, limitPerSecond: o.ratePerSecond });
  await (o.job === 'token-refresh' ? seedTokens(w, o.items) : seedUsers(w, o.items))();
  const jobDb = w.dataApi();
  const budgetDb = w.dataApi();
  const clients = w.budgeted(budgetDb, o.ratePerSecond);
  const startedAtMs = Date.now();
  const started = performance.now();
  let items: number;
  if (o.job === 'token-refresh') {
    const r = await runTokenRefresh({ db: jobDb, lwa: clients.lwa, ...benchRuntime(w, o.concurrency) });
    expectEqual('tokens refreshed or failed', r.refreshed + r.failed, o.items);
    items = r.refreshed;
  } else {
    const r = await runAccountSync({
      db: jobDb,
      ads: clients.ads,
      lwa: clients.lwa,
      ...benchRuntime(w, o.concurrency),
    });
    expectEqual('connections synced or failed', r.connectionsSynced + r.connectionsFailed, o.items);
    items = r.connectionsSynced;
  }
  const seconds = (performance.now() - started) / 1000;
  const counters = await w.counters(startedAtMs);
  const endpoint = o.job === 'token-refresh' ? 'lwa' : 'ads';
  const busiestSecond = Object.fromEntries(
    Object.entries(counters.busiestSecond)
      .filter(([key]) => key.startsWith(`${endpoint}:`))
      .map(([key, n]) => [key.slice(endpoint.length + 1), n]),
  );
  const refused = Object.entries(counters.refused)
    .filter(([key]) => key.startsWith(`${endpoint}:`))
    .reduce((sum, [, n]) => sum + n, 0);
  const regions = Object.keys(busiestSecond).length;
  const perSecond = items / seconds;
  const budgetDataApiCalls = budgetDb.callCounts().total;
  return {
    job: o.job,
    ratePerSecond: o.ratePerSecond,
    regions,
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    items,
    seconds,
    perSecond,
    limitPerSecond: o.ratePerSecond * regions,
    percentOfLimit: (perSecond / (o.ratePerSecond * regions)) * 100,
    busiestSecond,
    refused,
    jobDataApiCalls: jobDb.callCounts().total,
    budgetDataApiCalls,
    budgetCallsPer1000: items > 0 ? (budgetDataApiCalls / items) * 1000 : 0,
  };
}
