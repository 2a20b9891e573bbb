import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { Database, DataApiDatabase, PgDatabase } from '../../lambda/shared/db';
import { MetricTotals } from '../../lambda/shared/jobs/runtime';
import { LocalWorld, startLocalWorld } from '../../local/world';
import type { AppLogger } from '../../lambda/shared/logger';

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

/** Runtime collaborators for a core: plenty of time, recorded logs and metrics. */
export function runtime(overrides: { remainingTimeMs?: () => number } = {}) {
  return {
    logger: new RecordingLogger(),
    metrics: new MetricTotals(),
    remainingTimeMs: overrides.remainingTimeMs ?? (() => 600_000),
  };
}

export type { Database };
