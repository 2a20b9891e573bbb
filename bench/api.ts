/**
 * The accounts API in `npm run bench` (also alone: `npx tsx bench/api.ts`): `GET /v1/accounts`
 * with 50 items through the API's core (the Lambda handler's code path) on the Data API path
 * (DataApiDatabase → @aws-sdk/client-rds-data → the Data API emulator signed in as
 * `accounts_api` → PostgreSQL 17, under RLS), at 1 and 16 requests in flight: requests per
 * second, p50 and p95 latency, Data API calls per request. Next to it, the same statement
 * (the same `api.list_accounts` call) through an emulator signed in as the tables' owner,
 * whom RLS does not apply to: the difference is the measured cost of isolation.
 *
 * {@link measureConnectFlow} (also in `npm run bench`): the connect flow of issue 23 on the same
 * Data API path, against the fake Amazon: `POST /v1/connections/sessions` → the consent page
 * (the fake's /ap/oa redirect) → `POST /v1/connections` (the code exchange with PKCE, the
 * tokens stored): per step, p50 and p95 latency and Data API calls per request.
 */
import { ensureApiLogin } from '../lambda/migrate/worker-login';
import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { createAccountsApi } from '../lambda/accounts-api/core';
import { createTokenVerifier } from '../lambda/accounts-api/jwt';
import { AccountsStore } from '../lambda/accounts-api/store';
import { LwaClient } from '../lambda/shared/amazon';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { DataApiDatabase } from '../lambda/shared/db';
import { startFakeAmazon } from '../local/amazon/fake-amazon';
import { startDataApiEmulator } from '../local/data-api/emulator';
import { ephemeralIssuer } from '../local/identity/issuer';
import { startLocalWorld } from '../local/world';

export interface ApiBenchRow {
  readonly path: 'RLS (accounts_api)' | 'no RLS (owner)';
  readonly inFlight: number;
  readonly requests: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  readonly dataApiCallsPerRequest: number;
  readonly itemsPerResponse: number;
}

export interface ApiBenchOptions {
  /** Users, each with `accountsPerUser` accounts. @default 40 */
  readonly users?: number;
  /** @default 120 */
  readonly accountsPerUser?: number;
  /** Requests per measurement. @default 400 */
  readonly requests?: number;
  readonly inFlight?: readonly number[];
  readonly progress?: (line: string) => void;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

export async function measureAccountsApi(options: ApiBenchOptions = {}): Promise<ApiBenchRow[]> {
  const users = options.users ?? 40;
  const perUser = options.accountsPerUser ?? 120;
  const requests = options.requests ?? 400;
  const progress = options.progress ?? (() => undefined);
  const world = await startLocalWorld();
  const password = randomBytes(12).toString('hex');
  const c = new Client({ connectionString: world.url });
  await c.connect();
  const rows: ApiBenchRow[] = [];
  try {
    await ensureApiLogin(c, { username: 'accounts_api', password });
    await c.query(`INSERT INTO users (email) SELECT 'bench' || n || '@example.com' FROM generate_series(1, $1) n`, [
      users,
    ]);
    await c.query(
      `INSERT INTO user_accounts (user_id, region, amazon_account_id, status, sync_status, metadata)
       SELECT u.id, 'NA', (6000000000000 + row_number() OVER ())::text, 'active', 'completed',
              jsonb_build_object('marketplaceStringId', 'ATVPDKIKX0DER', 'countryCode', 'US', 'currencyCode', 'USD',
                                 'timezone', 'America/Los_Angeles', 'accountType', 'seller',
                                 'accountName', 'Account ' || n, 'validPaymentMethod', true, 'region', 'NA')
         FROM users u CROSS JOIN generate_series(1, $1) n`,
      [perUser],
    );
    await c.query('ANALYZE user_accounts');
    const ids = (await c.query<{ id: string }>(`SELECT id FROM users`)).rows.map((r) => r.id);
    const dbName = new URL(world.url).pathname.slice(1);
    const apiEmulator = await startDataApiEmulator({
      databaseUrl: `postgres://accounts_api:${password}@127.0.0.1:${world.pg.port}/${dbName}`,
    });
    const ownerEmulator = await startDataApiEmulator({ databaseUrl: world.url });
    const issuer = ephemeralIssuer();
    const tokens = ids.map((id) => issuer.token({ sub: id }));
    // A page with more items after it carries a cursor sealed under a key derived from the token
    // cipher's current key (lambda/accounts-api/cursor.ts): every listing here needs it.
    const cipher = new TokenCipher(randomBytes(32));
    let lastError = 'none';
    try {
      for (const [path, emulator] of [
        ['RLS (accounts_api)', apiEmulator],
        ['no RLS (owner)', ownerEmulator],
      ] as const) {
        for (const inFlight of options.inFlight ?? [1, 16]) {
          const db = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target });
          const handle = createAccountsApi({
            store: new AccountsStore({ db }),
            verifier: createTokenVerifier({
              issuer: issuer.issuer,
              audience: issuer.audience,
              jwks: issuer.jwks,
              jwksUrl: 'http://127.0.0.1:9/jwks.json',
            }),
            lwa: new LwaClient({ clientId: 'x', clientSecret: 'x' }),
            cipher: () => Promise.resolve(cipher),
            syncs: { start: () => Promise.resolve() },
            logger: {
              info: () => undefined,
              warn: () => undefined,
              error: (message: string) => void (lastError = message),
            },
          });
          const event = (i: number) => ({
            rawPath: '/v1/accounts',
            rawQueryString: 'limit=50',
            headers: { authorization: `Bearer ${tokens[i % tokens.length]}` },
            requestContext: { http: { method: 'GET' } },
          });
          for (let i = 0; i < 20; i++) await handle(event(i)); // warm-up: JIT, pools, plans
          const before = db.callCounts().total;
          const latencies: number[] = [];
          let items = 0;
          let next = 0;
          const started = performance.now();
          await Promise.all(
            Array.from({ length: inFlight }, async () => {
              for (let i = next++; i < requests; i = next++) {
                const t = performance.now();
                const result = await handle(event(i));
                latencies.push(performance.now() - t);
                if (result.statusCode !== 200)
                  throw new Error(`GET /v1/accounts answered ${result.statusCode} (last error logged: ${lastError})`);
                items += (JSON.parse(result.body) as { items: unknown[] }).items.length;
              }
            }),
          );
          const seconds = (performance.now() - started) / 1000;
          latencies.sort((x, y) => x - y);
          const row: ApiBenchRow = {
            path,
            inFlight,
            requests,
            perSecond: requests / seconds,
            p50Ms: percentile(latencies, 0.5),
            p95Ms: percentile(latencies, 0.95),
            dataApiCallsPerRequest: (db.callCounts().total - before) / requests,
            itemsPerResponse: items / requests,
          };
          rows.push(row);
          progress(
            `  accounts API ${path}, ${inFlight} in flight: ${row.perSecond.toFixed(0)} req/s, p50 ${row.p50Ms.toFixed(1)} ms, p95 ${row.p95Ms.toFixed(1)} ms, ${row.dataApiCallsPerRequest} Data API calls/request`,
          );
          await db.close();
        }
      }
    } finally {
      await apiEmulator.close();
      await ownerEmulator.close();
    }
  } finally {
    await c.end();
    await world.close();
  }
  return rows;
}

export function renderApiMarkdown(rows: readonly ApiBenchRow[]): string {
  const lines = [
    '| GET /v1/accounts (50 items), Data API path | in flight | requests | req/s | p50 | p95 | Data API calls per request (target ≤ 2) |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.path} | ${r.inFlight} | ${r.requests} | ${r.perSecond.toFixed(0)} | ${r.p50Ms.toFixed(1)} ms | ${r.p95Ms.toFixed(1)} ms | ${r.dataApiCallsPerRequest.toFixed(2)} |`,
    ),
  ];
  for (const inFlight of new Set(rows.map((r) => r.inFlight))) {
    const rls = rows.find((r) => r.inFlight === inFlight && r.path === 'RLS (accounts_api)');
    const owner = rows.find((r) => r.inFlight === inFlight && r.path === 'no RLS (owner)');
    if (rls && owner)
      lines.push(
        '',
        `Cost of isolation at ${inFlight} in flight: p50 ${(rls.p50Ms - owner.p50Ms).toFixed(1)} ms (${((rls.p50Ms / owner.p50Ms - 1) * 100).toFixed(0)} %), throughput ${((rls.perSecond / owner.perSecond - 1) * 100).toFixed(0)} %.`,
      );
  }
  return lines.join('\n');
}

export interface ConnectFlowRow {
  readonly step: 'POST /v1/connections/sessions' | 'consent (fake Amazon)' | 'POST /v1/connections';
  readonly requests: number;
  readonly p50Ms: number;
  readonly p95Ms: number;
  /** Data API calls per request (none for the consent page, which is Amazon's). */
  readonly dataApiCallsPerRequest: number;
}

/**
 * `connects` users connect NA one after another (1 in flight), each through the whole flow,
 * the API as accounts_api on the Data API path, Amazon the fake (no latency).
 */
export async function measureConnectFlow(
  options: { connects?: number; progress?: (line: string) => void } = {},
): Promise<ConnectFlowRow[]> {
  const connects = options.connects ?? 100;
  const world = await startLocalWorld();
  const amazon = await startFakeAmazon();
  const password = randomBytes(12).toString('hex');
  const c = new Client({ connectionString: world.url });
  await c.connect();
  try {
    await ensureApiLogin(c, { username: 'accounts_api', password });
    const dbName = new URL(world.url).pathname.slice(1);
    const emulator = await startDataApiEmulator({
      databaseUrl: `postgres://accounts_api:${password}@127.0.0.1:${world.pg.port}/${dbName}`,
    });
    const db = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target });
    const issuer = ephemeralIssuer();
    const redirectUri = 'https://app.example.com/amazon/callback';
    const cipher = new TokenCipher(randomBytes(32));
    try {
      const handle = createAccountsApi({
        store: new AccountsStore({ db }),
        verifier: createTokenVerifier({
          issuer: issuer.issuer,
          audience: issuer.audience,
          jwks: issuer.jwks,
          jwksUrl: 'http://127.0.0.1:9/jwks.json',
        }),
        lwa: new LwaClient({
          clientId: amazon.clientId,
          clientSecret: amazon.clientSecret,
          tokenUrl: amazon.lwaTokenUrl,
        }),
        cipher: () => Promise.resolve(cipher),
        syncs: { start: () => Promise.resolve() },
        logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
        settings: { connectRedirectUris: [redirectUri], consentUrl: amazon.consentUrl },
      });
      const timings = { session: [] as number[], consent: [] as number[], connect: [] as number[] };
      const calls = { session: 0, connect: 0 };
      const post = (token: string, path: string, body: unknown) =>
        handle({
          rawPath: path,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
          requestContext: { http: { method: 'POST' } },
        });
      for (let i = 0; i < connects; i += 1) {
        const userId = randomUUID();
        amazon.addUser({ userId, refreshToken: `Atzr|bench-${userId}` });
        const token = issuer.token({ sub: userId, email: `bench-connect-${i}@example.com` });
        let t = performance.now();
        let before = db.callCounts().total;
        const session = await post(token, '/v1/connections/sessions', { region: 'NA', redirectUri });
        timings.session.push(performance.now() - t);
        calls.session += db.callCounts().total - before;
        if (session.statusCode !== 201) throw new Error(`session answered ${session.statusCode}`);
        const { authorizationUrl, state } = JSON.parse(session.body) as { authorizationUrl: string; state: string };
        t = performance.now();
        const consentUrl = new URL(authorizationUrl);
        consentUrl.searchParams.set('user', userId);
        const redirect = new URL((await fetch(consentUrl, { redirect: 'manual' })).headers.get('location')!);
        timings.consent.push(performance.now() - t);
        t = performance.now();
        before = db.callCounts().total;
        const connected = await post(token, '/v1/connections', {
          region: 'NA',
          code: redirect.searchParams.get('code'),
          state,
        });
        timings.connect.push(performance.now() - t);
        calls.connect += db.callCounts().total - before;
        if (connected.statusCode !== 201) throw new Error(`connect answered ${connected.statusCode}`);
      }
      const row = (step: ConnectFlowRow['step'], latencies: number[], dataApiCalls: number): ConnectFlowRow => {
        const sorted = [...latencies].sort((x, y) => x - y);
        return {
          step,
          requests: latencies.length,
          p50Ms: percentile(sorted, 0.5),
          p95Ms: percentile(sorted, 0.95),
          dataApiCallsPerRequest: dataApiCalls / latencies.length,
        };
      };
      const rows = [
        row('POST /v1/connections/sessions', timings.session, calls.session),
        row('consent (fake Amazon)', timings.consent, 0),
        row('POST /v1/connections', timings.connect, calls.connect),
      ];
      for (const r of rows)
        options.progress?.(
          `  connect flow ${r.step}: p50 ${r.p50Ms.toFixed(1)} ms, p95 ${r.p95Ms.toFixed(1)} ms, ${r.dataApiCallsPerRequest} Data API calls/request`,
        );
      return rows;
    } finally {
      await db.close();
      await emulator.close();
    }
  } finally {
    await c.end();
    await amazon.close();
    await world.close();
  }
}

export function renderConnectFlowMarkdown(rows: readonly ConnectFlowRow[]): string {
  return [
    '| Connect flow, Data API path, fake Amazon | requests | p50 | p95 | Data API calls per request |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.step} | ${r.requests} | ${r.p50Ms.toFixed(1)} ms | ${r.p95Ms.toFixed(1)} ms | ${r.dataApiCallsPerRequest.toFixed(2)} |`,
    ),
  ].join('\n');
}

if (require.main === module) {
  const connectOnly = process.argv.includes('--connect-flow');
  (connectOnly
    ? measureConnectFlow({
        connects: Number(process.argv[process.argv.indexOf('--connect-flow') + 1]) || 100,
        progress: (line) => process.stderr.write(`${line}\n`),
      }).then((rows) => renderConnectFlowMarkdown(rows))
    : measureAccountsApi({ progress: (line) => process.stderr.write(`${line}\n`) }).then((rows) =>
        renderApiMarkdown(rows),
      )
  )
    .then((text) => process.stdout.write(`${text}\n`))
    .catch((error: Error) => {
      process.stderr.write(`${error.stack ?? error.message}\n`);
      process.exit(1);
    });
}
