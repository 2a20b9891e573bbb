import { DeadlineExceededError, sleep as defaultSleep } from '../backoff';
import type { Database } from '../db/port';
import { ADAPTIVE_RATE, type LimiterClock } from './adaptive-rate';
import type { AmazonEndpoint, AmazonRegion } from './regions';
import { endpointPrefix } from './usage-store';

/**
 * One request budget per Amazon endpoint and region, shared by every invocation that draws
 * from the same database (migration 0015, `amazon_rate_budget`).
 *
 * The budget is a schedule of slots, one request each, spaced by the allowed rate. An
 * invocation reserves a few slots at a time (as many as it has requests waiting, at most half
 * a second's worth); nobody else is ever given the same
 * slots, so N invocations together send at most the budget's rate. A 429 cuts the rate and
 * pauses the endpoint in the database, so every invocation slows down from its next
 * reservation on. Slots not used in time are dropped, never saved up: a crashed invocation's
 * reservation just passes.
 */

/** Which budget: an endpoint in a region (and a pool inside it: see api-share.ts). */
export interface BudgetKey {
  readonly endpoint: AmazonEndpoint;
  readonly region: AmazonRegion;
  /** A quota row of its own (`lwa-token:api`): the API's share. @default - the endpoint's budget */
  readonly pool?: 'api';
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
}

export interface Reservation {
  /**
   * Slots reserved: up to `wanted` (as many as start within the horizon), or 0 when the first
   * free slot is beyond `maxWaitMs` or beyond the horizon.
   */
  readonly granted: number;
  /** The first slot (the first free one when nothing was granted), database clock, epoch ms. */
  readonly firstSlotAtMs: number;
  readonly intervalMs: number;
  /** The rate the slots were spaced for. */
  readonly ratePerSecond: number;
  /** The database's clock when it answered, epoch ms. */
  readonly databaseNowMs: number;
}

export interface ThrottleReport {
  readonly ceiling: number;
  /** When the request that got the 429 was sent, database clock, epoch ms. */
  readonly sentAtMs: number;
  readonly pauseSeconds: number;
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
  throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult>;
}

/**
 * How fast a cut rate grows back: this share of the ceiling per second without a 429 (back
 * from half the ceiling in 50 s), the shared counterpart of the per-call increase of
 * {@link ADAPTIVE_RATE}.
 */
export const RECOVERY_PER_SECOND = 0.01;

/** Stored endpoint name, as in `rate_limit_tracking` (`lwa-token`, `ads-profiles`), `:api` for the API's pool. */
function storedEndpoint(endpoint: AmazonEndpoint, pool?: 'api'): string {
  return `${endpointPrefix(endpoint).slice(0, -1)}${pool ? `:${pool}` : ''}`;
}

const toMs = (value: unknown): number => (value instanceof Date ? value.getTime() : new Date(String(value)).getTime());

/** The budget in PostgreSQL: one statement (one Data API call) per reservation or 429. */
export class DatabaseRateBudgetStore implements RateBudgetStore {
  constructor(private readonly db: Database) {}

  async reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
    const { rows } = await this.db.query<{
      granted: number;
      first_slot_at: Date;
      interval_ms: number;
      rate_per_second: number;
      database_now: Date;
    }>(
      `SELECT r.granted, r.first_slot_at, r.interval_ms, r.rate_per_second, clock_timestamp() AS database_now
         FROM reserve_amazon_requests(:endpoint::text, :region::text, :ceiling::float8, :wanted::int, :maxWaitMs::float8,
                                      :toleranceMs::float8, :recovery::float8, :leadMs::float8,
                                      :horizonMs::float8) AS r`,
      {
        endpoint: storedEndpoint(key.endpoint, key.pool),
        region: key.region,
        ceiling: request.ceiling,
        wanted: request.wanted,
        maxWaitMs: Math.max(0, request.maxWaitMs),
        toleranceMs: request.toleranceMs,
        recovery: RECOVERY_PER_SECOND,
        leadMs: Math.min(10_000, Math.max(0, request.leadMs)),
        horizonMs: Math.min(60_000, Math.max(0, request.horizonMs)),
      },
    );
    const row = rows[0];
    return {
      granted: Number(row.granted),
      firstSlotAtMs: toMs(row.first_slot_at),
      intervalMs: Number(row.interval_ms),
      ratePerSecond: Number(row.rate_per_second),
      databaseNowMs: toMs(row.database_now),
    };
  }

  async throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
    const { rows } = await this.db.query<{ rate_per_second: number; paused_until: Date; rate_cut: boolean }>(
      `SELECT r.rate_per_second, r.paused_until, r.rate_cut
         FROM amazon_requests_throttled(:endpoint::text, :region::text, :ceiling::float8, :sentAt::timestamptz, :pause::float8,
                                        :decrease::float8, :minFraction::float8, :recovery::float8) AS r`,
      {
        endpoint: storedEndpoint(key.endpoint, key.pool),
        region: key.region,
        ceiling: report.ceiling,
        sentAt: new Date(report.sentAtMs),
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
}

export interface SharedBudgetOptions extends LimiterClock {
  /** Configured requests per second for this endpoint and region. */
  readonly ceiling: number;
  /**
   * How far ahead slots are handed out, to this and every other invocation together: after a
   * 429, the slots others already hold end within this time. @default 500
   */
  readonly horizonMs?: number;
  /** How late a slot may be used before it is dropped (timers, a busy event loop, the network). @default 100 */
  readonly toleranceMs?: number;
}

/** What one {@link SharedRateBudget} did (for metrics and tests). */
export interface SharedBudgetStats {
  readonly reservations: number;
  readonly slotsReserved: number;
  readonly slotsUsed: number;
  /** Slots that passed unused (reserved ahead and not needed in time). */
  readonly slotsDropped: number;
  /** 429 reports the store refused (see {@link SharedRateBudget.reportThrottle}). */
  readonly reportFailures: number;
}

/**
 * The client side of one budget: takes one slot per request, in arrival order, reserving more
 * from the store when its slots run out. Same contract as the in-memory token bucket's
 * `take`: with `maxWaitMs`, a request whose slot would come later rejects at once with
 * {@link DeadlineExceededError}.
 */
export class SharedRateBudget {
  private slots: number[] = [];
  private queue: Promise<void> = Promise.resolve();
  /** The last 429 report, while the store has not answered it. */
  private reporting: Promise<void> | undefined;
  /**
   * Database clock minus local clock, from the reservation with the shortest round trip so far
   * (its error is at most half that round trip; a slow answer says little about the clocks).
   */
  private offsetMs = 0;
  private offsetRoundTripMs = Infinity;
  /** Half the last reservation's round trip: how long the answer takes to come back. */
  private leadMs = 0;
  private rate: number;
  private pausedUntil = 0;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly horizonMs: number;
  private readonly toleranceMs: number;
  /** Callers waiting for a slot, this one included: what the next reservation asks for. */
  private waiting = 0;
  private counters = { reservations: 0, slotsReserved: 0, slotsUsed: 0, slotsDropped: 0, reportFailures: 0 };

  constructor(
    private readonly store: RateBudgetStore,
    readonly key: BudgetKey,
    private readonly options: SharedBudgetOptions,
  ) {
    if (!(options.ceiling > 0)) throw new RangeError('ceiling must be positive');
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.horizonMs = options.horizonMs ?? 500;
    this.toleranceMs = options.toleranceMs ?? 100;
    this.rate = options.ceiling;
  }

  /** Waits for this caller's slot (FIFO). */
  take(maxWaitMs: number = Infinity): Promise<void> {
    const notAfter = this.now() + maxWaitMs;
    this.waiting += 1;
    const turn = this.queue.then(() => this.waitForSlot(notAfter)).finally(() => (this.waiting -= 1));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /**
   * Amazon answered 429 to a request sent at `sentAtMs` (local clock): every invocation pauses
   * for `pauseSeconds` and the shared rate is cut (once per wave of 429s). The slots this
   * client still holds are given up: they were spaced for the old rate.
   */
  async throttled(sentAtMs: number, pauseSeconds: number): Promise<ThrottleResult> {
    // At once, before the store answers: this client sends nothing more until the pause ends.
    this.counters.slotsDropped += this.slots.length;
    this.slots = [];
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + pauseSeconds * 1000);
    const report = this.store.throttled(this.key, {
      ceiling: this.options.ceiling,
      sentAtMs: sentAtMs + this.offsetMs,
      pauseSeconds,
    });
    // Reservations wait for the report: the slots they get then start after the shared pause.
    this.reporting = report.then(
      () => undefined,
      () => undefined,
    );
    const result = await report;
    this.rate = result.ratePerSecond;
    this.pausedUntil = Math.max(this.pausedUntil, result.pausedUntilMs - this.offsetMs);
    return result;
  }

  /**
   * {@link throttled} without waiting for it: this client stops at once and its next
   * reservation waits for the report. A report the store refuses is counted in
   * `reportFailures` and lost (this client and its container's limiter pause all the same).
   */
  reportThrottle(sentAtMs: number, pauseSeconds: number): void {
    this.throttled(sentAtMs, pauseSeconds).catch(() => {
      this.counters.reportFailures += 1;
    });
  }

  /** The allowed rate as of the last reservation or 429. */
  ratePerSecond(): number {
    return this.rate;
  }

  /** Until when (local clock, epoch ms) the budget was last known to be paused. */
  pausedUntilMs(): number {
    return this.pausedUntil;
  }

  stats(): SharedBudgetStats {
    return { ...this.counters };
  }

  private async waitForSlot(notAfter: number): Promise<void> {
    for (;;) {
      let now = this.now();
      if (now < this.pausedUntil) {
        if (this.pausedUntil > notAfter) throw new DeadlineExceededError(this.pausedUntil - now, notAfter - now);
        await this.sleep(this.pausedUntil - now);
        now = this.now();
      }
      while (this.slots.length > 0 && this.slots[0] + this.toleranceMs < now) {
        this.slots.shift();
        this.counters.slotsDropped += 1;
      }
      const slot = this.slots[0];
      if (slot === undefined) {
        await this.reserve(notAfter);
        continue;
      }
      if (slot > notAfter) throw new DeadlineExceededError(slot - now, notAfter - now);
      if (slot > now) {
        await this.sleep(slot - now);
        continue;
      }
      this.slots.shift();
      this.counters.slotsUsed += 1;
      return;
    }
  }

  private async reserve(notAfter: number): Promise<void> {
    const reporting = this.reporting;
    if (reporting) {
      await reporting;
      if (this.reporting === reporting) this.reporting = undefined;
    }
    const sentAt = this.now();
    // As many slots as callers are waiting (the store hands out only those within the
    // horizon): what one invocation holds is what it is about to use.
    const wanted = Math.min(10_000, Math.max(1, this.waiting));
    const reservation = await this.store.reserve(this.key, {
      ceiling: this.options.ceiling,
      wanted,
      maxWaitMs: Number.isFinite(notAfter) ? Math.max(0, notAfter - sentAt) : 24 * 3600 * 1000,
      toleranceMs: this.toleranceMs,
      leadMs: this.leadMs,
      horizonMs: this.horizonMs,
    });
    const receivedAt = this.now();
    this.leadMs = (receivedAt - sentAt) / 2;
    // The database's clock against ours, taken at the middle of the round trip.
    const roundTrip = receivedAt - sentAt;
    if (roundTrip <= this.offsetRoundTripMs) {
      this.offsetRoundTripMs = roundTrip;
      this.offsetMs = reservation.databaseNowMs - (sentAt + receivedAt) / 2;
    }
    this.rate = reservation.ratePerSecond;
    this.counters.reservations += 1;
    const first = reservation.firstSlotAtMs - this.offsetMs;
    if (reservation.granted === 0) {
      if (first > notAfter) throw new DeadlineExceededError(first - receivedAt, notAfter - receivedAt);
      // The schedule is taken up to the horizon: ask again when the first free slot is within it.
      await this.sleep(Math.max(1, first - this.horizonMs - receivedAt));
      return;
    }
    this.counters.slotsReserved += reservation.granted;
    for (let i = 0; i < reservation.granted; i += 1) {
      const slot = first + i * reservation.intervalMs;
      // A 429 arrived while this reservation was on its way: its slots inside the pause go.
      if (slot < this.pausedUntil) this.counters.slotsDropped += 1;
      else this.slots.push(slot);
    }
  }
}
