import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalApi, startLocalApi } from '../../../scripts/api';
import { JobWorld, RecordingLogger, seedUsers, useJobWorld } from '../../support/jobs';

// `npm run api` serves the internal token route only with INTERNAL_API_KEY, and then only to
// callers that send it in X-Internal-Api-Key: the local stand-in for IAM, which cannot be
// checked on this machine.

let world: JobWorld;
useJobWorld((w) => (world = w));

const KEY = 'local-internal-key-for-this-test';
let dir: string;
let api: LocalApi | undefined;
const logger = new RecordingLogger();

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'token-route-local-'));
});
afterEach(async () => {
  await api?.close();
  api = undefined;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function start(internalApiKey?: string) {
  return startLocalApi({
    databaseUrl: world.url,
    lwa: world.lwa(),
    ads: world.ads(),
    cipher: world.cipher,
    identityDir: dir,
    port: 0,
    logger,
    internalApiKey,
  });
}

function post(base: string, body: unknown, headers: Record<string, string> = {}) {
  return fetch(`${base}/internal/v1/access-tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

test('with INTERNAL_API_KEY: the right key gets a fresh token, no key or a wrong one gets 403', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 60, regions: () => ['NA'] });
  api = await start(KEY);
  expect(api.tokenRoute).toBe(true);
  const body = { userId: user.userId, region: 'NA' };

  expect((await post(api.url, body)).status).toBe(403);
  expect((await post(api.url, body, { 'x-internal-api-key': `${KEY}x` })).status).toBe(403);
  const ok = await post(api.url, body, { 'x-internal-api-key': KEY });
  expect(ok.status).toBe(200);
  expect(ok.headers.get('cache-control')).toBe('no-store');
  const served = (await ok.json()) as { accessToken: string; refreshed: boolean };
  expect(served.refreshed).toBe(true);
  expect(world.amazon.accessTokens(user.userId, 'NA')).toContain(served.accessToken);
  expect(logger.text()).not.toContain(served.accessToken);
  expect(logger.text()).not.toContain(KEY);
});

test('without INTERNAL_API_KEY the route is not served (404), whatever the caller sends', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 3600, regions: () => ['NA'] });
  api = await start();
  expect(api.tokenRoute).toBe(false);
  const response = await post(api.url, { userId: user.userId, region: 'NA' }, { 'x-internal-api-key': KEY });
  expect(response.status).toBe(404);
});
