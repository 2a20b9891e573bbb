import { randomBytes } from 'node:crypto';
import {
  Database,
  DatabaseError,
  DatabaseUnavailableError,
  isDatabaseBusy,
  SqlParams,
} from '../../../lambda/shared/db';
import type { ApiRequestEvent, ApiResult } from '../../../lambda/shared/http';
import { createTokenRoute } from '../../../lambda/token-route/core';
import { JobWorld, RecordingLogger, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

// The token route when the database is too busy to serve it (its statement timed out, no
// connection to be had, a lock not had in time, a serialization conflict, still resuming):
// 503 database-busy with Retry-After, as the accounts API answers, never a 500. The statement
// timeout is the route's own statement on the real database, on both paths: the route's
// connection has a short statement_timeout while another session holds the connection's row.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const CALLER = 'arn:aws:sts::123456789012:assumed-role/product-server/i-0abc';

function tokenRequest(body: unknown): ApiRequestEvent {
  return {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      requestId: randomBytes(8).toString('hex'),
      http: { method: 'POST', path: '/internal/v1/access-tokens' },
      authorizer: { iam: { userArn: CALLER, accountId: '123456789012' } },
    },
  } as ApiRequestEvent;
}

/** `db`, each of whose statements runs in a transaction of its own with this statement_timeout. */
function withStatementTimeout(db: Database, ms: number): Database {
  const timed = <T>(run: (tx: Database) => Promise<T>) =>
    db.transaction(async (tx) => {
      await tx.query(`SET LOCAL statement_timeout = ${Math.floor(ms)}`);
      return run(tx);
    });
  return {
    query: (sql: string, params?: SqlParams) => timed((tx) => tx.query(sql, params)),
    batch: (sql: string, sets: readonly SqlParams[]) => timed((tx) => tx.batch(sql, sets)),
    transaction: (fn) => timed((tx) => fn(tx)),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

/** `db`, whose every statement first fails with `error`. */
function failingWith(db: Database, error: unknown): Database {
  const fail = async (): Promise<never> => {
    throw error;
  };
  return { query: fail, batch: fail, transaction: fail, callCounts: () => db.callCounts(), close: () => db.close() };
}

function route(db: Database, logger = new RecordingLogger()) {
  return createTokenRoute({ db, lwa: world.lwa(), cipher: world.cipher, logger });
}

function expectDatabaseBusy(result: ApiResult): void {
  expect(result.statusCode).toBe(503);
  expect(result.headers['retry-after']).toBe('2');
  const body = JSON.parse(result.body) as Record<string, unknown>;
  expect(body).toMatchObject({ status: 503, retryAfterSeconds: 2 });
  expect(String(body.type)).toMatch(/database-busy$/);
}

describe.each(PATHS)('%s', (_path, database) => {
  test("the route's statement times out behind a row another session holds: 503 database-busy with Retry-After, logged, no Amazon call", async () => {
    const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 120, regions: () => ['EU'] });
    const logger = new RecordingLogger();
    const lwaBefore = world.amazon.counters.total('lwa');
    let result: ApiResult | undefined;
    // Another session holds the connection's row (a long write elsewhere) while the request runs.
    await world.admin.transaction(async (tx) => {
      await tx.query(`SELECT 1 FROM oauth_tokens WHERE user_id = :userId::uuid FOR UPDATE`, { userId: user.userId });
      result = await route(
        withStatementTimeout(database(), 200),
        logger,
      )(tokenRequest({ userId: user.userId, region: 'EU' }));
    });

    expectDatabaseBusy(result!);
    expect(world.amazon.counters.total('lwa')).toBe(lwaBefore);
    expect(logger.text()).toContain('Token request failed');
    expect(logger.lines.find((l) => l.message === 'request')?.attributes).toMatchObject({ status: 503 });
    // No lease left behind.
    const { rows } = await world.admin.query<{ refresh_lease_owner: string | null }>(
      `SELECT refresh_lease_owner FROM oauth_tokens WHERE user_id = :userId::uuid`,
      { userId: user.userId },
    );
    expect(rows[0].refresh_lease_owner).toBeNull();
  });

  test('the statement timeout as the adapter raises it is recognised as busy', async () => {
    const error = await database()
      .transaction(async (tx) => {
        await tx.query(`SET LOCAL statement_timeout = 20`);
        await tx.query(`SELECT pg_sleep(1)`);
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(DatabaseError);
    expect(isDatabaseBusy(error)).toBe(true);
    const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 120, regions: () => ['EU'] });
    expectDatabaseBusy(
      await route(failingWith(database(), error))(tokenRequest({ userId: user.userId, region: 'EU' })),
    );
  });
});

test('a database still resuming after every retry, too many connections or a deadlock is 503; any other database error stays 500', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 120, regions: () => ['EU'] });
  const db = world.dataApi();
  const handle = (error: unknown) => route(failingWith(db, error))(tokenRequest({ userId: user.userId, region: 'EU' }));

  expectDatabaseBusy(await handle(new DatabaseUnavailableError('still resuming', 5)));
  expectDatabaseBusy(await handle(new DatabaseError('too many clients', { code: '53300' })));
  expectDatabaseBusy(await handle(new DatabaseError('ERROR: deadlock detected; SQLState: 40P01')));
  expect((await handle(new DatabaseError('ERROR: internal error; SQLState: XX000'))).statusCode).toBe(500);
  expect((await handle(new DatabaseError('relation does not exist', { code: '42P01' }))).statusCode).toBe(500);
  expect((await handle(new Error('not a database error'))).statusCode).toBe(500);
});

test("a failure of the route is logged as an error with the request's route, caller, user, region and the error's name; a thrown non-error as 'unknown'", async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 120, regions: () => ['EU'] });
  const db = world.dataApi();
  const failed = async (error: unknown) => {
    const logger = new RecordingLogger();
    const result = await route(failingWith(db, error), logger)(tokenRequest({ userId: user.userId, region: 'EU' }));
    expect(result.statusCode).toBe(500);
    return logger.lines.filter((l) => l.level === 'error');
  };
  const line = (error: string) => ({
    level: 'error',
    message: 'Token request failed',
    attributes: { route: 'POST /internal/v1/access-tokens', caller: CALLER, userId: user.userId, region: 'EU', error },
  });

  expect(await failed(new DatabaseError('relation does not exist', { code: '42P01' }))).toEqual([
    line('DatabaseError'),
  ]);
  expect(await failed(undefined)).toEqual([line('unknown')]);
});
