import { performance } from 'node:perf_hooks';
import { DatabaseRateBudgetStore, MAX_HORIZON_MS, SharedRateBudget } from '../lambda/shared/amazon/rate-budget';
import { cpus, loadavg } from 'node:os';
import { renderBudgetCost } from './report';
import { BenchWorld, startBenchWorld } from './world';
import { busiestSecond } from '../local/amazon/busiest-second';

/**
 * `npx tsx bench/budget-cost.ts`: the table alone (`npm run bench` measures it too), at 10 and
 * 80 requests/s with 1, 4 and 16 workers, 20 s of requests at each rate and at least one
 * horizon's batch per worker (6 s at the rate: more time with 16 workers).
 *
 * What the shared rate budget itself costs in database calls, with 1 or many invocations
 * drawing from it: `workers` invocations, each with its own Data API adapter and its own
 * SharedRateBudget (as Lambda containers have them), take `requests` slots in all (an equal
 * share each, 8 callers at a time per invocation, each invocation saying how many it has left
 * as a job run does with its claim), then give back what they did not use. Only the slots are
 * taken (no Amazon call): the figure is the budget's own database calls per 1,000 requests,
 * through the Data API path.
 */
export interface BudgetCostMeasurement {
  readonly ratePerSecond: number;
  readonly workers: number;
  readonly requests: number;
  readonly seconds: number;
  /** Reservations (granted or refused), releases, in all. */
  readonly databaseCalls: number;
  readonly reservations: number;
  readonly refusals: number;
  readonly releases: number;
  /** databaseCalls ÷ requests × 1000 */
  readonly callsPer1000: number;
  /** Most slots taken in any one-second window (sliding), all workers together. */
  readonly busiestSecond: number;
}

export async function measureBudgetCost(
  w: BenchWorld,
  o: { ratePerSecond: number; workers: number; requests: number },
): Promise<BudgetCostMeasurement> {
  await w.admin.query('DELETE FROM amazon_rate_budget');
  const share = Math.ceil(o.requests / o.workers);
  const workers = Array.from({ length: o.workers }, () => {
    const db = w.dataApi();
    return {
      db,
      budget: new SharedRateBudget(
        new DatabaseRateBudgetStore(db),
        { endpoint: 'lwa', region: 'NA' },
        { ceiling: o.ratePerSecond },
      ),
    };
  });
  const taken: number[] = [];
  const started = performance.now();
  await Promise.all(
    workers.map(async ({ budget }) => {
      budget.expectRequests(share);
      let left = share;
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          while (left > 0) {
            left -= 1;
            await budget.take();
            taken.push(Date.now());
          }
        }),
      );
      await budget.release();
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const stats = workers.map((x) => x.budget.stats());
  const databaseCalls = workers.reduce((n, x) => n + x.db.callCounts().total, 0);
  const requests = share * o.workers;
  return {
    ratePerSecond: o.ratePerSecond,
    workers: o.workers,
    requests,
    seconds,
    databaseCalls,
    reservations: stats.reduce((n, s) => n + s.reservations, 0),
    refusals: stats.reduce((n, s) => n + s.refusals, 0),
    releases: stats.reduce((n, s) => n + s.releases, 0),
    callsPer1000: (databaseCalls / requests) * 1000,
    busiestSecond: busiestSecond(taken),
  };
}

/** Every rate with every worker count, one after the other on one world. */
export async function measureBudgetCosts(
  w: BenchWorld,
  o: {
    rates: readonly number[];
    workers: readonly number[];
    seconds: number;
    progress: (line: string) => void;
  },
): Promise<BudgetCostMeasurement[]> {
  const out: BudgetCostMeasurement[] = [];
  for (const ratePerSecond of o.rates)
    for (const workers of o.workers) {
      o.progress(`The shared budget alone at ${ratePerSecond}/s, ${workers} worker(s)…`);
      // Each worker gets at least one batch's worth (a horizon of slots): a worker that sends
      // less pays its one or two calls for fewer requests, whatever the budget does.
      const batch = Math.floor(MAX_HORIZON_MS / (1100 / ratePerSecond)) + 1;
      const requests = Math.round(ratePerSecond * o.seconds);
      const c = await measureBudgetCost(w, {
        ratePerSecond,
        workers,
        requests: o.seconds >= 5 ? Math.max(requests, workers * batch) : Math.max(workers, requests),
      });
      out.push(c);
      o.progress(
        `  ${c.requests} requests in ${c.seconds.toFixed(1)} s, busiest second ${c.busiestSecond}, ${c.databaseCalls} database calls (${c.refusals} refused, ${c.releases} releases) = ${c.callsPer1000.toFixed(1)} per 1,000`,
      );
    }
  return out;
}

if (require.main === module) {
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  (async () => {
    const before = loadavg();
    const world = await startBenchWorld();
    try {
      const rows = await measureBudgetCosts(world, { rates: [10, 80], workers: [1, 4, 16], seconds: 20, progress });
      const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
      process.stdout.write(
        `Measured ${new Date().toISOString()} on ${cpus().length} CPUs, Node ${process.versions.node}; load average ${load(before)} before, ${load(loadavg())} after.\n\n${renderBudgetCost(rows).join('\n')}\n`,
      );
    } finally {
      await world.close();
    }
  })().catch((error: Error) => {
    process.stderr.write(`${error.stack ?? error.message}\n`);
    process.exit(1);
  });
}
