import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MIGRATIONS_DIR, MIGRATIONS_TABLE, runMigrations } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { checkPrivileges, rolePrivileges } from '../support/privileges';
import { snapshotSchema, withClient } from '../support/schema';
import { createSupabaseRoles, prepareSupabaseDatabase, SUPABASE_UID_COMMENT } from '../support/supabase';
import { EXPECTED_WORKER_PRIVILEGES } from './worker-privileges.expected';

// The privilege matrix (test/support/privileges.ts) over every relation and function the
// catalogue shows, on a database prepared the way Supabase prepares one and on plain
// PostgreSQL (as Aurora is), before and after migration 0009, and against migrations that
// would open a hole.

const ALL = readdirSync(DEFAULT_MIGRATIONS_DIR, { withFileTypes: true })
  .filter((d) => d.isFile())
  .map((d) => d.name.replace(/\.(sql|js)$/, ''))
  .sort();
const PRIVILEGES = '0009_privileges';
const BEFORE_PRIVILEGES = ALL.indexOf(PRIVILEGES);
const upSql = (name: string) =>
  readFileSync(join(DEFAULT_MIGRATIONS_DIR, `${name}.sql`), 'utf8').split('-- Down Migration')[0];
const UP_SQL = upSql(PRIVILEGES);
/** 0011 narrows the jobs' role to columns and drops 0009's read-all policy on users for it. */
const WORKER_GRANTS_UP_SQL = upSql('0011_worker-column-grants');
/** 0014 grants the region columns of 0012 (a re-applied 0009 or 0011 takes them back). */
const REGION_GRANTS_UP_SQL = upSql('0014_region-column-grants');
/** 0013 grants `authenticated` what the accounts API's functions do as the caller (idempotent). */
const API_UP_SQL = upSql('0013_accounts-api');
/** The accounts API's SECURITY DEFINER functions (0013): metadata matches by GIN, the token writer; (0020) connect sessions. */
const API_METADATA_MATCH = 'api.accounts_matching(meta jsonb)';
/** 0019: the only role that may call the accounts API's functions (the API's login holds it). */
const API_CALLER = 'accounts_api_caller';
const API_TOKEN_WRITER =
  'api.store_connection(p_region text, p_access_token text, p_refresh_token text, p_expires_at timestamp with time zone)';
const API_SESSION_CREATE =
  'api.create_connect_session(claims jsonb, p_region text, p_redirect_uri text, p_state_digest text, p_code_verifier text, ttl_seconds integer, max_sessions integer, window_seconds integer)';
const API_SESSION_CLAIM =
  'api.claim_connect_session(claims jsonb, p_region text, p_state_digest text, max_connects integer, window_seconds integer)';
/** 0019 takes the `api` functions and the writes of connect and disconnect from `authenticated`. */
const API_CALLER_MIGRATION = '0019_api-caller-role';
const API_CALLER_UP_SQL = upSql(API_CALLER_MIGRATION);
const API_CALLER_DOWN_SQL = readFileSync(join(DEFAULT_MIGRATIONS_DIR, `${API_CALLER_MIGRATION}.sql`), 'utf8').split(
  '-- Down Migration',
)[1];
/** 0016 adds oauth_tokens.last_used_at and grants it to the jobs (likewise taken back by 0011). */
const LAST_USED_UP_SQL = upSql('0016_connection-last-used');
const LIFECYCLE_UP_SQL = upSql('0021_connection-lifecycle');
/** 0027 takes back the rate-limit writes 0009 grants. */
const COUNTERS_READ_ONLY_UP_SQL = upSql('0027_rate-limit-counters-read-only');

/** What `authenticated` is meant to hold, column by column where the grant is per column. */
const AUTHENTICATED = [
  ...['id', 'email', 'created_at'].map((c) => `authenticated SELECT (${c}) ON users`),
  // 0013 (accounts API): the region and last refresh are shown. The writes of connect and
  // disconnect (0013) are accounts_api_caller's since 0019, not every signed-in user's.
  'authenticated SELECT (last_refreshed_at) ON oauth_tokens',
  ...[
    'id',
    'user_id',
    'region',
    'expires_at',
    'refresh_failure_count',
    'last_refresh_error',
    'proactive_refresh_enabled',
    'created_at',
    'updated_at',
  ].map((c) => `authenticated SELECT (${c}) ON oauth_tokens`),
  ...[
    'id',
    'user_id',
    'amazon_account_id',
    'status',
    'metadata',
    'sync_status',
    'sync_error_message',
    'sync_retry_count',
    'next_sync_at',
    'created_at',
    'updated_at',
    'region',
  ].map((c) => `authenticated SELECT (${c}) ON user_accounts`),
  'authenticated SELECT ON account_sync_history',
  // 0023: its own connections' health (policy user_id = auth.uid()), which GET /v1/connections shows.
  'authenticated SELECT ON connection_health',
  // Its own counters, read only: 0027 took back 0009's INSERT and UPDATE (a user could lift its
  // own manual-sync limit; api.request_manual_sync, SECURITY DEFINER, records it).
  'authenticated SELECT ON rate_limit_tracking',
].sort();

/** Privileges of anon, authenticated and PUBLIC on the tables of `public`, as sentences. */
async function endUserGrants(url: string): Promise<string[]> {
  return withClient(url, async (c) =>
    (
      await c.query(`
        SELECT grantee || ' ' || privilege_type || ' ON ' || table_name AS g FROM information_schema.table_privileges
         WHERE table_schema = 'public' AND grantee IN ('anon', 'authenticated', 'PUBLIC')
        UNION ALL
        SELECT grantee || ' ' || privilege_type || ' (' || column_name || ') ON ' || table_name FROM information_schema.column_privileges cp
         WHERE table_schema = 'public' AND grantee IN ('anon', 'authenticated', 'PUBLIC')
           AND NOT EXISTS (SELECT 1 FROM information_schema.table_privileges tp
                            WHERE tp.table_schema = 'public' AND tp.table_name = cp.table_name
                              AND tp.grantee = cp.grantee AND tp.privilege_type = cp.privilege_type)
         ORDER BY 1`)
    ).rows.map((r) => r.g as string),
  );
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function databaseName(url: string): string {
  return new URL(url).pathname.slice(1);
}

async function roleExists(pg: TestPostgres, role: string): Promise<boolean> {
  return withClient(pg.url(), async (c) => (await c.query('SELECT to_regrole($1) IS NOT NULL AS e', [role])).rows[0].e);
}

describe.each([
  ['plain PostgreSQL', false],
  ['a Supabase-prepared database', true],
] as const)('privileges on %s', (_, supabase) => {
  let pg: TestPostgres;
  /** Migrated and seeded; also the template of every scratch database below. */
  let golden: string;
  const users = { A: '', B: '' };
  let beforePrivileges: string[];
  let options: Parameters<typeof checkPrivileges>[1];
  let scratchCount = 0;

  async function scratch(): Promise<string> {
    const name = `${databaseName(golden)}_s${++scratchCount}`;
    await withClient(pg.url(), (c) => c.query(`CREATE DATABASE "${name}" TEMPLATE "${databaseName(golden)}"`));
    return pg.url(name);
  }

  beforeAll(async () => {
    pg = await startPostgres();
    if (supabase) await createSupabaseRoles(pg.url());
    golden = await pg.createDatabase();
    if (supabase) await prepareSupabaseDatabase(golden);

    // The baseline, users as the web app stores them, the spec up to 0008, the jobs' rows.
    await runMigrations({ database: golden, count: 1 });
    await withClient(golden, async (c) => {
      for (const who of ['A', 'B'] as const) {
        const user = (
          await c.query(`INSERT INTO users (email) VALUES ($1) RETURNING id`, [`${who.toLowerCase()}@example.com`])
        ).rows[0].id;
        users[who] = user;
        await c.query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at) VALUES ($1, $2, $3, now() + interval '1 hour')`,
          [user, `enc:v1:access-${who}`, `enc:v1:refresh-${who}`],
        );
        for (const profile of ['1', '2']) {
          await c.query(`INSERT INTO user_accounts (user_id, amazon_account_id, status) VALUES ($1, $2, 'active')`, [
            user,
            `${who}-${profile}`,
          ]);
        }
      }
    });
    await runMigrations({ database: golden, count: BEFORE_PRIVILEGES - 1 });
    await withClient(golden, async (c) => {
      for (const user of [users.A, users.B]) {
        await c.query(
          `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status)
           SELECT id, 'scheduled', 'started' FROM user_accounts WHERE user_id = $1`,
          [user],
        );
        await c.query(
          `INSERT INTO account_sync_history (sync_type, sync_status, metadata) VALUES ('manual', 'started', $1)`,
          [{ userId: user }],
        );
        await c.query(
          `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count) VALUES ($1, 'POST /v1/syncs', 1)`,
          [user],
        );
      }
      await c.query(`INSERT INTO rate_limit_tracking (user_id, endpoint, limit_hit_count) VALUES (NULL, 'lwa:NA', 1)`);
    });
    options = {
      identityTable: 'public.users',
      userA: users.A,
      userB: users.B,
      withoutRls: [`public.${MIGRATIONS_TABLE}`],
      definerExecutors: {
        [API_TOKEN_WRITER]: [API_CALLER],
        [API_METADATA_MATCH]: [API_CALLER],
        [API_SESSION_CREATE]: [API_CALLER],
        [API_SESSION_CLAIM]: [API_CALLER],
      },
    };

    // The matrix before 0009. On plain PostgreSQL `anon` is made for the check and dropped
    // again, so that 0009 runs where the role does not exist, as on Aurora.
    if (!supabase) {
      expect(await roleExists(pg, 'anon')).toBe(false);
      await withClient(pg.url(), (c) => c.query('CREATE ROLE anon NOLOGIN'));
    }
    beforePrivileges = await checkPrivileges(golden, options);
    if (!supabase) await withClient(pg.url(), (c) => c.query('DROP ROLE anon'));

    await runMigrations({ database: golden });
    if (!supabase) await withClient(pg.url(), (c) => c.query('CREATE ROLE anon NOLOGIN'));
  });
  afterAll(async () => {
    await pg?.stop();
  });

  test('before 0009 the matrix finds the holes', () => {
    if (supabase) {
      expect(beforePrivileges).toEqual(
        expect.arrayContaining([
          'anon reads public.users.email',
          'anon updates public.users.email',
          `anon reads public.${MIGRATIONS_TABLE}.name`,
          'authenticated as A sees 1 row(s) of public.users that are not its own (B)',
          'authenticated as A updates public.users.email (in place) in 1 row(s) that are not its own (B)',
          'authenticated may TRUNCATE public.oauth_tokens',
          'public.oauth_tokens_reconnected() is SECURITY DEFINER and executable by anon',
        ]),
      );
    } else {
      expect(beforePrivileges).toEqual(['public.users: row level security is off']);
    }
  });

  test('after every migration the matrix finds nothing', async () => {
    expect(await checkPrivileges(golden, options)).toEqual([]);
  });

  test('anon and PUBLIC hold nothing; authenticated holds exactly what its policies are for', async () => {
    expect(await endUserGrants(golden)).toEqual(AUTHENTICATED);
  });

  test('a signed-in user reads its own rows (its rate-limit counters too) and writes none of them', async () => {
    await withClient(golden, async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE authenticated');
      await c.query(`SELECT set_config('request.jwt.claims', $1, true)`, [
        JSON.stringify({ sub: users.A, role: 'authenticated' }),
      ]);
      expect((await c.query('SELECT id, email FROM users')).rows).toEqual([{ id: users.A, email: 'a@example.com' }]);
      expect((await c.query('SELECT user_id, region FROM oauth_tokens')).rows).toEqual([
        { user_id: users.A, region: 'NA' },
      ]);
      expect((await c.query('SELECT DISTINCT user_id FROM user_accounts')).rows).toEqual([{ user_id: users.A }]);
      expect((await c.query('SELECT count(*)::int AS n FROM account_sync_history')).rows[0].n).toBe(2);
      expect((await c.query('SELECT user_id, request_count FROM rate_limit_tracking')).rows).toEqual([
        { user_id: users.A, request_count: 1 },
      ]);
      // Its own counters cannot be written: moving the window back would lift the manual-sync
      // limit the API enforces (0027).
      for (const write of [
        `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count) VALUES ('${users.A}', 'other', 0)`,
        `UPDATE rate_limit_tracking SET window_start = '-infinity', request_count = 0`,
        'DELETE FROM rate_limit_tracking',
      ]) {
        await c.query('SAVEPOINT w');
        await expect(c.query(write)).rejects.toMatchObject({ code: '42501' });
        await c.query('ROLLBACK TO SAVEPOINT w');
      }
      await c.query('ROLLBACK');
    });
  });

  test('the jobs’ role holds exactly its listed column privileges, nothing on users', async () => {
    await withClient(golden, async (c) => {
      expect(await rolePrivileges(c, 'accounts_worker')).toEqual([...EXPECTED_WORKER_PRIVILEGES].sort());
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE accounts_worker');
      await c.query('SAVEPOINT users');
      await expect(c.query('SELECT count(*)::int AS n FROM users')).rejects.toMatchObject({ code: '42501' });
      await c.query('ROLLBACK TO SAVEPOINT users');
      expect(
        (await c.query('SELECT count(*)::int AS n FROM oauth_tokens WHERE access_token LIKE $1', ['enc:v1:%'])).rows[0]
          .n,
      ).toBe(2);
      expect((await c.query(`UPDATE oauth_tokens SET refresh_token = refresh_token || '-new'`)).rowCount).toBe(2);
      for (const table of ['oauth_tokens', 'user_accounts']) {
        await c.query('SAVEPOINT move');
        await expect(c.query(`UPDATE ${table} SET user_id = user_id`)).rejects.toMatchObject({ code: '42501' });
        await c.query('ROLLBACK TO SAVEPOINT move');
      }
      await c.query('ROLLBACK');
    });
  });

  test('0009 is idempotent: applied again (then 0011, 0013, 0014, 0016, 0019, 0021 and 0027, which grant or redefine after it), nothing changes', async () => {
    const url = await scratch();
    const before = await snapshotSchema(url);
    await withClient(url, async (c) => {
      for (let i = 0; i < 2; i++) {
        await c.query('BEGIN');
        await c.query(UP_SQL);
        await c.query(WORKER_GRANTS_UP_SQL);
        await c.query(API_UP_SQL);
        await c.query(REGION_GRANTS_UP_SQL);
        await c.query(LAST_USED_UP_SQL);
        await c.query(API_CALLER_UP_SQL);
        await c.query(LIFECYCLE_UP_SQL);
        await c.query(COUNTERS_READ_ONLY_UP_SQL);
        await c.query('COMMIT');
      }
    });
    expect(await snapshotSchema(url)).toEqual(before);
    expect(await checkPrivileges(url, options)).toEqual([]);
  });

  test('without 0019 (its Down applied) a signed-in user acts as another through the api functions; 0019 again closes it', async () => {
    const url = await scratch();
    const before = await snapshotSchema(url);
    await withClient(url, (c) => c.query(`BEGIN; ${API_CALLER_DOWN_SQL}; COMMIT`));
    const open = await checkPrivileges(url, {
      ...options,
      definerExecutors: { [API_TOKEN_WRITER]: ['authenticated'], [API_METADATA_MATCH]: ['authenticated'] },
    });
    const asA = (fn: string, what: string) => `authenticated as A calling api.${fn} with B’s claims ${what}`;
    const LIST_ACCOUNTS =
      'list_accounts(claims jsonb, meta jsonb, p_region text, p_status text, p_sync_status text, page_size integer, after_account text, after_id uuid)';
    const HISTORY =
      'list_sync_history(claims jsonb, account_id uuid, page_size integer, after_started timestamp with time zone, after_id uuid)';
    expect(open).toEqual(
      expect.arrayContaining([
        'authenticated may DELETE token rows of public.oauth_tokens',
        ...['list_connections(claims jsonb)', LIST_ACCOUNTS, HISTORY].map((fn) => asA(fn, 'makes auth.uid() B')),
        asA('disconnect(claims jsonb, p_region text, message text)', 'makes auth.uid() B'),
        asA('get_account(claims jsonb, account_id uuid)', 'makes auth.uid() B'),
        expect.stringMatching(
          new RegExp(`^${escapeRegExp(asA(LIST_ACCOUNTS, 'as argument 1 only returns B’s data'))} \\(\\d+ value`),
        ),
        ...['list_connections(claims jsonb)', HISTORY].map((fn) =>
          expect.stringMatching(new RegExp(`^${escapeRegExp(asA(fn, 'returns B’s data'))} \\(\\d+ value`)),
        ),
        // (request_manual_sync is not among them: since 0027 only accounts_api_caller may write
        // the counters, so called as authenticated it fails, and a call that fails did nothing.)
        'authenticated without claims calling api.get_account(claims jsonb, account_id uuid) with B’s claims makes auth.uid() B',
      ]),
    );
    // Every api function that takes claims and runs with NULL in the rest (five and set_claims;
    // connect refuses a NULL region, and the manual sync fails on the counters since 0027) lets
    // the caller choose them; anon reaches none.
    const chosen = open.filter((v) => v.endsWith('makes auth.uid() B'));
    expect(chosen.every((v) => v.startsWith('authenticated'))).toBe(true);
    expect(new Set(chosen.filter((v) => v.startsWith('authenticated as A')).map((v) => v.split(' ')[4])).size).toBe(6);

    await withClient(url, (c) => c.query(`BEGIN; ${API_CALLER_UP_SQL}; COMMIT`));
    expect(await checkPrivileges(url, options)).toEqual([]);
    expect(await snapshotSchema(url)).toEqual(before);
  });

  test('the API’s caller role reaches its own rows only, and plain authenticated no api function', async () => {
    await withClient(golden, async (c) => {
      await c.query('BEGIN');
      await c.query(`SET LOCAL ROLE ${API_CALLER}`);
      const claims = JSON.stringify({ sub: users.A, role: 'authenticated' });
      const connections = (await c.query(`SELECT api.list_connections($1::jsonb) AS r`, [claims])).rows[0].r;
      expect(connections).toEqual([expect.objectContaining({ region: 'NA' })]);
      // Disconnect: the policies TO accounts_api_caller let it delete only A's token row.
      expect((await c.query(`SELECT api.disconnect($1::jsonb, 'NA', 'gone') AS r`, [claims])).rows[0].r).toBe(true);
      await c.query('RESET ROLE');
      expect((await c.query('SELECT user_id FROM oauth_tokens')).rows).toEqual([{ user_id: users.B }]);
      await c.query(`SET LOCAL ROLE ${API_CALLER}`);
      await c.query('SAVEPOINT b');
      expect((await c.query('DELETE FROM oauth_tokens')).rowCount).toBe(0);
      await c.query('RELEASE SAVEPOINT b');
      await c.query('SET LOCAL ROLE authenticated');
      for (const sql of [
        `SELECT api.list_connections('{}'::jsonb)`,
        'DELETE FROM oauth_tokens',
        `UPDATE user_accounts SET status = 'inactive'`,
        `INSERT INTO users (id, email) VALUES (gen_random_uuid(), 'x@example.com')`,
      ]) {
        await c.query('SAVEPOINT s');
        await expect(c.query(sql)).rejects.toMatchObject({ code: '42501' });
        await c.query('ROLLBACK TO SAVEPOINT s');
      }
      await c.query('ROLLBACK');
    });
  });

  if (supabase) {
    test('Supabase keeps its own auth.uid(), and service_role keeps what Supabase gives it', async () => {
      await withClient(golden, async (c) => {
        const comment = await c.query(`SELECT obj_description('auth.uid()'::regprocedure, 'pg_proc') AS d`);
        expect(comment.rows[0].d).toBe(SUPABASE_UID_COMMENT);
        const missing = await c.query(`
          SELECT c.relname, p FROM pg_class c, unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND NOT has_table_privilege('service_role', c.oid, p)`);
        expect(missing.rows).toEqual([]);
        await c.query('BEGIN');
        await c.query('SET LOCAL ROLE service_role');
        expect(
          (await c.query('SELECT count(*)::int AS n FROM oauth_tokens WHERE refresh_token IS NOT NULL')).rows[0].n,
        ).toBe(2);
        await c.query('ROLLBACK');
      });
    });
  }

  const holes: Array<[string, string, unknown[]]> = [
    [
      'a new table without row level security',
      `CREATE TABLE notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid REFERENCES users (id), body text);`,
      supabase
        ? [
            'public.notes: row level security is off',
            'anon may SELECT public.notes',
            'authenticated may SELECT public.notes, which has no row level security',
            'anon inserts a row of defaults into public.notes',
          ]
        : ['public.notes: row level security is off'],
    ],
    [
      'a grant to PUBLIC',
      `GRANT SELECT (amazon_account_id) ON user_accounts TO PUBLIC;`,
      ['anon may SELECT public.user_accounts.amazon_account_id', 'anon reads public.user_accounts.amazon_account_id'],
    ],
    [
      // What Supabase's guide for exposing a schema runs (without its USAGE grant: the matrix
      // judges the functions as if the schema were reachable). One function alone is not
      // enough: each calls api.set_claims, which authenticated may then not execute.
      'EXECUTE on the api functions for authenticated',
      `GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA api TO authenticated;`,
      [
        'authenticated as A calling api.list_connections(claims jsonb) with B’s claims (given USAGE on schema api) makes auth.uid() B',
        expect.stringMatching(
          /^authenticated as A calling api\.list_connections\(claims jsonb\) with B’s claims \(given USAGE on schema api\) returns B’s data/,
        ),
      ],
    ],
    [
      'a new api function whose EXECUTE nobody revoked (PUBLIC’s by default)',
      `CREATE FUNCTION api.act_as(claims jsonb) RETURNS text LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp
         AS $$ SELECT set_config('request.jwt.claims', claims::text, true) || set_config('request.jwt.claim.sub', claims ->> 'sub', true) $$;`,
      [
        'anon calling api.act_as(claims jsonb) with B’s claims (given USAGE on schema api) makes auth.uid() B',
        'authenticated as A calling api.act_as(claims jsonb) with B’s claims (given USAGE on schema api) makes auth.uid() B',
      ],
    ],
    [
      'DELETE on token rows for authenticated',
      `GRANT DELETE ON oauth_tokens TO authenticated;`,
      ['authenticated may DELETE token rows of public.oauth_tokens'],
    ],
    [
      'an UPDATE of a non-token column of token rows for authenticated',
      `GRANT UPDATE (proactive_refresh_enabled) ON oauth_tokens TO authenticated;`,
      ['authenticated may UPDATE token rows of public.oauth_tokens'],
    ],
  ];
  if (supabase) {
    holes.push(
      [
        'a grant to anon',
        `GRANT INSERT ON account_sync_history TO anon;`,
        ['anon may INSERT public.account_sync_history'],
      ],
      [
        'a policy that shows every user',
        `CREATE POLICY everyone ON users FOR SELECT TO authenticated USING (true);`,
        ['authenticated as A sees 1 row(s) of public.users that are not its own (B)'],
      ],
      [
        'a token column granted',
        `GRANT SELECT (refresh_token) ON oauth_tokens TO authenticated;`,
        [
          'authenticated may SELECT token column public.oauth_tokens.refresh_token',
          'authenticated as A reads token column public.oauth_tokens.refresh_token',
        ],
      ],
      [
        'a SECURITY DEFINER function',
        `CREATE FUNCTION user_emails() RETURNS SETOF text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public AS 'SELECT email FROM users';`,
        [
          'public.user_emails() is SECURITY DEFINER and executable by anon',
          'public.user_emails() is SECURITY DEFINER and executable by PUBLIC',
        ],
      ],
      [
        'a policy that lets a user give its rows away',
        `CREATE POLICY give_away ON rate_limit_tracking FOR UPDATE TO authenticated USING (user_id = auth.uid()) WITH CHECK (true);
         GRANT UPDATE (user_id) ON rate_limit_tracking TO authenticated;`,
        // A's row would move to B; it only fails afterwards, on B's own row for the endpoint.
        [
          'authenticated as A updating public.rate_limit_tracking.user_id (to another row’s value) passed privileges and row security ' +
            '(then: duplicate key value violates unique constraint "rate_limit_tracking_endpoint_user_key")',
        ],
      ],
    );
  }

  test.each(holes)('a later migration that adds %s fails the matrix', async (_what, sql, expected) => {
    const url = await scratch();
    const dir = mkdtempSync(join(tmpdir(), 'migrations-'));
    try {
      cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
      writeFileSync(join(dir, '9999_hole.sql'), `-- Up Migration\n${sql}\n-- Down Migration\n`);
      const { applied } = await runMigrations({ database: url, dir });
      expect(applied).toEqual(['9999_hole']);
      expect(await checkPrivileges(url, options)).toEqual(expect.arrayContaining(expected));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
