/**
 * The benchmark's world, seen from the process that runs the job cores: PostgreSQL 17 with the
 * schema, the Data API emulator and the fake Amazon run in a child process (bench/servers.ts);
 * this side holds the clients the cores use — the Data API adapter on the real
 * `@aws-sdk/client-rds-data` client (the production database path), the LWA and Ads clients —
 * and asks the child to reset, seed and count.
 */
import { ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { Database, DataApiDatabase, PgDatabase } from '../lambda/shared/db';
import { EndpointLimits, endpointLimitsFor, RateLimiterRegistry } from '../lambda/shared/amazon/rate-limiter';
import { DatabaseRateBudgetStore } from '../lambda/shared/amazon/rate-budget';
import { TokenCipher } from '../lambda/shared/token-crypto';
import type { ServerCounters, ServerInfo, ServerRequest } from './servers';

/**
 * Rate and concurrency limits high enough that the client-side limiter is never the
 * bottleneck: the benchmark measures the job core, the database path and Amazon's latency.
 * Production uses DEFAULT_ENDPOINT_LIMITS (LWA 10/s, Ads 5/s per region, 10 and 5 in flight),
 * which is what bounds a real environment: see the README's "Scale" section.
 */
export const BENCH_LIMITS: Readonly<Record<'lwa' | 'ads', EndpointLimits>> = {
  lwa: { ratePerSecond: 1_000_000, burst: 1_000_000, maxConcurrency: 10_000 },
  ads: { ratePerSecond: 1_000_000, burst: 1_000_000, maxConcurrency: 10_000 },
};

export interface BenchWorld {
  readonly info: ServerInfo;
  readonly cipher: TokenCipher;
  /** node-postgres on the same database, for checks (not the code under test). */
  readonly admin: PgDatabase;
  /** A fresh Data API adapter (production retry settings) on one shared SDK client. */
  dataApi(): DataApiDatabase;
  /** LWA client on the fake Amazon with {@link BENCH_LIMITS}; no retries, like production. */
  lwa(): LwaClient;
  /** Ads client on the fake Amazon with {@link BENCH_LIMITS}; production retry settings. */
  ads(): AdsClient;
  /**
   * Empties the data tables (the shared rate budget's too) and sets the fake Amazon's latency
   * per endpoint and its own limit per endpoint and region (0: none).
   */
  reset(latency: { lwaMs: number; adsMs: number; limitPerSecond?: number }): Promise<void>;
  /**
   * LWA and Ads clients as a job invocation has them in AWS: limited to `ratePerSecond` per
   * endpoint and region through the shared rate budget in the database (`amazon_rate_budget`),
   * whose reservations go through `budgetDb`.
   */
  budgeted(budgetDb: Database, ratePerSecond: number): { lwa: LwaClient; ads: AdsClient };
  /** Users whose tokens are due for refresh (expiring in 5 minutes). */
  seedRefreshDue(count: number): Promise<number>;
  /** Users due for account sync: valid token, 1-4 accounts each whose next_sync_at has passed. */
  seedSyncDue(count: number): Promise<number>;
  /** Tokens due for refresh and accounts due for sync (the scale simulation). */
  seedBothDue(count: number): Promise<number>;
  /** Calls the fake Amazon and the emulator have received so far (per-second figures since `sinceMs`). */
  counters(sinceMs?: number): Promise<ServerCounters>;
  close(): Promise<void>;
}

export async function startBenchWorld(): Promise<BenchWorld> {
  const child = fork(join(__dirname, 'servers.ts'), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_SERVERS_CHILD: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const info = await new Promise<ServerInfo>((resolve, reject) => {
    const onMessage = (m: { ready?: ServerInfo; failed?: string }) => {
      if (m.ready) resolve(m.ready);
      else if (m.failed) reject(new Error(`Benchmark servers failed to start: ${m.failed}`));
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`Benchmark servers exited (${code}) before they were ready`)));
  });
  const call = rpc(child);
  const client = new RDSDataClient({
    endpoint: info.emulatorEndpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDEMULATOR', secretAccessKey: 'emulator-secret' },
    maxAttempts: 1,
  });
  const admin = new PgDatabase({ connection: info.databaseUrl });
  const limiters = () => new RateLimiterRegistry(BENCH_LIMITS);
  let prefixes = 0;
  const prefix = () => `b${process.pid.toString(36)}x${(prefixes++).toString(36)}`;
  return {
    info,
    cipher: TokenCipher.fromBase64(info.keyBase64),
    admin,
    dataApi: () => new DataApiDatabase({ client, ...info.target }),
    lwa: () =>
      new LwaClient({
        clientId: info.clientId,
        clientSecret: info.clientSecret,
        tokenUrl: info.lwaTokenUrl,
        limiters: limiters(),
      }),
    ads: () => new AdsClient({ clientId: info.clientId, baseUrl: info.adsBaseUrl, limiters: limiters() }),
    reset: async (latency) => void (await call({ op: 'reset', ...latency })),
    budgeted: (budgetDb, ratePerSecond) => {
      const limiters = new RateLimiterRegistry(
        endpointLimitsFor({ lwa: ratePerSecond, ads: ratePerSecond }),
        {},
        new DatabaseRateBudgetStore(budgetDb),
      );
      return {
        lwa: new LwaClient({
          clientId: info.clientId,
          clientSecret: info.clientSecret,
          tokenUrl: info.lwaTokenUrl,
          limiters,
        }),
        ads: new AdsClient({ clientId: info.clientId, baseUrl: info.adsBaseUrl, limiters }),
      };
    },
    seedRefreshDue: async (count) =>
      (await call({ op: 'seed', kind: 'refresh-due', count, prefix: prefix() })) as number,
    seedSyncDue: async (count) => (await call({ op: 'seed', kind: 'sync-due', count, prefix: prefix() })) as number,
    seedBothDue: async (count) => (await call({ op: 'seed', kind: 'both-due', count, prefix: prefix() })) as number,
    counters: async (sinceMs) => (await call({ op: 'counters', sinceMs })) as ServerCounters,
    async close() {
      client.destroy();
      await admin.close().catch(() => undefined);
      if (child.connected) {
        await call({ op: 'close' }).catch(() => undefined);
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        child.disconnect();
        await exited;
      }
    },
  };
}

function rpc(child: ChildProcess): (request: ServerRequest) => Promise<unknown> {
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  child.on('message', (m: { id?: number; ok?: boolean; result?: unknown; error?: string }) => {
    if (m.id === undefined) return;
    const p = pending.get(m.id);
    pending.delete(m.id);
    if (m.ok) p?.resolve(m.result);
    else p?.reject(new Error(m.error));
  });
  child.on('exit', () => {
    for (const p of pending.values()) p.reject(new Error('Benchmark servers exited'));
    pending.clear();
  });
  return (request) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      child.send({ id, request });
    });
}
