import { randomBytes, randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { runMigrations } from '../lambda/migrate/run-migrations';
import { ensureWorkerLogin } from '../lambda/migrate/worker-login';
import { PgDatabase } from '../lambda/shared/db';
import { AMAZON_REGIONS, type AmazonRegion } from '../lambda/shared/amazon/regions';
import { encryptToken, oauthTokenBinding, parseTokenKey, TokenCipher } from '../lambda/shared/token-crypto';
import { FakeAmazon, FakeAmazonKnobs, RefreshTokenMode, startFakeAmazon } from './amazon/fake-amazon';
import { FakeProfile, fakeProfile } from './amazon/profiles';
import { DataApiEmulator, startDataApiEmulator } from './data-api/emulator';
import { startPostgres, TestPostgres } from './postgres/embedded-postgres';

/**
 * Everything the jobs reach in production, as local stand-ins started together: PostgreSQL 17
 * with the schema (migrated by the custom resource's own code), the Data API emulator on it
 * (logged in as the jobs' least-privilege login) and the fake Amazon. The tests, the benchmark
 * and `npm start` build on it; the clients the jobs use are built by whoever runs a job.
 */
export interface LocalWorld {
  readonly pg: TestPostgres;
  /** The database as its owner (migrations, seeding, assertions). */
  readonly url: string;
  /** The same database as the jobs' login (`accounts_worker` member, subject to RLS). */
  readonly workerUrl: string;
  readonly emulator: DataApiEmulator;
  readonly amazon: FakeAmazon;
  readonly cipher: TokenCipher;
  /** The cipher's key as TOKEN_ENCRYPTION_KEY takes it (base64). */
  readonly keyBase64: string;
  /** A node-postgres database as the owner, for seeding and assertions. */
  readonly admin: PgDatabase;
  /** Empties the data tables and sets the fake's knobs back to "all off". */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/**
 * A directory of migrations to apply instead of the repository's (the SQL mutation harness,
 * scripts/sql-mutation.ts, points the tests at a copy with one edit in it).
 */
export const LOCAL_MIGRATIONS_DIR_ENV = 'LOCAL_MIGRATIONS_DIR';

export async function startLocalWorld(): Promise<LocalWorld> {
  const migrationsDir = process.env[LOCAL_MIGRATIONS_DIR_ENV] || undefined;
  // In the tests, the server may be a copy of one whose template database has every migration
  // of the repository (test/support/postgres-templates.ts): the world's database is then cloned
  // from it, and the run below finds nothing left to apply.
  const pg = await startPostgres({ migrated: migrationsDir === undefined });
  const url = await pg.createDatabase(undefined, migrationsDir === undefined ? pg.migratedTemplate : undefined);
  await runMigrations({ database: url, dir: migrationsDir });
  // The jobs reach the database as production's do: the least-privilege login user the
  // migration custom resource creates (member of accounts_worker, subject to RLS).
  const worker = { username: 'accounts_jobs', password: randomBytes(12).toString('hex') };
  const setup = new Client({ connectionString: url });
  await setup.connect();
  await ensureWorkerLogin(setup, worker).finally(() => setup.end());
  const workerUrl = `postgres://${worker.username}:${worker.password}@127.0.0.1:${pg.port}/${new URL(url).pathname.slice(1)}`;
  const emulator = await startDataApiEmulator({ databaseUrl: workerUrl });
  const amazon = await startFakeAmazon({ seed: 7 });
  const keyBase64 = randomBytes(32).toString('base64');
  const cipher = TokenCipher.fromBase64(keyBase64);
  const admin = new PgDatabase({ connection: url });
  return {
    pg,
    url,
    workerUrl,
    emulator,
    amazon,
    cipher,
    keyBase64,
    admin,
    async reset() {
      await admin.query(
        'TRUNCATE users, oauth_tokens, user_accounts, account_sync_history, rate_limit_tracking, amazon_rate_budget, event_outbox, connection_health CASCADE',
      );
      amazon.setKnobs({ latencyMs: 0, rate429: 0, rate5xx: 0, hangRate: 0, malformedRate: 0, failFirstN: 0 });
      emulator.injectFault(undefined);
    },
    async close() {
      await admin.close();
      await amazon.close();
      await emulator.close();
      await pg.stop();
    },
  };
}

/** One of a seeded user's connections: an oauth_tokens row, and the same connection at the fake Amazon. */
export interface SeedConnection {
  readonly region: AmazonRegion;
  readonly refreshToken: string;
  readonly accessToken: string;
  /** The profiles Amazon lists in this region. */
  readonly profiles: FakeProfile[];
}

export interface SeedUser {
  readonly userId: string;
  readonly email: string;
  /** The first connection's tokens and region (the only one unless `regions` gave more). */
  readonly refreshToken: string;
  readonly accessToken: string;
  readonly region: AmazonRegion;
  /** Every connection's profiles. */
  readonly profiles: FakeProfile[];
  readonly connections: readonly SeedConnection[];
}

export interface SeedOptions {
  readonly count: number;
  /** Token expiry relative to now, in seconds. @default 300 (due for refresh) */
  readonly expiresInSeconds?: number | ((i: number) => number);
  readonly refreshEnabled?: (i: number) => boolean;
  /** The user's connections, one per region. @default - one, in NA, EU, FE by turns */
  readonly regions?: (i: number) => readonly AmazonRegion[];
  /** Profiles per connection at Amazon. @default 2 */
  readonly profilesPerUser?: number | ((i: number) => number);
  /** Store tokens as legacy plaintext instead of enc:v2. @default false */
  readonly legacyPlaintext?: (i: number) => boolean;
  /** Store tokens as enc:v1 under the world's key (the format before key rings) instead of enc:v2. @default false */
  readonly v1Encrypted?: (i: number) => boolean;
  readonly refreshTokenMode?: RefreshTokenMode;
  /** Also create user_accounts rows for the Amazon profiles, due at this offset (seconds from now). @default - no rows */
  readonly accountsDueInSeconds?: number;
  readonly prefix?: string;
  /** Pad tokens to this many characters (Amazon allows up to 2,048 bytes). @default - short tokens */
  readonly tokenChars?: number;
}

/**
 * Creates users with their connections (tokens) in the database and the same users at the
 * fake Amazon, each connection bound to its region there.
 */
export async function seedUsers(world: LocalWorld, o: SeedOptions): Promise<SeedUser[]> {
  const prefix = o.prefix ?? randomBytes(3).toString('hex');
  const users: SeedUser[] = [];
  const rows: Array<Record<string, unknown>> = [];
  for (let i = 0; i < o.count; i++) {
    const profilesPerUser = typeof o.profilesPerUser === 'function' ? o.profilesPerUser(i) : (o.profilesPerUser ?? 2);
    const regions = o.regions?.(i) ?? [AMAZON_REGIONS[i % AMAZON_REGIONS.length]];
    const connections = regions.map((region, n) => {
      const suffix = n === 0 ? '' : `-${region}`;
      return {
        region,
        refreshToken: pad(`Atzr|${prefix}-refresh-${i}${suffix}-${randomBytes(6).toString('hex')}`, o.tokenChars),
        accessToken: pad(`Atza|${prefix}-access-${i}${suffix}-${randomBytes(6).toString('hex')}`, o.tokenChars),
        profiles: Array.from({ length: profilesPerUser }, () => fakeProfile(region)),
      };
    });
    // The id is made here: each token is encrypted bound to its row (user and region).
    const userId = randomUUID();
    const user: SeedUser = {
      userId,
      email: `${prefix}-${i}@example.com`,
      refreshToken: connections[0].refreshToken,
      accessToken: connections[0].accessToken,
      region: connections[0].region,
      profiles: connections.flatMap((c) => c.profiles),
      connections,
    };
    users.push(user);
    const legacy = o.legacyPlaintext?.(i) ?? false;
    const v1 = !legacy && (o.v1Encrypted?.(i) ?? false);
    const stored = (token: string, region: AmazonRegion, column: 'access_token' | 'refresh_token') =>
      legacy
        ? token
        : v1
          ? encryptToken(token, parseTokenKey(world.keyBase64))
          : world.cipher.encrypt(token, oauthTokenBinding({ userId, region }, column));
    const expires = typeof o.expiresInSeconds === 'function' ? o.expiresInSeconds(i) : (o.expiresInSeconds ?? 300);
    for (const c of connections)
      rows.push({
        email: user.email,
        user_id: userId,
        refresh_token: stored(c.refreshToken, c.region, 'refresh_token'),
        access_token: stored(c.accessToken, c.region, 'access_token'),
        expires_in: expires,
        region: c.region,
        enabled: o.refreshEnabled?.(i) ?? true,
      });
  }
  const { rows: ids } = await world.admin.query<{ id: string; email: string }>(
    `WITH input AS (
       SELECT * FROM jsonb_to_recordset(:rows::jsonb) AS x(user_id uuid, email text, refresh_token text, access_token text, expires_in int, region text, enabled boolean)
     ), u AS (
       INSERT INTO users (id, email) SELECT DISTINCT user_id, email FROM input RETURNING id, email
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
    for (const c of u.connections)
      world.amazon.addUser({
        userId: u.userId,
        region: c.region,
        refreshToken: c.refreshToken,
        accessToken: c.accessToken,
        refreshTokenMode: o.refreshTokenMode ?? 'echo',
        profiles: c.profiles,
      });
  }
  if (o.accountsDueInSeconds !== undefined) {
    const accounts = seeded.flatMap((u) =>
      u.profiles.map((p) => ({ user_id: u.userId, amazon_account_id: p.profileId, region: p.region })),
    );
    await world.admin.query(
      `INSERT INTO user_accounts (user_id, amazon_account_id, region, status, sync_status, next_sync_at)
       SELECT user_id, amazon_account_id, region, 'active', 'completed', now() + make_interval(secs => :due)
         FROM jsonb_to_recordset(:accounts::jsonb) AS x(user_id uuid, amazon_account_id text, region text)`,
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

export type { FakeAmazonKnobs };
