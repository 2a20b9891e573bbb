import { BadRequestException, ExecuteStatementCommand } from '@aws-sdk/client-rds-data';
import {
  DataApiDatabase,
  DatabaseError,
  DatabaseUnavailableError,
  ResultTooLargeError,
  TransactionExpiredError,
} from '../../../lambda/shared/db';
import { DataApiEmulator, REQUEST_TOO_LARGE_MESSAGE, startDataApiEmulator } from '../../../local/data-api/emulator';
import { startPostgres, TestPostgres } from '../../../local/postgres/embedded-postgres';

/** Data API specifics: resume retries, the 1 MiB limit, idle transaction expiry, wire errors. */
let pg: TestPostgres;
let url: string;
let emulator: DataApiEmulator;
let clock = 0;

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase();
  emulator = await startDataApiEmulator({ databaseUrl: url, now: () => clock });
  const setup = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target });
  await setup.query('CREATE TABLE items (n int PRIMARY KEY, body text NOT NULL)');
  await setup.query(`INSERT INTO items SELECT n, repeat('x', 1000) FROM generate_series(1, 1200) AS n`);
});
afterAll(async () => {
  await emulator?.close();
  await pg?.stop();
});

function database(retry: ConstructorParameters<typeof DataApiDatabase>[0]['retry'] = {}) {
  return new DataApiDatabase({
    client: emulator.createClient(),
    ...emulator.target,
    retry: { sleep: async () => undefined, ...retry },
  });
}

describe('DatabaseResumingException', () => {
  test('is retried until the cluster has resumed, with capped, jittered backoff', async () => {
    const delays: number[] = [];
    const db = database({
      baseDelayMs: 100,
      maxDelayMs: 400,
      random: () => 0.999,
      sleep: async (ms) => void delays.push(ms),
    });
    const failuresBefore = emulator.calls.injectedFailures;
    emulator.failNextCalls(4);
    const { rows } = await db.query<{ one: number }>('SELECT 1::int AS one');
    expect(rows).toEqual([{ one: 1 }]);
    expect(emulator.calls.injectedFailures - failuresBefore).toBe(4);
    expect(db.callCounts()).toMatchObject({ statements: 1, retries: 4, total: 5 });
    expect(delays).toEqual([99, 199, 399, 399]);
  });

  test('gives up after maxAttempts with DatabaseUnavailableError', async () => {
    const db = database({ maxAttempts: 3 });
    emulator.failNextCalls(10);
    const error = await db.query('SELECT 1').catch((e: unknown) => e);
    emulator.failNextCalls(0);
    expect(error).toBeInstanceOf(DatabaseUnavailableError);
    expect(error).toMatchObject({ attempts: 3 });
    expect((error as Error).message).toMatch(/DatabaseResumingException/);
  });

  test('does not retry past the time it has left: DatabaseUnavailableError at once, the wait never started', async () => {
    const delays: number[] = [];
    let left = 1_000;
    const db = database({
      baseDelayMs: 400,
      maxDelayMs: 5_000,
      random: () => 0.999,
      sleep: async (ms) => {
        delays.push(ms);
        left -= ms;
      },
      waitBudgetMs: () => left,
    });
    emulator.failNextCalls(10);
    const error = await db.query('SELECT 1').catch((e: unknown) => e);
    emulator.failNextCalls(0);
    // 399 ms fits in 1,000; then 601 left and the next delay is 799: not made.
    expect(delays).toEqual([399]);
    expect(error).toBeInstanceOf(DatabaseUnavailableError);
    expect(error).toMatchObject({ attempts: 2 });
    expect((error as Error).message).toMatch(
      /not retried: the next attempt \(in 799 ms\) would outlast the time left \(601 ms\)/,
    );
    expect((error as Error).message).toMatch(/DatabaseResumingException/);
  });

  test('retries BeginTransaction and the statements of a transaction', async () => {
    const db = database();
    emulator.failNextCalls(2);
    const n = await db.transaction(
      async (tx) => (await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM items')).rows[0].n,
    );
    expect(n).toBe(1200);
    expect(db.callCounts().retries).toBe(2);
  });

  test('is not retried for SQL errors', async () => {
    const db = database();
    await expect(db.query('SELECT * FROM no_such_table')).rejects.toThrow(/relation "no_such_table" does not exist/);
    expect(db.callCounts()).toMatchObject({ retries: 0, total: 1 });
  });
});

describe('1 MiB response limit', () => {
  test('a single query over the limit fails with ResultTooLargeError', async () => {
    await expect(database().query('SELECT n, body FROM items')).rejects.toBeInstanceOf(ResultTooLargeError);
  });

  test('the same rows under the limit are returned', async () => {
    const { rows } = await database().query('SELECT n, body FROM items WHERE n <= 500');
    expect(rows).toHaveLength(500);
  });
});

describe('4 MiB request limit', () => {
  test('a request over the limit is refused unrun, with the service’s BadRequestException; one just under is run', async () => {
    const big = 'y'.repeat(4 * 1024 * 1024);
    const before = emulator.calls.execute;
    const error = await database()
      .query(`INSERT INTO items (n, body) VALUES (5000, :body)`, { body: big })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseError);
    expect((error as DatabaseError).message).toBe(REQUEST_TOO_LARGE_MESSAGE);
    expect(((error as DatabaseError).cause as Error).name).toBe('BadRequestException');
    expect(emulator.calls.execute).toBe(before); // refused before it reached the database
    const { rows } = await database().query<{ n: number }>('SELECT count(*)::int AS n FROM items WHERE n = 5000');
    expect(rows[0].n).toBe(0);

    const body = 'z'.repeat(4 * 1024 * 1024 - 64 * 1024);
    await database().query(`INSERT INTO items (n, body) VALUES (5001, :body)`, { body });
    const { rows: stored } = await database().query<{ n: number }>(
      'SELECT length(body) AS n FROM items WHERE n = 5001',
    );
    expect(stored[0].n).toBe(body.length);
    await database().query('DELETE FROM items WHERE n = 5001');
  });
});

describe('transactions', () => {
  test('an idle transaction is rolled back after 3 minutes and cannot be used again', async () => {
    const db = database();
    const error = await db
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO items (n, body) VALUES (:n, 'idle')`, { n: 100_000 });
        clock += 3 * 60_000 + 1;
        await tx.query('SELECT 1');
      })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TransactionExpiredError);
    expect(emulator.openTransactions()).toBe(0);
    const { rows } = await db.query('SELECT n FROM items WHERE n = 100000');
    expect(rows).toEqual([]);
  });

  test('a transaction used within 3 minutes stays open', async () => {
    const db = database();
    await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO items (n, body) VALUES (:n, 'busy')`, { n: 100_001 });
      clock += 2 * 60_000;
      await tx.query('SELECT 1');
      clock += 2 * 60_000;
    });
    expect((await db.query('SELECT n FROM items WHERE n = 100001')).rows).toEqual([{ n: 100001 }]);
  });
});

describe('wire protocol', () => {
  test('SQL errors are 400 BadRequestException with the database message and x-amzn-errortype', async () => {
    const response = await fetch(`${emulator.endpoint}/Execute`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ ...emulator.target, sql: 'SELECT * FROM nope' }),
    });
    expect(response.status).toBe(400);
    expect(response.headers.get('x-amzn-errortype')).toBe('BadRequestException');
    expect(await response.json()).toEqual({
      message: expect.stringMatching(/^ERROR: relation "nope" does not exist\n {2}Position: 15$/),
    });
  });

  test('the SDK client receives a BadRequestException', async () => {
    const error = await emulator
      .createClient()
      .send(new ExecuteStatementCommand({ ...emulator.target, sql: 'SELECT 1/0' }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadRequestException);
    expect((error as Error).message).toBe('ERROR: division by zero');
  });

  test('records and column metadata have the service field shapes', async () => {
    const output = await emulator.createClient().send(
      new ExecuteStatementCommand({
        ...emulator.target,
        sql: `SELECT :id::uuid AS id, 7::int8 AS n, true AS b, NULL::text AS z, '2024-05-06 07:08:09.5+00'::timestamptz AS t, ARRAY[1,2] AS a`,
        parameters: [{ name: 'id', value: { stringValue: '6f9619ff-8b86-d011-b42d-00cf4fc964ff' }, typeHint: 'UUID' }],
        includeResultMetadata: true,
      }),
    );
    expect(output.records).toEqual([
      [
        { stringValue: '6f9619ff-8b86-d011-b42d-00cf4fc964ff' },
        { longValue: 7 },
        { booleanValue: true },
        { isNull: true },
        { stringValue: '2024-05-06 07:08:09.5' },
        { arrayValue: { longValues: [1, 2] } },
      ],
    ]);
    expect(output.columnMetadata?.map((c) => [c.name, c.typeName])).toEqual([
      ['id', 'uuid'],
      ['n', 'int8'],
      ['b', 'bool'],
      ['z', 'text'],
      ['t', 'timestamptz'],
      ['a', '_int4'],
    ]);
  });

  test('unknown transaction ids are rejected', async () => {
    const client = emulator.createClient();
    const error = await client
      .send(new ExecuteStatementCommand({ ...emulator.target, sql: 'SELECT 1', transactionId: 'no-such-transaction' }))
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadRequestException);
    expect((error as Error).message).toBe('Transaction no-such-transaction is not found');
  });
});
