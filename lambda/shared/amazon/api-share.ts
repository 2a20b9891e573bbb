import { sleep as defaultSleep } from '../backoff';
import type {
  BudgetKey,
  RateBudgetStore,
  Reservation,
  ReserveRequest,
  ThrottleReport,
  ThrottleResult,
} from './rate-budget';
import type { Database } from '../db/port';
import { DatabaseRateBudgetStore } from './rate-budget';
import { endpointLimitsFor, RateLimiterRegistry, type EndpointLimits } from './rate-limiter';
import type { AmazonEndpoint } from './regions';

/**
 * The share of each region's Amazon budget that requests made on behalf of an API caller may
 * use: the rest always stays for the scheduled jobs (the token refresh, the account sync).
 */
export const API_BUDGET_SHARE = 0.5;

/**
 * How far ahead an API request's slots may be (of its quota row and of the shared schedule): a
 * single request never holds the schedule longer, whatever horizon the jobs' batches use.
 */
export const API_HORIZON_MS = 500;

/**
 * Requests per second per region that the jobs' schedule leaves free for interactive requests
 * (someone is waiting for the answer: the token route's refresh, the API's code exchange), per
 * endpoint: the interactive lane (migration 0026).
 *
 * Why a lane: the jobs reserve batches up to 6 s ahead at the full rate (one database call per
 * batch, which is what keeps their cost low). While they do, Amazon's limit has no room for
 * one more request in those seconds: an interactive request on the same schedule waits behind
 * the batches (up to 6 s), and a shorter horizon for the jobs would multiply their database
 * calls. So the jobs draw at the ceiling less the lane ({@link jobsCeiling}), and an
 * interactive request takes a slot of the lane's own row, paced at the lane's rate: two
 * schedules each spaced for its rate never send more than their sum in any second. What the
 * jobs give up: the lane's rate, whenever they run flat out (LWA at 10/s: 9/s instead of 10,
 * about 10 % more budget reservations per request; at 80/s, 79); nothing while they send less.
 * A whole request per second, so that the two rates' whole parts add up to the ceiling's.
 * No lane for the Ads API: no interactive request waits for it.
 */
export const INTERACTIVE_LANE_PER_SECOND: Readonly<Record<AmazonEndpoint, number>> = { lwa: 1, ads: 0 };

/** The endpoint's interactive lane at this ceiling: none below 2 requests per second (the jobs keep at least 1). */
export function interactiveLane(endpoint: AmazonEndpoint, ceiling: number): number {
  const lane = INTERACTIVE_LANE_PER_SECOND[endpoint];
  return lane > 0 && ceiling >= lane + 1 ? lane : 0;
}

/** The rate the jobs' schedule (the endpoint's own row) is paced at: the ceiling less the interactive lane. */
export function jobsCeiling(endpoint: AmazonEndpoint, ceiling: number): number {
  return ceiling - interactiveLane(endpoint, ceiling);
}

/**
 * The jobs' limits: each endpoint's rate less its interactive lane (their limiters' ceiling and
 * their shared budgets' ceiling). Every registry the jobs draw from the database with is built
 * from these (lambda/shared/jobs/container.ts); the configured `amazonLimits` stay the total.
 */
export function jobsLimits(
  limits: Readonly<Record<AmazonEndpoint, EndpointLimits>>,
): Record<AmazonEndpoint, EndpointLimits> {
  const jobs = (endpoint: AmazonEndpoint): EndpointLimits => ({
    ...limits[endpoint],
    ratePerSecond: jobsCeiling(endpoint, limits[endpoint].ratePerSecond),
  });
  return { lwa: jobs('lwa'), ads: jobs('ads') };
}

export interface ApiShareOptions {
  /**
   * Record a 429 in `rate_limit_tracking` when it is reported (the token route runs as the
   * jobs' login, which may; the accounts API's login has no privilege there). @default false
   */
  readonly recordThrottles?: boolean;
}

/**
 * The shared budget as interactive traffic draws from it (the accounts API, the token route).
 * Its limiters are built with the configured ceilings (the total); the jobs' with
 * {@link jobsLimits}.
 *
 * 1. The interactive lane, where the endpoint has one ({@link INTERACTIVE_LANE_PER_SECOND}):
 *    one slot of the lane's row (`lwa-token:interactive`), if one is free within
 *    {@link API_HORIZON_MS}. One database call; the slot is the one the request goes out on.
 *    The lane is never queued on (a request that finds it taken goes on to 2.), and the
 *    database holds it to the endpoint's pause and rate cut (migration 0026).
 * 2. Otherwise (the lane taken by other interactive requests, or no lane) as before the lane:
 *    a slot of the API's own quota row for the endpoint and region (`<endpoint>:api`, paced at
 *    `share` × the ceiling, in the same table and by the same function as the shared budget,
 *    so every interactive caller together stays under it); once that quota slot is due (it
 *    waits for it, within the request's bound), a slot of the jobs' schedule, paced as the jobs
 *    pace it ({@link jobsCeiling}). However many such requests wait, they never hold more than
 *    `share` of the jobs' schedule over time, and they never reserve it ahead (which would push
 *    its frontier past the jobs). The quota row is only a counter (nothing is sent to Amazon at
 *    its slots); its slot is passed as the request's ticket, so that it is not queued behind
 *    the jobs' refused batches (migration 0025), only behind the slots already held.
 *
 * One slot at a time: interactive requests are few and each waits at most its own short bound.
 * A 429 is Amazon's answer to the endpoint and is reported to the endpoint's row (the jobs'),
 * which holds the lane back with it.
 */
export class ApiShareBudgetStore implements RateBudgetStore {
  constructor(
    private readonly inner: RateBudgetStore,
    private readonly share: number = API_BUDGET_SHARE,
    private readonly sleep: (ms: number) => Promise<void> = defaultSleep,
    private readonly options: ApiShareOptions = {},
  ) {
    if (!(share > 0 && share <= 1)) throw new RangeError('share must be in (0, 1]');
  }

  async reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
    const horizonMs = Math.min(request.horizonMs, API_HORIZON_MS);
    const laneRate = interactiveLane(key.endpoint, request.ceiling);
    let lane: Reservation | undefined;
    if (laneRate > 0) {
      lane = await this.inner.reserve(
        { ...key, pool: 'interactive' },
        // Never queued on: a caller that will not get a slot within the horizon takes no place.
        { ...request, horizonMs, ceiling: laneRate, wanted: 1, maxWaitMs: Math.min(request.maxWaitMs, horizonMs) },
      );
      // Granted; or the endpoint is paused (the jobs' schedule is as well: no second call).
      if (lane.granted > 0 || (lane.pausedUntilMs ?? 0) > lane.databaseNowMs) return lane;
    }
    const shared = await this.fromJobsSchedule(key, request, horizonMs);
    // Both refused: the caller's next ask goes where its first slot comes sooner.
    if (shared.granted === 0 && lane && lane.firstSlotAtMs < shared.firstSlotAtMs) return lane;
    return shared;
  }

  throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
    // To the endpoint's row (the jobs' pace): the lane is held back by it (migration 0026).
    // The API's role records nothing in rate_limit_tracking (migration 0018); the route's may.
    return this.inner.throttled(key, {
      ...report,
      ceiling: jobsCeiling(key.endpoint, report.ceiling),
      record: (this.options.recordThrottles ?? false) && (report.record ?? true),
    });
  }

  /** 2. of the class comment: the API's quota slot, then a slot of the jobs' schedule. */
  private async fromJobsSchedule(key: BudgetKey, request: ReserveRequest, horizonMs: number): Promise<Reservation> {
    const quota = await this.inner.reserve(
      { ...key, pool: 'api' },
      { ...request, horizonMs, ceiling: request.ceiling * this.share, wanted: 1 },
    );
    if (quota.granted === 0) return quota;
    const wait = Math.max(0, quota.firstSlotAtMs - quota.databaseNowMs - request.leadMs);
    if (wait > 0) await this.sleep(wait);
    // Its quota slot is its place: an API request is not queued behind the jobs' refused
    // batches on the shared schedule (migration 0025), only behind the slots already held.
    return this.inner.reserve(key, {
      ...request,
      ceiling: jobsCeiling(key.endpoint, request.ceiling),
      horizonMs,
      wanted: 1,
      maxWaitMs: Math.max(0, request.maxWaitMs - wait),
      ticketMs: quota.firstSlotAtMs,
    });
  }
}

/**
 * The limiters of a function that calls Amazon. Amazon's rate per endpoint and region is one
 * budget in the database, shared by every invocation of every job, the token route and the
 * accounts API (lambda/shared/amazon/rate-budget.ts): a job draws at the ceiling less the
 * interactive lane; an interactive caller from that lane (and, when the lane is taken, from the
 * API's share of the jobs' schedule: {@link ApiShareBudgetStore}). `toleranceMs`: see
 * RateLimiterRegistry (tests pass a wider one).
 */
export function budgetLimiters(
  db: Database,
  amazonLimits: { readonly lwa?: number; readonly ads?: number },
  options: { readonly interactive?: boolean } & ApiShareOptions = {},
  toleranceMs?: number,
): RateLimiterRegistry {
  const budget = new DatabaseRateBudgetStore(db);
  const limits = endpointLimitsFor(amazonLimits);
  return options.interactive
    ? new RateLimiterRegistry(
        limits,
        {},
        new ApiShareBudgetStore(budget, API_BUDGET_SHARE, undefined, {
          recordThrottles: options.recordThrottles ?? false,
        }),
        toleranceMs,
      )
    : new RateLimiterRegistry(jobsLimits(limits), {}, budget, toleranceMs);
}
