/**
 * The accounts API in `npm run bench` (also alone: `npx tsx bench/api.ts`): `GET /v1/accounts`
 * with 50 items through the API's core (the Lambda handler's code path) on the Data API path
 * (DataApiDatabase → @aws-sdk/client-rds-data → the Data API emulator signed in as
 * `accounts_api` → PostgreSQL 17, under RLS), at 1 and 16 requests in flight: requests per
 * second, p50 and p95 latency, Data API calls per request. Next to it, the same statement
 * (the same `api.list_accounts` call) through an emulator signed in as the tables' owner,
 * whom RLS does not apply to: the difference is the measured cost of isolation.
 */
import { ensureApiLogin } from '../lambda/migrate/worker-login';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';
import { createAccountsApi } from '../lambda/accounts-api/core';
import { createTokenVerifier } from '../lambda/accounts-api/jwt';
import { AccountsStore } from '../lambda/accounts-api/store';
import { LwaClient } from '../lambda/shared/amazon';
import { DataApiDatabase } from '../lambda/shared/db';
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
            cipher: () => Promise.reject(new Error('not used')),
            syncs: { start: () => Promise.resolve() },
            logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
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
                if (result.statusCode !== 200) throw new Error(`GET /v1/accounts answered ${result.statusCode}`);
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

if (require.main === module) {
  measureAccountsApi({ progress: (line) => process.stderr.write(`${line}\n`) })
    .then((rows) => process.stdout.write(`${renderApiMarkdown(rows)}\n`))
    .catch((error: Error) => {
      process.stderr.write(`${error.stack ?? error.message}\n`);
      process.exit(1);
    });
}
