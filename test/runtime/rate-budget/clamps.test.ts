import { BudgetKey, DatabaseRateBudgetStore, ReserveRequest } from '../../../lambda/shared/amazon/rate-budget';
import { JobWorld, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

// What the database enforces whatever the caller asks (migration 0022): a horizon of at most
// six seconds, no more slots than it holds at the rate, a minimum rate, a pause of at most
// 900 s; a ceiling raised again applies at once. Callers are the store itself, asking for too
// much on purpose.

let world: JobWorld;
useJobWorld((w) => (world = w));

beforeEach(async () => {
  await world.admin.query('DELETE FROM amazon_rate_budget');
});

const KEY: BudgetKey = { endpoint: 'lwa', region: 'FE' };
const ASK: ReserveRequest = { ceiling: 10, wanted: 1, maxWaitMs: 0, toleranceMs: 100, leadMs: 0, horizonMs: 1000 };

async function frontier(): Promise<{ aheadMs: number; ceiling: number; rate: number }> {
  const { rows } = await world.admin.query<{ ahead_ms: number; ceiling_per_second: number; rate_per_second: number }>(
    `SELECT extract(epoch FROM next_slot_at - clock_timestamp()) * 1000 AS ahead_ms, ceiling_per_second, rate_per_second
       FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'FE'`,
  );
  return { aheadMs: Number(rows[0].ahead_ms), ceiling: rows[0].ceiling_per_second, rate: rows[0].rate_per_second };
}

describe.each(useBothDatabasePaths(() => world))('the budget clamps what callers ask (%s)', (_path, database) => {
  test('a 60 s horizon and 10,000 slots get six seconds of slots at the rate, no more', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const greedy = await store.reserve(KEY, {
      ...ASK,
      wanted: 10_000,
      horizonMs: 60_000,
      leadMs: 60_000,
      maxWaitMs: 5_000,
    });
    // At 10/s with 100 ms of tolerance a slot is 110 ms: the 6,000 ms horizon holds 55, of
    // which those from the lead on (held to one second) are handed out.
    expect(greedy.granted).toBeGreaterThanOrEqual(45);
    expect(greedy.granted).toBeLessThanOrEqual(55);
    expect(greedy.intervalMs).toBeCloseTo(110, 6);
    expect(greedy.firstSlotAtMs - greedy.databaseNowMs).toBeLessThanOrEqual(1000);
    const row = await frontier();
    expect(row.aheadMs).toBeLessThanOrEqual(6000 + 110);
    // Another caller is not blocked for a minute: it is given its time to ask again within the horizon.
    const next = await store.reserve(KEY, { ...ASK, wanted: 10, maxWaitMs: 60_000, horizonMs: 60_000 });
    expect(next.granted).toBe(0);
    expect(next.retryAtMs! - next.databaseNowMs).toBeLessThanOrEqual(7000);
  });

  test('a ceiling of 0.0001/s is held to the minimum rate (0.05/s), and raising it again applies at once', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const tiny = await store.reserve(KEY, { ...ASK, ceiling: 0.0001 });
    expect(tiny.granted).toBe(1);
    expect(tiny.ratePerSecond).toBe(0.05);
    // One slot per 22 s (1.1 s ÷ 0.05), not one per 11,000,000 s: the next free slot is not hours ahead.
    expect(tiny.intervalMs).toBeCloseTo(22_000, 3);
    expect((await frontier()).aheadMs).toBeLessThanOrEqual(22_000);
    expect((await frontier()).ceiling).toBe(0.05);

    const raised = await store.reserve(KEY, { ...ASK, ceiling: 10, wanted: 5, maxWaitMs: 60_000, horizonMs: 6000 });
    // The full new rate at once (the share of the ceiling was whole), and a first slot within
    // the horizon plus one slot, not at the end of the tiny ceiling's 22 s.
    expect(raised.ratePerSecond).toBe(10);
    expect(raised.intervalMs).toBeCloseTo(110, 6);
    expect(raised.firstSlotAtMs - raised.databaseNowMs).toBeLessThanOrEqual(6000 + 110 + 50);
    expect(raised.granted + (raised.retryAtMs !== undefined ? 1 : 0)).toBeGreaterThan(0);
  });

  test('a pause of a day is held to 900 s, and a cut never goes below the minimum rate', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const result = await store.throttled(KEY, {
      ceiling: 0.06,
      sentAtMs: Date.now(),
      pauseSeconds: 86_400,
      record: false,
    });
    expect(result.pausedUntilMs - Date.now()).toBeLessThanOrEqual(900_000 + 5_000);
    expect(result.pausedUntilMs - Date.now()).toBeGreaterThan(890_000);
    expect(result.ratePerSecond).toBe(0.05);
  });

  test('nonsense is refused with a clear error and nothing stored', async () => {
    const db = database();
    const store = new DatabaseRateBudgetStore(db);
    for (const bad of [{ wanted: 0 }, { ceiling: -1 }, { toleranceMs: -1 }])
      await expect(store.reserve(KEY, { ...ASK, ...bad })).rejects.toThrow(/reserve_amazon_requests: invalid argument/);
    // Numbers the adapters would not even send, from any caller of the function.
    for (const args of [
      `'NaN', 1, 0, 0, 0, 0, 1000`,
      `'Infinity', 1, 0, 0, 0, 0, 1000`,
      `10, 1, 0, 0, 0, 0, 'NaN'`,
      `10, 1, 0, 0, 0, 0, -1`,
    ])
      await expect(
        db.query(
          `SELECT * FROM reserve_amazon_requests('lwa-token', 'FE', ${args.replace(/'(\w+)'/g, "'$1'::float8")})`,
        ),
      ).rejects.toThrow(/reserve_amazon_requests: invalid argument/);
    await expect(
      store.throttled(KEY, { ceiling: 10, sentAtMs: Date.now(), pauseSeconds: -1, record: false }),
    ).rejects.toThrow(/amazon_requests_throttled: invalid argument/);
    await expect(store.release(KEY, { fromMs: 2000, untilMs: 1000 })).rejects.toThrow(
      /release_amazon_requests: invalid argument/,
    );
    expect((await world.admin.query(`SELECT 1 FROM amazon_rate_budget`)).rows).toEqual([]);
  });
});
