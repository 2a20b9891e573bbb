import { randomBytes } from 'node:crypto';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import { Database, DataApiDatabase, PgDatabase } from '../../lambda/shared/db';
import { JobLogger, MetricTotals } from '../../lambda/shared/job-runtime';
import { RateLimiterRegistry } from '../../lambda/shared/rate-limiter';
import { TokenCipher } from '../../lambda/shared/token-crypto';
import { Client } from 'pg';
import { runMigrations } from '../../lambda/migrate/run-migrations';
import { ensureWorkerLogin } from '../../lambda/migrate/worker-login';
import { DataApiEmulator, startDataApiEmulator } from '../emulator/data-api-emulator';
import { FakeAmazon, FakeAmazonKnobs, RefreshTokenMode, startFakeAmazon } from '../fake-amazon/fake-amazon';
import { FakeProfile, fakeProfile } from '../fake-amazon/profiles';
import { startPostgres, TestPostgres } from '../support/postgres';

/**
 * Everything a job test needs, all real and local: PostgreSQL 17 with the schema, the Data
 * API emulator on it, and the fake Amazon. Start once per test file; `reset()` between tests.
 */
export interface JobWorld {
  readonly pg: TestPostgres;
  readonly url: string;
  readonly emulator: DataApiEmulator;
  readonly amazon: FakeAmazon;
  readonly cipher: TokenCipher;
  /** The cipher's key as TOKEN_ENCRYPTION_KEY takes it (base64). */
  readonly keyBase64: string;
  /** A node-postgres database for assertions and seeding (not the code under test). */
  readonly admin: PgDatabase;
  /** A fresh Data API adapter through the real SDK client (the production path). */
  dataApi(): DataApiDatabase;
  /**
   * Amazon clients pointed at the fake, with limits that do not slow tests down. The default
   * timeout is generous so that a busy machine never turns a slow answer into a failure; the
   * hang tests pass a short one.
   */
  lwa(timeoutMs?: number): LwaClient;
  ads(timeoutMs?: number): AdsClient;
  /** Empties the data tables and sets the fake's knobs back to "all off". */
  reset(): Promise<void>;
  close(): Promise<void>;
}

export async function startJobWorld(): Promise<JobWorld> {
  const pg = await startPostgres();
  const url = await pg.createDatabase();
  await runMigrations({ database: url });
  // The jobs reach the database as production's do: the least-privilege login user the
  // migration custom resource creates (member of accounts_worker, subject to RLS).
  const worker = { username: 'jobs_worker', password: randomBytes(12).toString('hex') };
  const setup = new Client({ connectionString: url });
  await setup.connect();
  await ensureWorkerLogin(setup, worker).finally(() => setup.end());
  const workerUrl = `postgres://${worker.username}:${worker.password}@127.0.0.1:${pg.port}/${new URL(url).pathname.slice(1)}`;
  const emulator = await startDataApiEmulator({ databaseUrl: workerUrl });
  const amazon = await startFakeAmazon({ seed: 7 });
  const keyBase64 = randomBytes(32).toString('base64');
  const cipher = TokenCipher.fromBase64(keyBase64);
  const admin = new PgDatabase({ connection: url });
  const fast = () => new RateLimiterRegistry({ lwa: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 }, ads: { ratePerSecond: 100_000, burst: 1000, maxConcurrency: 256 } });
  const adapters: DataApiDatabase[] = [];
  return {
    pg,
    url,
    emulator,
    amazon,
    cipher,
    keyBase64,
    admin,
    dataApi() {
      const db = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target, retry: { baseDelayMs: 5, maxDelayMs: 20 } });
      adapters.push(db);
      return db;
    },
    lwa: (timeoutMs = 15_000) => new LwaClient({ clientId: amazon.clientId, clientSecret: amazon.clientSecret, tokenUrl: amazon.lwaTokenUrl, timeoutMs, limiters: fast() }),
    ads: (timeoutMs = 15_000) => new AdsClient({ clientId: amazon.clientId, baseUrl: amazon.adsBaseUrl, timeoutMs, limiters: fast(), retry: { maxAttempts: 1 } }),
    async reset() {
      await admin.query('TRUNCATE users, oauth_tokens, user_accounts, account_sync_history, rate_limit_tracking CASCADE');
      amazon.setKnobs({ latencyMs: 0, rate429: 0, rate5xx: 0, hangRate: 0, malformedRate: 0, failFirstN: 0 });
    },
    async close() {
      await Promise.all(adapters.map((a) => a.close()));
      await admin.close();
      await amazon.close();
      await emulator.close();
      await pg.stop();
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

export interface SeedUser {
  readonly userId: string;
  readonly email: string;
  readonly refreshToken: string;
  readonly accessToken: string;
  readonly region: 'NA' | 'EU' | 'FE';
  readonly profiles: FakeProfile[];
}

export interface SeedOptions {
  readonly count: number;
  /** Token expiry relative to now, in seconds. @default 300 (due for refresh) */
  readonly expiresInSeconds?: number | ((i: number) => number);
  readonly refreshEnabled?: (i: number) => boolean;
  /** Profiles per user at Amazon. @default 2 */
  readonly profilesPerUser?: number | ((i: number) => number);
  /** Store tokens as legacy plaintext instead of enc:v1. @default false */
  readonly legacyPlaintext?: (i: number) => boolean;
  readonly refreshTokenMode?: RefreshTokenMode;
  /** Also create user_accounts rows for the Amazon profiles, due at this offset (seconds from now). @default - no rows */
  readonly accountsDueInSeconds?: number;
  readonly prefix?: string;
  /** Pad tokens to this many characters (Amazon allows up to 2,048 bytes). @default - short tokens */
  readonly tokenChars?: number;
}

const REGIONS = ['NA', 'EU', 'FE'] as const;

/** Creates users with tokens in the database and the same users at the fake Amazon. */
export async function seedUsers(world: JobWorld, o: SeedOptions): Promise<SeedUser[]> {
  const prefix = o.prefix ?? randomBytes(3).toString('hex');
  const users: SeedUser[] = [];
  const rows: Array<Record<string, unknown>> = [];
  for (let i = 0; i < o.count; i++) {
    const region = REGIONS[i % 3];
    const profilesPerUser = typeof o.profilesPerUser === 'function' ? o.profilesPerUser(i) : (o.profilesPerUser ?? 2);
    const profiles = Array.from({ length: profilesPerUser }, () => fakeProfile(region));
    const user: SeedUser = {
      userId: '',
      email: `${prefix}-${i}@example.com`,
      refreshToken: pad(`Atzr|${prefix}-refresh-${i}-${randomBytes(6).toString('hex')}`, o.tokenChars),
      accessToken: pad(`Atza|${prefix}-access-${i}-${randomBytes(6).toString('hex')}`, o.tokenChars),
      region,
      profiles,
    };
    users.push(user);
    const legacy = o.legacyPlaintext?.(i) ?? false;
    const expires = typeof o.expiresInSeconds === 'function' ? o.expiresInSeconds(i) : (o.expiresInSeconds ?? 300);
    rows.push({
      email: user.email,
      refresh_token: legacy ? user.refreshToken : world.cipher.encrypt(user.refreshToken),
      access_token: legacy ? user.accessToken : world.cipher.encrypt(user.accessToken),
      expires_in: expires,
      region,
      enabled: o.refreshEnabled?.(i) ?? true,
    });
  }
  const { rows: ids } = await world.admin.query<{ id: string; email: string }>(
    `WITH input AS (
       SELECT * FROM jsonb_to_recordset(:rows::jsonb) AS x(email text, refresh_token text, access_token text, expires_in int, region text, enabled boolean)
     ), u AS (
       INSERT INTO users (email) SELECT email FROM input RETURNING id, email
     ), t AS (
       INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region, proactive_refresh_enabled)
       SELECT u.id, i.access_token, i.refresh_token, now() + make_interval(secs => i.expires_in), i.region, i.enabled
         FROM input i JOIN u ON u.email = i.email
     )
     SELECT id, email FROM u`,
    { rows: { sqlType: 'json', value: JSON.stringify(rows) } },
  );
  const idByEmail = new Map(ids.map((r) => [r.email, r.id]));
  const seeded = users.map((u) => ({ ...u, userId: idByEmail.get(u.email)! }));
  for (const u of seeded) {
    world.amazon.addUser({ userId: u.userId, refreshToken: u.refreshToken, accessToken: u.accessToken, refreshTokenMode: o.refreshTokenMode ?? 'echo', profiles: u.profiles });
  }
  if (o.accountsDueInSeconds !== undefined) {
    const accounts = seeded.flatMap((u) => u.profiles.map((p) => ({ user_id: u.userId, amazon_account_id: p.profileId })));
    await world.admin.query(
      `INSERT INTO user_accounts (user_id, amazon_account_id, status, sync_status, next_sync_at)
       SELECT user_id, amazon_account_id, 'active', 'completed', now() + make_interval(secs => :due)
         FROM jsonb_to_recordset(:accounts::jsonb) AS x(user_id uuid, amazon_account_id text)`,
      { accounts: { sqlType: 'json', value: JSON.stringify(accounts) }, due: o.accountsDueInSeconds },
    );
    // Users with accounts were synced before: their own schedule follows their accounts'.
    await world.admin.query(
      `UPDATE oauth_tokens SET sync_next_attempt_at = now() + make_interval(secs => :due)
        WHERE user_id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
      { ids: { sqlType: 'json', value: JSON.stringify(seeded.map((u) => u.userId)) }, due: o.accountsDueInSeconds },
    );
  }
  return seeded;
}

function pad(token: string, chars: number | undefined): string {
  return chars === undefined ? token : `${token}|`.padEnd(chars, 'x');
}

/** A logger that keeps every line, to assert on and to scan for secrets. */
export class RecordingLogger implements JobLogger {
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
  return { logger: new RecordingLogger(), metrics: new MetricTotals(), remainingTimeMs: overrides.remainingTimeMs ?? (() => 600_000) };
}

export type { Database, FakeAmazonKnobs };
