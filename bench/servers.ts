/**
 * The benchmark's stand-ins for what is remote in production — PostgreSQL 17 with the schema,
 * the Data API emulator on it and the fake Amazon — run in a child process of their own
 * (started by bench/world.ts), so their CPU work does not share the job's event loop: in AWS
 * the Data API and Amazon do their work elsewhere, and on this 2-core machine the child gets
 * the second core. The parent drives it over IPC: reset, seed, read counters, close.
 */
import { seedUsers, startLocalWorld } from '../local/world';
import { profilesFor, SEED_CHUNK } from './seeding';
import { AMAZON_REGIONS, type AmazonRegion } from '../lambda/shared/amazon/regions';

export type ServerRequest =
  | { op: 'reset'; lwaMs: number; adsMs: number; limitPerSecond?: number }
  | { op: 'seed'; kind: SeedKind; count: number; prefix: string }
  | { op: 'counters'; sinceMs?: number }
  | { op: 'close' };

/**
 * `refresh-due`: tokens expiring in 5 minutes (inside the 30-minute refresh window), no accounts.
 * `sync-due`: tokens valid for an hour, 1-4 accounts per user due a minute ago (synced before).
 * `both-due`: tokens expiring in 5 minutes and accounts due (the scale simulation: refresh, then sync).
 */
export type SeedKind = 'refresh-due' | 'sync-due' | 'both-due';

export interface ServerInfo {
  readonly databaseUrl: string;
  readonly emulatorEndpoint: string;
  readonly target: { readonly resourceArn: string; readonly secretArn: string; readonly database: string };
  readonly lwaTokenUrl: string;
  readonly adsBaseUrl: string;
  readonly clientId: string;
  readonly clientSecret: string;
  readonly keyBase64: string;
}

export interface ServerCounters {
  readonly lwaCalls: number;
  readonly adsCalls: number;
  readonly emulatorCalls: number;
  /** CPU time this process (emulator and fake Amazon) has used, user + system. */
  readonly cpuMs: number;
  /**
   * Per endpoint and region (`lwa:NA`…): the most calls that arrived within any one second
   * (sliding), counting calls since `sinceMs` (epoch ms; 0: since the start).
   */
  readonly busiestSecond: Readonly<Record<string, number>>;
  /** Per endpoint and region: calls answered 429 for exceeding `limitPerSecond`, since `sinceMs`. */
  readonly refused: Readonly<Record<string, number>>;
}

function perRegion(count: (endpoint: 'lwa' | 'ads', region: AmazonRegion) => number): Record<string, number> {
  const figures: Record<string, number> = {};
  for (const endpoint of ['lwa', 'ads'] as const)
    for (const region of AMAZON_REGIONS) figures[`${endpoint}:${region}`] = count(endpoint, region);
  return figures;
}

/** The most of `times` (ascending epoch ms) at or after `since` that fall within one second. */
function busiestSecond(times: readonly number[], since: number): number {
  let most = 0;
  for (let i = 0, j = 0; i < times.length; i += 1) {
    if (times[i] < since) {
      j = i + 1;
      continue;
    }
    while (times[i] - times[j] >= 1000) j += 1;
    most = Math.max(most, i - j + 1);
  }
  return most;
}

async function main(): Promise<void> {
  const world = await startLocalWorld();
  const info: ServerInfo = {
    databaseUrl: world.url,
    emulatorEndpoint: world.emulator.endpoint,
    target: world.emulator.target,
    lwaTokenUrl: world.amazon.lwaTokenUrl,
    adsBaseUrl: world.amazon.adsBaseUrl,
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    keyBase64: world.keyBase64,
  };
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= world.close().catch(() => undefined));

  async function handle(request: ServerRequest): Promise<unknown> {
    switch (request.op) {
      case 'reset':
        await world.reset();
        world.amazon.setKnobs({ latencyMs: request.lwaMs, limitPerSecond: request.limitPerSecond ?? 0 }, 'lwa');
        world.amazon.setKnobs({ latencyMs: request.adsMs, limitPerSecond: request.limitPerSecond ?? 0 }, 'ads');
        return null;
      case 'seed': {
        let seeded = 0;
        for (let start = 0, chunk = 0; start < request.count; start += SEED_CHUNK, chunk++) {
          const count = Math.min(SEED_CHUNK, request.count - start);
          const prefix = `${request.prefix}c${chunk}`;
          const users =
            request.kind === 'refresh-due'
              ? await seedUsers(world, { count, prefix, expiresInSeconds: 300, profilesPerUser: 0 })
              : await seedUsers(world, {
                  count,
                  prefix,
                  expiresInSeconds: request.kind === 'sync-due' ? 3600 : 300,
                  profilesPerUser: profilesFor,
                  accountsDueInSeconds: -60,
                });
          seeded += users.length;
        }
        return seeded;
      }
      case 'counters': {
        const cpu = process.cpuUsage();
        const since = request.sinceMs ?? 0;
        return {
          lwaCalls: world.amazon.counters.total('lwa'),
          adsCalls: world.amazon.counters.total('ads'),
          emulatorCalls: world.emulator.calls.total,
          cpuMs: (cpu.user + cpu.system) / 1000,
          busiestSecond: perRegion((e, r) => busiestSecond(world.amazon.counters.arrivals(e, r), since)),
          refused: perRegion((e, r) => world.amazon.counters.limitedAt(e, r).filter((t) => t >= since).length),
        } satisfies ServerCounters;
      }
      case 'close':
        await close();
        return null;
    }
  }

  process.on('message', (message: { id: number; request: ServerRequest }) => {
    handle(message.request).then(
      (result) => process.send?.({ id: message.id, ok: true, result }),
      (error: unknown) =>
        process.send?.({
          id: message.id,
          ok: false,
          error: error instanceof Error ? `${error.name}: ${error.message}` : String(error),
        }),
    );
  });
  // The parent went away (finished, crashed or was interrupted): stop PostgreSQL and leave.
  process.on('disconnect', () => void close().then(() => process.exit(0)));
  process.send?.({ ready: info });
}

// Only as the child bench/world.ts forks (never when imported for its types).
if (process.env.BENCH_SERVERS_CHILD === '1' && process.send) {
  main().catch((error) => {
    process.send?.({ failed: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.exit(1);
  });
}
