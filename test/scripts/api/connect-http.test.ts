import { ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as connectSocket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeProfile } from '../../../local/amazon/profiles';
import { ApiWorld, CONNECT_REDIRECT, consent, startApiWorld } from '../../api/fixture';
import { ROOT } from '../../support/root';

// Issue 23 over HTTP, against `npm run api` as a developer runs it (DATABASE_URL the database
// owner, Amazon the fake at LWA_TOKEN_URL / LWA_AUTHORIZE_URL, CONNECT_REDIRECT_URIS):
// - the whole session → consent (the fake's /ap/oa redirect) → connect flow works;
// - a connect without a state, with another user's, an expired or a used one, or with a code
//   whose PKCE challenge is another session's, is refused, and the first four before Amazon
//   is called (the fake's authorization-code calls are counted);
// - (finding 8) a client that aborts a body mid-upload or sends a malformed request does not
//   bring the server down; every answer carries X-Content-Type-Options: nosniff.

const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
let world: ApiWorld;
let local: string;
let server: ChildProcess | undefined;
let base: string;
let exited: number | null | undefined;

beforeAll(async () => {
  world = await startApiWorld();
  local = mkdtempSync(join(tmpdir(), 'accounts-api-'));
  const env = {
    ...process.env,
    ACCOUNTS_LOCAL_DIR: local,
    DATABASE_URL: world.url,
    PORT: '0',
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    LWA_AUTHORIZE_URL: world.amazon.consentUrl,
    ADS_API_URL: world.amazon.adsBaseUrl,
    LWA_CLIENT_ID: world.amazon.clientId,
    LWA_CLIENT_SECRET: world.amazon.clientSecret,
    TOKEN_ENCRYPTION_KEY: world.keyBase64,
    API_JWT_ISSUER: world.issuer.issuer,
    API_JWT_AUDIENCE: [world.issuer.audience].flat().join(','),
    API_JWKS_URL: world.jwksUrl,
    CONNECT_REDIRECT_URIS: `${CONNECT_REDIRECT},http://localhost:3000/amazon/callback`,
  };
  server = spawn(TSX, ['scripts/api.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  server.once('exit', (code) => (exited = code));
  server.stderr!.resume();
  const firstLine = await new Promise<string>((resolve, reject) => {
    let out = '';
    server!.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    server!.once('exit', (code) => reject(new Error(`npm run api exited with ${code}`)));
  });
  base = /^Accounts API on (http:\/\/127\.0\.0\.1:\d+)$/.exec(firstLine)![1];
});
afterAll(async () => {
  server?.kill('SIGTERM');
  await world?.close();
  rmSync(local, { recursive: true, force: true });
});

function amazonUser() {
  const userId = randomUUID();
  world.amazon.addUser({ userId, refreshToken: `Atzr|before-${userId}`, profiles: [fakeProfile('NA')] });
  return { userId, token: world.token(userId, { email: `${userId.slice(0, 8)}@example.com` }) };
}

async function post(path: string, token: string, body: unknown) {
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, headers: r.headers, body: (await r.json()) as Record<string, unknown> };
}

async function session(token: string, region = 'NA') {
  const r = await post('/v1/connections/sessions', token, { region, redirectUri: CONNECT_REDIRECT });
  expect(r.status).toBe(201);
  return r.body as { authorizationUrl: string; state: string; expiresAt: string };
}

const exchanges = () => world.amazon.counters.authorizationCodeCalls();

test('session → consent at the fake Amazon → connect: connected, answers carry nosniff', async () => {
  const u = amazonUser();
  const s = await session(u.token);
  expect(s.authorizationUrl.startsWith(world.amazon.consentUrl.replace('{region}', 'NA'))).toBe(true);
  const { code, state, redirect } = await consent(s, u.userId);
  expect(`${redirect.origin}${redirect.pathname}`).toBe(CONNECT_REDIRECT);
  expect(state).toBe(s.state);
  const before = exchanges();
  const r = await post('/v1/connections', u.token, { region: 'NA', code, state });
  expect(r.status).toBe(201);
  expect(r.body).toMatchObject({ region: 'NA', status: 'connected' });
  expect(r.headers.get('x-content-type-options')).toBe('nosniff');
  expect(exchanges()).toBe(before + 1);
  const listed = await fetch(`${base}/v1/connections`, { headers: { authorization: `Bearer ${u.token}` } });
  expect(listed.headers.get('x-content-type-options')).toBe('nosniff');
  expect(((await listed.json()) as { items: Array<{ region: string }> }).items.map((c) => c.region)).toEqual(['NA']);
});

test('no state, another user’s, expired, used: refused before Amazon; another session’s PKCE challenge: refused by Amazon', async () => {
  const victim = amazonUser();
  const attacker = amazonUser();
  const victimSession = await session(victim.token);
  const { code } = await consent(victimSession, victim.userId);
  const before = exchanges();

  expect((await post('/v1/connections', attacker.token, { region: 'NA', code })).status).toBe(400);
  expect(
    (await post('/v1/connections', attacker.token, { region: 'NA', code, redirectUri: CONNECT_REDIRECT })).status,
  ).toBe(400);
  expect(
    (await post('/v1/connections', attacker.token, { region: 'NA', code, state: victimSession.state })).status,
  ).toBe(400);
  const expiring = await session(attacker.token);
  await world.admin.query(
    `UPDATE connect_sessions SET expires_at = now() - interval '1 second' WHERE user_id = :u::uuid`,
    {
      u: attacker.userId,
    },
  );
  expect((await post('/v1/connections', attacker.token, { region: 'NA', code, state: expiring.state })).status).toBe(
    400,
  );
  expect(exchanges()).toBe(before);

  // A code issued for the victim's challenge, with the attacker's own fresh session: Amazon refuses it.
  const own = await session(attacker.token);
  const mismatch = await post('/v1/connections', attacker.token, { region: 'NA', code, state: own.state });
  expect(mismatch.status).toBe(400);
  expect(mismatch.body.amazonError).toBe('invalid_grant');
  expect(exchanges()).toBe(before + 1);
  // …and now used: refused before Amazon.
  expect((await post('/v1/connections', attacker.token, { region: 'NA', code, state: own.state })).status).toBe(400);
  expect(exchanges()).toBe(before + 1);
  const { rows } = await world.admin.query(`SELECT 1 FROM oauth_tokens WHERE user_id = :u::uuid`, {
    u: attacker.userId,
  });
  expect(rows).toEqual([]);
});

/** Sends raw bytes on a new connection; resolves with whatever came back once it closes (or after 2 s). */
function raw(bytes: string, options: { destroyAfterWrite?: boolean } = {}): Promise<string> {
  const { port, hostname } = new URL(base);
  return new Promise((resolve) => {
    let answer = '';
    const socket = connectSocket(Number(port), hostname, () => {
      socket.write(bytes);
      if (options.destroyAfterWrite) {
        socket.destroy();
        resolve('');
      }
    });
    socket.on('data', (chunk: Buffer) => (answer += chunk.toString()));
    socket.on('error', () => resolve(answer));
    socket.on('close', () => resolve(answer));
    setTimeout(() => {
      socket.destroy();
      resolve(answer);
    }, 2000);
  });
}

test('aborted uploads and malformed requests do not bring npm run api down', async () => {
  const u = amazonUser();
  const head = (length: number) =>
    `POST /v1/connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${u.token}\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`;
  for (let i = 0; i < 5; i += 1) {
    await raw(`${head(5000)}{"region":"NA","co`, { destroyAfterWrite: true });
    await raw(`${head(200_000)}${'x'.repeat(70_000)}`, { destroyAfterWrite: true });
  }
  expect(await raw('GARBAGE\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
  expect(await raw('GET /%%% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 4\d\d/);
  expect(await raw('GET /v1/accounts HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n')).toMatch(/^HTTP\/1\.1 400/);
  // Still up, still answering.
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(exited).toBeUndefined();
  const health = await fetch(`${base}/health`);
  expect(health.status).toBe(200);
  expect(health.headers.get('x-content-type-options')).toBe('nosniff');
});
