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

/** Seeds `items` due tokens and runs the token refresh core once over them. */
export async function measureTokenRefresh(w: BenchWorld, o: RunOptions): Promise<JobMeasurement> {
  await w.reset({ lwaMs: o.latencyMs, adsMs: o.latencyMs });
  expectEqual('tokens seeded', await w.seedRefreshDue(o.items), o.items);
  const db = w.dataApi();
  const lwa = w.lwa();
  const before = await w.counters();
  const cpu0 = cpuTimes();
  const started = performance.now();
  const summary = await runTokenRefresh({
    db,
    lwa,
    cipher: w.cipher,
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => 15 * 60_000,
    settings: { concurrency: o.concurrency },
  });
  const seconds = (performance.now() - started) / 1000;
  const machineBusyPercent = busyPercentSince(cpu0);
  const after = await w.counters();
  const amazonCalls = after.lwaCalls - before.lwaCalls;
  expectEqual('tokens refreshed', summary.refreshed, o.items);
  expectEqual('LWA calls', amazonCalls, o.items);
  const { rows } = await w.admin.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM oauth_tokens WHERE last_refreshed_at IS NOT NULL AND refresh_lease_owner IS NULL',
  );
  expectEqual('rows written back', rows[0].n, o.items);
  return measurement({
    job: 'token-refresh',
    way: 'core',
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    items: summary.refreshed,
    accounts: 0,
    seconds,
    dataApiCalls: db.callCounts().total,
    emulatorCalls: after.emulatorCalls - before.emulatorCalls,
    amazonCalls,
    machineBusyPercent,
  });
}

/** Seeds `items` users due for sync (2.5 accounts each on average) and runs the account sync core once. */
export async function measureAccountSync(w: BenchWorld, o: RunOptions): Promise<JobMeasurement> {
  await w.reset({ lwaMs: o.latencyMs, adsMs: o.latencyMs });
  expectEqual('users seeded', await w.seedSyncDue(o.items), o.items);
  const expectedAccounts = expectedAccountsFor(o.items);
  const db = w.dataApi();
  const ads = w.ads();
  const before = await w.counters();
  const cpu0 = cpuTimes();
  const started = performance.now();
  const summary = await runAccountSync({
    db,
    ads,
    cipher: w.cipher,
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => 15 * 60_000,
    settings: { concurrency: o.concurrency },
  });
  const seconds = (performance.now() - started) / 1000;
  const machineBusyPercent = busyPercentSince(cpu0);
  const after = await w.counters();
  const amazonCalls = after.adsCalls - before.adsCalls;
  expectEqual('users synced', summary.usersSynced, o.items);
  expectEqual('accounts synced', summary.accountsSynced, expectedAccounts);
  expectEqual('Ads API calls', amazonCalls, o.items);
  const { rows } = await w.admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM account_sync_history WHERE sync_status = 'success'",
  );
  expectEqual('history rows closed', rows[0].n, o.items);
  return measurement({
    job: 'account-sync',
    way: 'core',
    concurrency: o.concurrency,
    latencyMs: o.latencyMs,
    items: summary.usersSynced,
    accounts: summary.accountsSynced,
    seconds,
    dataApiCalls: db.callCounts().total,
    emulatorCalls: after.emulatorCalls - before.emulatorCalls,
    amazonCalls,
    machineBusyPercent,
  });
}

/** The naive token refresh over `items` due tokens (concurrency is always 1). */
export async function measureNaiveTokenRefresh(
  w: BenchWorld,
  o: Omit<RunOptions, 'concurrency'>,
): Promise<JobMeasurement> {
  await w.reset({ lwaMs: o.latencyMs, adsMs: o.latencyMs });
  expectEqual('tokens seeded', await w.seedRefreshDue(o.items), o.items);
  const db = w.dataApi();
  const before = await w.counters();
  const cpu0 = cpuTimes();
  const r = await naiveTokenRefresh({ db, lwa: w.lwa(), cipher: w.cipher });
  const machineBusyPercent = busyPercentSince(cpu0);
  const after = await w.counters();
  const amazonCalls = after.lwaCalls - before.lwaCalls;
  expectEqual('tokens refreshed (naive)', r.succeeded, o.items);
  expectEqual('LWA calls (naive)', amazonCalls, o.items);
  return measurement({
    job: 'token-refresh',
    way: 'naive',
    concurrency: 1,
    latencyMs: o.latencyMs,
    items: r.succeeded,
    accounts: 0,
    seconds: r.seconds,
    dataApiCalls: r.databaseCalls,
    emulatorCalls: after.emulatorCalls - before.emulatorCalls,
    amazonCalls,
    machineBusyPercent,
  });
}

/** The naive account sync over `items` due users. */
export async function measureNaiveAccountSync(
  w: BenchWorld,
  o: Omit<RunOptions, 'concurrency'>,
): Promise<JobMeasurement> {
  await w.reset({ lwaMs: o.latencyMs, adsMs: o.latencyMs });
  expectEqual('users seeded', await w.seedSyncDue(o.items), o.items);
  const db = w.dataApi();
  const before = await w.counters();
  const cpu0 = cpuTimes();
  const r = await naiveAccountSync({ db, ads: w.ads(), cipher: w.cipher });
  const machineBusyPercent = busyPercentSince(cpu0);
  const after = await w.counters();
  const amazonCalls = after.adsCalls - before.adsCalls;
  expectEqual('users synced (naive)', r.succeeded, o.items);
  expectEqual('accounts synced (naive)', r.accounts, expectedAccountsFor(o.items));
  expectEqual('Ads API calls (naive)', amazonCalls, o.items);
  return measurement({
    job: 'account-sync',
    way: 'naive',
    concurrency: 1,
    latencyMs: o.latencyMs,
    items: r.succeeded,
    accounts: r.accounts,
    seconds: r.seconds,
    dataApiCalls: r.databaseCalls,
    emulatorCalls: after.emulatorCalls - before.emulatorCalls,
    amazonCalls,
    machineBusyPercent,
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
