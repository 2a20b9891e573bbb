import { DISCONNECTED_MESSAGE } from '../../../lambda/accounts-api/core';
import { AccountsStore, claimsOf } from '../../../lambda/accounts-api/store';
import { Database, PgDatabase } from '../../../lambda/shared/db';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';
import { ApiWorld, request, startApiWorld } from '../fixture';
import { checked } from '../openapi';
import { SeededUser, seedApiUsers } from '../seed';

// The accounts API's store (lambda/accounts-api/store.ts) and the SQL it calls (migrations 0013,
// 0021) where a user has connections in several regions, and the database's own refusal to store
// a token that is not encrypted. Both database paths, as the API's own login (accounts_api):
// the Data API through the emulator, and node-postgres.

let world: ApiWorld;
const opened: PgDatabase[] = [];

beforeAll(async () => {
  world = await startApiWorld();
});
afterAll(async () => {
  await Promise.all(opened.map((db) => db.close()));
  await world?.close();
});
beforeEach(async () => {
  await world.syncs.idle();
  await world.reset();
});

const PATHS: Array<[string, () => Database]> = [
  ['Data API', () => world.apiDataApi()],
  [
    'node-postgres',
    () => {
      const db = new PgDatabase({ connection: world.apiLoginUrl });
      opened.push(db);
      return db;
    },
  ],
];

type Row = Record<string, unknown>;

/** Every row of the tables a disconnect may touch, by id, as the owner sees them. */
async function snapshot(): Promise<{
  tokens: Map<string, Row>;
  accounts: Map<string, Row>;
  history: Map<string, Row>;
}> {
  const byId = async (sql: string) =>
    new Map((await world.admin.query<Row & { id: string }>(sql)).rows.map((r) => [r.id, r] as const));
  return {
    tokens: await byId(`SELECT * FROM oauth_tokens`),
    accounts: await byId(`SELECT * FROM user_accounts`),
    history: await byId(`SELECT * FROM account_sync_history`),
  };
}

/** The rows of `before` that differ in `after` (or are gone), by id. */
function changed(before: Map<string, Row>, after: Map<string, Row>): string[] {
  return [...before.keys()].filter((id) => JSON.stringify(before.get(id)) !== JSON.stringify(after.get(id))).sort();
}

async function idsWhere(sql: string, params: Record<string, string>): Promise<string[]> {
  return (await world.admin.query<{ id: string }>(sql, params)).rows.map((r) => r.id).sort();
}

/** A sync running for `user` in `region`: an account in progress and its history row started. */
async function syncRunning(user: SeededUser, region: string): Promise<void> {
  const { rows } = await world.admin.query<{ id: string }>(
    `UPDATE user_accounts SET sync_status = 'in_progress'
      WHERE id = (SELECT id FROM user_accounts WHERE user_id = :u::uuid AND region = :r ORDER BY id LIMIT 1)
      RETURNING id`,
    { u: user.userId, r: region },
  );
  await world.admin.query(
    `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status, region, metadata)
     VALUES (:a::uuid, 'scheduled', 'started', :r, jsonb_build_object('userId', :u::text))`,
    { a: rows[0].id, r: region, u: user.userId },
  );
}

describe.each(PATHS)('%s', (_path, database) => {
  test('a disconnect of one region touches that region of that user only: other regions’ tokens, accounts and running syncs, and other users, are left as they were', async () => {
    const [user, other] = await seedApiUsers(world, [
      { regions: ['NA', 'EU', 'FE'], accountsPerRegion: 3 },
      { regions: ['NA', 'EU', 'FE'], accountsPerRegion: 2 },
    ]);
    // A sync running in every region of both users: the disconnect closes the EU one of `user` only.
    for (const u of [user, other]) for (const region of ['NA', 'EU', 'FE']) await syncRunning(u, region);
    const before = await snapshot();
    const api = checked(world.api({ db: database() }));

    const r = await api(request('DELETE', '/v1/connections/EU', { token: world.token(user.userId) }));

    expect(r.statusCode).toBe(204);
    const after = await snapshot();
    const euToken = await idsWhere(`SELECT id FROM oauth_tokens WHERE user_id = :u::uuid AND region = 'EU'`, {
      u: user.userId,
    });
    expect(euToken).toEqual([]);
    // Exactly the EU connection of `user` is gone; its EU accounts (and its EU sync) changed.
    const euAccounts = await idsWhere(`SELECT id FROM user_accounts WHERE user_id = :u::uuid AND region = 'EU'`, {
      u: user.userId,
    });
    expect(changed(before.tokens, after.tokens)).toHaveLength(1);
    expect(after.tokens.size).toBe(before.tokens.size - 1);
    expect(changed(before.accounts, after.accounts)).toEqual(euAccounts);
    const startedEu = [...before.history.values()]
      .filter((h) => h.sync_status === 'started' && h.region === 'EU')
      .filter((h) => (h.metadata as { userId?: string }).userId === user.userId)
      .map((h) => h.id as string);
    expect(startedEu).toHaveLength(1);
    expect(changed(before.history, after.history)).toEqual(startedEu);

    const accounts = await world.admin.query<{ region: string; status: string; sync_status: string; message: string }>(
      `SELECT region, status, sync_status, sync_error_message AS message FROM user_accounts
        WHERE user_id = :u::uuid ORDER BY region, id`,
      { u: user.userId },
    );
    const eu = accounts.rows.filter((x) => x.region === 'EU');
    expect(eu.map((a) => [a.status, a.message])).toEqual(eu.map(() => ['inactive', DISCONNECTED_MESSAGE]));
    expect(eu.filter((a) => a.sync_status === 'in_progress')).toEqual([]);
    // The other regions' syncs still run.
    const running = await world.admin.query<{ region: string; n: number }>(
      `SELECT region, count(*)::int AS n FROM user_accounts WHERE user_id = :u::uuid AND sync_status = 'in_progress'
        GROUP BY region ORDER BY region`,
      { u: user.userId },
    );
    expect(running.rows).toEqual([
      { region: 'FE', n: 1 },
      { region: 'NA', n: 1 },
    ]);
    // The other user is untouched, and can still disconnect their own EU connection.
    const otherRows = (rows: Map<string, Row>) => [...rows.values()].filter((x) => x.user_id === other.userId);
    expect(otherRows(after.tokens)).toEqual(otherRows(before.tokens));
    expect(otherRows(after.accounts)).toEqual(otherRows(before.accounts));
    expect((await api(request('DELETE', '/v1/connections/EU', { token: world.token(other.userId) }))).statusCode).toBe(
      204,
    );
  });

  test('disconnecting a region the caller has no connection in is a 404 that changes nothing, whoever else is connected there', async () => {
    const [user, other] = await seedApiUsers(world, [
      { regions: ['NA', 'FE'], accountsPerRegion: 2 },
      { regions: ['EU'], accountsPerRegion: 2 },
    ]);
    const before = await snapshot();
    const api = checked(world.api({ db: database() }));

    const r = await api(request('DELETE', '/v1/connections/EU', { token: world.token(user.userId) }));

    expect(r.statusCode).toBe(404);
    const after = await snapshot();
    expect(changed(before.tokens, after.tokens)).toEqual([]);
    expect(changed(before.accounts, after.accounts)).toEqual([]);
    expect(changed(before.history, after.history)).toEqual([]);
    expect(other.regions).toEqual(['EU']);
  });

  test('Row Level Security alone limits a disconnect to the caller’s rows (the statements without their own-row filters)', async () => {
    const [user, other] = await seedApiUsers(world, [
      { regions: ['NA', 'EU'], accountsPerRegion: 2 },
      { regions: ['NA', 'EU'], accountsPerRegion: 2 },
    ]);
    const rollback = new Error('rollback');
    let touched: { tokens: string[]; accounts: string[]; rest: number } | undefined;
    await expect(
      database().transaction(async (tx) => {
        await tx.query(`SELECT api.set_claims(:claims::jsonb)`, {
          claims: claimsOf({ userId: user.userId, email: undefined }),
        });
        const tokens = await tx.query<{ user_id: string }>(
          `DELETE FROM oauth_tokens WHERE region = 'EU' RETURNING user_id`,
        );
        const accounts = await tx.query<{ user_id: string }>(
          `UPDATE user_accounts SET status = 'inactive' WHERE region = 'EU' RETURNING user_id`,
        );
        // Without a WHERE or RETURNING only the DELETE policy applies (no SELECT policy reads a row).
        const everything = await tx.query(`DELETE FROM oauth_tokens`);
        touched = {
          tokens: tokens.rows.map((r) => r.user_id),
          accounts: accounts.rows.map((r) => r.user_id),
          rest: everything.rowsAffected,
        };
        throw rollback;
      }),
    ).rejects.toBe(rollback);
    expect(touched).toEqual({ tokens: [user.userId], accounts: [user.userId, user.userId], rest: 1 });
    expect(other.regions).toEqual(['NA', 'EU']);
  });

  test('the database refuses to store a token that is not encrypted (the connect path): nothing is written, not even the users row', async () => {
    const db = database();
    const store = new AccountsStore({ db });
    const caller = { userId: '00000000-0000-4000-8000-00000000a001', email: 'plain@example.com' };
    const at = { userId: caller.userId, region: 'NA' };
    const encrypted = world.cipher.encrypt('Atza|fine', oauthTokenBinding(at, 'access_token'));
    const fineRefresh = () => world.cipher.encrypt('Atzr|fine', oauthTokenBinding(at, 'refresh_token'));
    const expiresAt = new Date(Date.now() + 3_600_000);
    const attempts: Array<[string, string]> = [
      ['Atza|plaintext-access', fineRefresh()],
      [encrypted, 'Atzr|plaintext-refresh'],
      ['enc:v9:not-ours', fineRefresh()],
      [encrypted, 'ENC:V1:shouting'],
    ];
    for (const [access, refresh] of attempts) {
      // Through the store (SQLSTATE 22023: node-postgres reads it as invalid input; the
      // emulator passes PostgreSQL's message on without the service's `SQLState:` suffix).
      await expect(store.connect(caller, 'NA', access, refresh, expiresAt)).rejects.toThrow(
        /accounts-api: (tokens must be encrypted|invalid input)/,
      );
      // The database's own words, on the same path.
      await expect(
        db.query(`SELECT api.connect(:claims::jsonb, 'NA', :a, :r, :e::timestamptz)`, {
          claims: claimsOf(caller),
          a: access,
          r: refresh,
          e: expiresAt,
        }),
      ).rejects.toThrow(/accounts-api: tokens must be encrypted/);
    }
    const tokens = await world.admin.query(`SELECT 1 FROM oauth_tokens`);
    const users = await world.admin.query(`SELECT 1 FROM users`);
    expect(tokens.rows).toEqual([]);
    expect(users.rows).toEqual([]);

    // The same call with both tokens encrypted is stored.
    const stored = await store.connect(caller, 'NA', encrypted, fineRefresh(), expiresAt);
    expect(stored).toMatchObject({ region: 'NA', status: 'connected' });
    const row = await world.admin.query<{ access_token: string }>(`SELECT access_token FROM oauth_tokens`);
    expect(
      await Promise.all(
        row.rows.map((x) => world.cipher.decrypt(x.access_token, oauthTokenBinding(at, 'access_token'))),
      ),
    ).toEqual(['Atza|fine']);
  });

  test('a token that is not encrypted never replaces a stored connection', async () => {
    const [user] = await seedApiUsers(world, [{ regions: ['NA', 'EU'], accountsPerRegion: 1 }]);
    const before = await snapshot();
    const store = new AccountsStore({ db: database() });
    await expect(
      store.connect(
        { userId: user.userId, email: user.email },
        'EU',
        'Atza|plaintext',
        'Atzr|plaintext',
        new Date(Date.now() + 3_600_000),
      ),
    ).rejects.toThrow(/accounts-api: (tokens must be encrypted|invalid input)/);
    const after = await snapshot();
    expect(changed(before.tokens, after.tokens)).toEqual([]);
    expect(changed(before.accounts, after.accounts)).toEqual([]);
  });
});
