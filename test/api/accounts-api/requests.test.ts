import { createPublicKey, generateKeyPairSync, randomUUID } from 'node:crypto';
import { createTokenVerifier, Unauthenticated } from '../../../lambda/accounts-api/jwt';
import { ephemeralIssuer } from '../../../local/identity/issuer';
import { signJwt } from '../../../local/identity/sign';
import { ApiWorld, Handler, request, useApiWorld } from '../fixture';
import { checked } from '../openapi';
import { SeededUser, seedApiUsers } from '../seed';

// Sign-in (every 401), request validation (every 400/413/415), paging and filters, on the
// Data API path as accounts_api; every response checked against docs/openapi.yaml.

let world: ApiWorld;
let api: Handler;
let a: SeededUser;
let b: SeededUser;
let tokenA: string;

useApiWorld(async (started) => {
  ({ world } = started);
  [a, b] = await seedApiUsers(world, [
    { regions: ['NA', 'EU', 'FE'], accountsPerRegion: 11, historyPerAccount: 2 },
    { regions: ['NA'], accountsPerRegion: 5 },
  ]);
  // Manual syncs are only recorded here (the connection tests run them).
  api = checked(world.api({ syncs: { start: () => Promise.resolve() } }));
  tokenA = world.token(a.userId, { email: a.email });
});

type Page = { items: Array<Record<string, unknown>>; nextCursor: string | null };
const body = <T = Page>(r: { body: string }) => JSON.parse(r.body) as T;

describe('sign-in', () => {
  const now = () => Math.floor(Date.now() / 1000);
  const claims = (over: Record<string, unknown> = {}) => ({
    iss: world.issuer.issuer,
    aud: world.issuer.audience,
    sub: a.userId,
    iat: now(),
    exp: now() + 600,
    ...over,
  });
  const es256 = (payload: Record<string, unknown>, kid = world.issuer.kid, key = world.issuer.privateKey) =>
    signJwt(payload, { alg: 'ES256', key, kid });

  const cases: Array<[string, () => Record<string, string>]> = [
    ['no Authorization header', () => ({})],
    ['a Basic header', () => ({ authorization: 'Basic dXNlcjpwYXNz' })],
    ['Bearer without a token', () => ({ authorization: 'Bearer ' })],
    ['not a JWT', () => ({ authorization: 'Bearer not.a.jwt!' })],
    ['expired', () => ({ authorization: `Bearer ${es256(claims({ exp: now() - 5, iat: now() - 700 }))}` })],
    ['not yet valid (nbf)', () => ({ authorization: `Bearer ${es256(claims({ nbf: now() + 300 }))}` })],
    ['without exp', () => ({ authorization: `Bearer ${es256(claims({ exp: undefined }))}` })],
    ['wrong issuer', () => ({ authorization: `Bearer ${es256(claims({ iss: 'https://evil.example.com' }))}` })],
    ['wrong audience', () => ({ authorization: `Bearer ${es256(claims({ aud: 'another-api' }))}` })],
    ['alg none', () => ({ authorization: `Bearer ${signJwt(claims(), { alg: 'none', kid: world.issuer.kid })}` })],
    [
      'a symmetric algorithm (HS256)',
      () => ({
        authorization: `Bearer ${signJwt(claims(), { alg: 'HS256', key: Buffer.from(JSON.stringify(world.issuer.jwks.keys[0])), kid: world.issuer.kid })}`,
      }),
    ],
    [
      'a bad signature (payload changed after signing)',
      () => {
        const [h, , s] = world.token(a.userId).split('.');
        const forged = Buffer.from(JSON.stringify(claims({ sub: b.userId }))).toString('base64url');
        return { authorization: `Bearer ${h}.${forged}.${s}` };
      },
    ],
    [
      'signed by another key under the known kid',
      () => ({ authorization: `Bearer ${es256(claims(), world.issuer.kid, ephemeralIssuer().privateKey)}` }),
    ],
    [
      'an unknown key id',
      () => ({ authorization: `Bearer ${es256(claims(), 'unknown-kid', ephemeralIssuer().privateKey)}` }),
    ],
    ['a sub that is not a uuid', () => ({ authorization: `Bearer ${es256(claims({ sub: 'user-42' }))}` })],
  ];

  test.each(cases)('%s → 401 without saying why', async (_, headers) => {
    const r = await api({ ...request('GET', '/v1/accounts'), headers: headers() });
    expect(r.statusCode).toBe(401);
    expect(r.headers['www-authenticate']).toBe('Bearer');
    const p = body<Record<string, unknown>>(r);
    expect({ ...p, instance: undefined }).toEqual({
      type: 'https://accounts-api.invalid/problems/unauthorized',
      title: 'Unauthorized',
      status: 401,
      detail: 'A valid bearer token is required.',
      instance: undefined,
    });
  });

  test('every route needs the token, and a 401 comes before any validation', async () => {
    for (const [method, path] of [
      ['GET', '/v1/accounts?limit=0'],
      ['GET', `/v1/accounts/${a.accountIds[0]}`],
      ['GET', `/v1/accounts/${a.accountIds[0]}/sync-history`],
      ['GET', '/v1/sync-history'],
      ['GET', '/v1/connections'],
      ['POST', '/v1/connections'],
      ['DELETE', '/v1/connections/NA'],
      ['POST', '/v1/syncs'],
    ]) {
      const [p, q] = path.split('?');
      const r = await api(request(method, p, { rawQuery: q, rawBody: 'not json', contentType: 'text/plain' }));
      expect([method, path, r.statusCode]).toEqual([method, path, 401]);
    }
  });

  test('an unknown key id makes the verifier fetch the JWKS again (then refuses)', async () => {
    const fresh = world.api();
    expect((await fresh(request('GET', '/v1/accounts', { token: tokenA }))).statusCode).toBe(200);
    const before = world.jwksDownloads();
    const r = await fresh(
      request('GET', '/v1/accounts', { token: es256(claims(), 'rotated-kid', ephemeralIssuer().privateKey) }),
    );
    expect(r.statusCode).toBe(401);
    expect(world.jwksDownloads()).toBeGreaterThan(before);
  });

  test('RS256, ES256 and EdDSA tokens from keys in the JWKS are accepted; the same key with HS256 is not', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const ed = generateKeyPairSync('ed25519').privateKey;
    const es = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const jwk = (key: typeof rsa, kid: string, alg: string) => ({
      ...createPublicKey(key).export({ format: 'jwk' }),
      kid,
      alg,
      use: 'sig',
    });
    const verifier = createTokenVerifier({
      issuer: 'https://id.example.com',
      audience: ['web', 'accounts-api'],
      jwksUrl: world.jwksUrl,
      jwks: { keys: [jwk(rsa, 'r1', 'RS256'), jwk(ed, 'e1', 'EdDSA'), jwk(es, 'p1', 'ES256')] },
    });
    const payload = {
      iss: 'https://id.example.com',
      aud: 'accounts-api',
      sub: a.userId,
      exp: now() + 60,
      email: 'x@example.com',
    };
    for (const [alg, key, kid] of [
      ['RS256', rsa, 'r1'],
      ['EdDSA', ed, 'e1'],
      ['ES256', es, 'p1'],
    ] as const)
      await expect(verifier.verify(signJwt(payload, { alg, key, kid }))).resolves.toEqual({
        userId: a.userId,
        email: 'x@example.com',
      });
    await expect(
      verifier.verify(signJwt(payload, { alg: 'HS256', key: Buffer.from('secret'), kid: 'r1' })),
    ).rejects.toBeInstanceOf(Unauthenticated);
  });
});

describe('requests the API refuses', () => {
  const get = (path: string, rawQuery = '') => api(request('GET', path, { token: tokenA, rawQuery }));

  test.each([
    ['limit=0'],
    ['limit=101'],
    ['limit=x'],
    ['limit=-1'],
    ['limit=1.5'],
    ['accountType=robot'],
    ['region=US'],
    ['status=deleted'],
    ['syncStatus=done'],
    ['countryCode=usa'],
    ['marketplace='],
    ['sort=name'],
    ['limit=5&limit=6'],
    ['cursor=abc'],
  ])('GET /v1/accounts?%s → 400', async (query) => {
    const r = await get('/v1/accounts', query);
    expect(r.statusCode).toBe(400);
    expect(r.headers['content-type']).toBe('application/problem+json');
  });

  test('history limits are checked too', async () => {
    for (const q of ['limit=0', 'limit=101', 'limit=x', 'region=NA'])
      expect((await get('/v1/sync-history', q)).statusCode).toBe(400);
  });

  test('an altered cursor, or one from other filters or another listing, is a 400', async () => {
    const first = body(await get('/v1/accounts', 'limit=2&region=NA'));
    const cursor = first.nextCursor!;
    expect(cursor).toEqual(expect.any(String));
    expect((await get('/v1/accounts', `limit=2&region=NA&cursor=${cursor}`)).statusCode).toBe(200);
    const [payload, sum] = cursor.split('.');
    const decoded = JSON.parse(Buffer.from(payload, 'base64url').toString()) as { k: string[] };
    decoded.k[0] = '0';
    const altered = `${Buffer.from(JSON.stringify(decoded)).toString('base64url')}.${sum}`;
    const flipped = `${cursor.slice(0, 5)}${cursor[5] === 'A' ? 'B' : 'A'}${cursor.slice(6)}`;
    for (const bad of [altered, flipped, cursor.slice(0, -1), `${cursor}x`])
      expect((await get('/v1/accounts', `limit=2&region=NA&cursor=${encodeURIComponent(bad)}`)).statusCode).toBe(400);
    expect((await get('/v1/accounts', `limit=2&region=EU&cursor=${cursor}`)).statusCode).toBe(400);
    expect((await get('/v1/accounts', `limit=2&cursor=${cursor}`)).statusCode).toBe(400);
    expect((await get('/v1/sync-history', `limit=2&cursor=${cursor}`)).statusCode).toBe(400);
    const historyCursor = body(await get('/v1/sync-history', 'limit=1')).nextCursor!;
    expect((await get(`/v1/accounts/${a.accountIds[0]}/sync-history`, `cursor=${historyCursor}`)).statusCode).toBe(400);
  });

  test('bodies: wrong content type 415, over 64 KB 413, malformed or wrong shape 400', async () => {
    const post = (path: string, rawBody: string | undefined, contentType?: string) =>
      api(request('POST', path, { token: tokenA, rawBody, contentType }));
    for (const path of ['/v1/connections', '/v1/syncs']) {
      expect((await post(path, '{"region":"NA"}', 'text/plain')).statusCode).toBe(415);
      expect((await post(path, 'region=NA', 'application/x-www-form-urlencoded')).statusCode).toBe(415);
      expect((await post(path, JSON.stringify({ region: 'NA', pad: 'x'.repeat(64 * 1024) }))).statusCode).toBe(413);
      expect((await post(path, '{"region":')).statusCode).toBe(400);
      expect((await post(path, '[1,2]')).statusCode).toBe(400);
      expect((await post(path, '{"region":"XX"}')).statusCode).toBe(400);
      expect((await post(path, '{"region":"NA","extra":true}')).statusCode).toBe(400);
    }
    expect((await post('/v1/connections', '{"region":"NA"}')).statusCode).toBe(400);
    expect(
      (await post('/v1/connections', JSON.stringify({ region: 'NA', code: 'c', redirectUri: 'javascript:alert(1)' })))
        .statusCode,
    ).toBe(400);
    expect(
      (await post('/v1/connections', JSON.stringify({ region: 'NA', code: 5, redirectUri: 'https://x' }))).statusCode,
    ).toBe(400);
    expect((await post('/v1/syncs', '{"region":7}')).statusCode).toBe(400);
    expect(
      (
        await api(
          request('POST', '/v1/syncs', {
            token: tokenA,
            rawBody: '{}',
            contentType: 'application/json; charset=utf-8',
          }),
        )
      ).statusCode,
    ).not.toBe(415);
  });

  test('unknown routes are 404, known paths with another method 405, bad path values 400/404', async () => {
    expect((await get('/v1/unknown')).statusCode).toBe(404);
    expect((await api(request('PUT', '/v1/accounts', { token: tokenA }))).statusCode).toBe(405);
    expect((await get('/v1/accounts/not-a-uuid')).statusCode).toBe(404);
    expect((await get('/v1/accounts/not-a-uuid/sync-history')).statusCode).toBe(404);
    expect((await get(`/v1/accounts/${randomUUID()}`)).statusCode).toBe(404);
    expect((await api(request('DELETE', '/v1/connections/US', { token: tokenA }))).statusCode).toBe(400);
    expect((await get('/health')).statusCode).toBe(200);
  });
});

describe('reading', () => {
  test('SQL text in filters is data', async () => {
    for (const marketplace of [
      "x' OR '1'='1",
      "'); DROP TABLE user_accounts; --",
      '{"accountType":"seller"}',
      '%',
      '\\',
    ]) {
      const r = await api(request('GET', '/v1/accounts', { token: tokenA, query: { marketplace } }));
      expect([marketplace, r.statusCode, body(r).items.length]).toEqual([marketplace, 200, 0]);
    }
    const { rows } = await world.admin.query<{ n: number }>(`SELECT count(*)::int AS n FROM user_accounts`);
    expect(rows[0].n).toBe(a.accountIds.length + b.accountIds.length);
  });

  test('paging walks every account once, in profile id order, with the filters kept', async () => {
    const walk = async (query: Record<string, string>) => {
      const seen: Array<Record<string, unknown>> = [];
      let cursor: string | null = null;
      do {
        const r = await api(
          request('GET', '/v1/accounts', { token: tokenA, query: { ...query, ...(cursor ? { cursor } : {}) } }),
        );
        expect(r.statusCode).toBe(200);
        const page = body(r);
        expect(page.items.length).toBeLessThanOrEqual(Number(query.limit));
        seen.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor);
      return seen;
    };
    const all = await walk({ limit: '7' });
    expect(all.map((x) => x.id).sort()).toEqual([...a.accountIds].sort());
    const ids = all.map((x) => x.amazonAccountId as string);
    expect(ids).toEqual([...ids].sort());
    const eu = await walk({ limit: '4', region: 'EU', accountType: 'vendor' });
    expect(eu.length).toBeGreaterThan(0);
    expect(eu.every((x) => x.region === 'EU' && x.accountType === 'vendor')).toBe(true);
    const { rows } = await world.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM user_accounts WHERE user_id = :u::uuid AND region = 'EU' AND metadata->>'accountType' = 'vendor'`,
      { u: a.userId },
    );
    expect(eu).toHaveLength(rows[0].n);
    const byMarket = await walk({ limit: '50', marketplace: 'A1PA6795UKMFR9', countryCode: 'DE' });
    expect(byMarket.length).toBeGreaterThan(0);
    expect(byMarket.every((x) => x.marketplaceStringId === 'A1PA6795UKMFR9' && x.countryCode === 'DE')).toBe(true);
    const defaultPage = body(await api(request('GET', '/v1/accounts', { token: tokenA })));
    expect(defaultPage.items).toHaveLength(Math.min(50, a.accountIds.length));
  });

  test('history is newest first and pages without gaps; an account’s history is only its own', async () => {
    const seen: Array<Record<string, unknown>> = [];
    let cursor: string | null = null;
    do {
      const page: Page = body(
        await api(
          request('GET', '/v1/sync-history', { token: tokenA, query: { limit: '9', ...(cursor ? { cursor } : {}) } }),
        ),
      );
      seen.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor);
    expect(seen.map((h) => h.id).sort()).toEqual([...a.historyIds].sort());
    const started = seen.map((h) => Date.parse(h.startedAt as string));
    expect(started).toEqual([...started].sort((x, y) => y - x));
    const one = body(await api(request('GET', `/v1/accounts/${a.accountIds[3]}/sync-history`, { token: tokenA })));
    expect(one.items.length).toBe(2);
    expect(one.items.every((h) => h.accountId === a.accountIds[3])).toBe(true);
  });

  test('an account of another user is 404, as is its history', async () => {
    expect((await api(request('GET', `/v1/accounts/${b.accountIds[0]}`, { token: tokenA }))).statusCode).toBe(404);
    expect(
      (await api(request('GET', `/v1/accounts/${b.accountIds[0]}/sync-history`, { token: tokenA }))).statusCode,
    ).toBe(404);
    const mine = await api(request('GET', `/v1/accounts/${b.accountIds[0]}`, { token: world.token(b.userId) }));
    expect(mine.statusCode).toBe(200);
  });

  test('a user unknown to the database sees nothing (200, empty), and no request logs a token', async () => {
    const stranger = world.token(randomUUID());
    expect(body(await api(request('GET', '/v1/accounts', { token: stranger }))).items).toEqual([]);
    expect(body(await api(request('GET', '/v1/connections', { token: stranger }))).items).toEqual([]);
    const logged = world.logger.text();
    expect(logged).not.toContain(tokenA.split('.')[2]);
    expect(logged).not.toMatch(/Atz[ar]\||enc:v[12]:/);
  });
});
