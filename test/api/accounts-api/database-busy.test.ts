import { randomUUID } from 'node:crypto';
import {
  Database,
  DatabaseError,
  DatabaseUnavailableError,
  isDatabaseBusy,
  PgDatabase,
} from '../../../lambda/shared/db';
import { ApiWorld, request, startApiWorld } from '../fixture';

// A database too busy to serve a request (its statement timed out, no connection to be had, a
// lock not had in time, still resuming) is not a broken request: the API answers 503 with
// Retry-After, so callers and API Gateway's clients try again, and keeps 500 for the rest.
// The errors are the adapters' own, raised by the real database on both paths.

let world: ApiWorld;
const opened: Database[] = [];

beforeAll(async () => {
  world = await startApiWorld();
}, 120_000);

afterAll(async () => {
  await Promise.all(opened.map((db) => db.close()));
  await world?.close();
});

/** The error `db` raises for a statement that outlives its statement_timeout (SQLSTATE 57014). */
async function statementTimeout(db: Database): Promise<unknown> {
  return db
    .transaction(async (tx) => {
      await tx.query(`SET LOCAL statement_timeout = 20`);
      await tx.query(`SELECT pg_sleep(1)`);
    })
    .then(
      () => undefined,
      (error: unknown) => error,
    );
}

/** `db`, whose every statement first fails with `error`. */
function failingWith(db: Database, error: unknown): Database {
  const fail = async (): Promise<never> => {
    throw error;
  };
  return {
    query: fail,
    batch: fail,
    transaction: fail,
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

const PATHS: [string, () => Database][] = [
  ['Data API', () => world.apiDataApi()],
  ['node-postgres', () => new PgDatabase({ connection: world.apiLoginUrl })],
];

describe.each(PATHS)('%s', (_path, open) => {
  test('a statement timeout is 503 database-busy with Retry-After, logged, never a 500', async () => {
    const db = open();
    opened.push(db);
    const error = await statementTimeout(db);
    expect(error).toBeInstanceOf(DatabaseError);
    expect(isDatabaseBusy(error)).toBe(true);

    const response = await world.api({ db: failingWith(db, error) })(
      request('GET', '/v1/accounts', { token: world.token(randomUUID()) }),
    );

    expect(response.statusCode).toBe(503);
    expect(response.headers?.['retry-after']).toBe('2');
    expect(JSON.parse(response.body)).toMatchObject({ status: 503, retryAfterSeconds: 2 });
    expect(String(JSON.parse(response.body).type)).toMatch(/database-busy$/);
    expect(world.logger.text()).toContain('Request failed');
  });
});

test('a database still resuming after every retry is 503; any other database error stays 500', async () => {
  const db = world.apiDataApi();
  opened.push(db);
  const handle = (error: unknown) =>
    world.api({ db: failingWith(db, error) })(request('GET', '/v1/connections', { token: world.token(randomUUID()) }));

  expect((await handle(new DatabaseUnavailableError('still resuming', 5))).statusCode).toBe(503);
  expect((await handle(new DatabaseError('too many clients', { code: '53300' }))).statusCode).toBe(503);
  expect((await handle(new DatabaseError('ERROR: deadlock detected; SQLState: 40P01'))).statusCode).toBe(503);
  expect((await handle(new DatabaseError('ERROR: internal error; SQLState: XX000'))).statusCode).toBe(500);
  expect((await handle(new DatabaseError('relation does not exist', { code: '42P01' }))).statusCode).toBe(500);
  expect((await handle(new Error('not a database error'))).statusCode).toBe(500);
});
