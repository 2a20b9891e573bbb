import { JobWorld, useBothDatabasePaths, useJobWorld } from '../../support/jobs';
import { draw, drawer } from './drawers';

// One wave of 429s across four invocations: Amazon allows less than the budget thinks, all
// four hold slots granted at the full rate when the first 429 comes back. The rate is cut
// once, not once per invocation (a 429 for a slot granted before the last cut is already
// accounted for), each holder gives up its slots at once, and the 429s are in
// rate_limit_tracking as they happen, with the pause actually in force.

let world: JobWorld;
useJobWorld((w) => (world = w));

beforeEach(async () => {
  await world.admin.query('DELETE FROM amazon_rate_budget');
});

describe.each(useBothDatabasePaths(() => world))('one wave of 429s (%s)', (_path, database) => {
  test('four drawers: the rate is cut once, and every 429 is recorded with the pause applied', async () => {
    world.amazon.setKnobs({ limitPerSecond: 4, retryAfterSeconds: 20 }, 'lwa');
    const drawers = Array.from({ length: 4 }, () => drawer(world, database(), 20));
    // The wave: every drawer holds slots granted at the full rate before the first 429 reaches
    // the budget (on a busy machine a drawer's first reservation can come after it otherwise,
    // and then falls after the pause: that drawer sends nothing and sees no 429).
    const allHoldSlots = Promise.all(drawers.map((d) => d.store.holdsSlots));
    for (const d of drawers) d.store.holdReportsUntil(allHoldSlots);
    // Runs under way, not starting: each has had an answer without a 429, so its calls go out
    // at its slots instead of one probe at a time (which a busy machine spreads so thin that
    // Amazon's limit is never reached).
    for (const d of drawers) d.registry.for('lwa', 'EU').succeeded();
    const start = Date.now();
    // A call that would wait beyond 3 s is given back: nothing is sent after the pause, so
    // every 429 here belongs to the one wave.
    const results = await Promise.all(drawers.map((d) => draw(d, 'EU', 10, 3_000)));
    const limited = world.amazon.counters.limitedAt('lwa', 'EU').filter((t) => t >= start).length;
    // The reports go out without holding the calls back: wait for the last of them.
    for (let waited = 0; drawers.flatMap((d) => d.store.reports).length < limited && waited < 200; waited += 1)
      await new Promise((resolve) => setTimeout(resolve, 50));
    const reports = drawers.flatMap((d) => d.store.reports);

    const received = results.reduce((n, r) => n + r.limited, 0);
    const failures = drawers.reduce((n, d) => n + d.registry.for('lwa', 'EU').shared!.stats().reportFailures, 0);
    expect({ limited, received, failures }).toEqual({ limited, received: limited, failures: 0 });
    expect(limited).toBeGreaterThanOrEqual(2);
    // Each 429 was reported, and several invocations received one.
    expect(reports).toHaveLength(limited);
    expect(drawers.filter((d) => d.store.reports.length > 0).length).toBeGreaterThanOrEqual(2);
    // One cut for the wave: 20/s → 10/s.
    expect(reports.filter((r) => r.rateCut)).toHaveLength(1);
    const { rows } = await world.admin.query<{ rate_per_second: number; paused_until: Date; throttled_count: string }>(
      `SELECT rate_per_second, paused_until, throttled_count::text FROM amazon_rate_budget
        WHERE endpoint = 'lwa-token' AND region = 'EU'`,
    );
    expect(rows[0].rate_per_second).toBeGreaterThanOrEqual(9.5);
    expect(rows[0].rate_per_second).toBeLessThanOrEqual(10.5);
    expect(rows[0].throttled_count).toBe(String(limited));
    expect(results.reduce((s, r) => s + r.refused, 0)).toBeGreaterThan(0);

    // Recorded as they happened (no run wrote its usage here): the count, and the pause in
    // force — the budget's, Retry-After doubled per 429 in a row as each limiter applied it —
    // not the bare Retry-After.
    const { rows: tracked } = await world.admin.query<{
      limit_hit_count: number;
      until: Date;
      retry_after_seconds: number;
    }>(
      `SELECT limit_hit_count, retry_after_seconds, last_limit_hit + make_interval(secs => retry_after_seconds) AS until
         FROM rate_limit_tracking WHERE endpoint = 'lwa-token:EU' AND user_id IS NULL`,
    );
    expect(tracked).toHaveLength(1);
    expect(tracked[0].limit_hit_count).toBe(limited);
    expect(tracked[0].retry_after_seconds).toBeGreaterThanOrEqual(20);
    expect(Math.abs(tracked[0].until.getTime() - rows[0].paused_until.getTime())).toBeLessThanOrEqual(1000);
    // Each limiter exposes the budget's pause as its last report learnt it (for a run to give its
    // work back), not only the Retry-After it saw.
    for (const d of drawers.filter((x) => x.store.reports.length > 0))
      expect(d.registry.for('lwa', 'EU').pausedUntilMs()).toBeGreaterThanOrEqual(
        Math.max(...d.store.reports.map((r) => r.pausedUntilMs)) - 1000,
      );
  });
});
