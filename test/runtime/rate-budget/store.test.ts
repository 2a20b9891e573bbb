import {
  BudgetKey,
  DatabaseRateBudgetStore,
  ReserveRequest,
  type Reservation,
} from '../../../lambda/shared/amazon/rate-budget';
import { JobWorld, useBothDatabasePaths, useJobWorld } from '../../support/jobs';
import { pollUntil } from '../../support/poll';

// What DatabaseRateBudgetStore (lambda/shared/amazon/rate-budget-store.ts) sends and reads
// back, on both database paths: which row a key is (a pool's row beside its endpoint's), the
// answer's optional parts, the 429 report's defaults, several budgets in one call answered in
// the order asked and locked in one order whatever the order asked.

let world: JobWorld;
useJobWorld((w) => (world = w));

beforeEach(async () => {
  await world.admin.query('DELETE FROM amazon_rate_budget');
  await world.admin.query('DELETE FROM rate_limit_tracking');
});

const NA: BudgetKey = { endpoint: 'lwa', region: 'NA' };
const EU: BudgetKey = { endpoint: 'lwa', region: 'EU' };
// 2 per second with 100 ms of tolerance: a slot every 550 ms, 11 in the 6 s horizon.
const ASK: ReserveRequest = { ceiling: 2, wanted: 4, maxWaitMs: 60_000, toleranceMs: 100, leadMs: 0, horizonMs: 6000 };

async function rows(): Promise<Array<[string, string]>> {
  const { rows: r } = await world.admin.query<{ endpoint: string; region: string }>(
    `SELECT endpoint, region FROM amazon_rate_budget ORDER BY endpoint, region`,
  );
  return r.map((x) => [x.endpoint, x.region]);
}

/** Waits (against pollUntil's deadline) until `n` sessions of the database wait for a lock. */
async function lockWaiters(n: number): Promise<void> {
  const waiting = await pollUntil(
    async () =>
      (
        await world.admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        )
      ).rows[0].n,
    (count) => count >= n,
  );
  expect(waiting).toBeGreaterThanOrEqual(n);
}

describe.each(useBothDatabasePaths(() => world))('the budget store’s statements (%s)', (_path, database) => {
  test('a key is a row: the endpoint by its stored name, a pool in a row of its own beside it; the answer names its pool', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const plain = await store.reserve(NA, ASK);
    const lane = await store.reserve({ ...NA, pool: 'interactive' }, ASK);
    const api = await store.reserve({ endpoint: 'ads', region: 'EU', pool: 'api' }, ASK);

    expect(await rows()).toEqual([
      ['ads-profiles:api', 'EU'],
      ['lwa-token', 'NA'],
      ['lwa-token:interactive', 'NA'],
    ]);
    expect(plain).not.toHaveProperty('pool');
    expect(lane.pool).toBe('interactive');
    expect(api.pool).toBe('api');
    for (const r of [plain, lane, api]) expect(r.granted).toBe(4);
  });

  test('slots granted come with no time to ask again and no pause; during a pause nothing is granted and the pause’s end is given', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const granted = await store.reserve(NA, ASK);
    expect(granted.granted).toBe(4);
    expect(granted).not.toHaveProperty('retryAtMs');
    expect(granted.pausedUntilMs).toBe(0);

    const throttled = await store.throttled(NA, {
      ceiling: 2,
      sentAtMs: granted.databaseNowMs,
      pauseSeconds: 30,
      record: false,
    });
    const { rows: stored } = await world.admin.query<{ paused_until: Date }>(
      `SELECT paused_until FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'NA'`,
    );
    // Milliseconds as stored (a conversion through the date's text would drop them).
    expect(throttled.pausedUntilMs).toBe(stored[0].paused_until.getTime());

    const paused = await store.reserve(NA, ASK);
    expect(paused.granted).toBe(0);
    expect(paused.pausedUntilMs).toBe(throttled.pausedUntilMs);
    expect(paused.retryAtMs).toEqual(expect.any(Number));
    expect(paused.firstSlotAtMs).toBeGreaterThanOrEqual(throttled.pausedUntilMs);
  });

  test('a 429 is recorded unless the caller says not to; one on a slot granted before the last cut does not cut again', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const first = await store.reserve(NA, { ...ASK, ceiling: 10 });
    const lastCut = async () => {
      const { rows: r } = await world.admin.query<{ at: Date }>(
        `SELECT last_cut_at AS at FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'NA'`,
      );
      return r[0].at.getTime();
    };
    const tracked = async () => {
      const { rows: r } = await world.admin.query<{ n: number }>(
        `SELECT limit_hit_count AS n FROM rate_limit_tracking WHERE endpoint = 'lwa-token:NA' AND user_id IS NULL`,
      );
      return r.map((x) => Number(x.n));
    };

    // No `record`: recorded (the jobs' default).
    const cut = await store.throttled(NA, { ceiling: 10, sentAtMs: first.databaseNowMs, pauseSeconds: 1 });
    expect(cut).toMatchObject({ rateCut: true, ratePerSecond: 5 });
    expect(await tracked()).toEqual([1]);

    // Sent after the cut, but on a slot granted before it: the same wave, no second cut.
    const after = (await lastCut()) + 1;
    const sameWave = await store.throttled(NA, {
      ceiling: 10,
      sentAtMs: after,
      grantedAtMs: after - 1000,
      pauseSeconds: 1,
      record: false,
    });
    // (The rate grows back by 1 % of the ceiling per second meanwhile: 5 or a little more, not halved.)
    expect(sameWave.rateCut).toBe(false);
    expect(sameWave.ratePerSecond).toBeGreaterThanOrEqual(5);
    expect(await tracked()).toEqual([1]);

    // Sent after the cut with no grant time given: the send time is the grant time, and it cuts.
    const later = await store.throttled(NA, { ceiling: 10, sentAtMs: (await lastCut()) + 1, pauseSeconds: 1 });
    expect(later.rateCut).toBe(true);
    expect(later.ratePerSecond).toBeLessThan(sameWave.ratePerSecond * 0.75);
    expect(await tracked()).toEqual([2]);
  });

  test('a lead keeps the first slot that far from now (the answer’s way back)', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const before = (await world.admin.query<{ at: Date }>(`SELECT clock_timestamp() AS at`)).rows[0].at.getTime();
    const ahead = await store.reserve(NA, { ...ASK, leadMs: 500 });
    expect(ahead.granted).toBe(4);
    // The slot is 500 ms after the function's clock, which is between the clock read before the
    // call and the answer's (however slow the machine).
    expect(ahead.firstSlotAtMs).toBeGreaterThanOrEqual(before + 500);
    expect(ahead.firstSlotAtMs).toBeLessThanOrEqual(ahead.databaseNowMs + 500);
  });

  test('several budgets in one call: each answered from its own budget, in the order asked', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const answers = await store.reserveMany([
      { key: NA, request: { ...ASK, ceiling: 2 } },
      { key: { endpoint: 'ads', region: 'FE' }, request: { ...ASK, ceiling: 4 } },
      { key: EU, request: { ...ASK, ceiling: 1 } },
      { key: { ...NA, pool: 'interactive' }, request: { ...ASK, ceiling: 0.5, wanted: 1 } },
    ]);
    expect(answers.map((a) => [a.ratePerSecond, a.granted, a.pool])).toEqual([
      [2, 4, undefined],
      [4, 4, undefined],
      [1, 4, undefined],
      [0.5, 1, 'interactive'],
    ]);
  });

  test.each(['EU', 'NA'])(
    'two calls reserving the same budgets in opposite orders lock them in one order: no deadlock (%s held first)',
    async (held) => {
      const store = new DatabaseRateBudgetStore(database());
      // Both rows exist; EU comes first in the lock order (`lwa-token`, then the region).
      await store.reserveMany([
        { key: NA, request: ASK },
        { key: EU, request: ASK },
      ]);
      // Another session holds one of the rows, so each call stops where it would lock it. With
      // the rows locked in the order asked (or in any order that depends on it), the first call
      // can end up holding one row and waiting for the other while the second holds that one:
      // a deadlock, one of them failing. Which row makes that happen depends on the order
      // used, hence both.
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let locked!: () => void;
      const lockedNow = new Promise<void>((resolve) => (locked = resolve));
      const holding = world.admin.transaction(async (tx) => {
        await tx.query(`SELECT 1 FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = :held FOR UPDATE`, {
          held,
        });
        locked();
        await released;
      });
      const calls: Array<Promise<Reservation[]>> = [];
      try {
        await lockedNow;
        calls.push(
          store.reserveMany([
            { key: EU, request: ASK },
            { key: NA, request: ASK },
          ]),
        );
        await lockWaiters(1);
        calls.push(
          store.reserveMany([
            { key: NA, request: ASK },
            { key: EU, request: ASK },
          ]),
        );
        await lockWaiters(2);
      } finally {
        release();
        await holding;
      }
      const settled = await Promise.allSettled(calls);
      expect(settled.map((s) => (s.status === 'rejected' ? String(s.reason) : s.status))).toEqual([
        'fulfilled',
        'fulfilled',
      ]);
    },
  );
});
