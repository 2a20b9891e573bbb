import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { runAccountSync } from '../../lambda/account-sync/core';
import { previewAccountSync } from '../../lambda/account-sync/preview';
import { Database, DatabaseError, PgDatabase, QueryResult, Row, SqlParams } from '../../lambda/shared/db';
import { previewTokenRefresh, runTokenRefresh } from '../../lambda/token-refresh/core';
import { createTokenRoute } from '../../lambda/token-route/core';
import type { ApiRequestEvent } from '../../lambda/shared/http';
import { JobWorld, runtime, seedUsers, startJobWorld } from '../support/jobs';
import { rolePrivileges } from '../support/privileges';
import { withClient } from '../support/schema';
import { EXPECTED_WORKER_PRIVILEGES } from './worker-privileges.expected';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import { DatabaseRateBudgetStore } from '../../lambda/shared/amazon/rate-budget';
import { endpointLimitsFor, RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { QueueSender, runDispatch } from '../../lambda/dispatcher/core';
import { accountSyncSelection, tokenRefreshSelection } from '../../lambda/dispatcher/selections';
import type { FanOutMessage } from '../../lambda/shared/jobs/fan-out';
import { runEventPublisher } from '../../lambda/event-publisher/core';
import { runTokenReencryption } from '../../lambda/token-reencrypt/core';
import { TokenCipher, TokenKeyRing } from '../../lambda/shared/token-crypto';

// What the jobs' role may do, against what the jobs' statements need. The jobs run here as
// the jobs' login (member of accounts_worker, as in production) through a recorder; every
// statement they ran is then replayed as accounts_worker with one privilege revoked at a time
// (in a transaction that is rolled back). PostgreSQL checks column privileges before it
// touches a row, so a statement that needs the privilege is refused whatever the data.

const ROOT = join(__dirname, '..', '..');
/** Where the jobs' SQL lives: every statement of the jobs is in one of these. */
const STORES = [
  ...sourceFiles('lambda/token-refresh/store'),
  ...sourceFiles('lambda/account-sync/store'),
  'lambda/shared/amazon/usage-store.ts',
  'lambda/shared/amazon/rate-budget-store.ts',
  // The event publisher (migration 0023's outbox) runs as the jobs' login too.
  'lambda/event-publisher/store.ts',
  // The dispatchers' and the jobs' view of the regions Amazon paused (issue 25).
  'lambda/shared/jobs/region-pauses.ts',
  // The token keys' function (issue 29: re-encryption, usage per key) runs as the jobs' login too.
  'lambda/token-reencrypt/store.ts',
];
/** Code that runs SQL for other reasons: the adapters themselves, and the migration Lambda (as the owner). */
// The accounts API's SQL runs as its own login (authenticated, under RLS), not as the jobs'
// role: test/migrations/privileges.test.ts and test/api cover it.
const NOT_JOB_SQL = ['lambda/shared/db/', 'lambda/migrate/', 'lambda/accounts-api/'];
const CALL = /\.(?:query|batch)\s*(?:<[^()`]*?>)?\(/g;
const HAS_CALL = /\.(?:query|batch)\s*(?:<[^()`]*?>)?\(/;
const CALL_WITH_TEXT = /\.(?:query|batch)\s*(?:<[^()`]*?>)?\(\s*`([^`]*)`/g;
const REFUSED = '42501'; // insufficient_privilege
/** Without USAGE on a schema, its tables and functions are not found: undefined_table, undefined_function. */
const NOT_FOUND = ['42P01', '42883'];

interface Statement {
  readonly sql: string;
  readonly params?: SqlParams;
}

/** A database that passes everything through and remembers each statement's text and parameters. */
class RecordingDatabase implements Database {
  constructor(
    private readonly inner: Database,
    readonly statements: Statement[] = [],
  ) {}
  query<T extends object = Row>(sql: string, params?: SqlParams): Promise<QueryResult<T>> {
    this.statements.push({ sql, params });
    return this.inner.query<T>(sql, params);
  }
  batch(sql: string, paramSets: readonly SqlParams[]): Promise<void> {
    for (const params of paramSets.slice(0, 1)) this.statements.push({ sql, params });
    return this.inner.batch(sql, paramSets);
  }
  transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    return this.inner.transaction((tx) => fn(new RecordingDatabase(tx, this.statements)));
  }
  callCounts() {
    return this.inner.callCounts();
  }
  close() {
    return this.inner.close();
  }
}

function sourceFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((d) => d.isFile() && d.name.endsWith('.ts'))
    .map((d) => relative(ROOT, join(d.parentPath, d.name)));
}

/**
 * The SQL texts of the stores, as written: template literals whose only `${}` are SQL fragments
 * the stores define as constant template literals (`const NAME = \`…\``), expanded here.
 */
function storeStatements(): string[] {
  const texts: string[] = [];
  const fragments = new Map(
    STORES.flatMap((file) => [
      ...readFileSync(join(ROOT, file), 'utf8').matchAll(/^(?:export )?const ([A-Z_]+) = `([^`$]*)`;/gm),
    ]).map((m) => [m[1], m[2]]),
  );
  for (const file of STORES) {
    const source = readFileSync(join(ROOT, file), 'utf8');
    const literal = [...source.matchAll(CALL_WITH_TEXT)].map((m) =>
      m[1].replace(/\$\{([A-Z_]+)\}/g, (whole, name: string) => fragments.get(name) ?? whole),
    );
    expect({ file, calls: source.match(CALL)?.length ?? 0 }).toEqual({ file, calls: literal.length });
    for (const text of literal) expect(text).not.toContain('${');
    texts.push(...literal);
  }
  return texts;
}

let world: JobWorld;
const recorded: Statement[] = [];

beforeAll(async () => {
  world = await startJobWorld();
  const worker = new PgDatabase({ connection: world.workerUrl });
  try {
    const db = new RecordingDatabase(worker, recorded);
    // Work for both jobs: tokens due (one with refresh off), users due for a sync with and
    // without accounts, a few failures and 429s at Amazon, then each job twice (the second run
    // reads the pauses and usage the first recorded).
    await seedUsers(world, { count: 12, expiresInSeconds: 600, accountsDueInSeconds: -60 });
    await seedUsers(world, { count: 6, expiresInSeconds: 7200 });
    await seedUsers(world, { count: 2, expiresInSeconds: 600, refreshEnabled: () => false, accountsDueInSeconds: -60 });
    // The deploy check's dry runs read what is due.
    await previewTokenRefresh({ db, logger: runtime().logger });
    await previewAccountSync({ db, logger: runtime().logger });
    // An agency user with more accounts than one write-back request carries (chunked upserts),
    // synced on demand before Amazon's faults are switched on, so that path always runs.
    const [agency] = await seedUsers(world, { count: 1, expiresInSeconds: 7200, profilesPerUser: 9000 });
    const agencySync = await runAccountSync(
      { db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() },
      { syncType: 'manual', userId: agency.userId },
    );
    expect(agencySync.accountsSynced).toBe(9000);
    world.amazon.setKnobs({ rate5xx: 0.2, rate429: 0.1, retryAfterSeconds: 1 });
    // As in the Lambdas, Amazon's rate comes from the shared budgets in the database (with
    // ceilings too high to slow the test down); the 429s are reported to them.
    const limiters = new RateLimiterRegistry(
      endpointLimitsFor({ lwa: 1000, ads: 1000 }),
      {},
      new DatabaseRateBudgetStore(db),
    );
    const lwa = new LwaClient({
      clientId: world.amazon.clientId,
      clientSecret: world.amazon.clientSecret,
      tokenUrl: world.amazon.lwaTokenUrl,
      limiters,
      retry: { maxAttempts: 1 },
    });
    const ads = new AdsClient({ clientId: world.amazon.clientId, baseUrl: world.amazon.adsBaseUrl, limiters });
    for (let run = 0; run < 2; run++) {
      const rt = runtime();
      await runTokenRefresh({ db, lwa, cipher: world.cipher, ...rt, settings: { concurrency: 4 } });
      await runAccountSync({ db, ads, lwa, cipher: world.cipher, ...runtime(), settings: { concurrency: 4 } });
    }
    // A run that ends holding slots of the shared budget gives them back (the cores'
    // releaseUnused): here one that expected five requests and sent one, at 1 per second.
    const slow = new RateLimiterRegistry(endpointLimitsFor({ lwa: 1 }), {}, new DatabaseRateBudgetStore(db));
    slow.for('lwa', 'FE').expectRequests(5);
    await slow.for('lwa', 'FE').run(() => Promise.resolve());
    await slow.releaseUnused();
    expect(slow.for('lwa', 'FE').shared!.stats()).toMatchObject({ releases: 1 });
    // Fan-out: the dispatchers mark due ids (one message refused, so its ids' mark is taken off),
    // and the jobs claim the ids of the messages sent.
    await seedUsers(world, { count: 4, expiresInSeconds: 600, accountsDueInSeconds: -60 });
    for (const selection of [tokenRefreshSelection(db), accountSyncSelection(db)]) {
      const sent: FanOutMessage[] = [];
      let refuse = true;
      const queue: QueueSender = {
        sendBatch: (bodies) => {
          if (!refuse) sent.push(...bodies.map((b) => JSON.parse(b) as FanOutMessage));
          return Promise.resolve({ failed: refuse ? bodies.map((_b, i) => i) : [] });
        },
      };
      // The first tick's request is refused, and its retry (the ids' mark is taken off); the second tick sends.
      await expect(runDispatch({ selection, queue, ...runtime(), settings: { maxIds: 100 } })).rejects.toThrow(
        /could not be sent/,
      );
      refuse = false;
      await runDispatch({ selection, queue, ...runtime(), settings: { maxIds: 100 } });
      expect(sent.length).toBeGreaterThan(0);
      for (const given of sent)
        if (selection.job === 'token-refresh')
          await runTokenRefresh({ db, lwa, cipher: world.cipher, ...runtime(), settings: { given } });
        else
          await runAccountSync({ db, ads, lwa, cipher: world.cipher, ...runtime() }, { syncType: 'scheduled', given });
    }
    // The on-demand token route: a token refreshed at once (lease, Amazon, write-back), one
    // served as stored, and one whose lease another run holds (polled until the deadline).
    const [expiring, fresh, leased] = await seedUsers(world, {
      count: 3,
      expiresInSeconds: (i) => (i === 1 ? 7200 : 60),
    });
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = gen_random_uuid(), refresh_lease_expires_at = now() + interval '1 minute'
        WHERE user_id = :userId::uuid`,
      { userId: leased.userId },
    );
    const vend = createTokenRoute({
      db,
      lwa,
      cipher: world.cipher,
      logger: runtime().logger,
      authorize: () => ({ ok: true, caller: 'worker-privileges test' }),
      settings: { pollIntervalMs: 1, waitDeadlineMs: 20 },
    });
    for (const user of [expiring, fresh, leased]) {
      const event: ApiRequestEvent = {
        rawPath: '/internal/v1/access-tokens',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ userId: user.userId, region: user.region }),
        requestContext: { http: { method: 'POST' } },
      };
      expect([200, 502, 503]).toContain((await vend(event)).statusCode);
    }
    // The event publisher drains the events the runs above wrote; one connection's event is
    // refused in every attempt (given back with a retry time).
    let refusedUser: string | undefined;
    const published = await runEventPublisher({
      db,
      bus: {
        putEvents: (entries) => {
          const users = entries.map((e) => (JSON.parse(e.Detail) as { userId: string }).userId);
          refusedUser ??= users[0];
          return Promise.resolve({
            failed: users.flatMap((u, index) => (u === refusedUser ? [{ index, errorCode: 'InternalFailure' }] : [])),
          });
        },
      },
      ...runtime(),
      settings: { retryBaseMs: 1, retryMaxMs: 2 },
    });
    expect(published.published).toBeGreaterThan(0);
    expect(published.notPublished).toBe(1);
    // The token keys' function: a new current key, so every connection is re-encrypted (claim,
    // guarded write, a value no key reads given back), and the usage per key counted.
    const oldRing = JSON.parse(world.cipher.ring.toSecretText()) as { keys: Record<string, string> };
    const rotated = new TokenCipher(
      TokenKeyRing.parse(
        JSON.stringify({ current: 'next', keys: { ...oldRing.keys, next: randomBytes(32).toString('base64') } }),
      ),
    );
    await world.admin.query(`UPDATE oauth_tokens SET access_token = 'enc:v2:gone:AAAA' WHERE user_id = :userId::uuid`, {
      userId: fresh.userId,
    });
    const reencrypted = await runTokenReencryption({
      db,
      cipher: rotated,
      ...runtime(),
      settings: { maxPasses: 1, batchSize: 10 },
    });
    expect(reencrypted).toMatchObject({ unreadable: 1 });
    expect(reencrypted.reencrypted).toBeGreaterThan(0);
  } finally {
    await worker.close();
  }
}, 120_000);

afterAll(async () => {
  await world?.close();
});

/**
 * The recorded statements, one per distinct text: the run with the smallest parameters (the
 * privileges a statement needs do not depend on how many rows it carries, and the replays run
 * once per privilege).
 */
function distinctStatements(): Statement[] {
  const byText = new Map<string, { statement: Statement; size: number }>();
  for (const statement of recorded) {
    const size = JSON.stringify(statement.params ?? {}).length;
    const kept = byText.get(statement.sql);
    if (!kept || size < kept.size) byText.set(statement.sql, { statement, size });
  }
  return [...byText.values()].map((k) => k.statement);
}

class Rollback extends Error {}

/**
 * Replays every statement as accounts_worker, after running `setup` as the owner, all in one
 * transaction that is rolled back; returns the statements refused for want of a privilege
 * (with `firstOnly`, the first one: enough to show that a privilege is needed; those whose
 * text names more of `tryFirst` are replayed first, so it is found sooner). Each statement
 * runs from the same savepoint (ROLLBACK TO keeps it), so none sees another's changes.
 */
async function refused(
  setup: readonly string[],
  { firstOnly = false, tryFirst = [] as readonly string[] } = {},
): Promise<Statement[]> {
  const out: Statement[] = [];
  await world.admin
    .transaction(async (tx) => {
      for (const sql of setup) await tx.query(sql);
      await tx.query('SET LOCAL ROLE accounts_worker');
      await tx.query('SAVEPOINT replay');
      const score = (statement: Statement) => tryFirst.filter((name) => statement.sql.includes(name)).length;
      const statements = distinctStatements().sort((a, b) => score(b) - score(a));
      for (const statement of statements) {
        try {
          await tx.query(statement.sql, statement.params);
        } catch (error) {
          if (!(error instanceof DatabaseError) || (error.code !== REFUSED && !NOT_FOUND.includes(error.code ?? '')))
            throw error;
          out.push(statement);
        }
        await tx.query('ROLLBACK TO SAVEPOINT replay');
        if (firstOnly && out.length > 0) break;
      }
      throw new Rollback();
    })
    .catch((error: unknown) => {
      if (!(error instanceof Rollback)) throw error;
    });
  return out;
}

/** The relation or function a privilege is on, and its column: `SELECT (id) ON oauth_tokens` → oauth_tokens, id. */
function namedIn(privilege: string): string[] {
  const [, column, object] = /^\w+ (?:\((\w+)\) )?ON (?:SCHEMA |FUNCTION )?([\w.]+)/.exec(privilege) ?? [];
  return [object, column].filter((name): name is string => name !== undefined);
}

/** The REVOKE (as the owner) that takes one listed privilege away. */
function revoking(privilege: string): string[] {
  const revoke = `REVOKE ${privilege} FROM accounts_worker`;
  // PostgreSQL's own default lets PUBLIC use the schema `public`: take that too, so that the
  // replay shows what the role's own grant is for (databases that revoke it, as hardening
  // guides advise).
  return privilege.includes(' ON SCHEMA ') ? [revoke, `REVOKE ${privilege} FROM PUBLIC`] : [revoke];
}

test('the jobs ran every statement of their stores, and no job code outside the stores runs SQL', () => {
  const outside = sourceFiles('lambda')
    .filter((f) => !STORES.includes(f) && !NOT_JOB_SQL.some((dir) => f.startsWith(dir)))
    .filter((f) => HAS_CALL.test(readFileSync(join(ROOT, f), 'utf8')));
  expect(outside).toEqual([]);
  expect(
    distinctStatements()
      .map((s) => s.sql)
      .sort(),
  ).toEqual(storeStatements().sort());
});

test('accounts_worker holds exactly the listed privileges, and its login only the migration names', async () => {
  const login = new URL(world.workerUrl).username;
  await withClient(world.url, async (c) => {
    expect(await rolePrivileges(c, 'accounts_worker')).toEqual([...EXPECTED_WORKER_PRIVILEGES].sort());
    // Of its own, the login may read the migration names: `npm run verify` checks the schema
    // version through the Data API signed in as the jobs are (the custom resource grants it).
    expect(await rolePrivileges(c, login)).toEqual(['MEMBER OF accounts_worker', 'SELECT (name) ON pgmigrations']);
  });
});

test('with its privileges, accounts_worker may run every statement of the jobs', async () => {
  expect(distinctStatements().length).toBeGreaterThan(0);
  expect(await refused([])).toEqual([]);
});

test('every privilege accounts_worker holds is needed by a statement of the jobs', async () => {
  const unused: string[] = [];
  for (const privilege of EXPECTED_WORKER_PRIVILEGES) {
    if ((await refused(revoking(privilege), { firstOnly: true, tryFirst: namedIn(privilege) })).length === 0)
      unused.push(privilege);
  }
  expect(unused).toEqual([]);
}, 300_000);

test('the worker reads nothing of users', async () => {
  await withClient(world.workerUrl, async (c) => {
    await expect(c.query('SELECT id FROM users LIMIT 1')).rejects.toMatchObject({ code: REFUSED });
    await expect(c.query('SELECT count(*) FROM users')).rejects.toMatchObject({ code: REFUSED });
  });
});
