import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import { JOB_ENV } from '../../lambda/shared/config';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { Database, DataApiDatabase, PgDatabase } from '../../lambda/shared/db';
import { MetricTotals } from '../../lambda/shared/jobs/runtime';
import { LocalWorld, startLocalWorld } from '../../local/world';
import type { AppLogger } from '../../lambda/shared/logger';
import type { AccountSyncDeps } from '../../lambda/account-sync/run-context';
import type { TokenRefreshDeps } from '../../lambda/token-refresh/core';

export { seedUsers } from '../../local/world';
export type { FakeAmazonKnobs, SeedOptions, SeedUser } from '../../local/world';

/**
 * Everything a job test needs, all real and local: the local world (PostgreSQL 17 with the
 * schema, the Data API emulator on it, the fake Amazon) plus the clients a job core takes.
 * Start once per test file; `reset()` between tests.
 */
export interface JobWorld extends LocalWorld {
  /** A fresh Data API adapter through the real SDK client (the production path). */
  dataApi(): DataApiDatabase;
  /**
   * Amazon clients pointed at the fake, with limits that do not slow tests down. The default
   * timeout is generous so that a busy machine never turns a slow answer into a failure; the
   * hang tests pass a short one.
   */
  lwa(timeoutMs?: number): LwaClient;
  ads(timeoutMs?: number): AdsClient;
}

export async function startJobWorld(): Promise<JobWorld> {
  const local = await startLocalWorld();
  const { amazon, emulator } = local;
  const fast = () =>
    new RateLimiterRegistry({
      lwa: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 },
      ads: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 },
    });
  const adapters: DataApiDatabase[] = [];
  return {
    ...local,
    dataApi() {
      const db = new DataApiDatabase({
        client: emulator.createClient(),
        ...emulator.target,
        retry: { baseDelayMs: 5, maxDelayMs: 20 },
      });
      adapters.push(db);
      return db;
    },
    lwa: (timeoutMs = 15_000) =>
      new LwaClient({
        clientId: amazon.clientId,
        clientSecret: amazon.clientSecret,
        tokenUrl: amazon.lwaTokenUrl,
        timeoutMs,
        limiters: fast(),
      }),
    ads: (timeoutMs = 15_000) =>
      new AdsClient({
        clientId: amazon.clientId,
        baseUrl: amazon.adsBaseUrl,
        timeoutMs,
        limiters: fast(),
        retry: { maxAttempts: 1 },
      }),
    async close() {
      await Promise.all(adapters.map((a) => a.close()));
      await local.close();
    },
  };
}

/**
 * Registers this file's hooks: one JobWorld for the file (started before, closed after) and a
 * reset before each test. `use` receives the world once it has started.
 */
export function useJobWorld(use: (world: JobWorld) => void): void {
  let world: JobWorld | undefined;
  beforeAll(async () => {
    world = await startJobWorld();
    use(world);
  });
  afterAll(async () => {
    await world?.close();
  });
  beforeEach(async () => {
    await world!.reset();
  });
}

/**
 * The two database paths a job test runs on, both as the jobs' own login: the Data API (through
 * the emulator) and node-postgres. Registers an afterEach that closes the node-postgres pools.
 */
export function useBothDatabasePaths(world: () => JobWorld): Array<[string, () => Database]> {
  const opened: PgDatabase[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((db) => db.close()));
  });
  return [
    ['Data API', () => world().dataApi()],
    [
      'node-postgres',
      () => {
        const db = new PgDatabase({ connection: world().workerUrl });
        opened.push(db);
        return db;
      },
    ],
  ];
}

/** A logger that keeps every line, to assert on and to scan for secrets. */
export class RecordingLogger implements AppLogger {
  readonly lines: Array<{ level: string; message: string; attributes?: Record<string, unknown> }> = [];
  info(message: string, attributes?: Record<string, unknown>) {
    this.lines.push({ level: 'info', message, attributes });
  }
  warn(message: string, attributes?: Record<string, unknown>) {
    this.lines.push({ level: 'warn', message, attributes });
  }
  error(message: string, attributes?: Record<string, unknown>) {
    this.lines.push({ level: 'error', message, attributes });
  }
  text(): string {
    return JSON.stringify(this.lines);
  }
}

/** `db`, but the first statement matching `sql` fails with what `fail` returns (a real adapter underneath). */
export function failingOnce(db: Database, sql: RegExp, fail: () => Error): Database {
  let failed = false;
  return {
    query: (text, params) => {
      if (!failed && sql.test(text)) {
        failed = true;
        return Promise.reject(fail());
      }
      return db.query(text, params);
    },
    batch: (text, sets) => db.batch(text, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

/** Runtime collaborators for a core: plenty of time, recorded logs and metrics. */
export function runtime(overrides: { remainingTimeMs?: () => number } = {}) {
  return {
    logger: new RecordingLogger(),
    metrics: new MetricTotals(),
    remainingTimeMs: overrides.remainingTimeMs ?? (() => 600_000),
  };
}

export type { Database };

/**
 * A token refresh run's dependencies: `db`, the world's LWA client and cipher, a fresh
 * runtime() and 8 calls at once; `extra` replaces any of them (its `settings` replace all).
 */
export function tokenRefreshDeps(
  world: JobWorld,
  db: Database,
  extra: Partial<TokenRefreshDeps> = {},
): TokenRefreshDeps {
  return { db, lwa: world.lwa(), cipher: world.cipher, ...runtime(), settings: { concurrency: 8 }, ...extra };
}

/** An account sync run's dependencies, as tokenRefreshDeps gives the token refresh's (the Ads client instead). */
export function accountSyncDeps(world: JobWorld, db: Database, extra: Partial<AccountSyncDeps> = {}): AccountSyncDeps {
  return {
    db,
    ads: world.ads(),
    lwa: world.lwa(),
    cipher: world.cipher,
    ...runtime(),
    settings: { concurrency: 8 },
    ...extra,
  };
}

/** Secrets Manager ids the job handlers are given in the handler tests (answered by a mock). */
export const HANDLER_SECRET_ARNS = {
  lwa: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-client-AbCdEf',
  key: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-key-AbCdEf',
} as const;

/**
 * Registers hooks that give each test of the enclosing block the environment the stack sets on
 * a job function (the Data API emulator as the cluster, the fake Amazon's URLs), plus `extra`,
 * with Secrets Manager answering the LWA client and token key from the world; restores the
 * environment and every jest spy after each test. Output (Powertools writes to stdout) is left
 * to the test file.
 */
export function useJobHandlerEnvironment(world: () => JobWorld, extra: () => NodeJS.ProcessEnv = () => ({})): void {
  const secrets = mockClient(SecretsManagerClient);
  let saved: NodeJS.ProcessEnv;
  beforeEach(() => {
    const w = world();
    saved = { ...process.env };
    Object.assign(process.env, {
      [JOB_ENV.environment]: 'dev',
      [JOB_ENV.clusterArn]: w.emulator.target.resourceArn,
      [JOB_ENV.databaseSecretArn]: w.emulator.target.secretArn,
      [JOB_ENV.databaseName]: w.emulator.target.database,
      [JOB_ENV.lwaClientSecretArn]: HANDLER_SECRET_ARNS.lwa,
      [JOB_ENV.tokenKeySecretArn]: HANDLER_SECRET_ARNS.key,
      LWA_TOKEN_URL: w.amazon.lwaTokenUrl,
      ADS_API_URL: w.amazon.adsBaseUrl,
      AWS_ENDPOINT_URL_RDS_DATA: w.emulator.endpoint,
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      POWERTOOLS_DEV: 'false',
      ...extra(),
    });
    secrets.reset();
    secrets.on(GetSecretValueCommand, { SecretId: HANDLER_SECRET_ARNS.lwa }).resolves({
      SecretString: JSON.stringify({ clientId: w.amazon.clientId, clientSecret: w.amazon.clientSecret }),
    });
    secrets.on(GetSecretValueCommand, { SecretId: HANDLER_SECRET_ARNS.key }).resolves({ SecretString: w.keyBase64 });
  });
  afterEach(() => {
    jest.restoreAllMocks();
    process.env = saved;
  });
}
