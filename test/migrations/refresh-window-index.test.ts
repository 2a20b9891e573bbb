import { seedSteadyState, steadyStateCounts } from '../../bench/scale-seed';
import { runMigrations } from '../../lambda/migrate/run-migrations';
import { Database, PgDatabase, QueryResult, Row, SqlParams } from '../../lambda/shared/db';
import { claimDueTokens } from '../../lambda/token-refresh/store';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { appliedMigrations, withClient } from '../support/schema';

// Migration 0017: an index that serves the windowed proactive refresh claim, so idle
// connections with long-expired tokens are stepped over inside the index, not fetched one by one.

const MIGRATION = '0017_refresh-window-index';
const INDEX = 'idx_oauth_tokens_refresh_due_used';
const HOUR = 3600;
/** Big enough that the planner's choice is the one a production table gets (idle rows dominate). */
const CONNECTIONS = 60_000;

let pg: TestPostgres;
let url: string;
let admin: PgDatabase;

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase();
  await runMigrations({ database: url, count: 16 });
  expect((await appliedMigrations(url)).at(-1)).toBe('0016_connection-last-used');
  admin = new PgDatabase({ connection: url });
  // The claim under test is today's, which also returns a column a later migration adds (0021's
  // refresh_refusal_count): add it here exactly as 0021 does (IF NOT EXISTS there), so the
  // statement runs on 0016's schema with nothing else changed, before and after 0017.
  await admin.query(`ALTER TABLE oauth_tokens ADD COLUMN refresh_refusal_count integer NOT NULL DEFAULT 0`);
  await admin.query(
    `GRANT SELECT (refresh_refusal_count), UPDATE (refresh_refusal_count) ON oauth_tokens TO accounts_worker`,
  );
  await seedSteadyState(admin, { count: CONNECTIONS, usedShare: 0.1, usedWithinSeconds: HOUR });
  await admin.query('ANALYZE oauth_tokens');
}, 120_000);

afterAll(async () => {
  await admin?.close();
  await pg?.stop();
});

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  Filter?: string;
  'Rows Removed by Filter'?: number;
  'Actual Rows'?: number;
  Plans?: PlanNode[];
}

/**
 * The plan of the token refresh's real claim (claimDueTokens' own statement and parameters), as
 * the jobs' role (accounts_worker: Row Level Security applies to it), run under EXPLAIN ANALYZE
 * in a transaction that is rolled back: no lease stays behind.
 */
async function claimPlan(usedWithinSeconds: number | undefined): Promise<PlanNode> {
  let plan: PlanNode | undefined;
  await admin
    .transaction(async (tx) => {
      await tx.query('SET LOCAL ROLE accounts_worker');
      const explaining: Database = {
        batch: (sql, paramSets) => tx.batch(sql, paramSets),
        transaction: (fn) => tx.transaction(fn),
        callCounts: () => tx.callCounts(),
        close: () => tx.close(),
        async query<T extends object = Row>(sql: string, params?: SqlParams): Promise<QueryResult<T>> {
          const { rows } = await tx.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode }> }>(
            `EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`,
            params,
          );
          plan = rows[0]['QUERY PLAN'][0].Plan;
          return { rows: [], rowsAffected: 0 };
        },
      };
      await claimDueTokens(explaining, {
        owner: '00000000-0000-4000-8000-000000000001',
        windowSeconds: 1800,
        leaseSeconds: 300,
        limit: 500,
        pausedRegions: [],
        usedWithinSeconds,
      });
      throw new Error('roll back');
    })
    .catch((error: unknown) => {
      if (!(error instanceof Error) || error.message !== 'roll back') throw error;
    });
  if (!plan) throw new Error('no plan');
  return plan;
}

/** The node that reads oauth_tokens for the claim's `due` set. */
function dueScan(plan: PlanNode): PlanNode {
  const found: PlanNode[] = [];
  const walk = (n: PlanNode) => {
    if (n['Relation Name'] === 'oauth_tokens' && n['Node Type'].includes('Scan')) found.push(n);
    n.Plans?.forEach(walk);
  };
  walk(plan);
  // The UPDATE's own join back to oauth_tokens reads by primary key.
  const due = found.filter((n) => n['Index Name'] !== 'oauth_tokens_pkey');
  expect(due).toHaveLength(1);
  return due[0];
}

const indexDefinition = () =>
  withClient(
    url,
    async (c) =>
      (
        await c.query<{ def: string; valid: boolean }>(
          `SELECT pg_get_indexdef(i.indexrelid) AS def, i.indisvalid AS valid
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1`,
          [INDEX],
        )
      ).rows[0],
  );

describe('on a table of 60,000 connections, most of them idle with expired tokens', () => {
  let idleExpired: number;

  beforeAll(async () => {
    const counts = await steadyStateCounts(admin, HOUR);
    expect(counts.connections).toBe(CONNECTIONS);
    idleExpired = counts.idleExpired;
    // The shape that makes the windowed claim expensive: idle rows at the head of expires_at.
    expect(idleExpired).toBeGreaterThan(CONNECTIONS / 2);
    expect(counts.dueInWindow).toBeGreaterThan(500);
  });

  test('before 0017 the windowed claim fetches every idle expired row and drops it in a filter', async () => {
    expect(await indexDefinition()).toBeUndefined();
    const scan = dueScan(await claimPlan(HOUR));
    expect(scan['Index Name']).toBe('idx_oauth_tokens_expires_at');
    expect(scan['Rows Removed by Filter']).toBeGreaterThanOrEqual(idleExpired);
  });

  describe('after 0017', () => {
    beforeAll(async () => {
      await runMigrations({ database: url, count: 1 });
      expect((await appliedMigrations(url)).at(-1)).toBe(MIGRATION);
      await admin.query('ANALYZE oauth_tokens');
    }, 60_000);

    test('the index exists, valid, keyed on the claim order then the window (NULL as infinity), partial like 0005', async () => {
      expect(await indexDefinition()).toEqual({
        def: `CREATE INDEX ${INDEX} ON public.oauth_tokens USING btree (expires_at, COALESCE(last_used_at, 'infinity'::timestamp with time zone)) WHERE (proactive_refresh_enabled = true)`,
        valid: true,
      });
    });

    test('the windowed claim uses it, with the window as an index condition: no idle row is fetched', async () => {
      const scan = dueScan(await claimPlan(HOUR));
      expect(scan['Index Name']).toBe(INDEX);
      expect(scan['Index Cond']).toContain('COALESCE(last_used_at');
      expect(scan['Index Cond']).toContain('expires_at <');
      // Only rows the window lets through reach the filter (leases, retries, paused regions).
      expect(scan['Rows Removed by Filter'] ?? 0).toBe(0);
      expect(scan['Actual Rows']).toBe(500);
    });

    test('the claim takes used and never-recorded connections only, earliest expiry first', async () => {
      await admin
        .transaction(async (tx) => {
          const claimed = await claimDueTokens(tx, {
            owner: '00000000-0000-4000-8000-000000000002',
            windowSeconds: 1800,
            leaseSeconds: 300,
            limit: 500,
            pausedRegions: [],
            usedWithinSeconds: HOUR,
          });
          expect(claimed).toHaveLength(500);
          const { rows } = await tx.query<{ idle: number; expiring: number }>(
            `SELECT count(*) FILTER (WHERE last_used_at < now() - interval '1 hour')::int AS idle,
                  count(*) FILTER (WHERE expires_at < now() + interval '30 minutes')::int AS expiring
             FROM oauth_tokens WHERE refresh_lease_owner = '00000000-0000-4000-8000-000000000002'`,
          );
          expect(rows[0]).toEqual({ idle: 0, expiring: 500 });
          // Earliest expiry first: nothing due in the window expires before the last one claimed.
          const { rows: earlier } = await tx.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM oauth_tokens
            WHERE refresh_lease_owner IS NULL AND coalesce(last_used_at, 'infinity') >= now() - interval '1 hour'
              AND expires_at < (SELECT max(expires_at) FROM oauth_tokens
                                 WHERE refresh_lease_owner = '00000000-0000-4000-8000-000000000002')`,
          );
          expect(earlier[0].n).toBe(0);
          throw new Error('roll back');
        })
        .catch((error: unknown) => {
          if (!(error instanceof Error) || error.message !== 'roll back') throw error;
        });
    });

    test('a claim without a window still reads in expires_at order from an index, filtering nothing', async () => {
      const scan = dueScan(await claimPlan(undefined));
      expect([INDEX, 'idx_oauth_tokens_expires_at']).toContain(scan['Index Name']);
      expect(scan['Rows Removed by Filter'] ?? 0).toBe(0);
    });

    test('down drops it; up again rebuilds it, replacing an invalid one an interrupted build left', async () => {
      await runMigrations({ database: url, direction: 'down', count: 1 });
      expect(await indexDefinition()).toBeUndefined();
      expect((await appliedMigrations(url)).at(-1)).toBe('0016_connection-last-used');
      // What a failed CREATE INDEX CONCURRENTLY leaves behind: an INVALID index of that name.
      await withClient(url, async (c) => {
        await c.query(`CREATE INDEX ${INDEX} ON oauth_tokens (expires_at)`);
        await c.query(`UPDATE pg_index SET indisvalid = false WHERE indexrelid = '${INDEX}'::regclass`);
      });
      await runMigrations({ database: url, count: 1 });
      expect(await indexDefinition()).toMatchObject({ valid: true });
      expect((await indexDefinition())?.def).toContain('COALESCE(last_used_at');
    }, 60_000);
  });
});
