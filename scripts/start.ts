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
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Client } from 'pg';
import { handler as accountSync } from '../lambda/account-sync/handler';
import { DEFAULT_MIGRATIONS_DIR } from '../lambda/migrate/run-migrations';
import { onSchemaMigrationEvent } from '../lambda/migrate/on-event';
import { handler as tokenRefresh } from '../lambda/token-refresh/handler';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { startDataApiEmulator } from '../local/data-api/emulator';
import { startSecretsManagerStandIn } from '../local/secrets-manager/stand-in';
import { startFakeAmazon } from '../local/amazon/fake-amazon';
import { startPostgres } from '../local/postgres/embedded-postgres';
import { demoAmazonUsers, seedDemoData } from './demo-data';
import { DataApiDatabase } from '../lambda/shared/db';
import { eventLine, eventsSummaryText, publishLocalEvents } from './local-events';
import { serveAccountsApi } from './start/accounts-api';
import { invoke } from './start/invoke';
import { runJobsUntilStopped } from './start/watch';
import { loadState, LOCAL, ROOT } from './start/local-state';
import { databaseOverview, summaryText, whereNext } from './start/summary';

const DATABASE = 'accounts';
/** The jobs' database login, named as the stack names it (lib/database.ts: `accounts_jobs`). */
const JOBS_LOGIN = 'accounts_jobs';
/** Its name in .local/ folders made before it was called as in AWS; dropped when found. */
const OLD_JOBS_LOGIN = 'jobs_worker';
const SECRET_ARNS = {
  lwa: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/lwa-client',
  tokenKey: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/token-encryption-key',
  worker: 'arn:aws:secretsmanager:us-east-1:000000000000:secret:local/accounts-jobs',
};

const print = process.stdout.write.bind(process.stdout);
const say = (line = '') => print(`${line}\n`);

async function step<T>(label: string, fn: () => Promise<T>): Promise<T> {
  print(`  ${label} … `);
  const started = Date.now();
  const result = await fn();
  say(`done (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  return result;
}

/**
 * Drops the jobs' login of an older .local/ folder (`jobs_worker`, now `accounts_jobs`, which the
 * migration step has just made): its grants first (DROP OWNED), then the role. Returns whether
 * there was one.
 */
async function dropOldJobsLogin(adminUrl: string): Promise<boolean> {
  const c = new Client({ connectionString: adminUrl });
  await c.connect();
  try {
    if ((await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [OLD_JOBS_LOGIN])).rowCount === 0) return false;
    await c.query(`DROP OWNED BY ${OLD_JOBS_LOGIN}`);
    await c.query(`DROP ROLE ${OLD_JOBS_LOGIN}`);
    return true;
  } finally {
    await c.end();
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

    const worker = { username: JOBS_LOGIN, password: state.workerPassword };
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

    if (await dropOldJobsLogin(adminUrl))
      say(`    (the jobs' login is now ${JOBS_LOGIN}, as in AWS; ${OLD_JOBS_LOGIN} removed)`);

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
      // After each tick, the events its changes (and the API's) wrote, as they are published.
      await runJobsUntilStopped(say, async () => {
        await publishLocalEvents(eventsDb, { file: eventsFile, onEvent: (e) => say(`  event ${eventLine(e)}`) });
      });
      say('\nStopping …');
    }
  } finally {
    await stopAll();
  }
}

main()
  .then(() => process.exit(0))
  .catch((error: Error) => {
    say(`\nnpm start failed: ${error.stack ?? error.message}`);
    process.exit(1);
  });
