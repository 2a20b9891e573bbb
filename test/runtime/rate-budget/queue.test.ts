import { BudgetKey, DatabaseRateBudgetStore, ReserveRequest } from '../../../lambda/shared/amazon/rate-budget';
import { JobWorld, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

// No thundering herd: callers refused while another holds the schedule are each given a time
// of their own to ask again (a queue in the budget's row), a batch apart, instead of all
// waking at the next free slot. And a worker that is done gives the unused end of its batch
// back.

let world: JobWorld;
useJobWorld((w) => (world = w));

beforeEach(async () => {
  await world.admin.query('DELETE FROM amazon_rate_budget');
});

const KEY: BudgetKey = { endpoint: 'lwa', region: 'NA' };
// 2 per second with 100 ms of tolerance: a slot every 550 ms, 11 in the 6 s horizon (slow
// enough that the calls of one test never take half a batch's time).
const ASK: ReserveRequest = {
  ceiling: 2,
  wanted: 20,
  maxWaitMs: 300_000,
  toleranceMs: 100,
  leadMs: 0,
  horizonMs: 6000,
};
const SLOT = 550;
const BATCH = 11;

describe.each(useBothDatabasePaths(() => world))('refused callers and given-back slots (%s)', (_path, database) => {
  test('five callers refused at once get five different times to ask again, one batch apart', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const holder = await store.reserve(KEY, ASK);
    expect(holder.granted).toBe(BATCH);
    const refused = [];
    for (let i = 0; i < 5; i += 1) refused.push(await store.reserve(KEY, ASK));
    expect(refused.map((r) => r.granted)).toEqual([0, 0, 0, 0, 0]);
    const times = refused.map((r) => r.retryAtMs!);
    for (let i = 1; i < times.length; i += 1) expect(times[i] - times[i - 1]).toBeGreaterThanOrEqual(BATCH * SLOT - 2);
    // The first is due when a batch of its size fits, about when the holder's batch has passed.
    expect(times[0] - holder.firstSlotAtMs).toBeLessThanOrEqual(BATCH * SLOT + 50);
    // Each one's expected first slot comes after the previous one's.
    for (let i = 1; i < refused.length; i += 1)
      expect(refused[i].firstSlotAtMs).toBeGreaterThan(refused[i - 1].firstSlotAtMs);
    // A caller that cannot wait for its place takes none: the next one gets the same time.
    const hurried = await store.reserve(KEY, { ...ASK, maxWaitMs: 100 });
    expect(hurried.granted).toBe(0);
    const after = await store.reserve(KEY, ASK);
    expect(after.retryAtMs! - times[4]).toBeGreaterThanOrEqual(BATCH * SLOT - 2);
    expect(after.retryAtMs! - times[4]).toBeLessThanOrEqual(BATCH * SLOT + 2);
  });

  test('a caller without a place does not take the slots of a refused caller whose time is still to come', async () => {
    const store = new DatabaseRateBudgetStore(database());
    // Seven slots held: four more fit in the horizon (five after 50 ms), fewer than half a batch
    // of eleven for the next half second.
    const holder = await store.reserve(KEY, { ...ASK, wanted: 7 });
    expect(holder.granted).toBe(7);
    const queued = await store.reserve(KEY, ASK);
    expect(queued.granted).toBe(0);
    // A worker back for the last two slots of its claim, while the queued caller waits: before
    // migration 0025 it was served (they fit in the horizon), and the queued caller then got
    // its batch two slots short. Now it asks behind the queue.
    const remainder = await store.reserve(KEY, { ...ASK, wanted: 2 });
    expect(remainder.granted).toBe(0);
    expect(remainder.retryAtMs!).toBeGreaterThan(queued.retryAtMs!);
    // With its place (the time it was given), a caller is served as before: what fits.
    const withPlace = await store.reserve(KEY, { ...ASK, wanted: 2, ticketMs: queued.retryAtMs });
    expect(withPlace.granted).toBe(2);
    expect(withPlace.firstSlotAtMs).toBeGreaterThanOrEqual(holder.firstSlotAtMs + 7 * SLOT - 2);
  });

  test('a finished worker gives back the unused end of its batch; not once someone reserved after it', async () => {
    const store = new DatabaseRateBudgetStore(database());
    const batch = await store.reserve(KEY, ASK);
    const until = batch.firstSlotAtMs + batch.granted * batch.intervalMs;
    // It used four slots and is done: the fifth and later go back.
    const from = batch.firstSlotAtMs + 4 * batch.intervalMs;
    expect(await store.release(KEY, { fromMs: from, untilMs: until })).toBe(true);
    const next = await store.reserve(KEY, { ...ASK, wanted: 1 });
    expect(next.granted).toBe(1);
    expect(next.firstSlotAtMs).toBeGreaterThanOrEqual(from - 1);
    expect(next.firstSlotAtMs).toBeLessThan(from + batch.intervalMs);
    // The batch before is no longer the last one granted: its end cannot be given back.
    expect(await store.release(KEY, { fromMs: from + batch.intervalMs, untilMs: until })).toBe(false);
    // Nor slots before the batch granted last (someone else's).
    const nextUntil = next.firstSlotAtMs + next.intervalMs;
    expect(await store.release(KEY, { fromMs: batch.firstSlotAtMs, untilMs: nextUntil })).toBe(false);
  });
});
