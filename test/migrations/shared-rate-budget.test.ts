import { Database, JobWorld, useBothDatabasePaths, useJobWorld } from '../support/jobs';

// The shared rate budget's SQL (migrations 0015 and 0022: reserve_amazon_requests,
// amazon_requests_throttled, amazon_rate_now) called directly, as the jobs' login, on both
// database paths. These are the function's own bounds, which hold whoever calls it: nonsense
// refused, a horizon held to 6 s and a lead to 1 s, never more than the horizon ahead, never
// faster than the ceiling, and pauses kept.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

interface Reserve {
  readonly ceiling: number;
  readonly wanted: number;
  readonly maxWaitMs?: number;
  readonly toleranceMs?: number;
  readonly recovery?: number;
  readonly leadMs?: number;
  readonly horizonMs?: number;
}

interface Reservation {
  granted: number;
  first_slot_at: Date;
  interval_ms: number;
  rate_per_second: number;
}

function reserve(db: Database, r: Reserve, region = 'NA'): Promise<Reservation> {
  return db
    .query<Reservation>(
      `SELECT r.granted, r.first_slot_at, r.interval_ms, r.rate_per_second
         FROM reserve_amazon_requests('lwa-token'::text, :region::text, :ceiling::float8, :wanted::int, :maxWaitMs::float8,
                                      :toleranceMs::float8, :recovery::float8, :leadMs::float8, :horizonMs::float8) AS r`,
      {
        region,
        ceiling: r.ceiling,
        wanted: r.wanted,
        maxWaitMs: r.maxWaitMs ?? 60_000,
        toleranceMs: r.toleranceMs ?? 0,
        recovery: r.recovery ?? 0,
        leadMs: r.leadMs ?? 0,
        horizonMs: r.horizonMs ?? 1_000,
      },
    )
    .then(({ rows }) => rows[0]);
}

function throttled(
  db: Database,
  o: { ceiling: number; sentAt: Date; pauseSeconds: number; decrease?: number; minFraction?: number },
) {
  return db
    .query<{ rate_per_second: number; paused_until: Date; rate_cut: boolean }>(
      `SELECT r.rate_per_second, r.paused_until, r.rate_cut
         FROM amazon_requests_throttled('lwa-token'::text, 'NA'::text, :ceiling::float8, :sentAt::timestamptz,
                                        :pause::float8, :decrease::float8, :minFraction::float8, 0::float8) AS r`,
      {
        ceiling: o.ceiling,
        sentAt: o.sentAt,
        pause: o.pauseSeconds,
        decrease: o.decrease ?? 0.5,
        minFraction: o.minFraction ?? 0.1,
      },
    )
    .then(({ rows }) => rows[0]);
}

/** How far the row's schedule reaches past the database's clock, in ms, and its stored rate. */
async function schedule(region = 'NA'): Promise<{ aheadMs: number; rate: number; pausedMs: number | null }> {
  const { rows } = await world.admin.query<{ ahead_ms: number; rate: number; paused_ms: number | null }>(
    `SELECT extract(epoch FROM next_slot_at - clock_timestamp())::float8 * 1000 AS ahead_ms,
            rate_per_second AS rate,
            extract(epoch FROM paused_until - clock_timestamp())::float8 * 1000 AS paused_ms
       FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = :region`,
    { region },
  );
  return { aheadMs: rows[0].ahead_ms, rate: rows[0].rate, pausedMs: rows[0].paused_ms };
}

describe.each(PATHS)('%s', (_path, database) => {
  test.each([
    ['no slot', { wanted: 0 }],
    ['a negative horizon', { horizonMs: -1 }],
    ['a negative lead', { leadMs: -1 }],
    ['a negative wait', { maxWaitMs: -1 }],
    ['a ceiling of 0', { ceiling: 0 }],
  ])('a reservation of %s is refused by the function itself, and nothing is reserved', async (_what, bad) => {
    const db = database();
    await expect(reserve(db, { ceiling: 10, wanted: 1, ...bad })).rejects.toThrow(
      /reserve_amazon_requests: invalid argument/,
    );
    const { rows } = await world.admin.query(`SELECT 1 FROM amazon_rate_budget`);
    expect(rows).toEqual([]);
  });

  // Past the function's bounds a call is refused or clamped, never served as asked: no call gets
  // more than 10,000 slots, nobody holds the schedule more than 60 s ahead, no first slot is put
  // more than 10 s out by the lead.
  test.each([
    ['20,000 slots at 1,000 per second', { ceiling: 1000, wanted: 20_000, horizonMs: 60_000 }],
    ['10,000 slots over an hour’s horizon', { ceiling: 10, wanted: 10_000, horizonMs: 3_600_000 }],
    ['a lead of a minute', { ceiling: 10, wanted: 1, leadMs: 60_000 }],
  ])('a reservation of %s is refused or clamped by the function itself', async (_what, big) => {
    const db = database();
    const outcome = await reserve(db, big).then(
      (r) => r,
      (error: unknown) => error as Error,
    );
    if (outcome instanceof Error) {
      expect(outcome.message).toMatch(/reserve_amazon_requests: invalid argument/);
      return;
    }
    expect(outcome.granted).toBeLessThanOrEqual(10_000);
    const { rows } = await world.admin.query<{ ahead_ms: number; first_ms: number }>(
      `SELECT extract(epoch FROM next_slot_at - clock_timestamp())::float8 * 1000 AS ahead_ms,
              extract(epoch FROM :first::timestamptz - clock_timestamp())::float8 * 1000 AS first_ms
         FROM amazon_rate_budget`,
      { first: outcome.first_slot_at },
    );
    expect(rows[0].ahead_ms).toBeLessThanOrEqual(60_000 + outcome.interval_ms);
    expect(rows[0].first_ms).toBeLessThanOrEqual(10_000 + outcome.interval_ms);
  });

  test('a call for 100,000 slots, 60 s ahead with a 20 s lead, is served only up to 6 s (0022)', async () => {
    const db = database();
    const r = await reserve(db, { ceiling: 10, wanted: 100_000, horizonMs: 60_000, leadMs: 20_000 });
    // 10 per second for 6 s, from the lead held to 1 s: 51 at most, never what was asked for.
    expect(r.granted).toBeGreaterThan(0);
    expect(r.granted).toBeLessThanOrEqual(61);
    expect((await schedule()).aheadMs).toBeLessThanOrEqual(6_000 + r.interval_ms);
  });

  test('a caller whose first slot would come later than its longest wait (in ms) is given nothing, and the schedule is left as it was', async () => {
    const db = database();
    await reserve(db, { ceiling: 10, wanted: 1 });
    // The schedule's frontier 3 s out: within the 6 s horizon, beyond a wait of 1,000 ms.
    await world.admin.query(`UPDATE amazon_rate_budget SET next_slot_at = clock_timestamp() + interval '3 seconds'`);
    const before = await schedule();
    const r = await reserve(db, { ceiling: 10, wanted: 2, maxWaitMs: 1_000, horizonMs: 6_000 });
    expect(r.granted).toBe(0);
    const after = await schedule();
    // The frontier did not move (the clock did, by the statement's few ms).
    expect(after.aheadMs).toBeLessThanOrEqual(before.aheadMs);
    expect(after.aheadMs).toBeGreaterThan(1_000);
    // The same call that may wait 5 s is served from the frontier.
    const served = await reserve(db, { ceiling: 10, wanted: 2, maxWaitMs: 5_000, horizonMs: 6_000 });
    expect(served.granted).toBeGreaterThan(0);
  });

  test('however many slots are asked for, calls never hold more than the horizon of the schedule', async () => {
    const db = database();
    let granted = 0;
    for (let i = 0; i < 5; i++) {
      const r = await reserve(db, { ceiling: 10, wanted: 100, horizonMs: 1_000 });
      granted += r.granted;
      expect(r.interval_ms).toBeCloseTo(100, 6);
      expect(r.granted).toBeLessThanOrEqual(11);
      // The frontier stays within the horizon (plus the one slot that starts at it).
      expect((await schedule()).aheadMs).toBeLessThanOrEqual(1_000 + r.interval_ms);
    }
    expect(granted).toBeLessThan(500);
  });

  test('a stored rate above today’s ceiling (a ceiling lowered since) is served at the ceiling, and stored so', async () => {
    const db = database();
    await reserve(db, { ceiling: 100, wanted: 1 });
    // An hour of recovery on a rate already at the old ceiling.
    await world.admin.query(
      `UPDATE amazon_rate_budget SET rate_per_second = 100, rate_at = now() - interval '1 hour', next_slot_at = now()`,
    );
    const r = await reserve(db, { ceiling: 10, wanted: 3, recovery: 0.1 });
    expect(r.rate_per_second).toBeLessThanOrEqual(10);
    expect(r.interval_ms).toBeGreaterThanOrEqual(100);
    expect((await schedule()).rate).toBeLessThanOrEqual(10);
  });

  test('a rate that recovers after a cut never grows past the ceiling', async () => {
    const db = database();
    await reserve(db, { ceiling: 10, wanted: 1 });
    const cut = await throttled(db, { ceiling: 10, sentAt: new Date(Date.now() - 1_000), pauseSeconds: 0 });
    expect(cut).toMatchObject({ rate_cut: true, rate_per_second: 5 });
    // Long ago: enough recovery to pass the ceiling many times over.
    await world.admin.query(`UPDATE amazon_rate_budget SET rate_at = now() - interval '1 day', next_slot_at = now()`);
    const r = await reserve(db, { ceiling: 10, wanted: 1, recovery: 0.05 });
    expect(r.rate_per_second).toBe(10);
    expect(r.interval_ms).toBeCloseTo(100, 6);
  });

  test('a pause after a 429 is kept: no slot inside it, and a shorter Retry-After later does not shorten it', async () => {
    const db = database();
    await reserve(db, { ceiling: 10, wanted: 1 });
    const first = await throttled(db, { ceiling: 10, sentAt: new Date(), pauseSeconds: 30 });
    const second = await throttled(db, { ceiling: 10, sentAt: new Date(), pauseSeconds: 1 });
    expect(second.paused_until.getTime()).toBe(first.paused_until.getTime());
    expect((await schedule()).pausedMs).toBeGreaterThan(20_000);

    // Willing to wait a second (1,000 ms, not 1,000 s), with the schedule's horizon past the
    // pause: nothing is granted inside the pause.
    const r = await reserve(db, { ceiling: 10, wanted: 5, maxWaitMs: 1_000, horizonMs: 60_000 });
    expect(r.granted).toBe(0);
    expect(r.first_slot_at.getTime()).toBeGreaterThanOrEqual(first.paused_until.getTime());
    // Willing to wait past it: nothing either (the horizon is held to 6 s, 0022), and the
    // first slot it can expect is when the pause ends.
    const later = await reserve(db, { ceiling: 10, wanted: 5, maxWaitMs: 60_000, horizonMs: 60_000 });
    expect(later.granted).toBe(0);
    expect(later.first_slot_at.getTime()).toBeGreaterThanOrEqual(first.paused_until.getTime());
  });

  test('no slot inside a pause, wherever the schedule’s frontier is', async () => {
    const db = database();
    await reserve(db, { ceiling: 10, wanted: 1 });
    const { paused_until: pausedUntil } = await throttled(db, { ceiling: 10, sentAt: new Date(), pauseSeconds: 30 });
    // A frontier behind the pause (the two columns are separate; only the pause says "not before").
    await world.admin.query(`UPDATE amazon_rate_budget SET next_slot_at = now()`);
    const r = await reserve(db, { ceiling: 10, wanted: 5, maxWaitMs: 60_000, horizonMs: 60_000 });
    expect(r.first_slot_at.getTime()).toBeGreaterThanOrEqual(pausedUntil.getTime());
  });

  test('429s to requests sent before the last cut do not cut again; later ones do, never below the floor', async () => {
    const db = database();
    await reserve(db, { ceiling: 10, wanted: 1 });
    const burst = new Date(Date.now() - 5_000);
    const first = await throttled(db, { ceiling: 10, sentAt: burst, pauseSeconds: 0 });
    const sameBurst = await throttled(db, { ceiling: 10, sentAt: burst, pauseSeconds: 0 });
    expect(first).toMatchObject({ rate_cut: true, rate_per_second: 5 });
    expect(sameBurst).toMatchObject({ rate_cut: false, rate_per_second: 5 });

    // Each later 429 (sent after the last cut) cuts by half, down to 10 % of the ceiling.
    const rates: number[] = [];
    for (let i = 0; i < 6; i++) {
      const { rows } = await world.admin.query<{ at: Date }>(
        `SELECT last_cut_at + interval '1 ms' AS at FROM amazon_rate_budget`,
      );
      rates.push((await throttled(db, { ceiling: 10, sentAt: rows[0].at, pauseSeconds: 0 })).rate_per_second);
    }
    expect(rates).toEqual([2.5, 1.25, 1, 1, 1, 1]);
  });
});
