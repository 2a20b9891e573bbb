import { RateLimitUsageRecorder } from '../amazon/usage-store';
import type { AmazonRegion } from '../amazon/regions';
import type { AppLogger } from '../logger';
import { backoffDelayMs } from '../backoff';

/**
 * What both job cores take from their handler besides the database and Amazon: a clock, the
 * invocation's remaining time, a logger and a metrics sink. Handlers pass Powertools' Logger
 * and Metrics; tests and `npm run job` pass plain recorders.
 */
export type MetricUnitName = 'Count' | 'Milliseconds';

export interface JobMetrics {
  addMetric(name: string, unit: MetricUnitName, value: number): void;
  /**
   * The same metric for one Amazon region only (a `region` dimension besides the usual ones),
   * for the dashboard's per-region graphs; the alarms read the metric without it.
   * @default - not recorded
   */
  addRegionalMetric?(name: string, region: AmazonRegion, unit: MetricUnitName, value: number): void;
}

/** Counts of one metric per region. */
export type RegionalCounts = Partial<Record<AmazonRegion, number>>;

/** Adds one to `region`'s count of `name`. */
export function countInRegion(
  counts: Record<string, RegionalCounts>,
  name: string,
  region: AmazonRegion,
  by = 1,
): void {
  const byRegion = (counts[name] ??= {});
  byRegion[region] = (byRegion[region] ?? 0) + by;
}

/** Adds one regional `Count` metric per metric and region counted (a run's totals by region). */
export function addRegionalCounts(metrics: JobMetrics, counts: Readonly<Record<string, RegionalCounts>>): void {
  if (!metrics.addRegionalMetric) return;
  for (const [name, byRegion] of Object.entries(counts))
    for (const [region, value] of Object.entries(byRegion))
      metrics.addRegionalMetric(name, region as AmazonRegion, 'Count', value);
}

export interface JobRuntime {
  /** @default () => new Date() */
  readonly now?: () => Date;
  /** Milliseconds the invocation may still run (Lambda's getRemainingTimeInMillis). */
  readonly remainingTimeMs: () => number;
  readonly logger: AppLogger;
  readonly metrics: JobMetrics;
  /** @default Math.random */
  readonly random?: () => number;
}

/** Adds one `Count` metric per entry (a run's totals). */
export function addCounts(metrics: JobMetrics, counts: Readonly<Record<string, number>>): void {
  for (const [name, value] of Object.entries(counts)) metrics.addMetric(name, 'Count', value);
}

/** A logger that drops everything (for callers that want none). */
export const silentLogger: AppLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

/** A metrics sink that keeps totals per metric name, and per region (tests, `npm run job`, `npm start`). */
export class MetricTotals implements JobMetrics {
  readonly totals: Record<string, number> = {};
  readonly byRegion: Record<string, RegionalCounts> = {};
  addMetric(name: string, _unit: MetricUnitName, value: number): void {
    this.totals[name] = (this.totals[name] ?? 0) + value;
  }
  addRegionalMetric(name: string, region: AmazonRegion, _unit: MetricUnitName, value: number): void {
    countInRegion(this.byRegion, name, region, value);
  }
}

/** A failure's message for storage and logs: its class and message, never more. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

/**
 * When to try an item again after its `failures`-th failure in a row: capped exponential
 * backoff whose delay is at least half its ceiling (so a failing item is never retried
 * straight away in the same run) plus full jitter on the other half, and never before
 * `atLeastSeconds` (a Retry-After).
 */
export function nextRetryAt(
  now: Date,
  failures: number,
  o: { baseSeconds: number; maxSeconds: number; random: () => number; atLeastSeconds?: number },
): Date {
  const half = { baseDelayMs: o.baseSeconds * 500, maxDelayMs: o.maxSeconds * 500, random: o.random };
  const ceilingHalf = Math.min(half.maxDelayMs, half.baseDelayMs * 2 ** Math.max(0, failures - 1));
  const delay = ceilingHalf + backoffDelayMs(failures, half);
  return new Date(now.getTime() + Math.max(delay, (o.atLeastSeconds ?? 0) * 1000));
}

/**
 * What the per-item work of a run needs of the run (both cores' `…Context`): its collaborators
 * and settings, the clock and randomness, the usage it records, the endpoint pauses per region
 * and how long a call may still wait.
 */
export interface JobRunContext<Deps, Settings> {
  readonly deps: Deps;
  readonly settings: Settings;
  readonly now: () => Date;
  readonly random: () => number;
  readonly usage: RateLimitUsageRecorder;
  /** Per region: until when its Amazon endpoint is paused (epoch ms), by an earlier run or this one. */
  readonly pausedUntil: Map<AmazonRegion, number>;
  /** How long a call may still wait (for the limiter, a pause, a retry) and leave the reserve. */
  readonly waitBudgetMs: () => number;
}

/** A run's context for its per-item work, with the defaults both cores use. */
export function jobRunContext<Deps extends JobRuntime, Settings extends { readonly reserveMs: number }>(
  deps: Deps,
  settings: Settings,
): JobRunContext<Deps, Settings> {
  return {
    deps,
    settings,
    now: deps.now ?? (() => new Date()),
    random: deps.random ?? Math.random,
    usage: new RateLimitUsageRecorder(),
    pausedUntil: new Map(),
    waitBudgetMs: () => deps.remainingTimeMs() - settings.reserveMs / 2,
  };
}
