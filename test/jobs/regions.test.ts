import { runAccountSync } from '../../lambda/account-sync/core';
import type { AccountSyncDeps } from '../../lambda/account-sync/run-context';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import { Database } from '../../lambda/shared/db';
import { METRIC_NAMES } from '../../lambda/shared/jobs/metrics';
import { MetricTotals } from '../../lambda/shared/jobs/runtime';
import { runTokenRefresh, TokenRefreshDeps } from '../../lambda/token-refresh/core';
import {
  accountSyncDeps,
  JobWorld,
  seedUsers,
  SeedUser,
  tokenRefreshDeps,
  useBothDatabasePaths,
  useJobWorld,
} from '../support/jobs';
import { oauthTokenBinding } from '../../lambda/shared/token-crypto';

/**
 * Connections per region: a user connected in several Amazon regions has one oauth_tokens row
 * (one refresh token) per region; each is refreshed and synced on its own, and what happens
 * to one region never touches the user's others.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

const PATHS = useBothDatabasePaths(() => world);

const refreshDeps = (db: Database, extra: Partial<TokenRefreshDeps> = {}) => tokenRefreshDeps(world, db, extra);
const syncDeps = (db: Database, extra: Partial<AccountSyncDeps> = {}) => accountSyncDeps(world, db, extra);

interface AccountRow {
  amazon_account_id: string;
  region: AmazonRegion;
  status: string;
  sync_status: string;
  metadata: Record<string, unknown>;
}

async function accounts(userId: string): Promise<AccountRow[]> {
  const { rows } = await world.admin.query<AccountRow>(
    `SELECT amazon_account_id, region, status, sync_status, metadata FROM user_accounts
      WHERE user_id = :id::uuid ORDER BY region, amazon_account_id`,
    { id: userId },
  );
  return rows;
}

async function connections(
  userId: string,
): Promise<Array<{ region: AmazonRegion; proactive_refresh_enabled: boolean; last_refreshed_at: Date | null }>> {
  const { rows } = await world.admin.query<{
    region: AmazonRegion;
    proactive_refresh_enabled: boolean;
    last_refreshed_at: Date | null;
  }>(
    `SELECT region, proactive_refresh_enabled, last_refreshed_at FROM oauth_tokens WHERE user_id = :id::uuid ORDER BY region`,
    { id: userId },
  );
  return rows;
}

/** What Amazon lists for the user, as the accounts should read after a sync. */
function expectedAccounts(user: SeedUser, regions: readonly AmazonRegion[]) {
  return user.profiles
    .filter((p) => regions.includes(p.region))
    .map((p) => ({ amazon_account_id: p.profileId, region: p.region }))
    .sort((a, b) => a.region.localeCompare(b.region) || a.amazon_account_id.localeCompare(b.amazon_account_id));
}

const idAndRegion = (rows: readonly AccountRow[]) =>
  rows.map((r) => ({ amazon_account_id: r.amazon_account_id, region: r.region }));

describe.each(PATHS)('%s path', (_name, database) => {
  test('a user with NA and EU connections: both refreshed, both regions synced into one list with the right regions', async () => {
    const [user] = await seedUsers(world, { count: 1, regions: () => ['NA', 'EU'], profilesPerUser: 2 });
    const refresh = await runTokenRefresh(refreshDeps(database()));
    expect(refresh).toMatchObject({ claimed: 2, refreshed: 2, failed: 0 });
    expect(world.amazon.counters.refreshSuccesses(user.userId, 'NA')).toBe(1);
    expect(world.amazon.counters.refreshSuccesses(user.userId, 'EU')).toBe(1);
    expect((await connections(user.userId)).map((c) => c.last_refreshed_at !== null)).toEqual([true, true]);

    const sync = await runAccountSync(syncDeps(database()));
    expect(sync).toMatchObject({
      connectionsClaimed: 2,
      connectionsSynced: 2,
      connectionsFailed: 0,
      accountsSynced: 4,
    });
    expect(world.amazon.counters.profileCalls(user.userId, 'NA')).toBe(1);
    expect(world.amazon.counters.profileCalls(user.userId, 'EU')).toBe(1);
    const rows = await accounts(user.userId);
    expect(idAndRegion(rows)).toEqual(expectedAccounts(user, ['EU', 'NA']));
    for (const r of rows) expect(r).toMatchObject({ status: 'active', sync_status: 'completed' });
    for (const r of rows) expect(r.metadata.region).toBe(r.region);

    const { rows: history } = await world.admin.query<{ region: string; sync_status: string; accounts_synced: number }>(
      `SELECT region, sync_status, accounts_synced FROM account_sync_history
        WHERE metadata->>'userId' = :id ORDER BY region`,
      { id: user.userId },
    );
    expect(history).toEqual([
      { region: 'EU', sync_status: 'success', accounts_synced: 2 },
      { region: 'NA', sync_status: 'success', accounts_synced: 2 },
    ]);
  });

  test('the EU refresh token revoked: NA keeps refreshing and syncing, only EU needs re-authorisation, reconnecting EU restores only EU', async () => {
    const [user] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA', 'EU'],
      profilesPerUser: 2,
      accountsDueInSeconds: -60,
    });
    world.amazon.revoke(user.userId, 'EU');
    const metrics = new MetricTotals();
    const refresh = await runTokenRefresh(refreshDeps(database(), { metrics }));
    expect(refresh).toMatchObject({ claimed: 2, refreshed: 1, failed: 1, reauthRequired: 1 });
    expect(metrics.byRegion[METRIC_NAMES.refreshFailures]).toEqual({ EU: 1 });
    expect((await connections(user.userId)).map((c) => [c.region, c.proactive_refresh_enabled])).toEqual([
      ['EU', false],
      ['NA', true],
    ]);
    expect((await accounts(user.userId)).map((a) => [a.region, a.sync_status])).toEqual([
      ['EU', 'reauth_required'],
      ['EU', 'reauth_required'],
      ['NA', 'completed'],
      ['NA', 'completed'],
    ]);

    // The sync works on NA only: EU is off, and its accounts stay flagged.
    const sync = await runAccountSync(syncDeps(database()));
    expect(sync).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1, accountsSynced: 2, reauthFlagged: 0 });
    expect(world.amazon.counters.profileCalls(user.userId, 'EU')).toBe(0);
    expect((await accounts(user.userId)).map((a) => [a.region, a.sync_status])).toEqual([
      ['EU', 'reauth_required'],
      ['EU', 'reauth_required'],
      ['NA', 'completed'],
      ['NA', 'completed'],
    ]);

    // NA keeps refreshing (its token is made due again); EU is not tried while off.
    await world.admin.query(
      `UPDATE oauth_tokens SET expires_at = now() + interval '5 minutes' WHERE user_id = :id::uuid`,
      { id: user.userId },
    );
    expect(await runTokenRefresh(refreshDeps(database()))).toMatchObject({ claimed: 1, refreshed: 1 });
    expect(world.amazon.counters.refreshSuccesses(user.userId, 'NA')).toBe(2);

    // The user reconnects EU: the web app stores the new refresh token on the EU row only.
    const reconnected = world.amazon.reconnect(user.userId, 'EU');
    const before = await world.admin.query<{ region: string; updated_at: Date }>(
      `SELECT region, updated_at FROM user_accounts WHERE user_id = :id::uuid AND region = 'NA' ORDER BY id`,
      { id: user.userId },
    );
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_token = :token WHERE user_id = :id::uuid AND region = 'EU'`,
      {
        id: user.userId,
        token: world.cipher.encrypt(
          reconnected,
          oauthTokenBinding({ userId: user.userId, region: 'EU' }, 'refresh_token'),
        ),
      },
    );
    expect((await connections(user.userId)).map((c) => [c.region, c.proactive_refresh_enabled])).toEqual([
      ['EU', true],
      ['NA', true],
    ]);
    expect((await accounts(user.userId)).map((a) => [a.region, a.sync_status])).toEqual([
      ['EU', 'pending'],
      ['EU', 'pending'],
      ['NA', 'completed'],
      ['NA', 'completed'],
    ]);
    const after = await world.admin.query<{ region: string; updated_at: Date }>(
      `SELECT region, updated_at FROM user_accounts WHERE user_id = :id::uuid AND region = 'NA' ORDER BY id`,
      { id: user.userId },
    );
    expect(after.rows).toEqual(before.rows);

    // EU refreshes with the new grant, then syncs again.
    await world.admin.query(
      `UPDATE oauth_tokens SET expires_at = now() + interval '5 minutes' WHERE user_id = :id::uuid AND region = 'EU'`,
      { id: user.userId },
    );
    expect(await runTokenRefresh(refreshDeps(database()))).toMatchObject({ claimed: 1, refreshed: 1 });
    expect(await runAccountSync(syncDeps(database()))).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1 });
    expect(world.amazon.counters.profileCalls(user.userId, 'EU')).toBe(1);
    expect((await accounts(user.userId)).map((a) => [a.region, a.sync_status])).toEqual([
      ['EU', 'completed'],
      ['EU', 'completed'],
      ['NA', 'completed'],
      ['NA', 'completed'],
    ]);
  });

  test('Amazon returns no EU profiles: the EU accounts become inactive, the NA accounts are untouched', async () => {
    const [user] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA', 'EU'],
      profilesPerUser: 2,
      expiresInSeconds: 3600,
    });
    expect(await runAccountSync(syncDeps(database()))).toMatchObject({ connectionsSynced: 2, accountsMissing: 0 });
    const na = await world.admin.query(
      `SELECT * FROM user_accounts WHERE user_id = :id::uuid AND region = 'NA' ORDER BY id`,
      { id: user.userId },
    );

    world.amazon.removeProfiles(
      user.userId,
      user.profiles.filter((p) => p.region === 'EU').map((p) => p.profileId),
    );
    await world.admin.query(
      `UPDATE user_accounts SET next_sync_at = now() - interval '1 minute' WHERE user_id = :id::uuid AND region = 'EU'`,
      { id: user.userId },
    );
    const sync = await runAccountSync(syncDeps(database()));
    expect(sync).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1, accountsSynced: 0, accountsMissing: 2 });
    expect(world.amazon.counters.profileCalls(user.userId, 'NA')).toBe(1);
    expect((await accounts(user.userId)).map((a) => [a.region, a.status])).toEqual([
      ['EU', 'inactive'],
      ['EU', 'inactive'],
      ['NA', 'active'],
      ['NA', 'active'],
    ]);
    // Not one NA column changed.
    expect(
      (
        await world.admin.query(`SELECT * FROM user_accounts WHERE user_id = :id::uuid AND region = 'NA' ORDER BY id`, {
          id: user.userId,
        })
      ).rows,
    ).toEqual(na.rows);
  });

  test('a sync on demand covers every connection of the user', async () => {
    const [user] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA', 'EU', 'FE'],
      profilesPerUser: 1,
      expiresInSeconds: 3600,
    });
    await seedUsers(world, { count: 3, regions: () => ['NA', 'EU'], expiresInSeconds: 3600 });
    const sync = await runAccountSync(syncDeps(database()), { syncType: 'manual', userId: user.userId });
    expect(sync).toMatchObject({ connectionsClaimed: 3, connectionsSynced: 3, accountsSynced: 3 });
    expect(idAndRegion(await accounts(user.userId))).toEqual(expectedAccounts(user, ['EU', 'FE', 'NA']));
  });

  test('two runs at once over users with three regions each: every connection refreshed once and synced once', async () => {
    const users = await seedUsers(world, {
      count: 12,
      regions: () => ['NA', 'EU', 'FE'],
      profilesPerUser: 1,
      expiresInSeconds: 300,
    });
    const small = { concurrency: 4, batchSize: 5 };
    const refreshes = await Promise.all([
      runTokenRefresh(refreshDeps(database(), { settings: small })),
      runTokenRefresh(refreshDeps(database(), { settings: small })),
    ]);
    expect(refreshes.map((r) => r.refreshed).reduce((a, b) => a + b)).toBe(36);
    const refreshCalls = users.flatMap((u) =>
      u.connections.map((c) => world.amazon.counters.refreshCalls(c.refreshToken)),
    );
    expect(refreshCalls).toEqual(Array(36).fill(1));

    const syncs = await Promise.all([
      runAccountSync(syncDeps(database(), { settings: small })),
      runAccountSync(syncDeps(database(), { settings: small })),
    ]);
    expect(syncs.map((s) => s.connectionsSynced).reduce((a, b) => a + b)).toBe(36);
    const profileCalls = users.flatMap((u) =>
      u.connections.map((c) => world.amazon.counters.profileCalls(u.userId, c.region)),
    );
    expect(profileCalls).toEqual(Array(36).fill(1));
    const { rows } = await world.admin.query<{ n: number; regions: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT (metadata->>'userId', region))::int AS regions
         FROM account_sync_history WHERE sync_status = 'success'`,
    );
    expect(rows[0]).toEqual({ n: 36, regions: 36 });
    for (const u of users)
      expect(idAndRegion(await accounts(u.userId))).toEqual(expectedAccounts(u, ['EU', 'FE', 'NA']));
  });
});
