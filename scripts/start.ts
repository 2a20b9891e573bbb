/**
 * `npm start`: the whole system on this machine, no AWS account and no configuration.
 *
 *   PostgreSQL 17 (embedded, data kept in .local/postgres)  ← migrations, through the custom
 *   resource's own code (lambda/migrate/on-event.ts), which also creates the jobs' login user
 *   Data API emulator (as that least-privilege user)  ← the real job handlers, via the AWS SDK
 *   fake Amazon (LWA token endpoint + Ads profiles, NA/EU/FE)  ← the real Amazon clients
 *   Secrets Manager stand-in  ← the handlers read the LWA client and token key from it
 *
 * Then demo data (first run only), one run of each scheduled job through its Lambda handler,
 * and a summary. `--fresh` deletes .local first; `--watch` keeps running the jobs on a
 * shortened schedule until Ctrl-C.
 */
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { Client } from 'pg';
import type { AccountSyncSummary } from '../lambda/account-sync/core';
import { handler as accountSync } from '../lambda/account-sync/handler';
import { DEFAULT_MIGRATIONS_DIR } from '../lambda/migrate/run-migrations';
import { onSchemaMigrationEvent } from '../lambda/migrate/on-event';
import type { TokenRefreshSummary } from '../lambda/token-refresh/core';
import { handler as tokenRefresh } from '../lambda/token-refresh/handler';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { startDataApiEmulator } from '../local/data-api/emulator';
import { startSecretsManagerStandIn } from '../local/secrets-manager/stand-in';
import { startFakeAmazon } from '../local/amazon/fake-amazon';
import { startPostgres } from '../local/postgres/embedded-postgres';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { DEFAULT_API_PORT, startLocalApi } from './api';
import { demoAmazonUsers, seedDemoData } from './demo-data';
import { DataApiDatabase } from '../lambda/shared/db';
import { eventLine, eventsSummaryText, publishLocalEvents } from './local-events';

const ROOT = resolve(__dirname, '..');
/** Where npm start keeps its state; ACCOUNTS_LOCAL_DIR moves it (the tests use a temporary folder). */
const LOCAL = resolve(process.env.ACCOUNTS_LOCAL_DIR ?? join(ROOT, '.local'));
const STATE_FILE = join(LOCAL, 'state.json');
const LOG_FILE = join(LOCAL, 'logs', 'jobs.log');
const DATABASE = 'accounts';
const SECRET_ARNS = {
  lwa: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/lwa-client',
  tokenKey: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/token-encryption-key',
  worker: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/jobs-worker',
};

interface LocalState {
  readonly tokenKey: string;
  readonly workerPassword: string;
}

const print = process.stdout.write.bind(process.stdout);
const say = (line = '') => print(`${line}\n`);

async function step<T>(label: string, fn: () => Promise<T>): Promise<T> {
  print(`  ${label} … `);
  const started = Date.now();
  const result = await fn();
  say(`done (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return result;
}

function loadState(): LocalState {
  if (existsSync(STATE_FILE)) return JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LocalState;
  const state: LocalState = {
    tokenKey: randomBytes(32).toString('base64'),
    workerPassword: randomBytes(18).toString('base64url'),
  };
  mkdirSync(LOCAL, { recursive: true });
  writeFileSync(STATE_FILE, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  return state;
}

interface LocalContext {
  readonly awsRequestId: string;
  getRemainingTimeInMillis(): number;
}

/**
 * Runs a Lambda handler in this process, as Lambda would: a context with a deadline, and the
 * function's stdout/stderr (Powertools' JSON logs and EMF metrics) going to the log file.
 */
async function invoke<T>(
  name: string,
  handler: (event: unknown, context: LocalContext) => Promise<T>,
  event: unknown,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const context = {
    awsRequestId: `local-${name}-${Date.now()}`,
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
  const original = { out: process.stdout.write.bind(process.stdout), err: process.stderr.write.bind(process.stderr) };
  const toLog = ((chunk: string | Uint8Array) => {
    appendFileSync(LOG_FILE, chunk);
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = toLog;
  process.stderr.write = toLog;
  try {
    return await handler(event, context);
  } finally {
    process.stdout.write = original.out;
    process.stderr.write = original.err;
  }
}

async function main() {
  const args = new Set(process.argv.slice(2));
  const watch = args.has('--watch');
  if (args.has('--fresh')) rmSync(LOCAL, { recursive: true, force: true });
  const firstRun = !existsSync(join(LOCAL, 'postgres', 'PG_VERSION'));
  const state = loadState();
  mkdirSync(join(LOCAL, 'logs'), { recursive: true });

  say(
    `Amazon accounts platform, locally (${firstRun ? 'first run' : 'continuing from the last run'}; data in ${relative(ROOT, LOCAL)}/)`,
  );
  const cleanups: Array<() => Promise<unknown>> = [];
  const stopAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    cleanups.length = 0;
  };

  try {
    const pg = await step('PostgreSQL 17', () => startPostgres({ dataDir: join(LOCAL, 'postgres') }));
    say(`    (listening on 127.0.0.1:${pg.port})`);
    cleanups.push(() => pg.stop());
    const adminUrl = pg.url(DATABASE);
    await step(`database "${DATABASE}"`, async () => {
      const c = new Client({ connectionString: pg.url() });
      await c.connect();
      const exists = (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])).rowCount === 1;
      await c.end();
      if (!exists) await pg.createDatabase(DATABASE);
    });

    const worker = { username: 'jobs_worker', password: state.workerPassword };
    const migration = await step('migrations (the deploy-time custom resource, as CloudFormation runs it)', () =>
      onSchemaMigrationEvent(
        { RequestType: 'Create', ResourceProperties: { MigrationsHash: 'local', LatestMigration: 'local' } } as never,
        {
          masterConnection: () => Promise.resolve({ connectionString: adminUrl }),
          workerCredentials: () => Promise.resolve(worker),
          migrationsDir: DEFAULT_MIGRATIONS_DIR,
          remainingTimeMs: () => 10 * 60_000,
          logger: { info: () => undefined, warn: () => undefined, error: (m) => say(`    ${m}`) },
        },
      ),
    );

    const amazon = await step('fake Amazon (LWA + Ads API, NA/EU/FE, 40 ms latency, a few 5xx/429/bad bodies)', () =>
      startFakeAmazon({
        seed: 42,
        knobs: { latencyMs: 40, rate5xx: 0.02, rate429: 0.01, retryAfterSeconds: 1, malformedRate: 0.01 },
      }),
    );
    cleanups.push(() => amazon.close());
    const workerUrl = `postgres://${worker.username}:${encodeURIComponent(worker.password)}@127.0.0.1:${pg.port}/${DATABASE}`;
    const emulator = await step('RDS Data API emulator (as the jobs’ least-privilege user)', () =>
      startDataApiEmulator({ databaseUrl: workerUrl }),
    );
    cleanups.push(() => emulator.close());
    const secrets = await step('Secrets Manager stand-in', () =>
      startSecretsManagerStandIn({
        [SECRET_ARNS.lwa]: JSON.stringify({ clientId: amazon.clientId, clientSecret: amazon.clientSecret }),
        [SECRET_ARNS.tokenKey]: state.tokenKey,
        [SECRET_ARNS.worker]: JSON.stringify(worker),
      }),
    );
    cleanups.push(() => secrets.close());

    const cipher = TokenCipher.fromBase64(state.tokenKey);
    const admin = new Client({ connectionString: adminUrl });
    // On Ctrl-C the server may go down before this connection is closed: that is expected.
    admin.on('error', () => undefined);
    await admin.connect();
    cleanups.push(() => admin.end());
    const seeded = await step('demo data', () => seedDemoData(admin, cipher));
    const registered = await demoAmazonUsers(admin, cipher);
    for (const user of registered) {
      amazon.addUser(user);
      if (user.revoked) amazon.revoke(user.userId, user.region);
    }

    // The handlers read exactly what the CDK stack sets, plus endpoint overrides for the
    // local stand-ins (the AWS SDK's own AWS_ENDPOINT_URL_* and the Amazon URLs).
    Object.assign(process.env, {
      APP_ENVIRONMENT: 'dev',
      DB_CLUSTER_ARN: emulator.target.resourceArn,
      DB_SECRET_ARN: emulator.target.secretArn,
      DB_NAME: emulator.target.database,
      LWA_CLIENT_SECRET_ARN: SECRET_ARNS.lwa,
      TOKEN_ENCRYPTION_KEY_SECRET_ARN: SECRET_ARNS.tokenKey,
      LWA_TOKEN_URL: amazon.lwaTokenUrl,
      ADS_API_URL: amazon.adsBaseUrl,
      AWS_ENDPOINT_URL_RDS_DATA: emulator.endpoint,
      AWS_ENDPOINT_URL_SECRETS_MANAGER: secrets.endpoint,
      AWS_REGION: process.env.AWS_REGION ?? 'us-east-1',
      AWS_ACCESS_KEY_ID: 'local',
      AWS_SECRET_ACCESS_KEY: 'local',
      POWERTOOLS_SERVICE_NAME: 'accounts-platform',
    });

    const runJobs = async () => {
      const refresh = await step('token-refresh job (Lambda handler, Data API path)', () =>
        invoke('token-refresh', tokenRefresh, {}, 5 * 60_000),
      );
      const sync = await step('account-sync job (Lambda handler, Data API path)', () =>
        invoke('account-sync', accountSync, { source: 'aws.events', 'detail-type': 'Scheduled Event' }, 15 * 60_000),
      );
      return { refresh, sync };
    };

    const { refresh, sync } = await runJobs();
    // Connection events: the publisher drains the outbox (as the jobs' login, Data API path)
    // to the local bus, .local/events.jsonl (local/events/).
    const eventsFile = join(LOCAL, 'events.jsonl');
    const eventsDb = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target });
    const published = await step('event publisher (outbox to .local/events.jsonl, Data API path)', () =>
      publishLocalEvents(eventsDb, { file: eventsFile }),
    );
    const overview = await databaseOverview(admin);
    say();
    say(
      summaryText({
        refresh,
        sync,
        seeded,
        users: new Set(registered.map((u) => u.userId)).size,
        applied: migration.Data.Applied,
        overview,
        dataApiCalls: emulator.calls,
      }),
    );
    say();
    say(eventsSummaryText(published.events, relative(ROOT, eventsFile)));
    say();
    say(whereNext(adminUrl, watch));
    say();
    say(await serveAccountsApi(admin, adminUrl, amazon, cipher, watch, cleanups));

    if (watch) {
      say();
      say(
        'Watching: token refresh every 30 s, account sync every 60 s (5 and 15 min in AWS). Ctrl-C stops everything.',
      );
      let busy = false;
      let tick = 0;
      // The tick's own try/catch reports a failed run; nothing of it is left unhandled.
      const timer = setInterval(() => void watchTick(), 30_000);
      const watchTick = async () => {
        if (busy) return;
        busy = true;
        tick += 1;
        try {
          const r = await invoke('token-refresh', tokenRefresh, {}, 5 * 60_000);
          let line = `  [${new Date().toISOString().slice(11, 19)}] token-refresh: ${r.refreshed} refreshed, ${r.failed} failed, ${r.reauthRequired} re-authorisation needed`;
          if (tick % 2 === 0) {
            const s = await invoke('account-sync', accountSync, { source: 'aws.events' }, 15 * 60_000);
            line += ` | account-sync: ${s.usersSynced} users, ${s.accountsSynced} accounts synced, ${s.usersFailed} failed`;
          }
          say(line);
          // The events the tick's changes (and the API's) wrote, as they are published.
          await publishLocalEvents(eventsDb, { file: eventsFile, onEvent: (e) => say(`  event ${eventLine(e)}`) });
        } catch (error) {
          say(`  job failed: ${(error as Error).message}`);
        } finally {
          busy = false;
        }
      };
      await new Promise<void>((resolvePromise) => {
        const stop = () => {
          clearInterval(timer);
          resolvePromise();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      say('\nStopping …');
    }
  } finally {
    await stopAll();
  }
}

interface Overview {
  users: number;
  /** Connections (oauth_tokens rows) per region, and users by how many regions they connected. */
  connectionsByRegion: Record<string, number>;
  usersByRegionCount: Record<string, number>;
  tokensActive: number;
  tokensNeedReauth: number;
  tokensDueSoon: number;
  accounts: Record<string, number>;
  history: Record<string, number>;
}

async function databaseOverview(c: Client): Promise<Overview> {
  const one = async (sql: string) => Number((await c.query<{ n: string }>(sql)).rows[0].n);
  const grouped = async (sql: string) =>
    Object.fromEntries((await c.query<{ k: string; n: string }>(sql)).rows.map((r) => [r.k, Number(r.n)]));
  return {
    users: await one('SELECT count(*) AS n FROM users'),
    connectionsByRegion: await grouped(
      `SELECT region AS k, count(*) AS n FROM oauth_tokens GROUP BY 1 ORDER BY array_position(ARRAY['NA','EU','FE'], region)`,
    ),
    usersByRegionCount: await grouped(
      'SELECT regions AS k, count(*) AS n FROM (SELECT count(*) AS regions FROM oauth_tokens GROUP BY user_id) r GROUP BY 1 ORDER BY 1',
    ),
    tokensActive: await one('SELECT count(*) AS n FROM oauth_tokens WHERE proactive_refresh_enabled'),
    tokensNeedReauth: await one('SELECT count(*) AS n FROM oauth_tokens WHERE NOT proactive_refresh_enabled'),
    tokensDueSoon: await one(
      `SELECT count(*) AS n FROM oauth_tokens WHERE proactive_refresh_enabled AND expires_at < now() + interval '30 minutes'`,
    ),
    accounts: await grouped('SELECT sync_status AS k, count(*) AS n FROM user_accounts GROUP BY 1 ORDER BY 1'),
    history: await grouped('SELECT sync_status AS k, count(*) AS n FROM account_sync_history GROUP BY 1 ORDER BY 1'),
  };
}

function summaryText(o: {
  refresh: TokenRefreshSummary;
  sync: AccountSyncSummary;
  seeded: boolean;
  users: number;
  applied: string;
  overview: Overview;
  dataApiCalls: unknown;
}): string {
  const { refresh, sync, overview } = o;
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const rows: Array<[string, string]> = [
    ['migrations applied this run', o.applied ? o.applied.split(',').length.toString() : '0 (schema up to date)'],
    ['demo users', `${o.users}${o.seeded ? ' (created now)' : ' (from earlier runs)'}`],
    ['tokens refreshed', `${refresh.refreshed} of ${refresh.claimed} due`],
    ['token refreshes failed (will retry)', `${refresh.failed}`],
    ['tokens needing re-authorisation (this run)', `${refresh.reauthRequired}`],
    ['rate-limit hits (LWA / Ads)', `${refresh.rateLimited} / ${sync.rateLimited}`],
    ['connections synced / failed', `${sync.usersSynced} / ${sync.usersFailed}`],
    [
      'accounts synced / failed / no longer at Amazon',
      `${sync.accountsSynced} / ${sync.accountsFailed} / ${sync.accountsMissing}`,
    ],
    ['Data API calls (refresh / sync)', `${refresh.databaseCalls} / ${sync.databaseCalls}`],
    ['time (refresh / sync)', `${seconds(refresh.durationMs)} / ${seconds(sync.durationMs)}`],
    [
      'database now',
      `${overview.users} users, ${overview.tokensActive} tokens refreshing (${overview.tokensDueSoon} due within 30 min), ${overview.tokensNeedReauth} needing re-authorisation`,
    ],
    [
      'connections by region',
      `${Object.entries(overview.connectionsByRegion)
        .map(([k, n]) => `${k} ${n}`)
        .join(
          ', ',
        )} (users in 1 / 2 / 3 regions: ${[1, 2, 3].map((r) => overview.usersByRegionCount[r] ?? 0).join(' / ')})`,
    ],
    [
      'accounts by sync status',
      Object.entries(overview.accounts)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none',
    ],
    [
      'sync history',
      Object.entries(overview.history)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none',
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return ['Summary', ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join('\n');
}

/**
 * The accounts API (scripts/api.ts) on the database under RLS, trusting the local issuer; a
 * ready-to-paste curl with a demo user's token (on port 8787 with --watch, while it runs).
 */
async function serveAccountsApi(
  admin: Client,
  adminUrl: string,
  amazon: { clientId: string; clientSecret: string; lwaTokenUrl: string; adsBaseUrl: string; consentUrl: string },
  cipher: TokenCipher,
  watch: boolean,
  cleanups: Array<() => Promise<unknown>>,
): Promise<string> {
  const options = {
    databaseUrl: adminUrl,
    lwa: new LwaClient({ clientId: amazon.clientId, clientSecret: amazon.clientSecret, tokenUrl: amazon.lwaTokenUrl }),
    ads: new AdsClient({ clientId: amazon.clientId, baseUrl: amazon.adsBaseUrl }),
    cipher,
    identityDir: join(LOCAL, 'identity'),
    // Connect sessions send the browser to the fake Amazon's consent page.
    consentUrl: amazon.consentUrl,
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
  };
  const api = await startLocalApi({ ...options, port: watch ? DEFAULT_API_PORT : 0 }).catch(() =>
    startLocalApi({ ...options, port: 0 }),
  );
  cleanups.push(() => api.close());
  const { rows } = await admin.query<{ user_id: string }>(
    `SELECT user_id FROM user_accounts GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1`,
  );
  if (!rows[0]) return `Accounts API on ${api.url} (no demo user with accounts yet)`;
  const token = api.localIssuer!.token({ sub: rows[0].user_id, expiresInSeconds: 12 * 3600 });
  const response = await fetch(`${api.url}/v1/accounts?limit=100`, { headers: { authorization: `Bearer ${token}` } });
  const listed = response.ok ? ((await response.json()) as { items: unknown[] }).items.length : 0;
  return [
    `Accounts API on ${api.url} (GET /v1/accounts for demo user ${rows[0].user_id}: HTTP ${response.status}, ${listed} accounts)`,
    `  curl -H 'Authorization: Bearer ${token}' ${api.url}/v1/accounts`,
    watch ? '' : '  (the API runs while npm start -- --watch does; npm run api serves it alone)',
  ]
    .filter(Boolean)
    .join('\n');
}

function whereNext(adminUrl: string, watch: boolean): string {
  return [
    'Where to look next',
    `  job logs and EMF metrics (Powertools JSON)   ${relative(ROOT, LOG_FILE)}`,
    watch
      ? `  the database, while this runs               psql ${adminUrl}`
      : '  the database                                npm start -- --watch   (keeps it running; prints a psql URL)',
    '  one job against any PostgreSQL              npm run job -- token-refresh|account-sync   (see README)',
    '  the CloudFormation templates                npx cdk synth -c env=dev',
    '  start over                                  npm start -- --fresh',
  ].join('\n');
}

main()
  .then(() => process.exit(0))
  .catch((error: Error) => {
    say(`\nnpm start failed: ${error.stack ?? error.message}`);
    process.exit(1);
  });
