import { sqlJson, type Database } from '../db/port';
import { ADAPTIVE_RATE } from './adaptive-rate';
import type { AmazonEndpoint, AmazonRegion } from './regions';
import { endpointPrefix } from './usage-store';

// The shared rate budget's store: what a reservation, a 429 report and a release send to the
// database (migrations 0015 and 0022), and the in-process contract a budget is kept behind.
// The client that draws from it is SharedRateBudget (rate-budget.ts).

/**
 * A row of its own beside the endpoint's (see api-share.ts): `api`, the API's quota
 * (`lwa-token:api`); `interactive`, the interactive lane (`lwa-token:interactive`, migration
 * 0026), whose slots the jobs' schedule leaves free.
 */
export type BudgetPool = 'api' | 'interactive';

/** Which budget: an endpoint in a region (and a pool inside it: see api-share.ts). */
export interface BudgetKey {
  readonly endpoint: AmazonEndpoint;
  readonly region: AmazonRegion;
  /** A row of its own (see {@link BudgetPool}). @default - the endpoint's budget */
  readonly pool?: BudgetPool;
}

export interface ReserveRequest {
  /** The configured requests per second (the most the budget ever allows). */
  readonly ceiling: number;
  /** Slots wanted (consecutive). */
  readonly wanted: number;
  /** Reserve nothing when the first slot would start later than this from now. */
  readonly maxWaitMs: number;
  /** How late a slot may still be used; the spacing leaves room for it (see migration 0015). */
  readonly toleranceMs: number;
  /** No slot before this long from now (the answer's way back). */
  readonly leadMs: number;
  /** No slot later than this long from now: what all invocations together may hold ahead. */
  readonly horizonMs: number;
  /**
   * The time this caller was given when it was refused (`retryAtMs`, database clock, epoch ms):
   * its place in the queue. A caller without one is served only once nobody refused before it
   * is still to come (migration 0025). @default - none
   */
  readonly ticketMs?: number;
}

export interface Reservation {
  /**
   * Slots reserved: up to `wanted` (as many as start within the horizon), or 0 when fewer
   * than half of them fit now or the first would start beyond `maxWaitMs`.
   */
  readonly granted: number;
  /**
   * The first slot; when nothing was granted, the first this caller can expect when it asks
   * again at `retryAtMs`. Database clock, epoch ms.
   */
  readonly firstSlotAtMs: number;
  /**
   * When nothing was granted: this caller's time to ask again (its place in the queue of
   * refused callers). Database clock, epoch ms. @default - ask when the first slot is within the horizon
   */
  readonly retryAtMs?: number;
  /** Until when the budget is paused (Amazon's 429s), database clock, epoch ms; 0 when not. */
  readonly pausedUntilMs?: number;
  readonly intervalMs: number;
  /** The rate the slots were spaced for. */
  readonly ratePerSecond: number;
  /** The database's clock when it answered, epoch ms. */
  readonly databaseNowMs: number;
  /**
   * The pool row the slots are of (the interactive lane), when not the endpoint's own: a
   * schedule of its own, spaced apart from the endpoint's. @default - the endpoint's schedule
   */
  readonly pool?: BudgetPool;
}

export interface ThrottleReport {
  readonly ceiling: number;
  /** When the request that got the 429 was sent, database clock, epoch ms. */
  readonly sentAtMs: number;
  /**
   * When the slot it went out on was granted, database clock, epoch ms: a 429 for a slot
   * granted before the last cut does not cut again. @default sentAtMs
   */
  readonly grantedAtMs?: number;
  /** The pause actually applied (Retry-After doubled per 429 in a row). */
  readonly pauseSeconds: number;
  /**
   * Also record the 429 and the pause in `rate_limit_tracking` at once (the jobs' role; the
   * API's has no privilege there). @default true
   */
  readonly record?: boolean;
}

/** The unused end of the batch reserved last, to give back: database clock, epoch ms. */
export interface ReleaseRequest {
  readonly fromMs: number;
  readonly untilMs: number;
}

export interface ThrottleResult {
  readonly ratePerSecond: number;
  /** Database clock, epoch ms. */
  readonly pausedUntilMs: number;
  /** False when an earlier 429 of the same wave already cut the rate. */
  readonly rateCut: boolean;
}

/** Where budgets are kept. */
export interface RateBudgetStore {
  reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation>;
  /**
   * Several reservations (other endpoints or regions) in one call, answers in the order asked.
   * @default - one reserve call each
   */
  reserveMany?(requests: ReadonlyArray<{ key: BudgetKey; request: ReserveRequest }>): Promise<Reservation[]>;
  throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult>;
  /** Gives back unused slots; true when they were (nobody reserved after them). @default - never */
  release?(key: BudgetKey, request: ReleaseRequest): Promise<boolean>;
}

/**
 * How fast a cut rate grows back: this share of the ceiling per second without a 429 (back
 * from half the ceiling in 50 s), the shared counterpart of the per-call increase of
 * {@link ADAPTIVE_RATE}.
 */
export const RECOVERY_PER_SECOND = 0.01;

/** Stored endpoint name, as in `rate_limit_tracking` (`lwa-token`, `ads-profiles`), `:<pool>` for a pool's row. */
function storedEndpoint(endpoint: AmazonEndpoint, pool?: BudgetPool): string {
  return `${endpointPrefix(endpoint).slice(0, -1)}${pool ? `:${pool}` : ''}`;
}

const toMs = (value: unknown): number => (value instanceof Date ? value.getTime() : new Date(String(value)).getTime());

/** The budget in PostgreSQL: one statement (one Data API call) per reservation (of one budget or several) or 429. */
export class DatabaseRateBudgetStore implements RateBudgetStore {
  constructor(private readonly db: Database) {}

  async reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
    return (await this.reserveMany([{ key, request }]))[0];
  }

  /**
   * One statement for every budget asked (a run topping up its regions together): each
   * reservation is its own call of reserve_amazon_requests, in the order of (endpoint, region)
   * whatever the order asked, so two callers lock the budgets' rows in the same order.
   */
  async reserveMany(requests: ReadonlyArray<{ key: BudgetKey; request: ReserveRequest }>): Promise<Reservation[]> {
    const asked = requests.map(({ key, request }, i) => ({
      i,
      endpoint: storedEndpoint(key.endpoint, key.pool),
      region: key.region,
      ceiling: request.ceiling,
      wanted: request.wanted,
      max_wait_ms: Math.max(0, request.maxWaitMs),
      tolerance_ms: request.toleranceMs,
      // The database clamps what is out of range (0022); a caller's own bounds go first.
      lead_ms: Math.max(0, request.leadMs),
      horizon_ms: Math.max(0, request.horizonMs),
      ticket: request.ticketMs === undefined ? null : new Date(request.ticketMs).toISOString(),
    }));
    asked.sort((a, b) => (a.endpoint + ':' + a.region < b.endpoint + ':' + b.region ? -1 : 1));
    // The calls run in the order of the list (a nested loop over it): one lock order for all.
    const { rows } = await this.db.query<{
      i: number;
      granted: number;
      first_slot_at: Date;
      interval_ms: number;
      rate_per_second: number;
      retry_at: Date | null;
      paused_until: Date | null;
      database_now: Date;
    }>(
      `SELECT x.i, r.granted, r.first_slot_at, r.interval_ms, r.rate_per_second, r.retry_at, r.paused_until,
              clock_timestamp() AS database_now
         FROM jsonb_to_recordset(:requests::jsonb)
                AS x(i int, endpoint text, region text, ceiling float8, wanted int, max_wait_ms float8,
                     tolerance_ms float8, lead_ms float8, horizon_ms float8, ticket timestamptz)
        CROSS JOIN LATERAL reserve_amazon_requests(x.endpoint, x.region, x.ceiling, x.wanted, x.max_wait_ms,
                                                   x.tolerance_ms, :recovery::float8, x.lead_ms, x.horizon_ms,
                                                   x.ticket) AS r`,
      { requests: sqlJson(asked), recovery: RECOVERY_PER_SECOND },
    );
    const answers = new Array<Reservation>(requests.length);
    for (const row of rows)
      answers[Number(row.i)] = {
        granted: Number(row.granted),
        firstSlotAtMs: toMs(row.first_slot_at),
        ...(row.retry_at ? { retryAtMs: toMs(row.retry_at) } : {}),
        pausedUntilMs: row.paused_until ? toMs(row.paused_until) : 0,
        intervalMs: Number(row.interval_ms),
        ratePerSecond: Number(row.rate_per_second),
        databaseNowMs: toMs(row.database_now),
        ...(requests[Number(row.i)].key.pool ? { pool: requests[Number(row.i)].key.pool } : {}),
      };
    return answers;
  }

  async throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
    const { rows } = await this.db.query<{ rate_per_second: number; paused_until: Date; rate_cut: boolean }>(
      `SELECT r.rate_per_second, r.paused_until, r.rate_cut
         FROM amazon_requests_throttled(:endpoint::text, :region::text, :ceiling::float8, :sentAt::timestamptz, :pause::float8,
                                        :decrease::float8, :minFraction::float8, :recovery::float8,
                                        :grantedAt::timestamptz, :record::boolean) AS r`,
      {
        endpoint: storedEndpoint(key.endpoint, key.pool),
        region: key.region,
        ceiling: report.ceiling,
        sentAt: new Date(report.sentAtMs),
        grantedAt: new Date(report.grantedAtMs ?? report.sentAtMs),
        record: report.record ?? true,
        pause: report.pauseSeconds,
        decrease: ADAPTIVE_RATE.decrease,
        minFraction: ADAPTIVE_RATE.minFraction,
        recovery: RECOVERY_PER_SECOND,
      },
    );
    const row = rows[0];
    return {
      ratePerSecond: Number(row.rate_per_second),
      pausedUntilMs: toMs(row.paused_until),
      rateCut: row.rate_cut,
    };
  }

  async release(key: BudgetKey, request: ReleaseRequest): Promise<boolean> {
    const { rows } = await this.db.query<{ released: boolean }>(
      `SELECT release_amazon_requests(:endpoint::text, :region::text, :from::timestamptz, :until::timestamptz) AS released`,
      {
        endpoint: storedEndpoint(key.endpoint, key.pool),
        region: key.region,
        from: new Date(request.fromMs),
        until: new Date(request.untilMs),
      },
    );
    return rows[0]?.released === true;
  }
}
