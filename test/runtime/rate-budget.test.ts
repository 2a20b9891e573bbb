import { DeadlineExceededError } from '../../lambda/shared/backoff';
import { DatabaseError } from '../../lambda/shared/db';
import {
  BudgetKey,
  DatabaseRateBudgetStore,
  RateBudgetStore,
  Reservation,
  ReserveRequest,
  SharedRateBudget,
  ThrottleReport,
  ThrottleResult,
} from '../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { JobWorld, useBothDatabasePaths, useJobWorld } from '../support/jobs';
import { RecordingStore } from './rate-budget/drawers';
import { busiestSecond } from '../../local/amazon/busiest-second';

// The shared request budget (migration 0015) on the real database, through both database
// paths: several budgets stand for several invocations, each with its own connection.

let world: JobWorld;
useJobWorld((w) => (world = w));

beforeEach(async () => {
  await world.admin.query('DELETE FROM amazon_rate_budget');
});

const LWA_NA: BudgetKey = { endpoint: 'lwa', region: 'NA' };

/**
 * Takes `count` slots with `inFlight` callers at a time, saying first how many (as a run does
 * with its claim) and giving back what it did not use at the end; returns when each was granted.
 */
async function drain(budget: SharedRateBudget, count: number, inFlight: number): Promise<number[]> {
  const granted: number[] = [];
  let left = count;
  budget.expectRequests(count);
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (left > 0) {
        left -= 1;
        await budget.take();
        granted.push(Date.now());
      }
    }),
  );
  await budget.release();
  return granted;
}

async function budgetRow(): Promise<{ next_slot_at: Date; rate_per_second: number; paused_until: Date | null }> {
  const { rows } = await world.admin.query<{ next_slot_at: Date; rate_per_second: number; paused_until: Date | null }>(
    `SELECT next_slot_at, rate_per_second, paused_until FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'NA'`,
  );
  return rows[0];
}

describe.each(useBothDatabasePaths(() => world))('shared Amazon request budget (%s)', (_path, database) => {
  const budgets = (n: number, ceiling: number, stores: RecordingStore[] = []) =>
    Array.from({ length: n }, () => {
      const store = new RecordingStore(new DatabaseRateBudgetStore(database()));
      stores.push(store);
      return new SharedRateBudget(store, LWA_NA, { ceiling });
    });

  test('four invocations drawing at once stay under the budget together, and every one of them gets slots', async () => {
    const stores: RecordingStore[] = [];
    const four = budgets(4, 20, stores);
    const times = await Promise.all(four.map((b) => drain(b, 15, 4)));
    const all = times.flat();
    expect(all).toHaveLength(60);
    // 20 per second is the budget: the schedule the database handed out, all four together,
    // never holds more in any one-second window (spaced 55 ms apart for a tolerance of 100 ms).
    expect(busiestSecond(stores.flatMap((s) => s.slots))).toBeLessThanOrEqual(Math.floor(20_000 / 1100) + 1);
    // As the callers got them: the same, but for a timer firing late now and then on a busy machine.
    expect(busiestSecond(all)).toBeLessThanOrEqual(20 + 2);
    for (const b of four) {
      expect(b.stats().slotsUsed).toBe(15);
      expect(b.stats().reservations).toBeGreaterThan(0);
    }
    // Nothing was held back for nothing: what was reserved was used or dropped, never more.
    const stats = four.map((b) => b.stats());
    expect(stats.reduce((n, s) => n + s.slotsReserved, 0)).toBe(
      stats.reduce((n, s) => n + s.slotsUsed + s.slotsDropped, 0) + four.reduce((n, b) => n + pendingSlots(b), 0),
    );
  });

  test('a 429 seen by one invocation pauses all of them and halves the rate they share', async () => {
    const four = budgets(4, 20);
    await Promise.all(four.map((b) => drain(b, 3, 2)));
    // The request went out a while before its 429 came back (far more than any clock offset
    // between the invocations' estimates).
    const sentAt = Date.now() - 1000;
    const result = await four[0].throttled(sentAt, 1.5);
    const throttledAt = Date.now();
    expect(result.rateCut).toBe(true);
    expect(result.ratePerSecond).toBeCloseTo(10, 0);
    // A second 429 for a request sent before the cut (same wave) does not cut again.
    const again = await four[1].throttled(sentAt, 1.5);
    expect(again.rateCut).toBe(false);
    expect(again.ratePerSecond).toBeCloseTo(result.ratePerSecond, 1);

    const times = (await Promise.all(four.map((b) => drain(b, 5, 2)))).flat();
    // Slots reserved before the 429 were at most half a second of schedule (plus tolerance):
    // after that nobody sends until the pause is over.
    const pauseEnds = throttledAt + 1500;
    expect(times.filter((t) => t > throttledAt + 600 && t < pauseEnds - 100)).toEqual([]);
    // After the pause, all four together at the halved rate (grown back by what the seconds
    // since the cut add: 1 % of the ceiling per second), never more than it allows.
    const after = times.filter((t) => t >= pauseEnds - 100);
    expect(after.length).toBeGreaterThan(10);
    const row = await budgetRow();
    // Halved, then grown back by 1 % of the ceiling per second since (however slow this machine).
    expect(row.rate_per_second).toBeLessThan(10 + 0.2 * ((Date.now() - throttledAt) / 1000) + 0.5);
    expect(busiestSecond(after)).toBeLessThanOrEqual(Math.ceil(row.rate_per_second));
    expect(row.paused_until!.getTime()).toBeGreaterThan(sentAt);
  });

  test('a reservation nobody uses (a crashed invocation) only passes: the next invocation gets the slots after it', async () => {
    const db = database();
    const store = new DatabaseRateBudgetStore(db);
    const crashed = await store.reserve(LWA_NA, {
      ceiling: 20,
      wanted: 10,
      maxWaitMs: 0,
      toleranceMs: 50,
      leadMs: 0,
      horizonMs: 10_000,
    });
    expect(crashed.granted).toBe(10);
    const end = crashed.firstSlotAtMs + 10 * crashed.intervalMs;
    const stores: RecordingStore[] = [];
    const [next] = budgets(1, 20, stores);
    await next.take();
    // The crashed reservation's slots were never handed out again.
    const row = await budgetRow();
    expect(row.next_slot_at.getTime()).toBeGreaterThanOrEqual(end);
    // (It may have asked twice: slots are handed out at most half a second ahead, and the
    // crashed reservation held more than that.)
    expect(next.stats()).toMatchObject({ slotsUsed: 1 });
    // Nothing waited beyond them: the first slot granted is where they end, or, when the next
    // invocation asked only after they had passed (a busy machine), when it asked (the
    // database's clock when it answered is no earlier). Not a slot of theirs either.
    const granted = stores[0].answers.find((a) => a.granted > 0)!;
    expect(granted.firstSlotAtMs).toBeGreaterThanOrEqual(end - 1);
    expect(granted.firstSlotAtMs - Math.max(end, granted.databaseNowMs)).toBeLessThan(crashed.intervalMs);
  });

  test('a wait longer than the deadline is refused at once and reserves nothing', async () => {
    const store = new DatabaseRateBudgetStore(database());
    // Someone holds the next six seconds of a 1-per-second budget (it asked for ten: the
    // database holds every horizon to six seconds, migration 0022).
    const held = await store.reserve(LWA_NA, {
      ceiling: 1,
      wanted: 10,
      maxWaitMs: 0,
      toleranceMs: 0,
      leadMs: 0,
      horizonMs: 10_000,
    });
    expect(held.granted).toBe(7);
    const before = await budgetRow();
    const [late] = budgets(1, 1);
    await expect(late.take(2_000)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect((await budgetRow()).next_slot_at).toEqual(before.next_slot_at);
    expect(late.stats()).toMatchObject({ slotsReserved: 0, slotsUsed: 0 });
  });

  test('arguments out of range are refused by the database, not stored', async () => {
    const store = new DatabaseRateBudgetStore(database());
    for (const bad of [
      { ceiling: 0, wanted: 1 },
      { ceiling: 5, wanted: 0 },
      { ceiling: -1, wanted: 1 },
    ]) {
      await expect(
        store.reserve(LWA_NA, { ...bad, maxWaitMs: 0, toleranceMs: 0, leadMs: 0, horizonMs: 500 }),
      ).rejects.toThrow(/reserve_amazon_requests: invalid argument/);
    }
    await expect(
      store.reserve(
        { endpoint: 'lwa', region: 'XX' as never },
        {
          ceiling: 5,
          wanted: 1,
          maxWaitMs: 0,
          toleranceMs: 0,
          leadMs: 0,
          horizonMs: 500,
        },
      ),
    ).rejects.toBeInstanceOf(DatabaseError);
    const { rows } = await world.admin.query(`SELECT 1 FROM amazon_rate_budget`);
    expect(rows).toEqual([]);
  });
});

/** Slots a budget holds and has not used yet. */
function pendingSlots(budget: SharedRateBudget): number {
  const s = budget.stats();
  return s.slotsReserved - s.slotsUsed - s.slotsDropped;
}

describe('shared budget client (store and clock replaced)', () => {
  /** A store that hands out slots from a schedule kept in memory, on a clock the test moves. */
  class MemoryStore implements RateBudgetStore {
    next = 0;
    requests: ReserveRequest[] = [];
    grants: number[] = [];
    constructor(private readonly clock: { now: number }) {}
    reserve(_key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
      this.requests.push(request);
      const interval = (1000 + request.toleranceMs) / request.ceiling;
      const first = Math.max(this.next, this.clock.now + request.leadMs);
      const fits = Math.floor((this.clock.now + request.horizonMs - first) / interval) + 1;
      if (first > this.clock.now + request.maxWaitMs || fits < 1)
        return Promise.resolve({
          granted: 0,
          firstSlotAtMs: first,
          intervalMs: interval,
          ratePerSecond: request.ceiling,
          databaseNowMs: this.clock.now,
        });
      const granted = Math.min(request.wanted, fits);
      this.grants.push(granted);
      this.next = first + granted * interval;
      return Promise.resolve({
        granted,
        firstSlotAtMs: first,
        intervalMs: interval,
        ratePerSecond: request.ceiling,
        databaseNowMs: this.clock.now,
      });
    }
    throttled(_key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
      this.next = Math.max(this.next, this.clock.now + report.pauseSeconds * 1000);
      return Promise.resolve({ ratePerSecond: report.ceiling / 2, pausedUntilMs: this.next, rateCut: true });
    }
  }

  /**
   * A clock the test moves: `sleep` advances it by the time asked (plus `lateMs`, a process
   * whose timers fire late) instead of waiting.
   */
  function fakeTime(clock: { now: number }, lateMs = 0) {
    return {
      now: () => clock.now,
      sleep: (ms: number) => {
        clock.now += ms + lateMs;
        return Promise.resolve();
      },
    };
  }

  test('a slot that comes too late to use (the caller was not ready) is dropped, never sent late', async () => {
    const clock = { now: 1_000_000 };
    const time = fakeTime(clock);
    const store = new MemoryStore(clock);
    const budget = new SharedRateBudget(store, LWA_NA, {
      ceiling: 10,
      toleranceMs: 50,
      now: time.now,
      sleep: time.sleep,
    });
    // Three callers at once: one reservation of three slots, 105 ms apart.
    await Promise.all([budget.take(), budget.take(), budget.take()]);
    expect(store.requests.map((r) => r.wanted)).toEqual([3]);
    expect(budget.stats()).toMatchObject({ slotsUsed: 3, slotsDropped: 0 });

    // A process whose timers fire 200 ms late (busy): its slot, 100 ms ahead, has passed by
    // more than the tolerance when it wakes, so it is dropped and a fresh one reserved.
    store.next = clock.now + 100;
    const slow = new SharedRateBudget(store, LWA_NA, { ceiling: 10, toleranceMs: 50, ...fakeTime(clock, 200) });
    await slow.take();
    expect(slow.stats().slotsDropped).toBeGreaterThanOrEqual(1);
    expect(slow.stats().slotsUsed).toBe(1);
  });

  test('reservations ask for as many slots as callers wait and get those within the horizon', async () => {
    const clock = { now: 0 };
    const time = fakeTime(clock);
    const store = new MemoryStore(clock);
    const budget = new SharedRateBudget(store, LWA_NA, { ceiling: 10, horizonMs: 500, ...time });
    await Promise.all(Array.from({ length: 12 }, () => budget.take()));
    // 12 callers at once ask for 12; at 10/s (110 ms apart with the tolerance) 5 fit in the
    // horizon of 500 ms; the next reservations, back to back, ask for a horizon's worth at least.
    expect(store.requests[0]).toMatchObject({ wanted: 12, horizonMs: 500 });
    expect(store.grants[0]).toBe(5);
    expect(Math.max(...store.grants)).toBeLessThanOrEqual(5);
    expect(store.grants.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(12);
    expect(store.requests.slice(1).every((r) => r.wanted >= 5)).toBe(true);
    expect(budget.stats()).toMatchObject({ slotsUsed: 12 });
  });

  test('after a 429 the slots still held are given up and the next ones start after the pause', async () => {
    const clock = { now: 0 };
    const time = fakeTime(clock);
    const store = new MemoryStore(clock);
    const budget = new SharedRateBudget(store, LWA_NA, { ceiling: 10, ...time });
    await Promise.all(Array.from({ length: 3 }, () => budget.take()));
    await budget.throttled(clock.now, 5);
    const pausedUntil = budget.pausedUntilMs();
    expect(pausedUntil).toBeGreaterThanOrEqual(5000);
    expect(budget.ratePerSecond()).toBe(5);
    await budget.take();
    expect(clock.now).toBeGreaterThanOrEqual(pausedUntil);
  });

  test('a 429 drops the slots its holder still has at once, before the budget has answered the report', async () => {
    const clock = { now: 0 };
    const time = fakeTime(clock);
    const store = new MemoryStore(clock);
    // The report is on its way and stays there: what the holder does meanwhile is its own doing.
    jest.spyOn(store, 'throttled').mockReturnValue(new Promise<ThrottleResult>(() => undefined));
    const budget = new SharedRateBudget(store, LWA_NA, { ceiling: 10, ...time });
    budget.expectRequests(20);
    await budget.take();
    expect(budget.stats()).toMatchObject({ slotsReserved: 20, slotsUsed: 1, slotsDropped: 0 });
    budget.reportThrottle(clock.now, 5);
    // At once (synchronously): the 19 slots it held for the old rate are gone.
    expect(budget.stats()).toMatchObject({ slotsUsed: 1, slotsDropped: 19 });
    // Nothing goes out on them: a caller that cannot wait out the pause is refused at once, and
    // no reservation is made while the report has not been answered.
    await expect(budget.take(1000)).rejects.toBeInstanceOf(DeadlineExceededError);
    expect(budget.stats().slotsUsed).toBe(1);
    expect(store.requests).toHaveLength(1);
  });

  /**
   * A clock the test moves for several callers sleeping at once: it jumps to the earliest wake-up
   * once every caller is asleep, so each one's slots come on time.
   */
  function scheduledTime(clock: { now: number }) {
    const sleepers: Array<{ at: number; wake: () => void }> = [];
    let ticking = false;
    const tick = () => {
      ticking = false;
      sleepers.sort((a, b) => a.at - b.at);
      if (sleepers.length > 0) clock.now = Math.max(clock.now, sleepers[0].at);
      while (sleepers.length > 0 && sleepers[0].at <= clock.now) sleepers.shift()!.wake();
    };
    return {
      now: () => clock.now,
      sleep: (ms: number) =>
        new Promise<void>((wake) => {
          sleepers.push({ at: clock.now + ms, wake });
          if (!ticking) {
            ticking = true;
            setImmediate(tick);
          }
        }),
    };
  }

  test('a run working on three regions tops them up in one call: the regions about to run out join the reservation of the first', async () => {
    const clock = { now: 0 };
    const time = scheduledTime(clock);
    const regions = ['NA', 'EU', 'FE'] as const;
    // One schedule per region, as in the database; one call may reserve for several.
    const stores = new Map(regions.map((r) => [r, new MemoryStore(clock)]));
    const calls: string[][] = [];
    const store: RateBudgetStore = {
      reserve: (key, request) => (calls.push([key.region]), stores.get(key.region)!.reserve(key, request)),
      reserveMany: (requests) => (
        calls.push(requests.map((r) => r.key.region)),
        Promise.all(requests.map((r) => stores.get(r.key.region as 'NA')!.reserve(r.key, r.request)))
      ),
      throttled: (key, report) => stores.get(key.region)!.throttled(key, report),
    };
    const registry = new RateLimiterRegistry({ lwa: { ratePerSecond: 10, burst: 10, maxConcurrency: 8 } }, time, store);
    const limiters = regions.map((r) => registry.for('lwa', r));
    // Each region has 120 requests to send (its share of the claim): about two horizons' worth.
    for (const l of limiters) {
      l.expectRequests(120);
      l.succeeded();
    }
    const sent = new Map<string, number>(regions.map((r) => [r, 0]));
    await Promise.all(
      regions.map(async (region, i) => {
        for (let n = 0; n < 120; n += 1)
          await limiters[i].run(() => Promise.resolve(sent.set(region, sent.get(region)! + 1)));
      }),
    );
    expect([...sent.values()]).toEqual([120, 120, 120]);
    // 360 requests at 55 slots per reservation and region: 21 reservations, made in a handful of
    // calls (each region alone would make 3 calls: 9 in all).
    const reservations = limiters.reduce((n, l) => n + l.shared!.stats().reservations, 0);
    expect(reservations).toBeGreaterThanOrEqual(6);
    expect(calls.length).toBeLessThanOrEqual(4);
    expect(calls.some((c) => c.length === 3)).toBe(true);
    expect(limiters.reduce((n, l) => n + l.shared!.stats().topUps, 0)).toBe(reservations - calls.length);
  });

  test('a limiter registry with a budget store paces every call by the shared budget and reports its 429s to it', async () => {
    const clock = { now: 0 };
    const time = fakeTime(clock);
    const store = new MemoryStore(clock);
    const reserved = jest.spyOn(store, 'reserve');
    const reported = jest.spyOn(store, 'throttled');
    const registry = new RateLimiterRegistry({ lwa: { ratePerSecond: 4, burst: 100, maxConcurrency: 8 } }, time, store);
    const limiter = registry.for('lwa', 'EU');
    expect(limiter.shared?.key).toEqual({ endpoint: 'lwa', region: 'EU' });
    const sent: number[] = [];
    limiter.succeeded(); // past the first probe: calls go out freely
    await Promise.all(Array.from({ length: 8 }, () => limiter.run(() => Promise.resolve(sent.push(clock.now)))));
    // The bucket alone would have let all 8 go at once (burst 100); the budget spaces them at 4/s.
    expect(sent[7] - sent[0]).toBeGreaterThanOrEqual(7 * (1050 / 4) - 1);
    expect(reserved).toHaveBeenCalled();
    expect(reserved.mock.calls.every(([key, request]) => key.region === 'EU' && request.ceiling === 4)).toBe(true);

    limiter.throttled(3, clock.now - 100);
    await limiter.run(() => Promise.resolve(sent.push(clock.now)));
    expect(reported).toHaveBeenCalledWith(
      { endpoint: 'lwa', region: 'EU' },
      expect.objectContaining({ ceiling: 4, pauseSeconds: 3 }),
    );
    // The call after the 429 waited for the pause the budget holds for everyone.
    expect(sent[8]).toBeGreaterThanOrEqual(store.next - 1050 / 2);
    expect(limiter.allowedRate()).toBeLessThan(4);
  });
});
