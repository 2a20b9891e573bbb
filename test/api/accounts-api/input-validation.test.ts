import { createHash, randomUUID } from 'node:crypto';
import { CURSOR_KEY_PURPOSE } from '../../../lambda/accounts-api/core';
import { encodeCursor } from '../../../lambda/accounts-api/cursor';
import { AccountsStore, StoreRefusal } from '../../../lambda/accounts-api/store';
import { Database, PgDatabase } from '../../../lambda/shared/db';
import { ApiWorld, Handler, request, useApiWorld } from '../fixture';
import { checked } from '../openapi';
import { SeededUser, seedApiUsers } from '../seed';

// Issue 23, finding 4: nothing a signed-in caller sends makes the API answer 500, on both
// database paths. Control characters (NUL included) in filters are a 400; cursors are sealed
// with an HMAC under a key derived from the token key, and their keys are validated, so a
// forged cursor (the old checksum was a plain hash anyone could compute) or one carrying a NUL
// or a non-timestamp is a 400; a data exception (SQLSTATE class 22) from a request's own
// values is a 400 too, never a 500.

let world: ApiWorld;
let superuser: PgDatabase;
let user: SeededUser;

useApiWorld(async (started) => {
  ({ world, superuser } = started);
  [user] = await seedApiUsers(world, [{ regions: ['NA', 'EU'], accountsPerRegion: 6, historyPerAccount: 2 }]);
});

const paths: Array<[string, () => { api: Handler; db: Database; assume: boolean }]> = [
  [
    'Data API',
    () => {
      const db = world.apiDataApi();
      return { api: checked(world.api({ db })), db, assume: false };
    },
  ],
  [
    'node-postgres',
    () => ({ api: checked(world.api({ db: superuser, assumeAuthenticatedRole: true })), db: superuser, assume: true }),
  ],
];

/** A cursor as the old code sealed it: base64url JSON and a plain SHA-256 checksum anyone can compute. */
function oldStyleCursor(key: unknown[], listing: Record<string, string | undefined>): string {
  const canonical = Object.keys(listing)
    .filter((k) => listing[k] !== undefined)
    .sort()
    .map((k) => [k, listing[k]]);
  const f = createHash('sha256').update(JSON.stringify(canonical)).digest('base64url').slice(0, 16);
  const body = Buffer.from(JSON.stringify({ v: 1, k: key, f })).toString('base64url');
  return `${body}.${createHash('sha256').update(`accounts-api-cursor.${body}`).digest('base64url').slice(0, 16)}`;
}

describe.each(paths)('%s', (_name, make) => {
  let api: Handler;
  let db: Database;
  let assume: boolean;
  let token: string;
  beforeAll(() => {
    ({ api, db, assume } = make());
    token = world.token(user.userId);
  });
  const get = (path: string, rawQuery: string) => api(request('GET', path, { token, rawQuery }));

  test.each([
    ['/v1/accounts', 'marketplace=%00'],
    ['/v1/accounts', 'marketplace=ATVPDK%00IKX0DER'],
    ['/v1/accounts', 'marketplace=%01'],
    ['/v1/accounts', 'marketplace=a%7Fb'],
    ['/v1/accounts', 'marketplace=%C2%85'],
    ['/v1/accounts', 'limit=5%00'],
    ['/v1/sync-history', 'cursor=%00'],
  ])('GET %s?%s is a 400', async (path, query) => {
    const r = await get(path, query);
    expect(r.statusCode).toBe(400);
  });

  test('cursors: a forged one (the old plain checksum), one with a NUL key, one with a non-timestamp key: 400', async () => {
    const accountsCursor = oldStyleCursor(['\u0000', randomUUID()], { route: 'accounts' });
    expect((await get('/v1/accounts', `cursor=${accountsCursor}`)).statusCode).toBe(400);
    const historyCursor = oldStyleCursor(['not-a-timestamp', randomUUID()], { route: 'sync-history' });
    expect((await get('/v1/sync-history', `cursor=${historyCursor}`)).statusCode).toBe(400);

    // Even sealed with the real key (as if it leaked), values PostgreSQL would refuse are refused first.
    const key = world.cipher.deriveKey(CURSOR_KEY_PURPOSE);
    const sealed = [
      ['/v1/accounts', encodeCursor(['\u0000', randomUUID()], { route: 'accounts' }, key)],
      ['/v1/accounts', encodeCursor(['x'.repeat(300), randomUUID()], { route: 'accounts' }, key)],
      ['/v1/sync-history', encodeCursor(['2026-13-45T99:00:00Z', randomUUID()], { route: 'sync-history' }, key)],
      ['/v1/sync-history', encodeCursor(['yesterday', randomUUID()], { route: 'sync-history' }, key)],
      ['/v1/sync-history', encodeCursor(['2026-01-01T00:00:00Z', 'not-a-uuid'], { route: 'sync-history' }, key)],
    ];
    for (const [path, cursor] of sealed)
      expect([path, (await get(path, `cursor=${cursor}`)).statusCode]).toEqual([path, 400]);

    // The API's own cursors still page through everything.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await get('/v1/sync-history', `limit=5${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.statusCode).toBe(200);
      const body = JSON.parse(page.body) as { items: Array<{ id: string }>; nextCursor: string | null };
      seen.push(...body.items.map((i) => i.id));
      cursor = body.nextCursor;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen.length).toBe(user.accountIds.length * 2);
  });

  test('a data exception (SQLSTATE class 22) from a value of the request is a refusal (400), not an error (500)', async () => {
    const store = new AccountsStore({ db, assumeAuthenticatedRole: assume });
    const caller = { userId: user.userId, email: undefined };
    await expect(store.listSyncHistory(caller, undefined, 5, ['not-a-timestamp', randomUUID()])).rejects.toEqual(
      new StoreRefusal('invalid input'),
    );
    await expect(store.listAccounts(caller, { marketplace: 'a\u0000b' }, 5, undefined)).rejects.toEqual(
      new StoreRefusal('invalid input'),
    );
  });
});
