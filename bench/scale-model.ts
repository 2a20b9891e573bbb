/**
 * The model behind `npm run bench:scale`: one environment's connections over hours of virtual
 * time, one connection at a time, in steps of one second. What it plays, per region (NA, EU, FE,
 * connections spread evenly):
 *
 * - **The product** uses each *used* connection every `useIntervalSeconds` through the on-demand
 *   token route: the use is recorded (`last_used_at`), and a token with `onDemandFreshSeconds` or
 *   less left is refreshed at once, drawing from the same LWA budget (first in line each second).
 *   A use that finds an expired token is a failure of the design: it must never happen.
 * - **The token refresh** (every `refresh.everySeconds`, working `refresh.workSeconds` of it)
 *   claims connections with refresh on, expiring within `refreshWindowSeconds` and used within
 *   `usedWithinSeconds`, earliest expiry first, at most the LWA budget per region per second and
 *   the core's ceiling (concurrency ÷ latency) in all.
 * - **The account sync** (every `sync.everySeconds`, working `sync.workSeconds`) takes connections
 *   whose next sync has come, earliest first: a token valid for `sync.minValiditySeconds` more is
 *   used for one Ads call (drawing from the Ads budget); an expiring one is refreshed on demand
 *   first (one LWA call from the LWA budget, through the token route's single-flight path, as the
 *   account sync core does), never marked used: an idle connection costs one refresh per sync
 *   cycle. Its next sync is set `sync.intervalSeconds` on.
 * - **The budget** is one allowance per endpoint and region per second, shared by all of the
 *   above (the database budget the invocations draw from): rate × 1000 ÷ (1000 + tolerance),
 *   as its slots are spaced; the model never spends more, and records the busiest second.
 *
 * Data API calls are counted per invocation as the cores make them (fixed calls, one claim per
 * batch, a write-back per batch and per `writeBackEverySeconds` a batch is in flight), and the
 * route's per use; rows written per item come from the measured runs (`rowsPer*`). The model is
 * checked against the measured runs by replaying them (`initial: 'all-due'`): see
 * bench/simulate-scale.ts.
 */
import { AMAZON_REGIONS } from '../lambda/shared/amazon/regions';
import { ON_DEMAND_FRESH_SECONDS, proactiveRefreshWindowSeconds } from '../lambda/token-refresh/window';

export interface JobShape {
  readonly everySeconds: number;
  /** Seconds of each invocation that claim work (the timeout minus the cores' reserve). */
  readonly workSeconds: number;
  readonly batch: number;
  /** Items per second one invocation can do whatever the budget: concurrency ÷ Amazon latency. */
  readonly ceilingPerSecond: number;
  /** Data API calls every invocation makes besides claims and write-backs. */
  readonly fixedCalls: number;
  /** Seconds from an invocation's start to its first Amazon call (claim, first reservation). @default 0 */
  readonly startSeconds?: number;
  /** This job's write-back cadence, when it is not `costs.writeBackEverySeconds` (the core's `flushAfterMs`). */
  readonly writeBackEverySeconds?: number;
}

export interface ModelCosts {
  /** A batch in flight writes its finished outcomes back every this many seconds. @default 3 */
  readonly writeBackEverySeconds: number;
  /** Data API calls of one route request that finds a fresh token (read + record the use). */
  readonly routeCallsPerUse: number;
  /** Extra Data API calls of a route request that refreshes (lease, write-back). */
  readonly routeCallsPerRefresh: number;
  /** Data API calls of the shared budget (slot reservations) per LWA and per Ads request, measured. */
  readonly budgetCallsPerRequest: { readonly lwa: number; readonly ads: number };
  /** Rows written per refreshed token (claim's lease + write-back), counted from the statements. */
  readonly rowsPerRefresh: number;
  /** Rows written per synced connection (lease, accounts, history), counted from the statements. */
  readonly rowsPerSync: number;
  /** Rows written per use the route records. */
  readonly rowsPerUse: number;
}

export interface ModelOptions {
  readonly connections: number;
  /** Share of connections the product uses (every useIntervalSeconds). */
  readonly usedShare: number;
  readonly useIntervalSeconds: number;
  /** LWA requests per second per region (amazonLimits.lwaRequestsPerSecond). */
  readonly lwaPerSecond: number;
  /** Ads requests per second per region (amazonLimits.adsRequestsPerSecond). */
  readonly adsPerSecond: number;
  /** jobs.proactiveRefreshUsedWithinHours, in seconds. */
  readonly usedWithinSeconds: number;
  readonly refreshWindowSeconds: number;
  readonly tokenLifetimeSeconds: number;
  readonly onDemandFreshSeconds: number;
  readonly refresh: JobShape;
  readonly sync: JobShape & { readonly intervalSeconds: number; readonly minValiditySeconds: number };
  readonly costs: ModelCosts;
  /**
   * The shared budget's tolerance for late slots: it spaces slots (1000 + tolerance) ÷ rate ms
   * apart (migration 0015), so the jobs get rate × 1000 ÷ (1000 + tolerance) per second at
   * most. @default 100 (the Lambdas' setting)
   */
  readonly budgetToleranceMs: number;
  /** Virtual hours played before counting (a full sync interval settles the schedule). */
  readonly warmupHours: number;
  /** Virtual hours counted. */
  readonly hours: number;
  /**
   * 'steady': as bench/scale-seed.ts seeds (used connections fresh, idle ones last used by a sync
   * in the last interval). 'all-due': every connection used, its token expiring in 300 s and its
   * sync due (the measured runs' start), one refresh and one sync invocation from t = 0.
   */
  readonly initial: 'steady' | 'all-due';
  /** Seed of the phases and the spread of the initial state. @default 1 */
  readonly seed?: number;
}

export const MODEL_DEFAULTS: Omit<ModelOptions, 'connections' | 'lwaPerSecond' | 'adsPerSecond'> = {
  usedShare: 0.1,
  useIntervalSeconds: 600,
  usedWithinSeconds: 3600,
  // Just in time for the 5-minute schedule (lambda/token-refresh/window.ts): 11 minutes.
  refreshWindowSeconds: proactiveRefreshWindowSeconds(300),
  tokenLifetimeSeconds: 3600,
  onDemandFreshSeconds: ON_DEMAND_FRESH_SECONDS,
  // lib/scheduled-jobs.ts and the cores' defaults: every 5 min, 4-min timeout, 30 s reserve,
  // batches of 500, concurrency 16 at ~100 ms per LWA call, write-backs every 10 s
  // (lambda/token-refresh/core.ts's flushAfterMs; the account sync's is 3 s, costs' default).
  refresh: {
    everySeconds: 300,
    workSeconds: 210,
    batch: 500,
    ceilingPerSecond: 160,
    fixedCalls: 3,
    writeBackEverySeconds: 10,
  },
  // Every 10 min (cdk.json), 10-min timeout, 30 s reserve, batches of 250, concurrency 16 at
  // ~150 ms per Ads call.
  sync: {
    everySeconds: 600,
    workSeconds: 570,
    batch: 250,
    ceilingPerSecond: 106,
    fixedCalls: 4,
    intervalSeconds: 21_600,
    minValiditySeconds: 120,
  },
  costs: {
    writeBackEverySeconds: 3,
    budgetCallsPerRequest: { lwa: 0.5, ads: 0.5 },
    routeCallsPerUse: 1,
    routeCallsPerRefresh: 2,
    rowsPerRefresh: 2,
    rowsPerSync: 9,
    rowsPerUse: 1,
  },
  budgetToleranceMs: 100,
  warmupHours: 6,
  hours: 24,
  initial: 'steady',
};

export interface PerRegionHour {
  readonly lwaProactive: number;
  readonly lwaOnDemand: number;
  readonly lwa: number;
  readonly ads: number;
}

export interface RefreshRatios {
  /** Refreshes of used connections (proactive and on demand) per used connection-hour. */
  readonly perUsedConnectionHour: number;
  /** Its minimum: 3600 ÷ the token lifetime (one refresh per lifetime). */
  readonly minimumPerUsedConnectionHour: number;
  /** Refreshes of idle connections per idle connection per sync cycle. */
  readonly perIdleConnectionCycle: number;
  /** Its minimum: one (the sync needs a token once per cycle). */
  readonly minimumPerIdleConnectionCycle: number;
  /** All LWA requests per hour, and the minimum for the same connections. */
  readonly perHour: number;
  readonly minimumPerHour: number;
}

export interface ModelResult {
  readonly options: ModelOptions;
  readonly hours: number;
  /** Per region, per counted hour on average. */
  readonly perRegionHour: Readonly<Record<'NA' | 'EU' | 'FE', PerRegionHour>>;
  /** Most requests the model spent in any one second, per endpoint, any region. */
  readonly busiestSecond: { readonly lwa: number; readonly ads: number };
  /** Product uses that found an expired token (must be 0). */
  readonly usesWithExpiredToken: number;
  /** Checks at every refresh tick: used connections whose token had expired (must be 0). */
  readonly usedExpiredAtTicks: number;
  readonly uses: number;
  /** Uses that waited for an on-demand refresh (fresh token needed, less than onDemandFreshSeconds left). */
  readonly onDemandRefreshes: number;
  /** Longest a due connection waited past its next-sync time at a sync invocation's start (s). */
  readonly maxSyncLagSeconds: number;
  /** Connections due for sync at the end (backlog). */
  readonly syncBacklogAtEnd: number;
  /**
   * LWA refreshes against the minimum (one per used connection per token lifetime, one per idle
   * connection per sync cycle), counted over the counted hours.
   */
  readonly refreshes: RefreshRatios;
  /** Per counted hour. */
  readonly perHour: {
    readonly refreshed: number;
    readonly synced: number;
    /** LWA refreshes the account sync made on demand (an idle connection's expired token). */
    readonly refreshedForSync: number;
    readonly dataApi: {
      readonly refresh: number;
      readonly sync: number;
      readonly route: number;
      readonly total: number;
    };
    readonly refreshClaims: number;
    readonly refreshWriteBacks: number;
    readonly syncClaims: number;
    readonly syncWriteBacks: number;
    /** Budget reservations of both jobs. */
    readonly budgetCalls: number;
    readonly rowsWritten: number;
  };
  /** Totals over the whole run (replays compare these with a measured run). */
  readonly totals: {
    readonly refreshed: number;
    readonly synced: number;
    readonly refreshCalls: number;
    readonly syncCalls: number;
    readonly lwa: number;
    readonly ads: number;
  };
  readonly modelSeconds: number;
}

/** mulberry32: a small deterministic generator. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Data API calls of one invocation that did `items` in `busySeconds` of claiming. */
function invocationCalls(job: JobShape, costs: ModelCosts, items: number, busySeconds: number, perRequest: number) {
  const claims = Math.ceil(items / job.batch);
  const every = job.writeBackEverySeconds ?? costs.writeBackEverySeconds;
  const writeBacks = items === 0 ? 0 : Math.max(claims, Math.ceil(busySeconds / every));
  const budget = Math.round(items * perRequest);
  return { claims, writeBacks, budget, total: job.fixedCalls + claims + writeBacks + budget };
}

/** Refreshes per used connection-hour and per idle connection per sync cycle, beside their minimum. */
function refreshRatios(o: ModelOptions, lwaUsed: number, lwaIdle: number, used: Uint8Array): RefreshRatios {
  let usedCount = 0;
  for (const u of used) usedCount += u;
  const idleCount = used.length - usedCount;
  const cycles = (o.hours * 3600) / o.sync.intervalSeconds;
  const minimumPerUsedConnectionHour = 3600 / o.tokenLifetimeSeconds;
  return {
    perUsedConnectionHour: usedCount === 0 ? 0 : lwaUsed / usedCount / o.hours,
    minimumPerUsedConnectionHour,
    perIdleConnectionCycle: idleCount === 0 ? 0 : lwaIdle / idleCount / cycles,
    minimumPerIdleConnectionCycle: 1,
    perHour: (lwaUsed + lwaIdle) / o.hours,
    minimumPerHour: usedCount * minimumPerUsedConnectionHour + idleCount / (o.sync.intervalSeconds / 3600),
  };
}

export function runModel(o: ModelOptions): ModelResult {
  const started = performance.now();
  const n = o.connections;
  const rnd = random(o.seed ?? 1);
  const region = new Uint8Array(n);
  const used = new Uint8Array(n);
  const expiresAt = new Float64Array(n);
  const lastUsedAt = new Float64Array(n);
  const nextSyncAt = new Float64Array(n);
  const W = o.usedWithinSeconds;
  for (let i = 0; i < n; i++) {
    region[i] = i % 3;
    if (o.initial === 'all-due') {
      used[i] = 0; // no product uses in a replay: the jobs alone, as in the measured run
      lastUsedAt[i] = 0;
      expiresAt[i] = 300;
      nextSyncAt[i] = 0;
      continue;
    }
    used[i] = rnd() < o.usedShare ? 1 : 0;
    const syncedAgo = rnd() * o.sync.intervalSeconds;
    nextSyncAt[i] = o.sync.intervalSeconds - syncedAgo;
    if (used[i]) {
      lastUsedAt[i] = -rnd() * o.useIntervalSeconds;
      expiresAt[i] = 1500 + rnd() * 2100;
    } else {
      // Idle: last used long ago; its token is the one the last sync took on demand.
      lastUsedAt[i] = -Infinity;
      expiresAt[i] = -syncedAgo + o.tokenLifetimeSeconds;
    }
  }
  // Product uses: each used connection at a fixed phase of the use interval.
  const useBuckets: number[][] = Array.from({ length: o.useIntervalSeconds }, () => []);
  for (let i = 0; i < n; i++) if (used[i]) useBuckets[Math.floor(rnd() * o.useIntervalSeconds)].push(i);

  const warmup = o.initial === 'all-due' ? 0 : o.warmupHours * 3600;
  const end = warmup + o.hours * 3600;
  const lwaAt = [0, 0, 0];
  const adsAt = [0, 0, 0];
  const count = {
    lwaProactive: [0, 0, 0],
    lwaOnDemand: [0, 0, 0],
    ads: [0, 0, 0],
    uses: 0,
    expiredAtUse: 0,
    expiredAtTicks: 0,
    onDemand: 0,
    refreshed: 0,
    synced: 0,
    syncRefreshed: 0,
    lwaUsed: 0,
    lwaIdle: 0,
    refreshClaims: 0,
    refreshWriteBacks: 0,
    refreshCalls: 0,
    syncClaims: 0,
    syncWriteBacks: 0,
    syncCalls: 0,
    budgetCalls: 0,
    routeCalls: 0,
    rows: 0,
  };
  const totals = { refreshed: 0, synced: 0, refreshCalls: 0, syncCalls: 0, lwa: 0, ads: 0 };
  let busiestLwa = 0;
  let busiestAds = 0;
  let maxSyncLag = 0;
  // On-demand refreshes waiting for the LWA budget, per region, first in line from the head (a
  // queue: taking from the front moves the head, not the rest, which a starved budget makes long).
  const pendingOnDemand: number[][] = [[], [], []];
  const pendingHead = [0, 0, 0];
  let refreshQueue: number[][] = [[], [], []];
  let refreshHead = [0, 0, 0];
  let refreshItems = 0;
  let refreshBusy = 0;
  let syncQueue: number[][] = [[], [], []];
  let syncHead = [0, 0, 0];
  let syncItems = 0;
  let syncBusy = 0;

  const counting = (t: number) => t >= warmup;
  let now = 0;
  /** One LWA refresh of connection i (any path), counted as a used or an idle connection's. */
  const refreshedOne = (i: number) => {
    if (!counting(now)) return;
    if (used[i]) count.lwaUsed++;
    else count.lwaIdle++;
  };
  const closeRefresh = (t: number) => {
    const c = invocationCalls(o.refresh, o.costs, refreshItems, refreshBusy, o.costs.budgetCallsPerRequest.lwa);
    totals.refreshCalls += c.total;
    if (counting(t)) {
      count.refreshClaims += c.claims;
      count.refreshWriteBacks += c.writeBacks;
      count.budgetCalls += c.budget;
      count.refreshCalls += c.total;
    }
  };
  const closeSync = (t: number) => {
    const c = invocationCalls(o.sync, o.costs, syncItems, syncBusy, o.costs.budgetCallsPerRequest.ads);
    totals.syncCalls += c.total;
    if (counting(t)) {
      count.syncClaims += c.claims;
      count.syncWriteBacks += c.writeBacks;
      count.budgetCalls += c.budget;
      count.syncCalls += c.total;
    }
  };

  // Slots per second the budget hands out; unused ones are dropped, only the fraction carries.
  const share = 1000 / (1000 + o.budgetToleranceMs);
  const lwaCarry = [0, 0, 0];
  const adsCarry = [0, 0, 0];
  const lwaAllow = [0, 0, 0];
  const adsAllow = [0, 0, 0];
  for (let t = 0; t < end; t++) {
    now = t;
    const on = counting(t);
    for (let r = 0; r < 3; r++) {
      lwaAt[r] = adsAt[r] = 0;
      const l = lwaCarry[r] + o.lwaPerSecond * share;
      lwaAllow[r] = Math.floor(l);
      lwaCarry[r] = l - lwaAllow[r];
      const a = adsCarry[r] + o.adsPerSecond * share;
      adsAllow[r] = Math.floor(a);
      adsCarry[r] = a - adsAllow[r];
    }

    // The product's uses, and on-demand refreshes first in line for the LWA budget.
    for (let r = 0; r < 3; r++) {
      const waiting = pendingOnDemand[r];
      let k = pendingHead[r];
      while (k < waiting.length && lwaAt[r] < lwaAllow[r]) {
        const i = waiting[k++];
        expiresAt[i] = t + o.tokenLifetimeSeconds;
        lwaAt[r]++;
        if (on) count.lwaOnDemand[r]++;
        refreshedOne(i);
      }
      pendingHead[r] = k;
      // What was taken is dropped once it is most of the array: amortised, not every second.
      if (k > 1024 && k * 2 > waiting.length) {
        waiting.splice(0, k);
        pendingHead[r] = 0;
      }
    }
    for (const i of useBuckets[t % o.useIntervalSeconds]) {
      lastUsedAt[i] = t;
      const r = region[i];
      if (on) {
        count.uses++;
        count.routeCalls += o.costs.routeCallsPerUse;
        count.rows += o.costs.rowsPerUse;
        if (expiresAt[i] <= t) count.expiredAtUse++;
      }
      if (expiresAt[i] - t <= o.onDemandFreshSeconds) {
        if (on) {
          count.onDemand++;
          count.routeCalls += o.costs.routeCallsPerRefresh + o.costs.budgetCallsPerRequest.lwa;
          count.rows += o.costs.rowsPerRefresh;
        }
        if (lwaAt[r] < lwaAllow[r]) {
          expiresAt[i] = t + o.tokenLifetimeSeconds;
          lwaAt[r]++;
          if (on) count.lwaOnDemand[r]++;
          refreshedOne(i);
        } else pendingOnDemand[r].push(i);
      }
    }

    // Token refresh invocation: claims at its start (the due set as of then), then works.
    const rPhase = o.initial === 'all-due' ? t : t % o.refresh.everySeconds;
    if (rPhase === 0) {
      if (t > 0) closeRefresh(t);
      refreshItems = 0;
      refreshBusy = 0;
      refreshQueue = [[], [], []];
      refreshHead = [0, 0, 0];
      for (let i = 0; i < n; i++) {
        if (on && used[i] && expiresAt[i] <= t) count.expiredAtTicks++;
        if (expiresAt[i] < t + o.refreshWindowSeconds && lastUsedAt[i] >= t - W) refreshQueue[region[i]].push(i);
      }
      for (const q of refreshQueue) q.sort((a, b) => expiresAt[a] - expiresAt[b]);
    }
    if (rPhase >= (o.refresh.startSeconds ?? 0) && rPhase < o.refresh.workSeconds) {
      let room = o.refresh.ceilingPerSecond;
      let did = 0;
      // Regions take turns for the core's ceiling (its calls to the three are interleaved).
      for (let progress = true; progress && room > 0;) {
        progress = false;
        for (let r = 0; r < 3 && room > 0; r++) {
          const q = refreshQueue[r];
          while (refreshHead[r] < q.length && lwaAt[r] < lwaAllow[r]) {
            const i = q[refreshHead[r]++];
            if (expiresAt[i] >= t + o.refreshWindowSeconds) continue; // renewed on demand meanwhile
            expiresAt[i] = t + o.tokenLifetimeSeconds;
            lwaAt[r]++;
            room--;
            did++;
            progress = true;
            totals.refreshed++;
            refreshedOne(i);
            if (on) {
              count.lwaProactive[r]++;
              count.refreshed++;
              count.rows += o.costs.rowsPerRefresh;
            }
            break;
          }
        }
      }
      refreshItems += did;
      if (did > 0) refreshBusy++;
    }

    // Account sync invocation (after the proactive refresh: LWA slots the refresh leaves this second
    // go to the tokens the sync takes on demand).
    const sPhase = o.initial === 'all-due' ? t : t % o.sync.everySeconds;
    if (sPhase === 0) {
      if (t > 0) closeSync(t);
      syncItems = 0;
      syncBusy = 0;
      syncQueue = [[], [], []];
      syncHead = [0, 0, 0];
      for (let i = 0; i < n; i++) {
        if (nextSyncAt[i] > t) continue;
        if (on) maxSyncLag = Math.max(maxSyncLag, t - nextSyncAt[i]);
        syncQueue[region[i]].push(i);
      }
      for (const q of syncQueue) q.sort((a, b) => nextSyncAt[a] - nextSyncAt[b]);
    }
    if (sPhase >= (o.sync.startSeconds ?? 0) && sPhase < o.sync.workSeconds) {
      let room = o.sync.ceilingPerSecond;
      let did = 0;
      for (let progress = true; progress && room > 0;) {
        progress = false;
        for (let r = 0; r < 3 && room > 0; r++) {
          const q = syncQueue[r];
          while (syncHead[r] < q.length && adsAt[r] < adsAllow[r]) {
            const i = q[syncHead[r]];
            if (expiresAt[i] - t < o.sync.minValiditySeconds) {
              // Its token on demand first (the route's single-flight path), from the LWA budget.
              if (lwaAt[r] >= lwaAllow[r]) break;
              expiresAt[i] = t + o.tokenLifetimeSeconds;
              lwaAt[r]++;
              refreshedOne(i);
              if (on) {
                count.lwaOnDemand[r]++;
                count.syncRefreshed++;
                count.syncCalls += o.costs.routeCallsPerRefresh + o.costs.budgetCallsPerRequest.lwa;
                count.rows += o.costs.rowsPerRefresh;
              }
              totals.syncCalls += o.costs.routeCallsPerRefresh + o.costs.budgetCallsPerRequest.lwa;
            }
            syncHead[r]++;
            adsAt[r]++;
            room--;
            did++;
            progress = true;
            nextSyncAt[i] = t + o.sync.intervalSeconds;
            totals.synced++;
            if (on) {
              count.ads[r]++;
              count.synced++;
              count.rows += o.costs.rowsPerSync;
            }
            break;
          }
        }
      }
      syncItems += did;
      if (did > 0) syncBusy++;
    }

    for (let r = 0; r < 3; r++) {
      totals.lwa += lwaAt[r];
      totals.ads += adsAt[r];
      if (lwaAt[r] > busiestLwa) busiestLwa = lwaAt[r];
      if (adsAt[r] > busiestAds) busiestAds = adsAt[r];
    }
  }
  closeRefresh(end);
  closeSync(end);
  let backlog = 0;
  for (let i = 0; i < n; i++) if (nextSyncAt[i] <= end) backlog++;

  const h = o.hours;
  const perRegionHour = Object.fromEntries(
    AMAZON_REGIONS.map((name, r) => [
      name,
      {
        lwaProactive: count.lwaProactive[r] / h,
        lwaOnDemand: count.lwaOnDemand[r] / h,
        lwa: (count.lwaProactive[r] + count.lwaOnDemand[r]) / h,
        ads: count.ads[r] / h,
      },
    ]),
  ) as unknown as ModelResult['perRegionHour'];
  return {
    options: o,
    hours: h,
    perRegionHour,
    busiestSecond: { lwa: busiestLwa, ads: busiestAds },
    usesWithExpiredToken: count.expiredAtUse,
    usedExpiredAtTicks: count.expiredAtTicks,
    uses: count.uses,
    onDemandRefreshes: count.onDemand,
    maxSyncLagSeconds: maxSyncLag,
    syncBacklogAtEnd: backlog,
    refreshes: refreshRatios(o, count.lwaUsed, count.lwaIdle, used),
    perHour: {
      refreshed: count.refreshed / h,
      synced: count.synced / h,
      refreshedForSync: count.syncRefreshed / h,
      dataApi: {
        refresh: count.refreshCalls / h,
        sync: count.syncCalls / h,
        route: count.routeCalls / h,
        total: (count.refreshCalls + count.syncCalls + count.routeCalls) / h,
      },
      refreshClaims: count.refreshClaims / h,
      refreshWriteBacks: count.refreshWriteBacks / h,
      syncClaims: count.syncClaims / h,
      syncWriteBacks: count.syncWriteBacks / h,
      budgetCalls: count.budgetCalls / h,
      rowsWritten: count.rows / h,
    },
    totals,
    modelSeconds: (performance.now() - started) / 1000,
  };
}
