import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { Client, type ClientConfig } from 'pg';
import { fingerprintMigrations } from '../../../lambda/migrate/migrations-hash';
import { isRollback, onSchemaMigrationEvent, type SchemaMigrationDeps } from '../../../lambda/migrate/on-event';
import { DEFAULT_MIGRATIONS_DIR, MigrationError, runMigrations } from '../../../lambda/migrate/run-migrations';
import { DatabaseUnavailableError, waitForDatabase } from '../../../lambda/migrate/wait-for-database';
import {
  ensureApiLogin,
  ensureLogin,
  ensureWorkerLogin,
  scramSha256Verifier,
  UnsafeLoginError,
} from '../../../lambda/migrate/worker-login';
import { freePort, startPostgres, type TestPostgres } from '../../../local/postgres/embedded-postgres';
import { appliedMigrations, snapshotSchema, withClient } from '../../support/schema';

// Drives the custom resource's core through CloudFormation's lifecycle against a real
// PostgreSQL 17: Create → Update (new migration) → failing Update → rollback Update → Delete.

let pg: TestPostgres;
let url: string;
let master: ClientConfig;
const temporaryDirs: string[] = [];
const worker = { username: 'accounts_jobs', password: `p'w"d;${'x'.repeat(20)}` };
const api = { username: 'accounts_api', password: `api-p'w"d;${'y'.repeat(20)}` };

beforeAll(async () => {
  // Logins go through the SCRAM exchange, as on Aurora and through the Data API.
  pg = await startPostgres({ authMethod: 'scram-sha-256' });
  url = await pg.createDatabase();
  const parsed = new URL(url);
  master = {
    host: parsed.hostname,
    port: Number(parsed.port),
    user: pg.user,
    password: pg.password,
    database: parsed.pathname.slice(1),
  };
});
afterAll(async () => {
  await pg?.stop();
  for (const dir of temporaryDirs) rmSync(dir, { recursive: true, force: true });
});

/** The repository's migrations plus extra ones of the test's own, in a temporary folder. */
function migrationsWith(extra: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'cr-migrations-'));
  temporaryDirs.push(dir);
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  for (const [name, sql] of Object.entries(extra)) writeFileSync(join(dir, name), sql);
  return dir;
}

function propertiesOf(dir: string) {
  const { hash, latest } = fingerprintMigrations(dir);
  return {
    ServiceToken: 'arn:aws:lambda:eu-west-1:111111111111:function:provider',
    MigrationsHash: hash,
    LatestMigration: latest,
  };
}

const common = {
  ServiceToken: 'arn:aws:lambda:eu-west-1:111111111111:function:provider',
  ResponseURL: 'https://cloudformation-custom-resource-response.example/',
  StackId: 'arn:aws:cloudformation:eu-west-1:111111111111:stack/AmazonAccounts-dev/1',
  RequestId: 'request',
  LogicalResourceId: 'SchemaMigration',
  ResourceType: 'Custom::SchemaMigration',
};

function createEvent(dir: string): CloudFormationCustomResourceEvent {
  return { ...common, RequestType: 'Create', ResourceProperties: propertiesOf(dir) };
}
function updateEvent(dir: string, previousDir: string): CloudFormationCustomResourceEvent {
  return {
    ...common,
    RequestType: 'Update',
    PhysicalResourceId: 'schema-migrations',
    ResourceProperties: propertiesOf(dir),
    OldResourceProperties: propertiesOf(previousDir),
  };
}

const logger = { info: () => undefined, warn: () => undefined, error: () => undefined };
function deps(migrationsDir: string, overrides: Partial<SchemaMigrationDeps> = {}): SchemaMigrationDeps {
  return {
    masterConnection: async () => master,
    workerCredentials: async () => worker,
    apiCredentials: async () => api,
    migrationsDir,
    remainingTimeMs: () => 14 * 60_000,
    logger,
    sleep: async () => undefined,
    ...overrides,
  };
}
const untouchable = {
  masterConnection: async (): Promise<ClientConfig> => {
    throw new Error('the database must not be touched');
  },
};

async function loginAs(credentials: { username: string; password: string }): Promise<Client> {
  const client = new Client({ ...master, user: credentials.username, password: credentials.password });
  await client.connect();
  return client;
}

const WIDGETS = `-- Up Migration
SET LOCAL lock_timeout = '500ms';
CREATE TABLE widgets (id uuid PRIMARY KEY DEFAULT gen_random_uuid());
GRANT SELECT ON widgets TO accounts_worker;
-- Down Migration
DROP TABLE widgets;
`;
const BROKEN = `-- Up Migration
CREATE TABLE gadgets (id int);
ALTER TABLE no_such_table ADD COLUMN size int;
-- Down Migration
DROP TABLE gadgets;
`;

describe('schema migration custom resource lifecycle', () => {
  const repository = DEFAULT_MIGRATIONS_DIR;
  let withWidgets: string;
  let withBroken: string;
  let afterUpdate: Awaited<ReturnType<typeof snapshotSchema>>;
  const rotated = { ...worker, password: 'rotated-password-0123456789' };
  const storedPassword = () =>
    withClient(
      url,
      async (c) =>
        (await c.query('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [worker.username])).rows[0]
          .rolpassword as string,
    );

  test('Create applies every migration and creates the jobs\u2019 login user', async () => {
    const response = await onSchemaMigrationEvent(createEvent(repository), deps(repository));

    const all = await appliedMigrations(url);
    expect(response.PhysicalResourceId).toBe('schema-migrations');
    expect(response.Data).toEqual({ Applied: all.join(','), AppliedCount: all.length, Outcome: 'migrated' });
    expect(all.at(-1)).toBe(fingerprintMigrations(repository).latest);
    const role = await withClient(
      url,
      async (c) =>
        (
          await c.query(
            `SELECT rolcanlogin, rolsuper, rolbypassrls, pg_has_role(rolname, 'accounts_worker', 'USAGE') AS member
                      FROM pg_roles WHERE rolname = $1`,
            [worker.username],
          )
        ).rows[0],
    );
    expect(role).toEqual({ rolcanlogin: true, rolsuper: false, rolbypassrls: false, member: true });
    expect(await loginAttributes(url, api.username)).toEqual(API_LOGIN);
  });

  test('the login user can do what the jobs need and nothing more', async () => {
    await withClient(url, (c) =>
      c.query(`
      WITH u AS (INSERT INTO users (email) VALUES ('a@example.com') RETURNING id)
      INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at) SELECT id, 'a', 'r', now() FROM u`),
    );
    const client = await loginAs(worker);
    try {
      expect((await client.query('SELECT count(*)::int AS n FROM oauth_tokens')).rows[0].n).toBe(1);
      await client.query(`UPDATE oauth_tokens SET refresh_failure_count = 1`);
      await client.query(
        `INSERT INTO user_accounts (user_id, amazon_account_id) SELECT user_id, '42' FROM oauth_tokens`,
      );
      await expect(client.query('SELECT id FROM users')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('UPDATE oauth_tokens SET user_id = user_id')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('DELETE FROM oauth_tokens')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('SELECT * FROM oauth_tokens_backup')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('DROP TABLE users')).rejects.toMatchObject({ code: '42501' });
      // The schema's version (for `npm run verify`), and nothing else of the migrations table.
      expect((await client.query('SELECT max(name) AS latest FROM pgmigrations')).rows[0].latest).toBe(
        fingerprintMigrations(repository).latest,
      );
      await expect(client.query('SELECT run_on FROM pgmigrations')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query(`DELETE FROM pgmigrations WHERE name = 'x'`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await client.end();
    }
  });

  test('Update with a new migration applies only that one, and follows a rotated worker password', async () => {
    withWidgets = migrationsWith({ '0900_widgets.sql': WIDGETS });

    const response = await onSchemaMigrationEvent(
      updateEvent(withWidgets, repository),
      deps(withWidgets, { workerCredentials: async () => rotated }),
    );

    expect(response).toEqual({
      PhysicalResourceId: 'schema-migrations',
      Data: { Applied: '0900_widgets', AppliedCount: 1, Outcome: 'migrated' },
    });
    afterUpdate = await snapshotSchema(url);
    expect(afterUpdate.columns['widgets.id']).toBeDefined();
    expect(afterUpdate.grants).toContain('accounts_worker SELECT ON widgets');
    await expect(loginAs(worker)).rejects.toMatchObject({ code: '28P01' });
    const client = await loginAs(rotated);
    await client.end();
  });

  test('a failing Update answers with the migration\u2019s name and the database\u2019s message and changes nothing', async () => {
    withBroken = migrationsWith({ '0900_widgets.sql': WIDGETS, '0901_broken.sql': BROKEN });

    const failure = onSchemaMigrationEvent(updateEvent(withBroken, withWidgets), deps(withBroken));

    await expect(failure).rejects.toThrow(MigrationError);
    await expect(failure).rejects.toThrow('Migration 0901_broken failed: relation "no_such_table" does not exist');
    expect(await snapshotSchema(url)).toEqual(afterUpdate);
    expect((await appliedMigrations(url)).at(-1)).toBe('0900_widgets');
  });

  test('the rollback Update succeeds without touching the database, whichever code runs it', async () => {
    // CloudFormation sends the previous deployment's properties as the new ones.
    const rollback = updateEvent(withWidgets, withBroken);

    for (const code of [withBroken, withWidgets]) {
      const response = await onSchemaMigrationEvent(rollback, deps(code, untouchable));
      expect(response.Data).toEqual({ Applied: '', AppliedCount: 0, Outcome: 'rollback-skipped' });
    }
    expect(await snapshotSchema(url)).toEqual(afterUpdate);
    expect((await appliedMigrations(url)).at(-1)).toBe('0900_widgets');
  });

  test('an Update with the same migrations is a no-op, and leaves a working password alone', async () => {
    const before = await storedPassword();
    const response = await onSchemaMigrationEvent(
      updateEvent(withWidgets, withWidgets),
      deps(withWidgets, { workerCredentials: async () => rotated }),
    );
    expect(response.Data).toEqual({ Applied: '', AppliedCount: 0, Outcome: 'migrated' });
    expect(await snapshotSchema(url)).toEqual(afterUpdate);
    expect(await storedPassword()).toBe(before);
  });

  test('Delete succeeds without touching the database', async () => {
    const response = await onSchemaMigrationEvent(
      {
        ...common,
        RequestType: 'Delete',
        PhysicalResourceId: 'schema-migrations',
        ResourceProperties: propertiesOf(withWidgets),
      },
      deps(withWidgets, untouchable),
    );
    expect(response.Data.Outcome).toBe('deleted');
    expect(await snapshotSchema(url)).toEqual(afterUpdate);
  });
});

describe('waiting for a cluster that is starting or resuming', () => {
  test('Create retries the connection until the database answers', async () => {
    const fresh = await pg.createDatabase();
    const closedPort = await freePort();
    const target = { ...master, database: new URL(fresh).pathname.slice(1) };
    let calls = 0;
    const sleeps: number[] = [];

    const response = await onSchemaMigrationEvent(
      createEvent(DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, {
        masterConnection: async () => (++calls <= 2 ? { ...target, port: closedPort } : target),
        sleep: async (ms) => void sleeps.push(ms),
      }),
    );

    expect(response.Data.Outcome).toBe('migrated');
    expect(calls).toBe(3);
    expect(sleeps.slice(0, 2)).toEqual([1000, 2000]);
  });

  test('gives up with a clear error before the Lambda would time out', async () => {
    const closedPort = await freePort();
    let clock = 0;
    const wait = waitForDatabase({
      connection: async () => ({ ...master, port: closedPort }),
      budgetMs: 60_000,
      now: () => clock,
      sleep: async (ms) => void (clock += ms),
    });
    await expect(wait).rejects.toThrow(DatabaseUnavailableError);
    await expect(wait).rejects.toThrow(/not reachable after 8 attempts over 60 s: .*ECONNREFUSED/);
  });

  test('the wait budget leaves time for the migrations within the Lambda timeout', async () => {
    const closedPort = await freePort();
    let clock = 0;
    const failure = onSchemaMigrationEvent(
      createEvent(DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, {
        masterConnection: async () => ({ ...master, port: closedPort }),
        remainingTimeMs: () => 3 * 60_000 + 5_000, // 5 s left after the migrations' reserve
        now: () => clock,
        sleep: async (ms) => void (clock += ms),
      }),
    );
    // Sleeps of 1 s and 2 s fit into 5 s; a third of 4 s would not.
    await expect(failure).rejects.toThrow(/not reachable after 3 attempts over 3 s/);
  });

  test('a wrong database name is not retried', async () => {
    const sleeps: number[] = [];
    const wait = waitForDatabase({
      connection: async () => ({ ...master, database: 'no_such_database' }),
      budgetMs: 60_000,
      sleep: async (ms) => void sleeps.push(ms),
    });
    await expect(wait).rejects.toMatchObject({ code: '3D000' });
    expect(sleeps).toEqual([]);
  });
});

describe('a master password rotated while the deploy runs', () => {
  /** A superuser standing in for the master user, whose password the test "rotates". */
  async function rotatingMaster(name: string) {
    const database = new URL(await pg.createDatabase()).pathname.slice(1);
    const secret = { password: 'first-password-0123456789' };
    const rotate = async (password: string) => {
      await withClient(url, async (c) => {
        const { rows } = await c.query(
          `SELECT format('ALTER ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text) AS statement`,
          [name, password],
        );
        await c.query(rows[0].statement);
      });
      secret.password = password;
    };
    await withClient(url, (c) => c.query(`CREATE ROLE ${name}`));
    await rotate(secret.password);
    // Reads "the secret" as the handler does: the current password each time.
    const masterConnection = async (): Promise<ClientConfig> => ({
      ...master,
      database,
      user: name,
      password: secret.password,
    });
    return { database, masterConnection, rotate };
  }

  test('a migration whose password was rotated after the connection check reads the secret again once and succeeds', async () => {
    const { database, masterConnection, rotate } = await rotatingMaster('rotating_master_a');
    const warnings: string[] = [];
    let runs = 0;

    const response = await onSchemaMigrationEvent(
      createEvent(DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, {
        masterConnection,
        logger: { ...logger, warn: (m: string) => void warnings.push(m) },
        // Secrets Manager's rotation changes the password between the wait and the migrations.
        migrate: async (options) => {
          if (++runs === 1) await rotate('second-password-0123456789');
          return runMigrations(options);
        },
      }),
    );

    expect(response.Data.Outcome).toBe('migrated');
    expect(runs).toBe(2);
    expect(warnings).toContain('The master password was refused (rotated meanwhile?): reading its secret again');
    expect((await appliedMigrations(url.replace(/\/[^/]*$/, `/${database}`))).at(-1)).toBe(
      fingerprintMigrations(DEFAULT_MIGRATIONS_DIR).latest,
    );
  });

  test('a password refused again after the second read fails the deploy with the database\u2019s error', async () => {
    const { masterConnection, rotate } = await rotatingMaster('rotating_master_b');
    let runs = 0;

    const failure = onSchemaMigrationEvent(
      createEvent(DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, {
        masterConnection,
        migrate: async (options) => {
          await rotate(`password-${++runs}-0123456789`);
          return runMigrations(options);
        },
      }),
    );

    await expect(failure).rejects.toMatchObject({ code: '28P01' });
    expect(runs).toBe(2);
  });
});

describe('the jobs\u2019 login user', () => {
  test('the server enforces SCRAM: a password login goes through the SCRAM exchange', async () => {
    const hba = await withClient(url, async (c) =>
      (await c.query(`SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'`)).rows.map(
        (r) => r.auth_method as string,
      ),
    );
    expect(hba).toEqual(['scram-sha-256']);
  });

  test.each(['scram-sha-256', 'md5'])(
    'is stored as a SCRAM verifier (password_encryption %s) and logs in through SCRAM',
    async (method) => {
      const credentials = {
        username: `login_${method.replace(/\W/g, '_')}`,
        password: "p\u00e4ssword-with-unicode-and-'quotes'",
      };
      await withClient(url, async (client) => {
        await client.query(`SET password_encryption = '${method}'`);
        expect(await ensureWorkerLogin(client, credentials)).toBe('created');
        expect(await ensureWorkerLogin(client, credentials)).toBe('updated');
        expect(await ensureWorkerLogin(client, credentials, async () => true)).toBe('unchanged');
        const stored = await client.query('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [
          credentials.username,
        ]);
        expect(stored.rows[0].rolpassword).toMatch(/^SCRAM-SHA-256\$4096:/);
      });
      const client = await loginAs(credentials);
      await client.end();
    },
  );

  test('the verifier is byte for byte what the server computes from the same password, salt and iterations', async () => {
    const password = 'p\u00e4ss-w0rd \'"; with everything';
    const stored = await withClient(url, async (c) => {
      await c.query(`SET password_encryption = 'scram-sha-256'`);
      // The server hashes a clear-text password itself (random salt) …
      const { rows } = await c.query(
        `SELECT format('CREATE ROLE server_hashed LOGIN PASSWORD %L', $1::text) AS statement`,
        [password],
      );
      await c.query(rows[0].statement);
      return (await c.query(`SELECT rolpassword FROM pg_authid WHERE rolname = 'server_hashed'`)).rows[0]
        .rolpassword as string;
    });
    // … and ours, given that salt and iteration count, must come out identical.
    const match = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(stored);
    expect(match).not.toBeNull();
    expect(scramSha256Verifier(password, Buffer.from(match![2], 'base64'), Number(match![1]))).toBe(stored);
  });

  test('a user name that needs quoting is quoted, not executed', async () => {
    const credentials = { username: 'evil"; DROP TABLE users; --', password: 'x'.repeat(32) };
    await withClient(url, (client) => ensureWorkerLogin(client, credentials));
    expect(
      await withClient(
        url,
        async (c) => (await c.query(`SELECT to_regclass('public.users') IS NOT NULL AS exists`)).rows[0].exists,
      ),
    ).toBe(true);
    const client = await loginAs(credentials);
    await client.end();
  });
});

/** The attributes that make a login's privileges exactly its group role's (`authenticated` for the API). */
const API_LOGIN = {
  rolcanlogin: true,
  rolsuper: false,
  rolbypassrls: false,
  rolinherit: true,
  // accounts_api_caller: the api functions and the writes of connect and disconnect (0019);
  // amazon_rate_budget_user: the shared Amazon rate budget only (migration 0018).
  memberOf: ['accounts_api_caller', 'amazon_rate_budget_user', 'authenticated'],
  inheritsAuthenticated: true,
  ownedObjects: 0,
};
async function loginAttributes(databaseUrl: string, username: string) {
  return withClient(databaseUrl, async (c) => {
    const { rows } = await c.query(
      `SELECT r.rolcanlogin, r.rolsuper, r.rolbypassrls, r.rolinherit,
              ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                     WHERE m.member = r.oid ORDER BY 1) AS "memberOf",
              pg_has_role(r.oid, 'authenticated', 'USAGE') AS "inheritsAuthenticated",
              (SELECT count(*)::int FROM pg_shdepend d
                WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid AND d.deptype = 'o') AS "ownedObjects"
         FROM pg_roles r WHERE r.rolname = $1`,
      [username],
    );
    return rows[0] as Record<string, unknown> | undefined;
  });
}

describe('the accounts API\u2019s login user', () => {
  let databaseUrl: string;
  let connection: ClientConfig;
  const users = { a: '', b: '' };

  beforeAll(async () => {
    databaseUrl = await pg.createDatabase();
    connection = { ...master, database: new URL(databaseUrl).pathname.slice(1) };
    const response = await onSchemaMigrationEvent(
      createEvent(DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, { masterConnection: async () => connection }),
    );
    expect(response.Data.Outcome).toBe('migrated');
    await withClient(databaseUrl, async (c) => {
      for (const key of ['a', 'b'] as const) {
        const { rows } = await c.query<{ id: string }>(
          `WITH u AS (INSERT INTO users (email) VALUES ($1) RETURNING id),
                t AS (INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at)
                      SELECT id, 'enc:v1:access', 'enc:v1:refresh', now() FROM u)
           INSERT INTO user_accounts (user_id, amazon_account_id) SELECT id, $2 FROM u RETURNING user_id AS id`,
          [`${key}@example.com`, `profile-${key}`],
        );
        users[key] = rows[0].id;
      }
    });
  });

  const asApi = async <T>(fn: (client: Client) => Promise<T>): Promise<T> => {
    const client = new Client({ ...connection, user: api.username, password: api.password });
    await client.connect();
    try {
      return await fn(client);
    } finally {
      await client.end();
    }
  };

  test('is created by the deploy as a LOGIN member of authenticated that inherits its grants, cannot bypass RLS and owns nothing', async () => {
    expect(await loginAttributes(databaseUrl, api.username)).toEqual(API_LOGIN);
  });

  test('sees rows only through the policies TO authenticated: none without claims, the caller\u2019s own with transaction-local claims', async () => {
    await asApi(async (client) => {
      expect((await client.query('SELECT count(*)::int AS n FROM user_accounts')).rows[0].n).toBe(0);
      await client.query('BEGIN');
      await client.query(`SELECT set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ sub: users.a })]);
      const own = await client.query('SELECT user_id, amazon_account_id FROM user_accounts');
      expect(own.rows).toEqual([{ user_id: users.a, amazon_account_id: 'profile-a' }]);
      expect((await client.query('SELECT user_id FROM oauth_tokens')).rows).toEqual([{ user_id: users.a }]);
      await client.query('COMMIT');
      // The claims were transaction-local: the next statement sees nothing again.
      expect((await client.query('SELECT count(*)::int AS n FROM user_accounts')).rows[0].n).toBe(0);
      // Never the tokens, never a delete, nothing of the schema's owner.
      await expect(client.query('SELECT access_token FROM oauth_tokens')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('SELECT refresh_token FROM oauth_tokens')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('DELETE FROM user_accounts')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('DROP TABLE user_accounts')).rejects.toMatchObject({ code: '42501' });
      await expect(client.query('SELECT name FROM pgmigrations')).rejects.toMatchObject({ code: '42501' });
    });
  });

  test('is idempotent: another deploy leaves it as it is, and a working password alone', async () => {
    const stored = () =>
      withClient(
        databaseUrl,
        async (c) =>
          (await c.query('SELECT rolpassword FROM pg_authid WHERE rolname = $1', [api.username])).rows[0]
            .rolpassword as string,
      );
    const before = await stored();
    const response = await onSchemaMigrationEvent(
      updateEvent(DEFAULT_MIGRATIONS_DIR, DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, { masterConnection: async () => connection }),
    );
    expect(response.Data).toEqual({ Applied: '', AppliedCount: 0, Outcome: 'migrated' });
    expect(await stored()).toBe(before);
    expect(await loginAttributes(databaseUrl, api.username)).toEqual(API_LOGIN);
    await withClient(databaseUrl, async (client) => {
      expect(await ensureApiLogin(client, api, async () => true)).toBe('unchanged');
      expect(await ensureApiLogin(client, api)).toBe('updated');
    });
    expect(await loginAttributes(databaseUrl, api.username)).toEqual(API_LOGIN);
    await asApi(async (client) => expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]));
  });

  test('follows a rotated password, as the jobs\u2019 login does', async () => {
    const rotated = { ...api, password: 'api-rotated-password-0123456789' };
    await onSchemaMigrationEvent(
      updateEvent(DEFAULT_MIGRATIONS_DIR, DEFAULT_MIGRATIONS_DIR),
      deps(DEFAULT_MIGRATIONS_DIR, { masterConnection: async () => connection, apiCredentials: async () => rotated }),
    );
    const client = new Client({ ...connection, user: rotated.username, password: rotated.password });
    await client.connect();
    await client.end();
    await expect(asApi(async () => undefined)).rejects.toMatchObject({ code: '28P01' });
  });

  test.each([
    ['bypasses RLS', 'CREATE ROLE %I LOGIN BYPASSRLS', /bypasses Row Level Security/],
    ['does not inherit', 'CREATE ROLE %I LOGIN NOINHERIT', /does not inherit the privileges of authenticated/],
    [
      'owns a table',
      'CREATE ROLE %I LOGIN; CREATE TABLE %1$I_table (id int); ALTER TABLE %1$I_table OWNER TO %1$I',
      /owns 1 object/,
    ],
  ])('an existing login that %s stops the deploy instead of serving the API', async (_, template, message) => {
    const credentials = { username: `unsafe_${_.replace(/\W/g, '_')}`, password: 'x'.repeat(32) };
    await withClient(databaseUrl, async (client) => {
      const { rows } = await client.query(`SELECT format($1, $2::text) AS statement`, [template, credentials.username]);
      await client.query(rows[0].statement);
      const failure = ensureApiLogin(client, credentials);
      await expect(failure).rejects.toThrow(UnsafeLoginError);
      await expect(failure).rejects.toThrow(message);
    });
  });

  test('ensureLogin makes a login member of the group role it is given (here accounts_worker)', async () => {
    await withClient(databaseUrl, async (client) => {
      expect(await ensureLogin(client, { username: 'some_login', password: 'z'.repeat(32) }, 'accounts_worker')).toBe(
        'created',
      );
    });
    const attributes = await loginAttributes(databaseUrl, 'some_login');
    expect(attributes).toMatchObject({ memberOf: ['accounts_worker'], rolbypassrls: false, ownedObjects: 0 });
  });
});

test('a first deploy with many migrations still answers within CloudFormation\u2019s response size', async () => {
  const many = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}_a-rather-long-migration-name`);
  const response = await onSchemaMigrationEvent(
    createEvent(DEFAULT_MIGRATIONS_DIR),
    deps(DEFAULT_MIGRATIONS_DIR, {
      migrate: async () => ({ applied: many, attempts: 1 }),
    }),
  );
  expect(response.Data).toEqual({ Applied: `${many[0]},...,${many[199]}`, AppliedCount: 200, Outcome: 'migrated' });
});

test('a rollback is recognised by an earlier last migration than the one being replaced', () => {
  expect(isRollback({ LatestMigration: '0006_a' }, { LatestMigration: '0007_b' })).toBe(true);
  expect(isRollback({ LatestMigration: '0007_b' }, { LatestMigration: '0006_a' })).toBe(false);
  expect(isRollback({ LatestMigration: '0007_b' }, { LatestMigration: '0007_b' })).toBe(false);
});
