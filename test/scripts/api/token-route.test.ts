import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgDatabase } from '../../../lambda/shared/db';
import { TOKEN_ROUTE } from '../../../lambda/token-route/route';
import { LocalApi, localLwaClients, startLocalApi } from '../../../scripts/api';
import { pollUntil } from '../../support/poll';
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
  const from = logger.lines.length;

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
  // Each request's log line names the caller as the shared secret identified it.
  const lines = logger.lines.slice(from).filter((l) => l.message === 'request' && l.attributes?.route === TOKEN_ROUTE);
  expect(lines.map((l) => [l.attributes?.status, l.attributes?.caller])).toEqual([
    [403, undefined],
    [403, undefined],
    [200, 'local shared secret'],
  ]);
});

test('without INTERNAL_API_KEY the route is not served (404), whatever the caller sends', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 3600, regions: () => ['NA'] });
  api = await start();
  expect(api.tokenRoute).toBe(false);
  const response = await post(api.url, { userId: user.userId, region: 'NA' }, { 'x-internal-api-key': KEY });
  expect(response.status).toBe(404);
});

test("npm run api's LWA clients: the token route's 429s are recorded in rate_limit_tracking, as the deployed route's are; the accounts API's are not", async () => {
  const budgetDb = new PgDatabase({ connection: world.url, maxConnections: 2 });
  try {
    const clients = localLwaClients(
      {
        lwaClientId: world.amazon.clientId,
        lwaClientSecret: world.amazon.clientSecret,
        lwaTokenUrl: world.amazon.lwaTokenUrl,
        amazonLimits: { lwa: 10, ads: 5 },
      },
      budgetDb,
    );
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 5 }, 'lwa');
    // Each in its own region: the first one's pause would hold the other back.
    const throttledIn = async (client: typeof clients.api, region: 'EU' | 'FE') => {
      await expect(
        client.refresh({ itemId: 'i', region, refreshToken: `Atzr|unknown-${region}`, maxWaitMs: 5_000 }),
      ).rejects.toMatchObject({ name: 'RateLimitedError' });
      // The report goes out without holding the answer back: wait for it to land.
      await pollUntil(
        async () =>
          (
            await world.admin.query<{ n: string }>(
              `SELECT throttled_count::text AS n FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = :region`,
              { region },
            )
          ).rows,
        (rows) => rows[0]?.n === '1',
        { timeoutMs: 10_000 },
      );
      const { rows } = await world.admin.query<{ limit_hit_count: number }>(
        `SELECT limit_hit_count FROM rate_limit_tracking WHERE endpoint = :endpoint AND user_id IS NULL`,
        { endpoint: `lwa-token:${region}` },
      );
      return rows.map((r) => r.limit_hit_count);
    };
    expect(await throttledIn(clients.api, 'EU')).toEqual([]);
    expect(await throttledIn(clients.tokenRoute, 'FE')).toEqual([1]);
  } finally {
    world.amazon.setKnobs({ rate429: 0 }, 'lwa');
    await budgetDb.close();
  }
});
