import { runAccountSync } from '../../../lambda/account-sync/core';
import { DETAIL_TYPES } from '../../../lambda/event-publisher/catalogue';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import {
  Database,
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { outboxEvents, validDetails } from './outbox';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';

/**
 * Migration 0023's triggers: every transition of a connection writes exactly one event to the
 * outbox, in the statement that makes it, valid against its schema (docs/events.md); a state
 * that did not change writes none, and a rolled-back change none. The jobs run on both
 * database paths; connect and disconnect are the accounts API's own functions.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const claims = (u: SeedUser) => ({ sub: u.userId, email: u.email, role: 'authenticated' });

async function storeConnection(u: SeedUser) {
  await world.admin.transaction(async (tx) => {
    await tx.query('SELECT api.set_claims(:claims::jsonb)', { claims: JSON.stringify(claims(u)) });
    await tx.query(`SELECT api.store_connection('NA', :access, :refresh, now() + interval '1 hour')`, {
      access: world.cipher.encrypt(
        'Atza|reconnected-access',
        oauthTokenBinding({ userId: u.userId, region: 'NA' }, 'access_token'),
      ),
      refresh: world.cipher.encrypt(
        world.amazon.reconnect(u.userId, 'NA'),
        oauthTokenBinding({ userId: u.userId, region: 'NA' }, 'refresh_token'),
      ),
    });
  });
}

async function disconnect(u: SeedUser) {
  await world.admin.query(`SELECT api.disconnect(:claims::jsonb, 'NA', 'removed by the user')`, {
    claims: JSON.stringify(claims(u)),
  });
}

/** Makes the user's sync due now (its backoff and the accounts' schedule), changing no state. */
async function syncDue(u: SeedUser) {
  await world.admin.query(
    `UPDATE oauth_tokens SET sync_next_attempt_at = now() - interval '1 second' WHERE user_id = :id::uuid`,
    { id: u.userId },
  );
  await world.admin.query(
    `UPDATE user_accounts SET next_sync_at = now() - interval '1 second' WHERE user_id = :id::uuid`,
    {
      id: u.userId,
    },
  );
}

const types = async (u: SeedUser) => (await outboxEvents(world.admin, u.userId)).map((e) => e.detailType);

describe.each(PATHS)('%s path', (_path, database) => {
  const sync = (db: Database) =>
    runAccountSync(
      { db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() },
      { syncType: 'scheduled' },
    );
  const refresh = (db: Database) => runTokenRefresh({ db, lwa: world.lwa(), cipher: world.cipher, ...runtime() });

  test('a connection’s life: each transition is exactly one schema-valid event; repeats of a state none', async () => {
    const db = database();
    const [u] = await seedUsers(world, { count: 1, regions: () => ['NA'], expiresInSeconds: 7200, profilesPerUser: 3 });
    expect(await types(u)).toEqual([DETAIL_TYPES.connected]);

    // First sync: the accounts Amazon lists are added (one event for all of them).
    await sync(db);
    const accountIds = (
      await world.admin.query<{ id: string }>(`SELECT id FROM user_accounts WHERE user_id = :id::uuid ORDER BY id`, {
        id: u.userId,
      })
    ).rows.map((r) => r.id);
    expect(accountIds).toHaveLength(3);

    // Three failed syncs in a row: failing once (at the third); a fourth failure adds nothing.
    world.amazon.setKnobs({ rate5xx: 1 }, 'ads');
    for (let i = 0; i < 4; i++) {
      await syncDue(u);
      await sync(db);
    }
    world.amazon.setKnobs({ rate5xx: 0 }, 'ads');
    // A success: recovered. Another success: nothing.
    await syncDue(u);
    await sync(db);
    await syncDue(u);
    await sync(db);

    // One profile gone at Amazon, then back.
    const [first] = u.profiles;
    world.amazon.removeProfiles(u.userId, [first.profileId]);
    await syncDue(u);
    await sync(db);
    await syncDue(u);
    await sync(db); // still gone: nothing new
    world.amazon.addProfiles(u.userId, [first]);
    await syncDue(u);
    await sync(db);

    // The grant is revoked: re-authorisation required, once, however often refresh is tried.
    world.amazon.revoke(u.userId, 'NA');
    await world.admin.query(
      `UPDATE oauth_tokens SET expires_at = now() + interval '1 minute' WHERE user_id = :id::uuid`,
      {
        id: u.userId,
      },
    );
    await refresh(db);
    await refresh(db);
    await sync(db); // flags the accounts reauth_required: no connection event

    // Connected again: recovered. Turned off by hand, then connected again. Disconnected.
    await storeConnection(u);
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = :id::uuid`, {
      id: u.userId,
    });
    await storeConnection(u);
    await disconnect(u);

    const events = await outboxEvents(world.admin, u.userId);
    const details = validDetails(events);
    expect(details.map((d) => d.type)).toEqual([
      DETAIL_TYPES.connected,
      DETAIL_TYPES.accountsChanged,
      DETAIL_TYPES.syncFailing,
      DETAIL_TYPES.syncRecovered,
      DETAIL_TYPES.accountsChanged,
      DETAIL_TYPES.accountsChanged,
      DETAIL_TYPES.reauthorizationRequired,
      DETAIL_TYPES.recovered,
      DETAIL_TYPES.refreshTurnedOff,
      DETAIL_TYPES.recovered,
      DETAIL_TYPES.disconnected,
    ]);
    const [connected, added, failing, recovered, gone, back, reauth, reconnected, off, again, disconnected] = details;
    const connectionId = connected.detail.connectionId;
    for (const d of details) {
      expect(d.detail).toMatchObject({ userId: u.userId, region: 'NA', connectionId, version: '1' });
    }
    expect(connected.detail).toMatchObject({ refreshEnabled: true });
    expect(added.detail).toMatchObject({
      added: { count: 3, accountIds },
      gone: { count: 0, accountIds: [] },
      back: { count: 0, accountIds: [] },
      truncated: false,
    });
    expect(failing.detail).toMatchObject({ consecutiveFailures: 3, threshold: 3 });
    expect(recovered.detail).toMatchObject({ previousFailures: 4, reason: 'synced' });
    const firstId = (
      await world.admin.query<{ id: string }>(
        `SELECT id FROM user_accounts WHERE user_id = :id::uuid AND amazon_account_id = :p`,
        { id: u.userId, p: first.profileId },
      )
    ).rows[0].id;
    expect(gone.detail).toMatchObject({ gone: { count: 1, accountIds: [firstId] }, added: { count: 0 } });
    expect(back.detail).toMatchObject({ back: { count: 1, accountIds: [firstId] }, gone: { count: 0 } });
    expect(reauth.detail).toMatchObject({ reason: 'revoked', errorCode: 'invalid_grant' });
    expect(reconnected.detail).toMatchObject({ reason: 'reconnected' });
    expect(off.detail).toMatchObject({ reason: 'turned_off' });
    expect(again.detail).toMatchObject({ reason: 'reconnected' });
    expect(disconnected.detail).toMatchObject({ connectionId });
    // Ids, region, reasons and times only: no token, no e-mail, no error text.
    const text = JSON.stringify(details);
    for (const secret of [u.email, u.refreshToken, u.accessToken, 'Atza|', 'enc:v1:', 'invalid grant parameter'])
      expect(text).not.toContain(secret);
  });

  test('a change rolled back writes no event; the same change committed writes one', async () => {
    const db = database();
    const [u] = await seedUsers(world, { count: 1, regions: () => ['NA'], expiresInSeconds: 7200 });
    const turnOff = (tx: Database) =>
      tx.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = FALSE WHERE user_id = :id::uuid`, { id: u.userId });
    await expect(
      db.transaction(async (tx) => {
        await turnOff(tx);
        throw new Error('the caller gave up');
      }),
    ).rejects.toThrow('the caller gave up');
    expect(await types(u)).toEqual([DETAIL_TYPES.connected]);
    await db.transaction(async (tx) => {
      await turnOff(tx);
    });
    expect(await types(u)).toEqual([DETAIL_TYPES.connected, DETAIL_TYPES.refreshTurnedOff]);
  });

  test('an agency’s first sync: one accounts-changed event, counts whole, ids capped', async () => {
    const db = database();
    const [u] = await seedUsers(world, {
      count: 1,
      regions: () => ['NA'],
      expiresInSeconds: 7200,
      profilesPerUser: 450,
    });
    await sync(db);
    const details = validDetails(await outboxEvents(world.admin, u.userId));
    expect(details.map((d) => d.type)).toEqual([DETAIL_TYPES.connected, DETAIL_TYPES.accountsChanged]);
    expect(details[1].detail).toMatchObject({ added: { count: 450 }, truncated: true });
    expect((details[1].detail.added as { accountIds: string[] }).accountIds).toHaveLength(200);
  });

  test('one UPDATE across two connections: per connection, exactly the accounts that went inactive or came back from it', async () => {
    const db = database();
    const [a, b] = await seedUsers(world, {
      count: 2,
      regions: () => ['NA'],
      expiresInSeconds: 7200,
      profilesPerUser: 4,
      accountsDueInSeconds: 3600,
    });
    const ids = async (u: SeedUser) =>
      (
        await world.admin.query<{ id: string }>(`SELECT id FROM user_accounts WHERE user_id = :u::uuid ORDER BY id`, {
          u: u.userId,
        })
      ).rows.map((r) => r.id);
    const [a1, a2, a3, a4] = await ids(a);
    const [b1, b2, b3] = await ids(b);
    // Before: a1, a2 and b1 inactive; the rest pending.
    await world.admin.query(
      `UPDATE user_accounts SET status = 'inactive' WHERE id IN (:a1::uuid, :a2::uuid, :b1::uuid)`,
      {
        a1,
        a2,
        b1,
      },
    );
    const before = (await outboxEvents(world.admin)).length;
    // One statement: a1 back (active), a2 stays inactive, a3 goes (inactive), a4 pending to
    // active (not back: it was never gone); b1 to pending (neither), b2 and b3 go.
    await db.query(
      `UPDATE user_accounts SET status = CASE
          WHEN id IN (:a1::uuid, :a4::uuid) THEN 'active'
          WHEN id IN (:a2::uuid, :a3::uuid, :b2::uuid, :b3::uuid) THEN 'inactive'
          ELSE 'pending' END
        WHERE user_id IN (:a::uuid, :b::uuid)`,
      { a1, a2, a3, a4, b2, b3, a: a.userId, b: b.userId },
    );
    const changed = (await outboxEvents(world.admin)).slice(before);
    expect(changed.map((e) => [e.detailType, e.userId])).toEqual(
      expect.arrayContaining([
        [DETAIL_TYPES.accountsChanged, a.userId],
        [DETAIL_TYPES.accountsChanged, b.userId],
      ]),
    );
    expect(changed).toHaveLength(2);
    const byUser = new Map(changed.map((e) => [e.userId, e.data]));
    expect(byUser.get(a.userId)).toEqual({ added: [], gone: [a3], back: [a1] });
    expect(byUser.get(b.userId)).toEqual({ added: [], gone: [b2, b3].sort(), back: [] });
  });
});
