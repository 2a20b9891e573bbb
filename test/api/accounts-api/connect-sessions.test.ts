import { createHash, randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { PgDatabase } from '../../../lambda/shared/db';
import { fakeProfile } from '../../../local/amazon/profiles';
import {
  ApiWorld,
  CONNECT_REDIRECT,
  connectThroughConsent,
  consent,
  Handler,
  request,
  useApiWorld,
  startConnectSession,
} from '../fixture';
import { checked } from '../openapi';
import { seedApiUsers } from '../seed';

// Connect sessions (issue 23, findings 2 and 7) on both database paths: the Data API as the
// API's login, and node-postgres as a superuser with `SET LOCAL ROLE authenticated`. An
// authorization code connects only with the state of a session of the caller's for that
// region, unexpired and unused, and only with that session's PKCE verifier; every refusal that
// can be decided here is decided before Amazon is called (the fake's authorization-code calls
// are counted); a user that cannot be created is refused alike whatever the reason.

let world: ApiWorld;
let superuser: PgDatabase;

useApiWorld((started) => {
  ({ world, superuser } = started);
});
beforeEach(async () => {
  await world.syncs.idle();
  await world.reset();
});

type Json = Record<string, unknown>;
const json = <T = Json>(r: { body: string }) => JSON.parse(r.body) as T;

const paths: Array<[string, () => Handler]> = [
  ['Data API', () => checked(world.api())],
  ['node-postgres', () => checked(world.api({ db: superuser, assumeAuthenticatedRole: true }))],
];

function amazonUser() {
  const userId = randomUUID();
  const email = `${userId.slice(0, 8)}@example.com`;
  world.amazon.addUser({ userId, refreshToken: `Atzr|before-${userId}`, profiles: [fakeProfile('NA')] });
  return { userId, email, token: world.token(userId, { email }) };
}

const exchanges = () => world.amazon.counters.authorizationCodeCalls();
const connectWith = (api: Handler, token: string, body: Json) =>
  api(request('POST', '/v1/connections', { token, body }));
const stored = async (userId: string) =>
  (await world.admin.query(`SELECT region FROM oauth_tokens WHERE user_id = :u::uuid`, { u: userId })).rows;

describe.each(paths)('%s', (_name, makeApi) => {
  let api: Handler;
  beforeAll(() => {
    api = makeApi();
  });

  test('the session: Amazon’s consent page with client id, scope, state and an S256 challenge; the state is 256 bits', async () => {
    const u = amazonUser();
    const session = await startConnectSession(api, u.token, 'EU');
    const url = new URL(session.authorizationUrl);
    expect(`${url.origin}${url.pathname}`).toBe(world.amazon.consentUrl.replace('{region}', 'EU'));
    expect(Object.fromEntries(url.searchParams)).toEqual({
      client_id: world.amazon.clientId,
      scope: 'advertising::campaign_management',
      response_type: 'code',
      redirect_uri: CONNECT_REDIRECT,
      state: session.state,
      code_challenge: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/) as unknown,
      code_challenge_method: 'S256',
    });
    expect(Buffer.from(session.state, 'base64url')).toHaveLength(32);
    const ttl = Date.parse(session.expiresAt) - Date.now();
    expect(ttl).toBeGreaterThan(5 * 60_000);
    expect(ttl).toBeLessThanOrEqual(10 * 60_000 + 5_000);
    // Kept as a digest and an encrypted verifier: neither the state nor the verifier is stored.
    const { rows } = await world.admin.query<{ state_digest: string; code_verifier: string; redirect_uri: string }>(
      `SELECT state_digest, code_verifier, redirect_uri FROM connect_sessions WHERE user_id = :u::uuid`,
      { u: u.userId },
    );
    expect(rows).toHaveLength(1);
    expect(rows[0].state_digest).not.toContain(session.state);
    // enc:v2 under the current key, bound to the caller's session for that region: the
    // verifier it holds is the one the challenge was made from.
    expect(world.cipher.isCurrent(rows[0].code_verifier)).toBe(true);
    const verifier = await world.cipher.decrypt(rows[0].code_verifier, {
      table: 'connect_sessions',
      userId: u.userId,
      region: 'EU',
      column: 'code_verifier',
    });
    expect(createHash('sha256').update(verifier).digest('base64url')).toBe(url.searchParams.get('code_challenge'));
    await expect(
      world.cipher.decrypt(rows[0].code_verifier, {
        table: 'connect_sessions',
        userId: u.userId,
        region: 'NA',
        column: 'code_verifier',
      }),
    ).rejects.toThrow(/failed authentication/);
    expect(rows[0].redirect_uri).toBe(CONNECT_REDIRECT);
  });

  test('session → consent → connect works; the code is exchanged with the session’s verifier', async () => {
    const u = amazonUser();
    const before = exchanges();
    const r = await connectThroughConsent(api, u.token, u.userId, 'NA');
    expect(r.statusCode).toBe(201);
    expect(exchanges()).toBe(before + 1);
    expect(await stored(u.userId)).toEqual([{ region: 'NA' }]);
  });

  test('a redirect URI outside the allow-list is refused', async () => {
    const u = amazonUser();
    const r = await api(
      request('POST', '/v1/connections/sessions', {
        token: u.token,
        body: { region: 'NA', redirectUri: 'https://attacker.example.net/cb' },
      }),
    );
    expect(r.statusCode).toBe(400);
    expect(json(r).detail).toMatch(/redirectUri/);
  });

  test('without a state, with another user’s, another region’s, an expired or a used one: 400 before Amazon is called', async () => {
    const victim = amazonUser();
    const attacker = amazonUser();
    const victimSession = await startConnectSession(api, victim.token, 'NA');
    const { code: victimCode } = await consent(victimSession, victim.userId);
    const before = exchanges();

    // No state, and the old body shape (a redirectUri of the caller's choosing).
    expect((await connectWith(api, attacker.token, { region: 'NA', code: victimCode })).statusCode).toBe(400);
    expect(
      (await connectWith(api, attacker.token, { region: 'NA', code: victimCode, redirectUri: CONNECT_REDIRECT }))
        .statusCode,
    ).toBe(400);
    // Another user's state (the victim's leaked redirect).
    const stolen = await connectWith(api, attacker.token, {
      region: 'NA',
      code: victimCode,
      state: victimSession.state,
    });
    expect(stolen.statusCode).toBe(400);
    expect(json(stolen).type).toMatch(/invalid-connect-state$/);
    // Another region's.
    const euSession = await startConnectSession(api, attacker.token, 'EU');
    expect(
      (await connectWith(api, attacker.token, { region: 'NA', code: victimCode, state: euSession.state })).statusCode,
    ).toBe(400);
    // Expired.
    const expiring = await startConnectSession(api, attacker.token, 'NA');
    await world.admin.query(
      `UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE user_id = :u::uuid AND region = 'NA'`,
      { u: attacker.userId },
    );
    expect(
      (await connectWith(api, attacker.token, { region: 'NA', code: victimCode, state: expiring.state })).statusCode,
    ).toBe(400);
    // A state that is not one at all.
    expect(
      (await connectWith(api, attacker.token, { region: 'NA', code: victimCode, state: 'x'.repeat(43) })).statusCode,
    ).toBe(400);
    expect(exchanges()).toBe(before);

    // The victim's session was not used up by those attempts: the victim connects with it.
    const own = await connectWith(api, victim.token, { region: 'NA', code: victimCode, state: victimSession.state });
    expect(own.statusCode).toBe(201);
    expect(exchanges()).toBe(before + 1);
    // Used: a second connect with the same state is refused before Amazon.
    const { code: second } = await consent(victimSession, victim.userId);
    const used = await connectWith(api, victim.token, { region: 'NA', code: second, state: victimSession.state });
    expect(used.statusCode).toBe(400);
    expect(exchanges()).toBe(before + 1);
    expect(await stored(attacker.userId)).toEqual([]);
    expect(await stored(victim.userId)).toEqual([{ region: 'NA' }]);
  });

  test('a code issued for another session’s PKCE challenge is refused by Amazon; nothing is stored', async () => {
    const victim = amazonUser();
    const attacker = amazonUser();
    const { code: victimCode } = await consent(await startConnectSession(api, victim.token, 'NA'), victim.userId);
    const own = await startConnectSession(api, attacker.token, 'NA');
    const r = await connectWith(api, attacker.token, { region: 'NA', code: victimCode, state: own.state });
    expect(r.statusCode).toBe(400);
    expect(json(r)).toMatchObject({ amazonError: 'invalid_grant' });
    expect(await stored(attacker.userId)).toEqual([]);
    expect(await stored(victim.userId)).toEqual([]);
  });

  test('no email claim, or another user’s email: one 403 for both, no user created, Amazon not called', async () => {
    const u = amazonUser();
    const before = exchanges();
    const [existing] = await seedApiUsers(world, [{ regions: ['NA'], accountsPerRegion: 1 }]);
    const session = (token: string) =>
      api(
        request('POST', '/v1/connections/sessions', { token, body: { region: 'NA', redirectUri: CONNECT_REDIRECT } }),
      );
    const noEmail = await session(world.token(u.userId));
    const taken = await session(world.token(u.userId, { email: existing.email }));
    expect([noEmail.statusCode, taken.statusCode]).toEqual([403, 403]);
    const strip = (r: { body: string }) => ({ ...json(r), instance: undefined });
    expect(strip(taken)).toEqual(strip(noEmail));
    expect(taken.body).not.toContain(existing.email);
    expect(exchanges()).toBe(before);
    expect((await world.admin.query(`SELECT 1 FROM users WHERE id = :u::uuid`, { u: u.userId })).rows).toEqual([]);
    // Without a session there is nothing to connect with.
    expect(
      (await connectWith(api, world.token(u.userId), { region: 'NA', code: 'ANx', state: 'y'.repeat(43) })).statusCode,
    ).toBe(400);
    expect(exchanges()).toBe(before);
  });

  test('sessions and connects are limited per user (recorded in rate_limit_tracking), refused before Amazon', async () => {
    const u = amazonUser();
    const other = amazonUser();
    const limited = checked(
      world.api({
        db: _name === 'Data API' ? undefined : superuser,
        assumeAuthenticatedRole: _name !== 'Data API',
        settings: {
          connectSessionLimit: { max: 3, windowSeconds: 600 },
          connectLimit: { max: 2, windowSeconds: 600 },
        },
      }),
    );
    const sessions = [];
    for (let i = 0; i < 3; i += 1) sessions.push(await startConnectSession(limited, u.token, 'NA'));
    const fourth = await limited(
      request('POST', '/v1/connections/sessions', {
        token: u.token,
        body: { region: 'NA', redirectUri: CONNECT_REDIRECT },
      }),
    );
    expect(fourth.statusCode).toBe(429);
    expect(Number(fourth.headers['retry-after'])).toBeGreaterThan(0);
    // Another user is not affected.
    await startConnectSession(limited, other.token, 'NA');

    const before = exchanges();
    for (const s of sessions.slice(0, 2))
      expect((await connectWith(limited, u.token, { region: 'NA', code: 'ANjunk', state: s.state })).statusCode).toBe(
        400,
      );
    expect(exchanges()).toBe(before + 2);
    const third = await connectWith(limited, u.token, { region: 'NA', code: 'ANjunk', state: sessions[2].state });
    expect(third.statusCode).toBe(429);
    expect(exchanges()).toBe(before + 2);
    const { rows } = await world.admin.query<{ endpoint: string; request_count: number; limit_hit_count: number }>(
      `SELECT endpoint, request_count, limit_hit_count FROM rate_limit_tracking WHERE user_id = :u::uuid ORDER BY 1`,
      { u: u.userId },
    );
    expect(rows).toEqual([
      { endpoint: 'accounts-api:connect', request_count: 2, limit_hit_count: 1 },
      { endpoint: 'accounts-api:connect-session', request_count: 3, limit_hit_count: 1 },
    ]);
  });
});

test('connect_sessions: no privilege for authenticated or anon; the functions are the API role’s only', async () => {
  const c = new Client({ connectionString: world.url });
  await c.connect();
  try {
    const { rows } = await c.query<{ grantee: string }>(
      `SELECT DISTINCT grantee FROM information_schema.role_table_grants WHERE table_name = 'connect_sessions'
        UNION SELECT DISTINCT grantee FROM information_schema.column_privileges WHERE table_name = 'connect_sessions'`,
    );
    const { rows: owner } = await c.query<{ owner: string }>(
      `SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'connect_sessions'`,
    );
    expect(rows.map((r) => r.grantee)).toEqual([owner[0].owner]);
    const { rows: rls } = await c.query(
      `SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'public.connect_sessions'::regclass`,
    );
    expect(rls).toEqual([{ relrowsecurity: true, relforcerowsecurity: true }]);
    const { rows: executors } = await c.query<{ fn: string; grantee: string }>(
      `SELECT p.proname AS fn, acl.grantee::regrole::text AS grantee
         FROM pg_proc p, aclexplode(p.proacl) acl
        WHERE p.pronamespace = 'api'::regnamespace
          AND p.proname IN ('create_connect_session', 'claim_connect_session', 'take_user_limit')
          AND acl.grantee <> p.proowner
        ORDER BY 1, 2`,
    );
    const apiRole = ((await c.query(`SELECT to_regrole('accounts_api_caller') IS NOT NULL AS present`)).rows[0]
      .present as boolean)
      ? 'accounts_api_caller'
      : 'authenticated';
    expect(executors).toEqual([
      { fn: 'claim_connect_session', grantee: apiRole },
      { fn: 'create_connect_session', grantee: apiRole },
    ]);
    await c.query('BEGIN');
    await c.query('SET LOCAL ROLE authenticated');
    await expect(c.query('SELECT code_verifier FROM connect_sessions')).rejects.toThrow(/permission denied/);
    await c.query('ROLLBACK');
  } finally {
    await c.end();
  }
});
