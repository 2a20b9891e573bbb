import { randomUUID } from 'node:crypto';
import { claimConnections, saveOutcomes, ConnectionSyncOutcome } from '../../../../lambda/account-sync/store';
import { DatabaseUnavailableError, SqlParams } from '../../../../lambda/shared/db/port';
import { Database, failingOnce, JobWorld, seedUsers, useBothDatabasePaths, useJobWorld } from '../../../support/jobs';

/**
 * The account sync's write-back (lambda/account-sync/store/write-back.ts) on its less
 * travelled paths: an outcome refused twice is given back; a user given back whose accounts
 * appeared during the run (only the accounts the claim marked are put back); outcomes over the
 * write-back's ~3 MB budget together, each written with its accounts in one statement.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

describe.each(PATHS)('%s path', (_path, database) => {
  test('a user whose outcome and whose failure in its place are both refused is given back: lease free, accounts as they were', async () => {
    const users = await seedUsers(world, { count: 3, accountsDueInSeconds: -60 });
    await world.admin.query(
      `UPDATE user_accounts SET sync_status = 'failed', sync_retry_count = 1
        WHERE id = (SELECT min(id::text)::uuid FROM user_accounts WHERE user_id = :id::uuid)`,
      { id: users[0].userId },
    );
    const before = await world.admin.query<{ id: string; sync_status: string }>(
      'SELECT id, sync_status FROM user_accounts WHERE user_id = :id::uuid ORDER BY id',
      { id: users[0].userId },
    );
    const owner = randomUUID();
    const claimed = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 60,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed).toHaveLength(3);
    const poisoned = claimed.find((u) => u.userId === users[0].userId)!;
    const outcomes: ConnectionSyncOutcome[] = claimed.map((user) => ({
      kind: 'success',
      connection: user,
      accounts: [
        {
          amazonAccountId: `1${user.userId.replace(/\D/g, '').slice(0, 12)}`,
          // PostgreSQL refuses NUL in jsonb and in text.
          metadata: { accountName: user === poisoned ? 'bad\u0000name' : 'fine' },
        },
      ],
      nextSyncAt: new Date(Date.now() + 6 * 3600_000),
    }));

    const { rejected } = await saveOutcomes(database(), owner, outcomes, {
      onRefused: (outcome, error) => ({
        kind: 'failure',
        connection: outcome.connection,
        error: `write_back: ${error}\u0000`, // refused too
        errorDetails: { class: 'write_back' },
        nextAttemptAt: new Date(Date.now() + 600_000),
      }),
    });

    expect(rejected.map((r) => [r.connection.userId, r.recordedAs])).toEqual([
      [poisoned.userId, { kind: 'released', connection: poisoned }],
    ]);
    const leases = await world.admin.query<{ user_id: string; sync_lease_owner: string | null }>(
      'SELECT user_id, sync_lease_owner FROM oauth_tokens',
    );
    for (const l of leases.rows) expect(l.sync_lease_owner).toBeNull();
    const after = await world.admin.query<{ id: string; sync_status: string }>(
      'SELECT id, sync_status FROM user_accounts WHERE user_id = :id::uuid ORDER BY id',
      { id: users[0].userId },
    );
    expect(after.rows).toEqual(before.rows);
    expect(before.rows.map((r) => r.sync_status)).toContain('failed');
    const history = await world.admin.query<{ sync_status: string; completed_at: Date | null }>(
      `SELECT sync_status, completed_at FROM account_sync_history WHERE metadata->>'userId' = :id`,
      { id: poisoned.userId },
    );
    expect(history.rows).toHaveLength(1);
    expect(history.rows[0].completed_at).not.toBeNull();
  });

  test('a user claimed with no accounts in its region and given back: accounts that appeared meanwhile stay pending', async () => {
    const [user] = await seedUsers(world, { count: 1 });
    const owner = randomUUID();
    const [claimed] = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 60,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed.userId).toBe(user.userId);
    expect(claimed.previousStatus).toBeUndefined();
    // The web app stores an account for the user while the run holds the lease.
    await world.admin.query(
      `INSERT INTO user_accounts (user_id, amazon_account_id, region, status, sync_status)
       VALUES (:id::uuid, '123456789', :region, 'pending', 'pending')`,
      { id: user.userId, region: user.region },
    );

    const { rejected } = await saveOutcomes(database(), owner, [{ kind: 'released', connection: claimed }], {
      onRefused: () => {
        throw new Error('not expected');
      },
    });

    expect(rejected).toEqual([]);
    const { rows } = await world.admin.query<{ sync_status: string }>(
      'SELECT sync_status FROM user_accounts WHERE user_id = :id::uuid',
      { id: user.userId },
    );
    expect(rows).toEqual([{ sync_status: 'pending' }]);
  });

  test('connections over the 3 MB budget together, not alone: each written with its accounts in one statement, so a lost statement writes no account', async () => {
    const users = await seedUsers(world, { count: 3 });
    const owner = randomUUID();
    const claimed = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 300,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed).toHaveLength(3);
    // ~1.2 MB of accounts per connection: two fit in one statement's budget, three do not.
    const outcomes: ConnectionSyncOutcome[] = claimed.map((connection, c) => ({
      kind: 'success',
      connection,
      accounts: Array.from({ length: 1100 }, (_, i) => ({
        amazonAccountId: `${c + 1}${String(i).padStart(9, '0')}`,
        metadata: { accountName: `Client brand ${i} ${'x'.repeat(1000)}` },
      })),
      nextSyncAt: new Date(Date.now() + 6 * 3600_000),
    }));
    const bytes = JSON.stringify(outcomes.map((o) => (o.kind === 'success' ? o.accounts : []))).length;
    expect(bytes).toBeGreaterThan(3_000_000);
    expect(bytes).toBeLessThan(4_000_000);
    const ids = users.map((u) => u.userId);
    const stored = async () =>
      (
        await world.admin.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM user_accounts WHERE user_id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)',
          { ids: JSON.stringify(ids) },
        )
      ).rows[0].n;

    // The database goes away at the first write-back statement: nothing of it is written, and no
    // account is upserted apart from its outcome (as a lone user's thousands of accounts are).
    const lost = failingOnce(database(), /^\s*WITH input AS/, () => new DatabaseUnavailableError('connection lost', 1));
    await expect(saveOutcomes(lost, owner, outcomes, { onRefused: notExpected })).rejects.toThrow('connection lost');
    expect(await stored()).toBe(0);

    // Written again: every statement accepted (a request over the Data API's 4 MiB is refused),
    // every account stored, every attempt closed and its lease freed.
    const refused: unknown[] = [];
    const { rejected } = await saveOutcomes(watching(database(), refused), owner, outcomes, { onRefused: notExpected });
    expect(rejected).toEqual([]);
    expect(refused).toEqual([]);
    expect(await stored()).toBe(3300);
    const { rows } = await world.admin.query<{ sync_lease_owner: string | null; sync_status: string }>(
      `SELECT t.sync_lease_owner, h.sync_status FROM oauth_tokens t
         JOIN account_sync_history h ON h.metadata->>'userId' = t.user_id::text AND h.region = t.region
        WHERE t.user_id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
      { ids: JSON.stringify(ids) },
    );
    expect(rows).toEqual(Array(3).fill({ sync_lease_owner: null, sync_status: 'success' }));
  }, 120_000);

  test('a lone connection with accounts of 1.2 MB each has them upserted in statements within the 3 MB budget', async () => {
    const [user] = await seedUsers(world, { count: 1 });
    const owner = randomUUID();
    const [claimed] = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 300,
      limit: 1,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed.userId).toBe(user.userId);
    // Larger than any profile: two accounts fit in a statement's budget, three do not, and four
    // would be a request over the Data API's 4 MiB.
    const outcome: ConnectionSyncOutcome = {
      kind: 'success',
      connection: claimed,
      accounts: Array.from({ length: 5 }, (_, i) => ({
        amazonAccountId: `9${String(i).padStart(9, '0')}`,
        metadata: { accountName: `${i} ${'x'.repeat(1_200_000)}` },
      })),
      nextSyncAt: new Date(Date.now() + 6 * 3600_000),
    };

    const refused: unknown[] = [];
    const { rejected } = await saveOutcomes(watching(database(), refused), owner, [outcome], {
      onRefused: notExpected,
    });

    expect(rejected).toEqual([]);
    expect(refused).toEqual([]);
    const { rows } = await world.admin.query<{ amazon_account_id: string; sync_status: string; chars: number }>(
      `SELECT amazon_account_id, sync_status, length(metadata->>'accountName')::int AS chars
         FROM user_accounts WHERE user_id = :id::uuid ORDER BY amazon_account_id`,
      { id: user.userId },
    );
    expect(rows).toEqual(
      Array.from({ length: 5 }, (_, i) => ({
        amazon_account_id: `9${String(i).padStart(9, '0')}`,
        sync_status: 'completed',
        chars: 1_200_002,
      })),
    );
  }, 120_000);
});

function notExpected(): never {
  throw new Error('no outcome is refused here');
}

/** `db`, keeping every error a statement ends with in `refused`. */
function watching(db: Database, refused: unknown[]): Database {
  return {
    query: <T extends object>(text: string, params?: SqlParams) =>
      db.query<T>(text, params).catch((error: unknown) => {
        refused.push(error);
        throw error;
      }),
    batch: (text, sets) => db.batch(text, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}
