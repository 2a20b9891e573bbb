import { sleep as defaultSleep } from '../backoff';
import type {
  BudgetKey,
  RateBudgetStore,
  Reservation,
  ReserveRequest,
  ThrottleReport,
  ThrottleResult,
} from './rate-budget';

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
 * The shared budget as API traffic draws from it. Each request first takes a slot of the API's
 * own quota row for the endpoint and region (`<endpoint>:api`, paced at `share` × the
 * ceiling, in the same table and by the same function as the shared budget, so every API
 * container together stays under it); once that quota slot is due (it waits for it, within
 * the request's bound), a slot of the shared budget. However many API requests wait, they
 * never hold more than `share` of the shared schedule over time, and they never reserve shared
 * slots ahead (which would push the schedule's frontier past the jobs): the jobs draw from the
 * same schedule and keep the rest. The quota row is only a counter (nothing is sent to Amazon
 * at its slots); the shared slot is the one the request goes out on. One slot at a time: API requests are few
 * and each waits at most its own short bound (the quota row's answer, with its place in the queue, is the
 * caller's when it has to wait). A 429 is Amazon's answer to the shared endpoint
 * and is reported to the shared budget.
 */
export class ApiShareBudgetStore implements RateBudgetStore {
  constructor(
    private readonly inner: RateBudgetStore,
    private readonly share: number = API_BUDGET_SHARE,
    private readonly sleep: (ms: number) => Promise<void> = defaultSleep,
  ) {
    if (!(share > 0 && share <= 1)) throw new RangeError('share must be in (0, 1]');
  }

  async reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
    const horizonMs = Math.min(request.horizonMs, API_HORIZON_MS);
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
      horizonMs,
      wanted: 1,
      maxWaitMs: Math.max(0, request.maxWaitMs - wait),
      ticketMs: quota.firstSlotAtMs,
    });
  }

  throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
    // The API's role records nothing in rate_limit_tracking (migration 0018).
    return this.inner.throttled(key, { ...report, record: false });
  }
}
