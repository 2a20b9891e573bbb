import { randomUUID } from 'node:crypto';
import { runAccountSync } from '../../../lambda/account-sync/core';
import { claimConnections, saveOutcomes } from '../../../lambda/account-sync/store';
import {
  Database,
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';
import type { SqlParams } from '../../../lambda/shared/db/port';

/**
 * A connection's lifecycle (migration 0021) with the account sync on both database paths:
 * disconnecting closes the region's running sync, reconnecting brings its accounts back for
 * the next sync to decide, and work started under an earlier connection of the same user and
 * region never lands on the new one. Connect and disconnect are the accounts API's own
 * functions (`api.store_connection`, `api.disconnect`), called with the user's claims.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const DISCONNECTED = 'Amazon connection removed by the user: reconnect Amazon to sync this account again';

const claims = (u: SeedUser) => ({ sub: u.userId, email: u.email, role: 'authenticated' });

/** `api.store_connection` as the user (what connect does after Amazon's answer). */
async function storeConnection(u: SeedUser, tokens: { accessToken: string; refreshToken: string }, region = 'NA') {
  await world.admin.transaction(async (tx) => {
    await tx.query('SELECT api.set_claims(:claims::jsonb)', { claims: JSON.stringify(claims(u)) });
    await tx.query(`SELECT api.store_connection(:region, :access, :refresh, now() + interval '1 hour')`, {
      region,
      access: world.cipher.encrypt(tokens.accessToken, oauthTokenBinding({ userId: u.userId, region }, 'access_token')),
      refresh: world.cipher.encrypt(
        tokens.refreshToken,
        oauthTokenBinding({ userId: u.userId, region }, 'refresh_token'),
      ),
    });
  });
}

async function disconnect(u: SeedUser, region = 'NA'): Promise<boolean> {
  const { rows } = await world.admin.query<{ removed: boolean }>(
    `SELECT api.disconnect(:claims::jsonb, :region, :message) AS removed`,
    { claims: JSON.stringify(claims(u)), region, message: DISCONNECTED },
  );
  return rows[0].removed;
}

async function accounts(u: SeedUser) {
  const { rows } = await world.admin.query<{
    amazon_account_id: string;
    region: string;
    status: string;
    sync_status: string;
    sync_error_message: string | null;
    next_sync_at: Date | null;
  }>(
    `SELECT amazon_account_id, region, status, sync_status, sync_error_message, next_sync_at FROM user_accounts
      WHERE user_id = :id::uuid ORDER BY region, amazon_account_id`,
    { id: u.userId },
  );
  return rows;
}

async function history(u: SeedUser) {
  const { rows } = await world.admin.query<{
    sync_type: string;
    sync_status: string;
    reason: string | null;
    completed: boolean;
  }>(
    `SELECT sync_type, sync_status, error_details->>'reason' AS reason, completed_at IS NOT NULL AS completed
       FROM account_sync_history WHERE metadata->>'userId' = :id ORDER BY started_at, id`,
    { id: u.userId },
  );
  return rows;
}

const ids = (profiles: ReadonlyArray<{ profileId: string }>) => profiles.map((p) => p.profileId).sort();

/** Runs `before` once, just before the first statement matching `sql` is sent (and awaits it). */
function beforeFirst(db: Database, sql: RegExp, before: () => Promise<void>): Database {
  let done = false;
  return {
    query: async (text, params) => {
      if (!done && sql.test(text)) {
        done = true;
        await before();
      }
      return db.query(text, params);
    },
    batch: (text, sets) => db.batch(text, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

/** `db`, keeping each claim statement it sends (claimConnections) in `claims`. */
function keepingClaims(db: Database, claims: Array<Promise<unknown>>): Database {
  return {
    query: <T extends object>(text: string, params?: SqlParams) => {
      const result = db.query<T>(text, params);
      if (CLAIM.test(text)) claims.push(result);
      return result;
    },
    batch: (text, sets) => db.batch(text, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

/** The account sync's claim statement (see claimConnections). */
const CLAIM = /FOR UPDATE OF t SKIP LOCKED/;

/** The account sync's write-back statement (see saveOutcomes). */
const WRITE_BACK = /WITH input AS \(/;

describe.each(PATHS)('%s path', (_path, database) => {
  const sync = (db: Database, userId?: string) =>
    runAccountSync(
      { db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() },
      userId ? { syncType: 'manual', userId } : { syncType: 'scheduled' },
    );

  test('disconnect, then connect again: the next sync brings the accounts Amazon lists back to active', async () => {
    const [u] = await seedUsers(world, { count: 1, regions: () => ['NA'], expiresInSeconds: 3600 });
    await sync(database());
    expect((await accounts(u)).map((a) => a.status)).toEqual(['active', 'active']);

    expect(await disconnect(u)).toBe(true);
    expect((await accounts(u)).map((a) => [a.status, a.sync_error_message])).toEqual([
      ['inactive', DISCONNECTED],
      ['inactive', DISCONNECTED],
    ]);

    await storeConnection(u, u);
    // Until the sync has run, nothing is known: pending, due now.
    expect((await accounts(u)).map((a) => [a.status, a.sync_status])).toEqual([
      ['pending', 'pending'],
      ['pending', 'pending'],
    ]);
    expect(await sync(database())).toMatchObject({ connectionsSynced: 1 });

    const after = await accounts(u);
    expect(after.map((a) => a.amazon_account_id)).toEqual(ids(u.profiles));
    expect(after.map((a) => [a.status, a.sync_status, a.sync_error_message])).toEqual([
      ['active', 'completed', null],
      ['active', 'completed', null],
    ]);
  });

  test('connecting one region again leaves the accounts of the user’s other regions as they were (synced, or inactive after their own disconnect)', async () => {
    const [u] = await seedUsers(world, { count: 1, regions: () => ['EU', 'NA', 'FE'], expiresInSeconds: 3600 });
    await sync(database());
    const synced = await accounts(u);
    expect(synced.map((a) => [a.region, a.status, a.sync_status])).toEqual([
      ['EU', 'active', 'completed'],
      ['EU', 'active', 'completed'],
      ['FE', 'active', 'completed'],
      ['FE', 'active', 'completed'],
      ['NA', 'active', 'completed'],
      ['NA', 'active', 'completed'],
    ]);
    expect(await disconnect(u, 'FE')).toBe(true);
    const na = u.connections.find((c) => c.region === 'NA')!;

    await storeConnection(u, na, 'NA');

    const after = await accounts(u);
    // Only NA's accounts are put back for the next sync to decide.
    expect(after.map((a) => [a.region, a.status, a.sync_status, a.sync_error_message])).toEqual([
      ['EU', 'active', 'completed', null],
      ['EU', 'active', 'completed', null],
      ['FE', 'inactive', 'completed', DISCONNECTED],
      ['FE', 'inactive', 'completed', DISCONNECTED],
      ['NA', 'active', 'pending', null],
      ['NA', 'active', 'pending', null],
    ]);
    // EU's accounts keep the time of their next sync.
    expect(after.filter((a) => a.region === 'EU').map((a) => a.next_sync_at)).toEqual(
      synced.filter((a) => a.region === 'EU').map((a) => a.next_sync_at),
    );
  });

  test('the web app reconnecting one region of a user whose regions all need re-authorisation clears only that region’s accounts', async () => {
    const [u] = await seedUsers(world, { count: 1, regions: () => ['EU', 'NA'], expiresInSeconds: 3600 });
    await sync(database());
    // Both grants revoked: refresh off, every account waiting for the user.
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = :id::uuid`, {
      id: u.userId,
    });
    await world.admin.query(
      `UPDATE user_accounts SET sync_status = 'reauth_required', sync_error_message = 'reconnect' WHERE user_id = :id::uuid`,
      { id: u.userId },
    );

    // The web app stores EU's new refresh token on the row itself (the re-connection trigger).
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_token = :token WHERE user_id = :id::uuid AND region = 'EU'`,
      {
        id: u.userId,
        token: world.cipher.encrypt(
          `${u.refreshToken}-reconnected`,
          oauthTokenBinding({ userId: u.userId, region: 'EU' }, 'refresh_token'),
        ),
      },
    );

    expect((await accounts(u)).map((a) => [a.region, a.sync_status, a.sync_error_message])).toEqual([
      ['EU', 'pending', null],
      ['EU', 'pending', null],
      ['NA', 'reauth_required', 'reconnect'],
      ['NA', 'reauth_required', 'reconnect'],
    ]);
  });

  test('disconnecting during a sync closes it: the history row failed with a reason, no account left in_progress, and the run writes nothing', async () => {
    const [u] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA'],
      expiresInSeconds: 3600,
      accountsDueInSeconds: -60,
    });
    const db = database();
    const owner = randomUUID();
    const [claimed] = await claimConnections(db, {
      owner,
      leaseSeconds: 600,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 120,
    });
    expect((await accounts(u)).map((a) => a.sync_status)).toEqual(['in_progress', 'in_progress']);

    expect(await disconnect(u)).toBe(true);

    expect(await history(u)).toEqual([
      {
        sync_type: 'scheduled',
        sync_status: 'failed',
        reason: 'disconnected: the connection was removed while this sync was running',
        completed: true,
      },
    ]);
    const closed = await accounts(u);
    expect(closed.map((a) => [a.status, a.sync_status, a.sync_error_message])).toEqual([
      ['inactive', 'failed', DISCONNECTED],
      ['inactive', 'failed', DISCONNECTED],
    ]);

    // The run that claimed it finishes afterwards: nothing of it lands.
    await saveOutcomes(
      db,
      owner,
      [
        {
          kind: 'success',
          connection: claimed,
          accounts: u.profiles.map((p) => ({ amazonAccountId: p.profileId, metadata: { region: 'NA' } })),
          nextSyncAt: new Date(Date.now() + 3_600_000),
        },
      ],
      { onRefused: (o) => o },
    );
    expect(await accounts(u)).toEqual(closed);
    expect((await history(u))[0].sync_status).toBe('failed');
  });

  test('deleting a user whose sync is running deletes everything of theirs (the trigger does not get in the way)', async () => {
    const [u] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA'],
      expiresInSeconds: 3600,
      accountsDueInSeconds: -60,
    });
    await claimConnections(database(), {
      owner: randomUUID(),
      leaseSeconds: 600,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 120,
    });
    await world.admin.query('DELETE FROM users WHERE id = :id::uuid', { id: u.userId });
    expect(await accounts(u)).toEqual([]);
    const { rows } = await world.admin.query('SELECT 1 FROM oauth_tokens WHERE user_id = :id::uuid', { id: u.userId });
    expect(rows).toEqual([]);
  });

  test('reconnecting (another Amazon account) while a sync is in flight: the first sync of the new connection runs at once, and the old one’s write-back lands nothing', async () => {
    // `seller` is the Amazon account the user connected first; `other` the one they connect
    // instead (its tokens and profiles at the fake Amazon are another seller's).
    const [seller, other] = await seedUsers(world, {
      count: 2,
      regions: () => ['NA'],
      expiresInSeconds: 3600,
      profilesPerUser: (i) => (i === 0 ? 2 : 3),
    });
    await world.admin.query('DELETE FROM oauth_tokens WHERE user_id = :id::uuid', { id: other.userId });
    let firstSync: Awaited<ReturnType<typeof sync>> | undefined;

    // The scheduled run has the old seller's profiles from Amazon; just before it writes them
    // back, the user connects the region again and connect starts its first sync.
    // The old run claims ahead (a second claim while its first batch is worked on, which finds
    // nothing): that claim is awaited before the reconnect, or on a slow machine it may land
    // after it and take the new connection itself (a scheduled sync of it, and the connect's
    // first sync then claims nothing).
    const claims: Array<Promise<unknown>> = [];
    const oldRun = await sync(
      beforeFirst(keepingClaims(database(), claims), WRITE_BACK, async () => {
        await Promise.allSettled(claims);
        await storeConnection(seller, other);
        firstSync = await sync(database(), seller.userId);
      }),
    );

    expect(firstSync).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1 });
    expect(oldRun).toMatchObject({ connectionsClaimed: 1 });
    const now = await accounts(seller);
    const active = now.filter((a) => a.status === 'active').map((a) => a.amazon_account_id);
    expect(active.sort()).toEqual(ids(other.profiles));
    // The old seller's profiles never became accounts of the new connection.
    expect(now.map((a) => a.amazon_account_id).filter((id) => ids(seller.profiles).includes(id))).toEqual([]);
    expect(await history(seller)).toEqual([
      {
        sync_type: 'scheduled',
        sync_status: 'failed',
        reason: 'superseded: the connection was stored again while this sync was running',
        completed: true,
      },
      { sync_type: 'manual', sync_status: 'success', reason: null, completed: true },
    ]);
    const { rows } = await world.admin.query<{ lease: string | null; generation: number }>(
      `SELECT sync_lease_owner::text AS lease, connection_generation AS generation FROM oauth_tokens WHERE user_id = :id::uuid`,
      { id: seller.userId },
    );
    expect(rows).toEqual([{ lease: null, generation: 2 }]);
  });

  test('connecting a region again while its accounts sync: the running write-back is refused by generation even if it still held the lease', async () => {
    const [u] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA'],
      expiresInSeconds: 3600,
      accountsDueInSeconds: -60,
    });
    const db = database();
    const owner = randomUUID();
    const [claimed] = await claimConnections(db, {
      owner,
      leaseSeconds: 600,
      limit: 10,
      syncType: 'scheduled',
      minTokenValiditySeconds: 120,
    });
    await storeConnection(u, u);
    // As if the lease had survived the reconnect (it does not: store_connection clears it).
    await world.admin.query(
      `UPDATE oauth_tokens SET sync_lease_owner = :owner::uuid, sync_lease_expires_at = now() + interval '10 minutes'`,
      { owner },
    );
    await saveOutcomes(
      db,
      owner,
      [
        {
          kind: 'failure',
          connection: claimed,
          error: 'x',
          errorDetails: {},
          nextAttemptAt: new Date(Date.now() + 3_600_000),
        },
      ],
      { onRefused: (o) => o },
    );
    expect((await accounts(u)).map((a) => [a.status, a.sync_status])).toEqual([
      ['active', 'pending'],
      ['active', 'pending'],
    ]);
    const { rows } = await world.admin.query<{ lease: string | null; retries: number }>(
      `SELECT sync_lease_owner::text AS lease, sync_retry_count AS retries FROM oauth_tokens`,
    );
    expect(rows).toEqual([{ lease: owner, retries: 0 }]);
  });
});
