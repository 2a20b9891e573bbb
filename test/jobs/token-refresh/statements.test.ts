import { LwaClient } from '../../../lambda/shared/amazon';
import { jobsLimits } from '../../../lambda/shared/amazon/api-share';
import { DatabaseRateBudgetStore } from '../../../lambda/shared/amazon/rate-budget';
import { endpointLimitsFor, RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import type { SqlParams } from '../../../lambda/shared/db';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * What the whole token refresh costs the database per 1,000 tokens refreshed at today's
 * default limits (LWA 10 requests/s per region, 9 of them the jobs', the shared budget in the
 * database, as lambda/shared/jobs/container.ts builds it): every statement counted on the database client
 * (claims, write-backs, budget reservations and give-backs, rate_limit_tracking), for one run
 * alone and for four runs sharing the budget. The Amazon calls set the pace (1,000 tokens over
 * the three regions at 10/s each), so each case takes about 35 s of real time.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const [DATA_API, NODE_POSTGRES] = useBothDatabasePaths(() => world);

/** Statements by kind, for the printed breakdown. */
function kindOf(sql: string): string {
  if (/reserve_amazon_requests/.test(sql)) return 'budget reservation';
  if (/release_amazon_requests/.test(sql)) return 'budget give-back';
  if (/amazon_requests_throttled/.test(sql)) return 'budget 429 report';
  if (/rate_limit_tracking/.test(sql)) return 'rate_limit_tracking';
  if (/jsonb_to_recordset\(:results/.test(sql)) return 'write-back';
  if (/refresh_lease_owner/.test(sql)) return 'claim';
  return 'other';
}

/** The database, with every call it is given counted by kind (the adapter's own counter is the total). */
function counted(db: Database, kinds: Map<string, number>): Database {
  const add = (kind: string) => kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  return {
    query: (sql: string, params?: SqlParams) => (add(kindOf(sql)), db.query(sql, params)),
    batch: (sql: string, sets: readonly SqlParams[]) => (add(kindOf(sql)), db.batch(sql, sets)),
    transaction: (fn) => (add('transaction'), db.transaction(fn)),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

/** `runs` token refresh runs at once, each with its own connection and limiters, as Lambda invocations. */
async function refreshTogether(runs: number, database: () => Database) {
  const kinds = new Map<string, number>();
  const dbs = Array.from({ length: runs }, database);
  const summaries = await Promise.all(
    dbs.map((raw) => {
      const db = counted(raw, kinds);
      const limiters = new RateLimiterRegistry(
        // As the container builds the jobs' limiters: the interactive lane left free.
        jobsLimits(endpointLimitsFor({ lwa: 10, ads: 5 })),
        {},
        new DatabaseRateBudgetStore(db),
      );
      const lwa = new LwaClient({
        clientId: world.amazon.clientId,
        clientSecret: world.amazon.clientSecret,
        tokenUrl: world.amazon.lwaTokenUrl,
        timeoutMs: 15_000,
        limiters,
      });
      return runTokenRefresh({ db, lwa, cipher: world.cipher, ...runtime() });
    }),
  );
  const statements = dbs.reduce((n, db) => n + db.callCounts().total, 0);
  const refreshed = summaries.reduce((n, s) => n + s.refreshed, 0);
  return { statements, refreshed, kinds, summaries };
}

function report(label: string, r: Awaited<ReturnType<typeof refreshTogether>>): number {
  const per1000 = (r.statements / r.refreshed) * 1000;
  const breakdown = [...r.kinds]
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${n} ${kind}`)
    .join(', ');
  process.stdout.write(
    `${label}: ${r.statements} statements for ${r.refreshed} tokens = ${per1000.toFixed(1)} per 1,000 (${breakdown})\n`,
  );
  return per1000;
}

test('one run alone: at most 30 statements per 1,000 tokens refreshed at 10 LWA requests/s (Data API path)', async () => {
  await seedUsers(world, { count: 1000 });
  const r = await refreshTogether(1, DATA_API[1]);
  expect(r.refreshed).toBe(1000);
  // The breakdown adds up to the adapter's own count: nothing escaped the counter.
  expect([...r.kinds.values()].reduce((a, b) => a + b, 0)).toBe(r.statements);
  expect(report('one run', r)).toBeLessThanOrEqual(30);
});

test('four runs sharing the budget: at most 100 statements per 1,000 tokens refreshed (node-postgres path)', async () => {
  await seedUsers(world, { count: 1000 });
  const r = await refreshTogether(4, NODE_POSTGRES[1]);
  expect(r.refreshed).toBe(1000);
  expect([...r.kinds.values()].reduce((a, b) => a + b, 0)).toBe(r.statements);
  expect(r.summaries.filter((s) => s.claimed > 0).length).toBeGreaterThan(1); // the budget really was shared
  expect(report('four runs', r)).toBeLessThanOrEqual(100);
});
