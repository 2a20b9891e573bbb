import { randomUUID } from 'node:crypto';
import { claimConnections } from '../../lambda/account-sync/store';
import { claimDueTokens } from '../../lambda/token-refresh/store';
import { Database, QueryResult, SqlParams } from '../../lambda/shared/db';
import { JobWorld, seedUsers, useJobWorld } from '../support/jobs';

/**
 * What a claim costs the database per connection it claims must not grow with the batch: a
 * claim is one statement over a batch of up to 250 connections, and a plan that redoes work
 * for every claimed row (a CTE inlined into a nested loop) turns a 20 ms statement into tens of
 * seconds. Once, the account sync's claim probed user_accounts batch³ times: 25 s for 240
 * connections. Measured as PostgreSQL's buffer accesses (EXPLAIN ANALYZE, rolled back), which do
 * not depend on the machine's speed. The rows are fresh and not yet analyzed, as after a bulk
 * load before autovacuum has run: the planner's estimates are at their worst, which is when the
 * batch³ plan was chosen (after ANALYZE it was not).
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

/** A Database that records the one statement it is given instead of running it. */
class CapturingDatabase {
  sql = '';
  params: SqlParams = {};
  query<T extends object>(sql: string, params: SqlParams = {}): Promise<QueryResult<T>> {
    this.sql = sql;
    this.params = params;
    return Promise.resolve({ rows: [], rowsAffected: 0 });
  }
}

interface PlanNode {
  'Shared Hit Blocks': number;
  'Shared Read Blocks': number;
}

/** Buffers the statement touches (its plan's top node counts everything beneath it), rolled back. */
async function buffersOf(statement: CapturingDatabase): Promise<{ buffers: number; rows: number }> {
  let result: { buffers: number; rows: number } | undefined;
  await world.admin
    .transaction(async (tx) => {
      const { rows } = await tx.query<{ 'QUERY PLAN': Array<{ Plan: PlanNode & { 'Actual Rows': number } }> }>(
        `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${statement.sql}`,
        statement.params,
      );
      const plan = rows[0]['QUERY PLAN'][0].Plan;
      result = { buffers: plan['Shared Hit Blocks'] + plan['Shared Read Blocks'], rows: plan['Actual Rows'] };
      throw new RolledBack();
    })
    .catch((error: unknown) => {
      if (!(error instanceof RolledBack)) throw error;
    });
  return result!;
}

class RolledBack extends Error {}

async function costPerConnection(claim: (db: Database, limit: number) => Promise<unknown>, limit: number) {
  const statement = new CapturingDatabase();
  await claim(statement as unknown as Database, limit);
  const { buffers, rows } = await buffersOf(statement);
  expect(rows).toBe(limit);
  return buffers / limit;
}

test('the account sync claim touches about as many buffers per connection for 250 connections as for 25', async () => {
  // Three regions by turns, two accounts each, some of them in another status than the rest
  // (the claim remembers those to give them back).
  await seedUsers(world, { count: 300, profilesPerUser: 2, expiresInSeconds: 3600, accountsDueInSeconds: -60 });
  await world.admin.query(
    `UPDATE user_accounts SET sync_status = 'failed' WHERE id IN (SELECT id FROM user_accounts ORDER BY id LIMIT 200)`,
  );
  const claim = (db: Database, limit: number) =>
    claimConnections(db, {
      owner: randomUUID(),
      leaseSeconds: 60,
      limit,
      syncType: 'scheduled',
      minTokenValiditySeconds: 120,
    });
  const small = await costPerConnection(claim, 25);
  const large = await costPerConnection(claim, 250);
  // Linear work gives a ratio near 1 (fixed costs spread thinner make it smaller); the
  // batch³ plan gave about 100.
  expect(large / small).toBeLessThan(2);
});

test('the token refresh claim touches about as many buffers per connection for 250 connections as for 25', async () => {
  await seedUsers(world, { count: 300, profilesPerUser: 0, expiresInSeconds: 300 });
  const claim = (db: Database, limit: number) =>
    claimDueTokens(db, { owner: randomUUID(), windowSeconds: 1800, leaseSeconds: 60, limit, pausedRegions: [] });
  const small = await costPerConnection(claim, 25);
  const large = await costPerConnection(claim, 250);
  expect(large / small).toBeLessThan(2);
});
