import { ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseTokenArgs } from '../../../scripts/token';
import { ApiWorld, startApiWorld } from '../../api/fixture';
import { seedApiUsers } from '../../api/seed';
import { ROOT } from '../../support/root';

// `npm run api` and `npm run token` as the README shows them: the API on DATABASE_URL (here
// the database owner, a superuser) with the local issuer, a token from `npm run token`, curl.

const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
let world: ApiWorld;
let local: string;
let server: ChildProcess | undefined;

beforeAll(async () => {
  world = await startApiWorld();
  local = mkdtempSync(join(tmpdir(), 'accounts-api-'));
});
afterAll(async () => {
  server?.kill('SIGTERM');
  await world?.close();
  rmSync(local, { recursive: true, force: true });
});

test('npm run token validates its arguments', () => {
  expect(() => parseTokenArgs(['--sub', 'nope'])).toThrow(/Usage/);
  expect(() => parseTokenArgs(['--sub', '0b7e4bde-62c8-4cb4-9f61-5f2c1b7a3f10', '--expires-in', '0'])).toThrow(/Usage/);
  expect(parseTokenArgs(['--sub', '0B7E4BDE-62C8-4CB4-9F61-5F2C1B7A3F10', '--email', 'a@b.c'])).toEqual({
    sub: '0b7e4bde-62c8-4cb4-9f61-5f2c1b7a3f10',
    email: 'a@b.c',
    expiresInSeconds: 3600,
  });
});

test('npm run api serves the API under RLS for a token from npm run token; /.well-known/jwks.json is the local issuer’s', async () => {
  const [a, b] = await seedApiUsers(world, [
    { regions: ['NA', 'EU'], accountsPerRegion: 3 },
    { regions: ['NA'], accountsPerRegion: 2 },
  ]);
  const env = {
    ...process.env,
    ACCOUNTS_LOCAL_DIR: local,
    DATABASE_URL: world.url,
    PORT: '0',
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    ADS_API_URL: world.amazon.adsBaseUrl,
    LWA_CLIENT_ID: world.amazon.clientId,
    LWA_CLIENT_SECRET: world.amazon.clientSecret,
    TOKEN_ENCRYPTION_KEY: world.keyBase64,
    API_JWT_ISSUER: '',
    API_JWT_AUDIENCE: '',
  };
  const { stdout: token } = await promisify(execFile)(
    TSX,
    ['scripts/token.ts', '--sub', a.userId, '--email', a.email],
    {
      cwd: ROOT,
      env,
    },
  );
  expect(token.trim()).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  server = spawn(TSX, ['scripts/api.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const firstLine = await new Promise<string>((resolve, reject) => {
    let out = '';
    server!.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('\n')) resolve(out.split('\n')[0]);
    });
    server!.once('exit', (code) => reject(new Error(`npm run api exited with ${code}`)));
  });
  const match = /^Accounts API on (http:\/\/127\.0\.0\.1:\d+)$/.exec(firstLine);
  expect(match).not.toBeNull();
  const base = match![1];
  const list = await fetch(`${base}/v1/accounts`, { headers: { authorization: `Bearer ${token.trim()}` } });
  expect(list.status).toBe(200);
  const items = ((await list.json()) as { items: Array<{ id: string }> }).items.map((x) => x.id).sort();
  expect(items).toEqual([...a.accountIds].sort());
  const other = await fetch(`${base}/v1/accounts/${b.accountIds[0]}`, {
    headers: { authorization: `Bearer ${token.trim()}` },
  });
  expect(other.status).toBe(404);
  expect((await fetch(`${base}/v1/accounts`)).status).toBe(401);
  const jwks = (await (await fetch(`${base}/.well-known/jwks.json`)).json()) as { keys: Array<{ alg: string }> };
  expect(jwks.keys.map((k) => k.alg)).toEqual(['ES256']);
  const big = await fetch(`${base}/v1/syncs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token.trim()}`, 'content-type': 'application/json' },
    body: JSON.stringify({ pad: 'x'.repeat(70_000) }),
  });
  expect(big.status).toBe(413);
});
