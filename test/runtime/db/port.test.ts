import { runMigrations } from '../../../lambda/migrate/run-migrations';
import {
  Database,
  DatabaseError,
  DataApiDatabase,
  PgDatabase,
  readAllPages,
  sqlDecimal,
  sqlJson,
  sqlUuid,
} from '../../../lambda/shared/db';
import { DataApiEmulator, startDataApiEmulator } from '../../../local/data-api/emulator';
import { startPostgres, TestPostgres } from '../../../local/postgres/embedded-postgres';

/**
 * One behaviour contract, two adapters: node-postgres directly, and the Data API adapter
 * through the real AWS SDK client pointed at the emulator (which runs on real PostgreSQL).
 */
let pg: TestPostgres;
let url: string;
let emulator: DataApiEmulator;
const adapters: Record<string, () => Database> = {
  'node-postgres': () => new PgDatabase({ connection: url }),
  'RDS Data API (emulator)': () =>
    new DataApiDatabase({
      client: emulator.createClient(),
      ...emulator.target,
      retry: { sleep: async () => undefined },
    }),
};

beforeAll(async () => {
  // A clone of the run's migrated template when there is one (then nothing is left to apply).
  pg = await startPostgres({ migrated: true });
  url = await pg.createDatabase(undefined, pg.migratedTemplate);
  await runMigrations({ database: url });
  emulator = await startDataApiEmulator({ databaseUrl: url });
});
afterAll(async () => {
  await emulator?.close();
  await pg?.stop();
});

export const HOSTILE_STRINGS = [
  "O'Brien",
  "'; DROP TABLE users; --",
  'Robert"); DROP TABLE oauth_tokens;--',
  'back\\slash \\x00 \\n not-escapes',
  ':name :id ::uuid $1 ? %s',
  '$$ dollar $tag$ quotes $$',
  '/* not a comment */ -- nor this',
  'tab\tnew\nline\rcarriage \u0001\u001f\u007f',
  'émoji 👩‍💻 🚀 ∑ 中文 עברית \u200b\ufeff',
  '{"nested":"\\"quoted\\"","a":[1,{"b":"c\'d"}]}',
  '',
  ' ',
  'x'.repeat(10_000),
];

describe.each(Object.keys(adapters))('database port contract: %s', (adapterName) => {
  let db: Database;
  let table: string;
  beforeAll(async () => {
    db = adapters[adapterName]();
    table = adapterName === 'node-postgres' ? 'contract_pg' : 'contract_data_api';
    await db.query(
      `CREATE TABLE ${table} (id serial PRIMARY KEY, label text, payload jsonb, at timestamptz, flag boolean, big bigint, amount numeric, ref uuid, bytes bytea)`,
    );
  });
  afterAll(async () => {
    await db.close();
  });

  test.each(HOSTILE_STRINGS.map((s, i) => [i, s]))(
    'hostile string #%i round-trips unchanged as a value and in jsonb',
    async (_i, value) => {
      const { rows } = await db.query<{ id: number }>(
        `INSERT INTO ${table} (label, payload) VALUES (:label, :payload::jsonb) RETURNING id`,
        {
          label: value,
          payload: sqlJson({ value, nested: { value } }),
        },
      );
      const read = await db.query<{
        label: string;
        payload: { value: string; nested: { value: string } };
        echoed: string;
      }>(`SELECT label, payload, :value AS echoed FROM ${table} WHERE id = :id`, { id: rows[0].id, value });
      expect(read.rows).toEqual([{ label: value, payload: { value, nested: { value } }, echoed: value }]);
    },
  );

  test('hostile strings as user e-mails stay data, never SQL', async () => {
    const emails = HOSTILE_STRINGS.filter((s) => s.trim() !== '').map((s, i) => `${i}:${s}`);
    await db.batch(
      'INSERT INTO users (email) VALUES (:email)',
      emails.map((email) => ({ email })),
    );
    const { rows } = await db.query<{ email: string }>(
      'SELECT email FROM users WHERE email = ANY (SELECT jsonb_array_elements_text(:emails::jsonb))',
      {
        emails: sqlJson(emails),
      },
    );
    expect(rows.map((r) => r.email).sort()).toEqual([...emails].sort());
    await db.query('DELETE FROM users WHERE email = ANY (SELECT jsonb_array_elements_text(:emails::jsonb))', {
      emails: sqlJson(emails),
    });
  });

  test(':name-looking text inside literals, casts and comments is not a parameter', async () => {
    const { rows } = await db.query<Record<string, unknown>>(
      `SELECT ':notparam' AS a, 'it''s :x' AS b, E'\\' :y' AS c, $q$ :z $q$ AS d, "label" AS e, 5::int4 AS f, :v::text AS g -- :comment
       /* :block /* :nested */ */ FROM (SELECT 'l' AS label) AS "t:x"`,
      { v: ':v' },
    );
    expect(rows).toEqual([{ a: ':notparam', b: "it's :x", c: "' :y", d: ' :z ', e: 'l', f: 5, g: ':v' }]);
  });

  test('the same parameter may be used several times', async () => {
    const { rows } = await db.query<{ a: string; b: string }>('SELECT :v AS a, upper(:v) AS b', { v: 'x' });
    expect(rows).toEqual([{ a: 'x', b: 'X' }]);
  });

  test('NULLs in and out', async () => {
    const { rows } = await db.query<{ id: number }>(
      `INSERT INTO ${table} (label, payload, at, flag, big, amount, ref) VALUES (:l, :p, :a, :f, :b, :m, :r) RETURNING id`,
      {
        l: null,
        p: null,
        a: null,
        f: null,
        b: null,
        m: null,
        r: null,
      },
    );
    const read = await db.query(
      `SELECT label, payload, at, flag, big, amount, ref, bytes, NULL::int AS n FROM ${table} WHERE id = :id`,
      { id: rows[0].id },
    );
    expect(read.rows).toEqual([
      { label: null, payload: null, at: null, flag: null, big: null, amount: null, ref: null, bytes: null, n: null },
    ]);
  });

  test('timestamps round-trip with millisecond precision and come back as Dates', async () => {
    const at = new Date('2031-02-03T04:05:06.789Z');
    const { rows } = await db.query<{ at: Date; later: Date; plain: Date }>(
      `SELECT :at::timestamptz AS at, :at::timestamptz + interval '1 hour' AS later, '2020-01-01 00:00:00'::timestamp AS plain`,
      { at },
    );
    expect(rows[0].at).toEqual(at);
    expect(rows[0].later).toEqual(new Date('2031-02-03T05:05:06.789Z'));
    expect(rows[0].plain).toEqual(new Date('2020-01-01T00:00:00.000Z'));
    const stored = await db.query<{ at: Date }>(`INSERT INTO ${table} (at) VALUES (:at) RETURNING at`, { at });
    expect(stored.rows[0].at).toEqual(at);
  });

  test('jsonb, uuids, booleans, bigints, decimals, arrays and bytes', async () => {
    const ref = '6f9619ff-8b86-d011-b42d-00cf4fc964ff';
    const payload = { s: 'a"b\\c\'d', n: 1.5, t: true, nil: null, list: [1, 'two', { three: 3 }], emoji: '🚀' };
    const big = 9_007_199_254_740_993n;
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    const { rows } = await db.query(
      `INSERT INTO ${table} (payload, ref, flag, big, amount, bytes) VALUES (:payload, :ref, :flag, :big, :amount, :bytes)
       RETURNING payload, ref, flag, big, amount, bytes, ARRAY['x', 'y''z'] AS texts, ARRAY[1, 2]::int4[] AS ints, ARRAY[true, false] AS bools`,
      {
        payload: sqlJson(payload),
        ref: sqlUuid(ref),
        flag: false,
        big,
        amount: sqlDecimal('12345678901234567890.123456789'),
        bytes,
      },
    );
    expect(rows).toEqual([
      {
        payload,
        ref,
        flag: false,
        big,
        amount: '12345678901234567890.123456789',
        bytes,
        texts: ['x', "y'z"],
        ints: [1, 2],
        bools: [true, false],
      },
    ]);
    const found = await db.query<{ n: number; c: bigint }>(
      `SELECT count(*)::int AS n, count(*) AS c FROM ${table} WHERE ref = :ref AND big = :big`,
      {
        ref: sqlUuid(ref),
        big,
      },
    );
    expect(found.rows).toEqual([{ n: 1, c: 1n }]);
  });

  test('numbers: integers, negative bigints and doubles', async () => {
    const { rows } = await db.query('SELECT :i AS i, :d AS d, :nb AS nb, (:i)::int4 AS i4', {
      i: 42,
      d: 0.25,
      nb: -9_223_372_036_854_775_808n,
    });
    expect(rows).toEqual([{ i: 42n, d: 0.25, nb: '-9223372036854775808', i4: 42 }]);
  });

  test('a plain string is varchar: comparing it with a uuid column needs a uuid value', async () => {
    await expect(
      db.query(`SELECT 1 FROM ${table} WHERE ref = :ref`, { ref: '6f9619ff-8b86-d011-b42d-00cf4fc964ff' }),
    ).rejects.toThrow(/operator does not exist: uuid = character varying/);
  });

  test('rowsAffected counts changed rows; RETURNING returns them', async () => {
    await db.batch(`INSERT INTO ${table} (label) VALUES (:label)`, [{ label: 'ra' }, { label: 'ra' }, { label: 'ra' }]);
    const update = await db.query(`UPDATE ${table} SET flag = true WHERE label = :label`, { label: 'ra' });
    expect(update).toEqual({ rows: [], rowsAffected: 3 });
    const returning = await db.query<{ label: string }>(`DELETE FROM ${table} WHERE label = :label RETURNING label`, {
      label: 'ra',
    });
    expect(returning.rows).toEqual([{ label: 'ra' }, { label: 'ra' }, { label: 'ra' }]);
  });

  test('database errors carry the database message', async () => {
    const email = `dup-${table}@example.com`;
    await db.query('INSERT INTO users (email) VALUES (:email)', { email });
    const error = await db.query('INSERT INTO users (email) VALUES (:email)', { email }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DatabaseError);
    expect((error as Error).message).toMatch(/duplicate key value violates unique constraint "users_email_key"/);
  });

  test('a parameter without a value is an error', async () => {
    await expect(db.query('SELECT :missing AS m', {})).rejects.toThrow(/missing/);
  });

  test('transaction commits when the function resolves', async () => {
    const result = await db.transaction(async (tx) => {
      await tx.query(`INSERT INTO ${table} (label) VALUES (:l)`, { l: 'committed' });
      await tx.batch(`INSERT INTO ${table} (label) VALUES (:l)`, [{ l: 'committed' }, { l: 'committed' }]);
      return (await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE label = 'committed'`))
        .rows[0].n;
    });
    expect(result).toBe(3);
    expect(
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE label = 'committed'`)).rows[0].n,
    ).toBe(3);
  });

  test('transaction rolls back everything when the function rejects', async () => {
    const failure = new Error('job failed');
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (label) VALUES (:l)`, { l: 'rolled-back' });
        await tx.batch(`INSERT INTO ${table} (label) VALUES (:l)`, [{ l: 'rolled-back' }]);
        throw failure;
      }),
    ).rejects.toBe(failure);
    expect(
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE label = 'rolled-back'`)).rows[0].n,
    ).toBe(0);
  });

  test('a failing statement inside a transaction rolls the whole transaction back', async () => {
    await expect(
      db.transaction(async (tx) => {
        await tx.query(`INSERT INTO ${table} (label) VALUES (:l)`, { l: 'half-done' });
        await tx.query('INSERT INTO users (email) VALUES (NULL)');
      }),
    ).rejects.toThrow(DatabaseError);
    expect(
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table} WHERE label = 'half-done'`)).rows[0].n,
    ).toBe(0);
  });

  test('a batch is atomic: one bad parameter set applies none', async () => {
    await expect(
      db.batch('INSERT INTO users (email) VALUES (:e)', [
        { e: 'batch-a@example.com' },
        { e: null },
        { e: 'batch-b@example.com' },
      ]),
    ).rejects.toThrow(DatabaseError);
    expect(
      (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM users WHERE email LIKE 'batch-%'`)).rows[0].n,
    ).toBe(0);
  });

  test('an empty batch makes no call', async () => {
    const before = db.callCounts().total;
    await db.batch('INSERT INTO users (email) VALUES (:e)', []);
    expect(db.callCounts().total).toBe(before);
  });

  test('calls are counted', async () => {
    const before = db.callCounts();
    await db.query('SELECT 1');
    await db.batch(`INSERT INTO ${table} (label) VALUES (:l)`, [{ l: 'counted' }]);
    await db.transaction(async (tx) => tx.query('SELECT 1'));
    const after = db.callCounts();
    expect(after.statements - before.statements).toBe(2);
    expect(after.batches - before.batches).toBe(1);
    expect(after.transactionCalls - before.transactionCalls).toBe(2);
    expect(after.total - before.total).toBeGreaterThanOrEqual(4);
  });

  test('a result bigger than 1 MiB is read completely in keyset pages', async () => {
    const big = `${table}_big`;
    await db.query(`CREATE TABLE ${big} (n int PRIMARY KEY, body text NOT NULL)`);
    // 1,500 rows of ~1 KiB of multi-byte text: about 2 MiB on the wire.
    await db.query(`INSERT INTO ${big} SELECT n, repeat('é', 500) || n FROM generate_series(1, 1500) AS n`);
    const rows = await readAllPages<{ n: number; body: string }>(db, {
      sql: `SELECT n, body FROM ${big} WHERE (:after::int IS NULL OR n > :after::int) ORDER BY n LIMIT :limit`,
      cursor: (row) => row.n,
      pageSize: 1500,
    });
    expect(rows).toHaveLength(1500);
    expect(rows.map((r) => r.n)).toEqual(Array.from({ length: 1500 }, (_, i) => i + 1));
    expect(rows[1499].body).toBe(`${'é'.repeat(500)}1500`);
  });
});
