import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { randomBytes, randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { scramSha256Verifier } from '../../../../lambda/migrate/worker-login';
import {
  AUTHENTICATION_RETRY_DELAY_MS,
  Database,
  DatabaseError,
  DataApiDatabase,
  PgDatabase,
} from '../../../../lambda/shared/db';
import { runTokenRefresh } from '../../../../lambda/token-refresh/core';
import { DataApiEmulator, startDataApiEmulator } from '../../../../local/data-api/emulator';
import { SecretsManagerStandIn, startSecretsManagerStandIn } from '../../../../local/secrets-manager/stand-in';
import { ApiWorld, request, startApiWorld } from '../../../api/fixture';
import { runtime, seedUsers } from '../../../support/jobs';

// Rotation of a Data API login's password (single user, every 30 days): the rotation function
// changes the password in the database, then makes the new version of the secret current. In
// between, a new connection made with the secret's old password is refused (28P01). Here the
// password of the jobs' login and of the API's login is changed (ALTER ROLE … PASSWORD, as the
// rotation's setSecret does) underneath a running token refresh and before an API request,
// and the secret (a Secrets Manager stand-in, read through the real SDK client for every new
// connection) is updated afterwards, during the adapter's pause: on the Data API path (the
// emulator reads the secret per connection and opens one per call) and on node-postgres (the
// pool's `password` reads the secret). Without the retry the same runs fail.

let world: ApiWorld;
let secrets: SecretsManagerStandIn;
let sm: SecretsManagerClient;
const emulators: DataApiEmulator[] = [];
const opened: Database[] = [];

interface Login {
  readonly username: string;
  readonly original: string;
  readonly arn: string;
}
let jobs: Login;
let api: Login;

beforeAll(async () => {
  world = await startApiWorld();
  const login = (url: string, name: string): Login => {
    const u = new URL(url);
    return {
      username: decodeURIComponent(u.username),
      original: decodeURIComponent(u.password),
      arn: `arn:aws:secretsmanager:eu-west-1:123456789012:secret:${name}-AbCdEf`,
    };
  };
  jobs = login(world.workerUrl, 'jobs-login');
  api = login(world.apiLoginUrl, 'api-login');
  secrets = await startSecretsManagerStandIn({
    [jobs.arn]: JSON.stringify({ username: jobs.username, password: jobs.original }),
    [api.arn]: JSON.stringify({ username: api.username, password: api.original }),
  });
  sm = new SecretsManagerClient({
    endpoint: secrets.endpoint,
    region: 'eu-west-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
}, 120_000);

afterEach(async () => {
  await Promise.all(opened.splice(0).map((db) => db.close()));
  await Promise.all(emulators.splice(0).map((e) => e.close()));
  // Back to the original passwords, for the world's own connections.
  for (const login of [jobs, api]) {
    await alterPassword(login, login.original);
    secrets.put(login.arn, JSON.stringify({ username: login.username, password: login.original }));
  }
});

afterAll(async () => {
  sm?.destroy();
  await secrets?.close();
  await world?.close();
});

/** The login's password as the secret's current version says. */
async function currentPassword(login: Login): Promise<string> {
  const { SecretString } = await sm.send(new GetSecretValueCommand({ SecretId: login.arn }));
  return (JSON.parse(SecretString!) as { password: string }).password;
}

async function alterPassword(login: Login, password: string): Promise<void> {
  const c = new Client({ connectionString: world.url });
  await c.connect();
  try {
    const { rows } = await c.query<{ s: string }>(
      `SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text) AS s`,
      [login.username, scramSha256Verifier(password)],
    );
    await c.query(rows[0].s);
  } finally {
    await c.end();
  }
}

/** One rotation of `login`: the database's password first, the secret later (finish). */
function rotation(login: Login) {
  const next = randomBytes(16).toString('hex');
  let finished = false;
  return {
    changePassword: () => alterPassword(login, next),
    finish() {
      finished = true;
      secrets.put(login.arn, JSON.stringify({ username: login.username, password: next }));
    },
    get finished() {
      return finished;
    },
  };
}

type Rotation = ReturnType<typeof rotation>;

/**
 * What each test gets: an adapter of `path` as `login`, whose pause before the retry records
 * its length and lets the rotation finish (the secret's update lands during the pause).
 */
async function adapter(
  path: 'Data API' | 'node-postgres',
  login: Login,
  r: Rotation,
  options: { retry?: boolean; finishDuringPause?: boolean; waitBudgetMs?: () => number } = {},
): Promise<{ db: Database; pauses: number[] }> {
  const pauses: number[] = [];
  const sleep = async (ms: number) => {
    pauses.push(ms);
    if (options.finishDuringPause ?? true) r.finish();
  };
  const authenticationRetryDelayMs = options.retry === false ? (false as const) : undefined;
  const database = new URL(world.url).pathname.slice(1);
  let db: Database;
  if (path === 'Data API') {
    const emulator = await startDataApiEmulator({
      databaseUrl: `postgres://${encodeURIComponent(login.username)}@127.0.0.1:${world.pg.port}/${database}`,
      password: () => currentPassword(login),
      newConnectionPerCall: true,
    });
    emulators.push(emulator);
    db = new DataApiDatabase({
      client: emulator.createClient(),
      ...emulator.target,
      retry: { baseDelayMs: 5, maxDelayMs: 20, sleep, authenticationRetryDelayMs, waitBudgetMs: options.waitBudgetMs },
    });
  } else {
    db = new PgDatabase({
      connection: {
        host: '127.0.0.1',
        port: world.pg.port,
        database,
        user: login.username,
        password: () => currentPassword(login),
        maxUses: 1,
      },
      sleep,
      authenticationRetryDelayMs,
      waitBudgetMs: options.waitBudgetMs,
    });
  }
  opened.push(db);
  return { db, pauses };
}

/** `db`, with `before` run once before its `n`-th call (query, batch or transaction). */
function beforeCall(db: Database, n: number, before: () => Promise<void>): Database {
  let calls = 0;
  const tick = async () => {
    calls += 1;
    if (calls === n) await before();
  };
  return {
    query: async (sql, params) => (await tick(), db.query(sql, params)),
    batch: async (sql, sets) => (await tick(), db.batch(sql, sets)),
    transaction: async (fn) => (await tick(), db.transaction(fn)),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

const PATHS = ['Data API', 'node-postgres'] as const;

describe.each(PATHS)('%s', (path) => {
  async function refreshUnderRotation(retry: boolean) {
    await world.reset();
    const users = await seedUsers(world, { count: 6, expiresInSeconds: 120 });
    const r = rotation(jobs);
    const { db, pauses } = await adapter(path, jobs, r, { retry });
    // The job has started (its first calls done) when the password changes underneath it.
    const job = runTokenRefresh({
      db: beforeCall(db, 3, r.changePassword),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime(),
      settings: { concurrency: 1, batchSize: 2 },
    });
    const outcome = await job.then(
      (summary) => ({ summary, error: undefined }),
      (error: unknown) => ({ summary: undefined, error }),
    );
    return { users, outcome, pauses, rotation: r };
  }

  test('a token refresh whose login’s password changes underneath it waits and refreshes every due token', async () => {
    const { users, outcome, pauses, rotation: r } = await refreshUnderRotation(true);
    expect(outcome.error).toBeUndefined();
    expect(outcome.summary).toMatchObject({ claimed: users.length, refreshed: users.length, failed: 0, notWritten: 0 });
    // Each call the database refused between the password change and the secret's update waited
    // once: usually one, but a call already in flight when the password changed (the refresh
    // overlaps its calls to the database) is refused too and waits as well. That a call retries
    // exactly once is the test below that keeps refusing.
    expect(pauses.length).toBeGreaterThanOrEqual(1);
    expect(pauses.every((ms) => ms === AUTHENTICATION_RETRY_DELAY_MS)).toBe(true);
    expect(r.finished).toBe(true);
  });

  test('without the retry, the same rotation fails the token refresh', async () => {
    const { outcome, pauses } = await refreshUnderRotation(false);
    expect(pauses).toEqual([]);
    expect(outcome.summary).toBeUndefined();
    expect(outcome.error).toBeInstanceOf(DatabaseError);
    expect((outcome.error as Error).message).toMatch(/password authentication failed for user "[^"]+"/);
  });

  async function requestUnderRotation(retry: boolean) {
    const r = rotation(api);
    const { db, pauses } = await adapter(path, api, r, { retry });
    const handler = world.api({ db });
    const token = world.token(randomUUID());
    await r.changePassword();
    const response = await handler(request('GET', '/v1/connections', { token }));
    return { response, pauses };
  }

  test('an API request whose login’s password has just changed waits once and answers 200', async () => {
    const { response, pauses } = await requestUnderRotation(true);
    expect(response.statusCode).toBe(200);
    expect(JSON.parse(response.body)).toEqual({ items: [] });
    expect(pauses).toEqual([AUTHENTICATION_RETRY_DELAY_MS]);
  });

  test('without the retry, the same request answers 500', async () => {
    const { response, pauses } = await requestUnderRotation(false);
    expect(response.statusCode).toBe(500);
    expect(pauses).toEqual([]);
  });

  test('a password still refused after the pause fails after exactly one retry', async () => {
    const r = rotation(api);
    const { db, pauses } = await adapter(path, api, r, { finishDuringPause: false });
    await r.changePassword();
    const error = await db.query('SELECT 1 AS one').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseError);
    expect((error as Error).message).toMatch(/password authentication failed/);
    expect(pauses).toEqual([AUTHENTICATION_RETRY_DELAY_MS]);
  });

  test('no pause that would outlast the caller’s deadline: the refusal is reported at once', async () => {
    const r = rotation(api);
    const { db, pauses } = await adapter(path, api, r, { waitBudgetMs: () => AUTHENTICATION_RETRY_DELAY_MS - 1 });
    await r.changePassword();
    await expect(db.query('SELECT 1 AS one')).rejects.toThrow(/password authentication failed/);
    expect(pauses).toEqual([]);
  });
});

test('the emulator answers a refused password as the Data API renders connection errors', async () => {
  const r = rotation(api);
  const { db } = await adapter('Data API', api, r, { retry: false });
  await r.changePassword();
  const error = (await db.query('SELECT 1').catch((e: unknown) => e)) as DatabaseError;
  expect(error.message).toBe(`ERROR: password authentication failed for user "${api.username}"; SQLState: 28P01`);
  expect((error.cause as { name?: string }).name).toBe('DatabaseErrorException');
});
