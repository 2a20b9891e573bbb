import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { DISCONNECTED_MESSAGE } from '../../../lambda/accounts-api/core';
import { PgDatabase } from '../../../lambda/shared/db';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';
import { fakeProfile } from '../../../local/amazon/profiles';
import {
  ApiWorld,
  connectThroughConsent,
  consent,
  Handler,
  request,
  runtimeFor,
  useApiWorld,
  startConnectSession,
} from '../fixture';
import { checked } from '../openapi';
import { seedApiUsers } from '../seed';

// Connecting, reconnecting, disconnecting and manual syncs against the fake Amazon, through
// the API on the Data API path (and once on node-postgres as a superuser, still under RLS).

let world: ApiWorld;
let api: Handler;

useApiWorld((started) => {
  ({ world } = started);
  api = checked(world.api());
});
beforeEach(async () => {
  await world.syncs.idle();
  await world.reset();
});

type Json = Record<string, unknown>;
const json = <T = Json>(r: { body: string }) => JSON.parse(r.body) as T;

/** A user known to the fake Amazon only (not yet in the database), with profiles in NA and EU. */
function amazonUser(profiles = { NA: 2, EU: 1 }) {
  const userId = randomUUID();
  const email = `${userId.slice(0, 8)}@example.com`;
  world.amazon.addUser({
    userId,
    refreshToken: `Atzr|before-consent-${userId}`,
    profiles: [
      ...Array.from({ length: profiles.NA }, () => fakeProfile('NA')),
      ...Array.from({ length: profiles.EU }, () => fakeProfile('EU')),
    ],
  });
  return { userId, email, token: world.token(userId, { email }) };
}

/** Session → consent at the fake Amazon as `amazonUserId` → connect. */
const connect = (token: string, region: string, amazonUserId: string) =>
  connectThroughConsent(api, token, amazonUserId, region);

async function tokenRow(userId: string, region: string) {
  const { rows } = await world.admin.query<{
    access_token: string;
    refresh_token: string;
    proactive_refresh_enabled: boolean;
    refresh_failure_count: number;
  }>(`SELECT * FROM oauth_tokens WHERE user_id = :u::uuid AND region = :r`, { u: userId, r: region });
  return rows[0];
}

/** The token refresh job, with every stored token due now. */
async function refreshEverythingDue() {
  await world.admin.query(`UPDATE oauth_tokens SET expires_at = now() + interval '5 minutes'`);
  return runTokenRefresh({ db: world.dataApi(), lwa: world.lwa(), cipher: world.cipher, ...runtimeFor(world) });
}

test('connect: code → tokens stored encrypted → first sync → accounts listed; the users row is created from the token', async () => {
  const u = amazonUser();
  const code = u.userId;
  const r = await connect(u.token, 'NA', code);
  expect(r.statusCode).toBe(201);
  expect(r.headers.location).toBe('/v1/connections/NA');
  expect(json(r)).toMatchObject({ region: 'NA', status: 'connected', lastError: null });
  expect(r.body).not.toMatch(/Atz[ar]\||enc:v[12]:/);

  const users = await world.admin.query(`SELECT email FROM users WHERE id = :u::uuid`, { u: u.userId });
  expect(users.rows).toEqual([{ email: u.email }]);
  const stored = await tokenRow(u.userId, 'NA');
  // enc:v2 under the ring's current key, bound to this row and column.
  expect(world.cipher.isCurrent(stored.access_token)).toBe(true);
  expect(world.cipher.isCurrent(stored.refresh_token)).toBe(true);
  const at = { userId: u.userId, region: 'NA' };
  expect(await world.cipher.decrypt(stored.refresh_token, oauthTokenBinding(at, 'refresh_token'))).toBe(
    world.amazon.currentRefreshToken(u.userId),
  );
  expect(world.amazon.accessTokens(u.userId)).toContain(
    await world.cipher.decrypt(stored.access_token, oauthTokenBinding(at, 'access_token')),
  );
  expect(stored.proactive_refresh_enabled).toBe(true);

  await world.syncs.idle();
  const accounts = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token })));
  expect(accounts.items).toHaveLength(2);
  expect(accounts.items.every((a) => a.region === 'NA' && a.syncStatus === 'completed' && a.status === 'active')).toBe(
    true,
  );
  const connections = json<{ items: Json[] }>(await api(request('GET', '/v1/connections', { token: u.token })));
  expect(connections.items).toEqual([
    expect.objectContaining({
      region: 'NA',
      status: 'connected',
      accounts: expect.objectContaining({ total: 2, completed: 2 }) as unknown,
      // The first sync ran before any account existed: its history row has no account, and
      // the specified policy shows history through accounts only.
      lastSync: null,
    }),
  ]);
  // A second region is a second connection; the first stays.
  expect((await connect(u.token, 'EU', u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  const regions = json<{ items: Json[] }>(await api(request('GET', '/v1/connections', { token: u.token }))).items.map(
    (c) => c.region,
  );
  expect(regions).toEqual(['EU', 'NA']);
});

test('a refused code is a 400 naming Amazon’s error; a state is single use; nothing is stored', async () => {
  const u = amazonUser();
  const session = await startConnectSession(api, u.token, 'NA');
  const bogus = await api(
    request('POST', '/v1/connections', {
      token: u.token,
      body: { region: 'NA', code: 'ANbogus', state: session.state },
    }),
  );
  expect(bogus.statusCode).toBe(400);
  expect(json(bogus)).toMatchObject({ amazonError: 'invalid_grant' });
  // The session is spent: a good code with its state is refused before Amazon is called.
  const { code } = await consent(session, u.userId);
  const calls = world.amazon.counters.authorizationCodeCalls();
  const again = await api(
    request('POST', '/v1/connections', { token: u.token, body: { region: 'NA', code, state: session.state } }),
  );
  expect(json(again)).toMatchObject({ status: 400, type: expect.stringContaining('invalid-connect-state') as unknown });
  expect(world.amazon.counters.authorizationCodeCalls()).toBe(calls);
  const { rows } = await world.admin.query(`SELECT 1 FROM oauth_tokens WHERE user_id = :u::uuid`, { u: u.userId });
  expect(rows).toEqual([]);
});

test('a new user without an email claim, or with another user’s email, is refused alike before Amazon is called', async () => {
  const u = amazonUser();
  const calls = world.amazon.counters.authorizationCodeCalls();
  const noEmail = await api(
    request('POST', '/v1/connections/sessions', {
      token: world.token(u.userId),
      body: { region: 'NA', redirectUri: 'https://app.example.com/amazon/callback' },
    }),
  );
  const [existing] = await seedApiUsers(world, [{ regions: ['NA'], accountsPerRegion: 1 }]);
  const clash = await api(
    request('POST', '/v1/connections/sessions', {
      token: world.token(u.userId, { email: existing.email }),
      body: { region: 'NA', redirectUri: 'https://app.example.com/amazon/callback' },
    }),
  );
  expect(noEmail.statusCode).toBe(403);
  expect(clash.statusCode).toBe(403);
  // One answer for both: it does not tell whether the address is registered.
  const { instance: _a, ...first } = json(noEmail);
  const { instance: _b, ...second } = json(clash);
  expect(second).toEqual(first);
  expect(clash.body).not.toContain(existing.email);
  expect(world.amazon.counters.authorizationCodeCalls()).toBe(calls);
  const users = await world.admin.query(`SELECT 1 FROM users WHERE id = :u::uuid`, { u: u.userId });
  expect(users.rows).toEqual([]);
});

test('reconnect after reauth_required restores refresh', async () => {
  const u = amazonUser();
  expect((await connect(u.token, 'NA', u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  world.amazon.revoke(u.userId);
  const failed = await refreshEverythingDue();
  expect(failed.reauthRequired).toBe(1);
  const before = json<{ items: Json[] }>(await api(request('GET', '/v1/connections', { token: u.token }))).items[0];
  expect(before.status).toBe('reauth_required');
  const flagged = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token }))).items;
  expect(flagged.every((a) => a.syncStatus === 'reauth_required')).toBe(true);

  const again = await connect(u.token, 'NA', u.userId);
  expect(again.statusCode).toBe(201);
  expect(json(again)).toMatchObject({ status: 'connected' });
  expect(await tokenRow(u.userId, 'NA')).toMatchObject({ proactive_refresh_enabled: true, refresh_failure_count: 0 });
  await world.syncs.idle();
  const synced = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token }))).items;
  expect(synced.map((a) => a.syncStatus)).toEqual(['completed', 'completed']);
  const refreshed = await refreshEverythingDue();
  expect(refreshed).toMatchObject({ refreshed: 1, reauthRequired: 0 });
});

test('disconnect: tokens gone, accounts inactive with a message, history kept, the next refresh run skips it; connecting again brings them back', async () => {
  const u = amazonUser();
  expect((await connect(u.token, 'NA', u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  expect((await api(request('POST', '/v1/syncs', { token: u.token }))).statusCode).toBe(202);
  await world.syncs.idle();
  const visible = async () =>
    json<{ items: Json[] }>(await api(request('GET', '/v1/sync-history', { token: u.token }))).items.length;
  const visibleBefore = await visible();
  expect(visibleBefore).toBe(1);
  const history = async () =>
    (await world.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM account_sync_history`)).rows[0].n;
  const historyBefore = await history();
  expect(historyBefore).toBeGreaterThan(0);
  const refreshToken = world.amazon.currentRefreshToken(u.userId);

  const r = await api(request('DELETE', '/v1/connections/NA', { token: u.token }));
  expect(r.statusCode).toBe(204);
  expect(await tokenRow(u.userId, 'NA')).toBeUndefined();
  const accounts = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token }))).items;
  expect(accounts).toHaveLength(2);
  expect(accounts.every((a) => a.status === 'inactive' && a.syncErrorMessage === DISCONNECTED_MESSAGE)).toBe(true);
  expect(await history()).toBe(historyBefore);
  expect(await visible()).toBe(visibleBefore);
  expect(json<{ items: Json[] }>(await api(request('GET', '/v1/connections', { token: u.token }))).items).toEqual([]);

  const callsBefore = world.amazon.counters.refreshCalls(refreshToken);
  const run = await refreshEverythingDue();
  expect(run.claimed).toBe(0);
  expect(world.amazon.counters.refreshCalls(refreshToken)).toBe(callsBefore);
  expect((await api(request('DELETE', '/v1/connections/NA', { token: u.token }))).statusCode).toBe(404);

  // Connecting again: the first sync decides what is active, as for a new connection (0021).
  expect((await connect(u.token, 'NA', u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  const back = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token }))).items;
  expect(back.map((a) => [a.status, a.syncStatus, a.syncErrorMessage])).toEqual([
    ['active', 'completed', null],
    ['active', 'completed', null],
  ]);
});

test('manual sync: 202 then synced; a second within 60 s is 429 with Retry-After and a row the caller reads', async () => {
  const u = amazonUser({ NA: 1, EU: 2 });
  expect((await connect(u.token, 'EU', u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  world.amazon.addProfiles(u.userId, [fakeProfile('EU')]);

  const first = await api(request('POST', '/v1/syncs', { token: u.token, body: {} }));
  expect(first.statusCode).toBe(202);
  expect(json(first)).toEqual({ status: 'accepted', regions: ['EU'] });
  await world.syncs.idle();
  const accounts = json<{ items: Json[] }>(await api(request('GET', '/v1/accounts', { token: u.token }))).items;
  expect(accounts).toHaveLength(3);
  expect(accounts.every((a) => a.syncStatus === 'completed')).toBe(true);

  const second = await api(request('POST', '/v1/syncs', { token: u.token }));
  expect(second.statusCode).toBe(429);
  const retryAfter = Number(second.headers['retry-after']);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);

  // The row, read by the caller through the seed's policy on rate_limit_tracking.
  const c = new Client({ connectionString: world.apiLoginUrl });
  await c.connect();
  try {
    await c.query('BEGIN');
    await c.query(`SELECT set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ sub: u.userId })]);
    const own = await c.query(
      `SELECT user_id, endpoint, request_count, limit_hit_count, retry_after_seconds FROM rate_limit_tracking
        WHERE endpoint = 'accounts-api:manual-sync'`,
    );
    expect(own.rows).toEqual([
      {
        user_id: u.userId,
        endpoint: 'accounts-api:manual-sync',
        request_count: 1,
        limit_hit_count: 1,
        retry_after_seconds: retryAfter,
      },
    ]);
    await c.query(`SELECT set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ sub: randomUUID() })]);
    expect((await c.query(`SELECT 1 FROM rate_limit_tracking`)).rows).toEqual([]);
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }

  // Without a connection in the region there is nothing to sync.
  const other = amazonUser();
  expect((await connect(other.token, 'NA', other.userId)).statusCode).toBe(201);
  expect((await api(request('POST', '/v1/syncs', { token: other.token, body: { region: 'FE' } }))).statusCode).toBe(
    409,
  );
});

test("a manual sync of one region syncs that region's connection only", async () => {
  const u = amazonUser({ NA: 1, EU: 2 });
  for (const region of ['NA', 'EU']) expect((await connect(u.token, region, u.userId)).statusCode).toBe(201);
  await world.syncs.idle();
  const calls = () => ({
    NA: world.amazon.counters.profileCalls(u.userId, 'NA'),
    EU: world.amazon.counters.profileCalls(u.userId, 'EU'),
  });
  const before = calls();

  const one = await api(request('POST', '/v1/syncs', { token: u.token, body: { region: 'EU' } }));
  expect(json(one)).toEqual({ status: 'accepted', regions: ['EU'] });
  await world.syncs.idle();
  expect(calls()).toEqual({ NA: before.NA, EU: before.EU + 1 });
});

test('a read costs one Data API call', async () => {
  const [a] = await seedApiUsers(world, [{ regions: ['NA', 'EU'], accountsPerRegion: 60 }]);
  const db = world.apiDataApi();
  const handle = checked(world.api({ db }));
  const token = world.token(a.userId);
  for (const path of ['/v1/accounts', `/v1/accounts/${a.accountIds[0]}`, '/v1/sync-history', '/v1/connections']) {
    const before = db.callCounts().total;
    expect((await handle(request('GET', path, { token }))).statusCode).toBe(200);
    expect([path, db.callCounts().total - before]).toEqual([path, 1]);
  }
});

test('node-postgres as a superuser still applies RLS (SET LOCAL ROLE accounts_api_caller per request)', async () => {
  const [a, b] = await seedApiUsers(world, [
    { regions: ['NA'], accountsPerRegion: 3 },
    { regions: ['NA', 'FE'], accountsPerRegion: 4 },
  ]);
  const superuser = new PgDatabase({ connection: world.url });
  try {
    const { rows } = await superuser.query<{ s: boolean }>(
      `SELECT rolsuper AS s FROM pg_roles WHERE rolname = current_user`,
    );
    expect(rows[0].s).toBe(true);
    const local = checked(world.api({ db: superuser, assumeAuthenticatedRole: true }));
    const token = world.token(a.userId);
    const listed = json<{ items: Json[] }>(await local(request('GET', '/v1/accounts', { token }))).items.map(
      (x) => x.id,
    );
    expect(listed.sort()).toEqual([...a.accountIds].sort());
    expect((await local(request('GET', `/v1/accounts/${b.accountIds[0]}`, { token }))).statusCode).toBe(404);
    expect((await local(request('DELETE', '/v1/connections/FE', { token }))).statusCode).toBe(404);
    expect(await tokenRow(b.userId, 'FE')).toBeDefined();
    const after = await superuser.query<{ claims: string | null; role: string }>(
      `SELECT current_setting('request.jwt.claims', true) AS claims, current_user AS role`,
    );
    expect(after.rows[0]).toEqual({ claims: expect.not.stringContaining(a.userId) as unknown, role: 'postgres' });
  } finally {
    await superuser.close();
  }
});
