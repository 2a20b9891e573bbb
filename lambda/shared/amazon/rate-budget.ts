import { DeadlineExceededError, sleep as defaultSleep } from '../backoff';
import type { LimiterClock } from './adaptive-rate';
import type { BudgetKey, RateBudgetStore, Reservation, ReserveRequest, ThrottleResult } from './rate-budget-store';

/**
 * One request budget per Amazon endpoint and region, shared by every invocation that draws
 * from the same database (migrations 0015, 0022 and 0025, `amazon_rate_budget`).
 *
 * The budget is a schedule of slots, one request each, spaced by the allowed rate. An
 * invocation reserves a batch of slots in one call (what it will send: up to the horizon's
 * worth, {@link MAX_HORIZON_MS} at most, fewer when it asked for fewer or its last batch went
 * partly unused); nobody else is ever given the same slots, so N invocations together send at
 * most the budget's rate. An invocation that gets no slot is given its own time to ask again
 * (a place in a queue kept in the database), so waiting invocations do not all wake together.
 * The budgets of one invocation (its regions and endpoints) reserve together: one call tops up
 * every one of them about to run out ({@link BudgetGroup}).
 * A 429 cuts the rate (once per wave) and pauses the endpoint in the database, so every
 * invocation slows down from its next reservation on. Slots not used in time are dropped,
 * never saved up: a crashed invocation's reservation just passes; a finished one gives the
 * unused end of its last batch back ({@link SharedRateBudget.release}).
 */

/** The longest horizon the database allows (migration 0022 clamps to it). */
export const MAX_HORIZON_MS = 6000;

export * from './rate-budget-store';

export interface SharedBudgetOptions extends LimiterClock {
  /** Configured requests per second for this endpoint and region. */
  readonly ceiling: number;
  /**
   * How far ahead one reservation reaches (the database allows {@link MAX_HORIZON_MS} at most):
   * after a 429, the slots others already hold end within this time. @default MAX_HORIZON_MS
   */
  readonly horizonMs?: number;
  /** How late a slot may be used before it is dropped (timers, a busy event loop, the network). @default 100 */
  readonly toleranceMs?: number;
  /** Spreads a refused caller's next ask over one slot interval. @default Math.random */
  readonly random?: () => number;
  /**
   * 429s are recorded in `rate_limit_tracking` by the report itself (see ThrottleReport.record).
   * @default true
   */
  readonly recordThrottles?: boolean;
  /**
   * Budgets one invocation holds for its other endpoints and regions: when this one reserves,
   * those about to run out of slots are topped up in the same database call
   * ({@link BudgetGroup}). @default - each budget reserves alone
   */
  readonly group?: BudgetGroup;
}

/**
 * The budgets of one invocation (one limiter registry): a run that works on several regions at
 * once uses their slots at about the same pace, so when one of them reserves, every other that
 * will send more than it holds and whose slots end within half a horizon is topped up in the
 * same call (one statement, {@link RateBudgetStore.reserveMany}): one database call per batch
 * of all regions instead of one per region.
 */
export class BudgetGroup {
  private readonly members = new Set<SharedRateBudget>();

  join(budget: SharedRateBudget): void {
    this.members.add(budget);
  }

  /** Top-up requests of the members other than `asking`, as of `now` (local clock). */
  companions(asking: SharedRateBudget, now: number): SharedRateBudget[] {
    return [...this.members].filter((m) => m !== asking && m.wantsTopUp(now));
  }
}

/** What one {@link SharedRateBudget} did (for metrics and tests). */
export interface SharedBudgetStats {
  /** Calls to the store's reserve, granted or not (a top-up made in another budget's call included). */
  readonly reservations: number;
  /** Reservations made in another budget's call (see {@link BudgetGroup}): no call of their own. */
  readonly topUps: number;
  /** Reservations that granted nothing (the caller was given a time to ask again). */
  readonly refusals: number;
  readonly slotsReserved: number;
  readonly slotsUsed: number;
  /** Slots that passed unused (reserved ahead and not needed in time, or given up after a 429). */
  readonly slotsDropped: number;
  /** Unused slots given back to the schedule ({@link SharedRateBudget.release}). */
  readonly slotsReleased: number;
  /** Calls to the store's release. */
  readonly releases: number;
  /** 429 reports the store refused (see {@link SharedRateBudget.reportThrottle}). */
  readonly reportFailures: number;
  /** 429s the store recorded in `rate_limit_tracking` as they were reported. */
  readonly throttlesRecorded: number;
}

/** A batch granted by one reservation: for the 429 report (which cut it was granted under). */
interface Batch {
  readonly grantedAtDatabaseMs: number;
  readonly firstLocalMs: number;
}

/**
 * The client side of one budget: takes one slot per request, in arrival order, reserving a
 * batch from the store when its slots run out. Same contract as the in-memory token bucket's
 * `take`: with `maxWaitMs`, a request whose slot would come later rejects at once with
 * {@link DeadlineExceededError}.
 *
 * Batches are sized to what this client really sends: what {@link expectRequests} said is
 * left, up to the horizon's worth; when it did not say, as many as callers wait, and the
 * horizon's worth while busy (a slot used within the last second), back to the callers
 * waiting after a gap; after a refusal, the same batch again. Refused, it asks again at the time the store gave it (plus a jitter inside one
 * slot interval), not before; a caller whose deadline comes before the slot it could expect
 * is refused at once, without asking the store again.
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
  private intervalMs: number;
  private pausedUntil = 0;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private readonly horizonMs: number;
  private readonly toleranceMs: number;
  /** Callers waiting for a slot, this one included. */
  private waiting = 0;
  /** The size of the batch asked for last. */
  private batchSize = 0;
  /** Slots of the last batch used and dropped, and when the last slot was used (local clock). */
  private batchUsed = 0;
  private batchDropped = 0;
  private lastUsedAt = -Infinity;
  /** The end of the batch granted last (database clock), while its unused slots may go back. */
  private lastBatchUntil: number | undefined;
  private batches: Batch[] = [];
  /** The latest slot this client holds or held, and the latest it used (local clock). */
  private lastSlot = -Infinity;
  /** The latest slot of a pool's own schedule (the interactive lane) this client held (local clock). */
  private lastPoolSlot = -Infinity;
  private lastUsedSlot = -Infinity;
  /** After a refusal: when to ask again, and the first slot to expect then (local clock). */
  private retryAt = 0;
  private retryFirstSlot = 0;
  /** After a refusal: the time the store gave (database clock), passed back as this client's place. */
  private ticket: number | undefined;
  /** Requests still to come, when the caller said ({@link expectRequests}). */
  private expected: number | undefined;
  private unconsumedRecorded = 0;
  /** A reservation for this budget on its way (its own or a top-up in another's call). */
  private reserving: Promise<void> | undefined;
  /** Where the batch granted last starts (database clock): only slots from there can go back. */
  private lastBatchFrom = 0;
  private counters = {
    reservations: 0,
    topUps: 0,
    refusals: 0,
    slotsReserved: 0,
    slotsUsed: 0,
    slotsDropped: 0,
    slotsReleased: 0,
    releases: 0,
    reportFailures: 0,
    throttlesRecorded: 0,
  };

  constructor(
    private readonly store: RateBudgetStore,
    readonly key: BudgetKey,
    private readonly options: SharedBudgetOptions,
  ) {
    if (!(options.ceiling > 0)) throw new RangeError('ceiling must be positive');
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.random = options.random ?? Math.random;
    this.horizonMs = Math.min(MAX_HORIZON_MS, Math.max(0, options.horizonMs ?? MAX_HORIZON_MS));
    this.toleranceMs = options.toleranceMs ?? 100;
    this.rate = options.ceiling;
    this.intervalMs = (1000 + this.toleranceMs) / this.rate;
    options.group?.join(this);
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
   * How many requests this client has left to send (e.g. the items of its claim): the next
   * batch is that many (at most the horizon's worth), never more. Each slot used counts one
   * off. `undefined`: not known (batches then grow once one was used up back to back).
   */
  expectRequests(count: number | undefined): void {
    this.expected = count === undefined ? undefined : Math.max(0, Math.floor(count));
  }

  /**
   * Amazon answered 429 to a request sent at `sentAtMs` (local clock): every invocation pauses
   * for `pauseSeconds` and the shared rate is cut (once per wave of 429s: not again for a slot
   * granted before the last cut). The slots this client still holds are given up at once: they
   * were spaced for the old rate.
   */
  async throttled(sentAtMs: number, pauseSeconds: number): Promise<ThrottleResult> {
    // At once, before the store answers: this client sends nothing more until the pause ends.
    this.counters.slotsDropped += this.slots.length;
    this.slots = [];
    this.lastSlot = this.lastUsedSlot;
    this.lastBatchUntil = undefined;
    this.pausedUntil = Math.max(this.pausedUntil, this.now() + pauseSeconds * 1000);
    const batch = [...this.batches].reverse().find((b) => b.firstLocalMs <= sentAtMs + this.toleranceMs);
    const record = this.options.recordThrottles ?? true;
    const report = this.store.throttled(this.key, {
      ceiling: this.options.ceiling,
      sentAtMs: sentAtMs + this.offsetMs,
      ...(batch ? { grantedAtMs: Math.min(batch.grantedAtDatabaseMs, sentAtMs + this.offsetMs) } : {}),
      pauseSeconds,
      record,
    });
    // Reservations wait for the report: the slots they get then start after the shared pause.
    this.reporting = report.then(
      () => undefined,
      () => undefined,
    );
    const result = await report;
    if (record) {
      this.counters.throttlesRecorded += 1;
      this.unconsumedRecorded += 1;
    }
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

  /**
   * Gives the unused slots of the batch reserved last back to the schedule (one store call),
   * when no caller is waiting for them: for when this client's work is done. The store takes
   * them back only while nobody reserved after them; either way this client no longer holds
   * them. Never rejects: false when nothing went back.
   */
  async release(): Promise<boolean> {
    const until = this.lastBatchUntil;
    if (this.waiting > 0 || this.slots.length === 0 || until === undefined || !this.store.release) return false;
    const now = this.now();
    const held = this.slots.length;
    // From the first slot still ahead (a slot within its tolerance is not handed out again).
    // Only slots of the batch granted last can go back (the store's rule): earlier ones pass.
    const from = Math.max(this.slots[0] + this.offsetMs, now + this.offsetMs, this.lastBatchFrom) + 1;
    this.slots = [];
    this.lastSlot = this.lastUsedSlot;
    this.lastBatchUntil = undefined;
    if (from >= until) {
      this.counters.slotsDropped += held;
      return false;
    }
    this.counters.releases += 1;
    const released = await this.store.release(this.key, { fromMs: from, untilMs: until }).catch(() => false);
    if (released) this.counters.slotsReleased += held;
    else this.counters.slotsDropped += held;
    return released;
  }

  /** The allowed rate as of the last reservation or 429. */
  ratePerSecond(): number {
    return this.rate;
  }

  /**
   * Until when (local clock, epoch ms) the budget was last known to be paused: the pause in the
   * database (every invocation's 429s, each Retry-After doubled per 429 in a row as the limiter
   * applies it), as of this client's last reservation or report. 0 when never paused.
   */
  pausedUntilMs(): number {
    return this.pausedUntil;
  }

  /** 429s recorded in `rate_limit_tracking` by their reports since the last call (see saveLimiterRates). */
  takeRecordedThrottles(): number {
    const n = this.unconsumedRecorded;
    this.unconsumedRecorded = 0;
    return n;
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
        this.batchDropped += 1;
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
      this.lastUsedSlot = slot;
      this.counters.slotsUsed += 1;
      this.batchUsed += 1;
      this.lastUsedAt = now;
      if (this.expected !== undefined) this.expected = Math.max(0, this.expected - 1);
      return;
    }
  }

  /** Slots to ask for: see the class comment. */
  private wanted(now: number): number {
    // Asking again after a refusal: the same batch as then.
    if (this.retryAt > 0) return this.batchSize;
    const full = Math.max(1, Math.floor(this.horizonMs / this.intervalMs) + 1);
    // Busy: a slot was used within the last second (timers firing late on a busy machine drop
    // a slot now and then; that is no reason to ask for less).
    const busy = this.batchUsed > 0 && now - this.lastUsedAt <= Math.max(1000, 2 * this.intervalMs + this.toleranceMs);
    this.batchSize = this.expected !== undefined ? Math.min(full, this.expected) : busy ? full : this.waiting;
    this.batchSize = Math.min(100_000, Math.max(1, this.waiting, this.batchSize));
    return this.batchSize;
  }

  /**
   * Whether a top-up in another budget's reservation is worth it now: this budget will send more
   * than it holds (it said so with {@link expectRequests}), its slots end within half a horizon,
   * and it is not waiting for a reservation, a place in the queue or a pause.
   */
  wantsTopUp(now: number): boolean {
    if (this.reserving || this.expected === undefined || this.expected <= this.slots.length) return false;
    if (now < this.retryAt || now < this.pausedUntil) return false;
    const last = this.slots.at(-1) ?? now;
    return last - now <= this.horizonMs / 2;
  }

  /** What a top-up asks for: the rest of what this budget will send, a horizon's worth at most, right after its slots. */
  private topUpRequest(now: number): ReserveRequest {
    const full = Math.max(1, Math.floor(this.horizonMs / this.intervalMs) + 1);
    const last = this.slots.at(-1) ?? now;
    return {
      ceiling: this.options.ceiling,
      wanted: Math.min(full, Math.max(1, (this.expected ?? 0) - this.slots.length)),
      // Only if the batch follows on (nobody else holds the schedule after this budget's slots):
      // a top-up that would wait takes nothing and no place in the queue.
      maxWaitMs: Math.max(0, last - now) + 2 * this.intervalMs,
      toleranceMs: this.toleranceMs,
      leadMs: this.leadMs,
      horizonMs: this.horizonMs,
      ...(this.ticket !== undefined ? { ticketMs: this.ticket } : {}),
    };
  }

  private async reserve(notAfter: number): Promise<void> {
    const pending = this.reserving;
    if (pending) {
      // A top-up for this budget is on its way in another budget's call.
      await pending;
      if (this.slots.length > 0) return;
    }
    const reporting = this.reporting;
    if (reporting) {
      await reporting;
      if (this.reporting === reporting) this.reporting = undefined;
    }
    let now = this.now();
    if (now < this.retryAt) {
      // Refused before: this client's place in the queue. A caller that cannot wait for the
      // slot it could expect then is refused without asking again.
      if (this.retryFirstSlot > notAfter) throw new DeadlineExceededError(this.retryFirstSlot - now, notAfter - now);
      await this.sleep(this.retryAt - now);
      now = this.now();
    }
    const sentAt = now;
    const request: ReserveRequest = {
      ceiling: this.options.ceiling,
      wanted: this.wanted(now),
      maxWaitMs: Number.isFinite(notAfter) ? Math.max(0, notAfter - sentAt) : 24 * 3600 * 1000,
      toleranceMs: this.toleranceMs,
      // Back at its place in the queue, the batch starts at the frontier as planned: a lead from
      // a slow round trip long ago (all invocations asking at once) would cut it short; the
      // tolerance covers the answer's way back.
      leadMs: this.ticket !== undefined ? Math.min(this.leadMs, this.toleranceMs / 2) : this.leadMs,
      horizonMs: this.horizonMs,
      ...(this.ticket !== undefined ? { ticketMs: this.ticket } : {}),
    };
    const companions = this.store.reserveMany ? (this.options.group?.companions(this, now) ?? []) : [];
    let done!: () => void;
    const call = new Promise<void>((resolve) => (done = resolve));
    for (const c of [this, ...companions]) c.reserving = call;
    try {
      let reservation: Reservation;
      if (companions.length === 0) reservation = await this.store.reserve(this.key, request);
      else {
        const answers = await this.store.reserveMany!([
          { key: this.key, request },
          ...companions.map((c) => ({ key: c.key, request: c.topUpRequest(now) })),
        ]);
        const receivedAt = this.now();
        companions.forEach((c, i) => c.accept(answers[i + 1], sentAt, receivedAt, Infinity, true));
        reservation = answers[0];
      }
      this.accept(reservation, sentAt, this.now(), notAfter, false);
    } finally {
      for (const c of [this, ...companions]) if (c.reserving === call) c.reserving = undefined;
      done();
    }
  }

  /** Takes a reservation's answer: this budget's own (`notAfter` its caller's deadline) or a top-up. */
  private accept(reservation: Reservation, sentAt: number, receivedAt: number, notAfter: number, topUp: boolean): void {
    this.leadMs = (receivedAt - sentAt) / 2;
    // The database's clock against ours, taken at the middle of the round trip.
    const roundTrip = receivedAt - sentAt;
    if (roundTrip <= this.offsetRoundTripMs) {
      this.offsetRoundTripMs = roundTrip;
      this.offsetMs = reservation.databaseNowMs - (sentAt + receivedAt) / 2;
    }
    this.rate = reservation.ratePerSecond;
    this.intervalMs = reservation.intervalMs;
    if (reservation.pausedUntilMs)
      this.pausedUntil = Math.max(this.pausedUntil, reservation.pausedUntilMs - this.offsetMs);
    this.counters.reservations += 1;
    if (topUp) this.counters.topUps += 1;
    const first = reservation.firstSlotAtMs - this.offsetMs;
    if (reservation.granted === 0) {
      this.counters.refusals += 1;
      // A top-up that did not follow on is just not made: this budget asks on its own later.
      if (topUp) return;
      // The store's time for this caller (its place in the queue), or, from a store without a
      // queue, when the first free slot comes within the horizon.
      const retry =
        reservation.retryAtMs !== undefined ? reservation.retryAtMs - this.offsetMs : first - this.horizonMs;
      this.ticket = reservation.retryAtMs;
      // Not before its time on the database's clock: the offset estimate may be off by half the
      // round trip it came from (early, the batch would not fit whole yet).
      const offsetError = Math.min(1000, this.offsetRoundTripMs / 2);
      this.retryAt = Math.max(receivedAt + 1, retry + offsetError + this.random() * reservation.intervalMs);
      this.retryFirstSlot = first;
      if (first > notAfter) throw new DeadlineExceededError(first - receivedAt, notAfter - receivedAt);
      return;
    }
    this.retryAt = 0;
    this.ticket = undefined;
    this.counters.slotsReserved += reservation.granted;
    this.batchUsed = 0;
    this.batchDropped = 0;
    this.batches = [...this.batches.slice(-7), { grantedAtDatabaseMs: reservation.databaseNowMs, firstLocalMs: first }];
    this.lastBatchFrom = reservation.firstSlotAtMs;
    this.lastBatchUntil = reservation.firstSlotAtMs + reservation.granted * reservation.intervalMs;
    // A pool's slots (the interactive lane) are a schedule of their own: spaced from this
    // client's previous slot of that schedule, not from its slots of the endpoint's.
    const pool = reservation.pool !== undefined;
    let last = pool ? this.lastPoolSlot : this.lastSlot;
    for (let i = 0; i < reservation.granted; i += 1) {
      const slot = first + i * reservation.intervalMs;
      // A 429 arrived while this reservation was on its way: its slots inside the pause go. So
      // does a slot closer to this client's previous one than the interval (the clock offset
      // estimate moved between the two reservations): spacing is never given up.
      if (slot < this.pausedUntil || slot < last + reservation.intervalMs) this.counters.slotsDropped += 1;
      else {
        this.slots.push(slot);
        last = slot;
      }
    }
    if (pool) this.lastPoolSlot = last;
    else this.lastSlot = last;
  }
}
