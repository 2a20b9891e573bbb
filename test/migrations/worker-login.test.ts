import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import {
  API_CALLER_ROLE,
  API_ROLE,
  ensureApiLogin,
  ensureLogin,
  ensureWorkerLogin,
  scramSha256Verifier,
  UnsafeLoginError,
  WORKER_ROLE,
} from '../../lambda/migrate/worker-login';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { withClient } from '../support/schema';

// The logins the migration custom resource makes (lambda/migrate/worker-login.ts), each call
// inside a test, on a database with only what they need: the two group roles and
// node-pg-migrate's table. (test/migrations/on-event/cloudformation-lifecycle.test.ts runs them through the
// whole custom resource, in hooks as well as tests; this file is what the mutation group
// `worker-login` runs, so each mutant runs only the tests that reach its line.)

let pg: TestPostgres;
let url: string;

beforeAll(async () => {
  pg = await startPostgres();
  url = await pg.createDatabase();
  await withClient(url, async (c) => {
    for (const role of [WORKER_ROLE, API_ROLE])
      await c.query(`DO $$ BEGIN CREATE ROLE ${role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$`);
    await c.query('CREATE TABLE pgmigrations (id serial PRIMARY KEY, name text NOT NULL, run_on timestamp NOT NULL)');
    await c.query(`INSERT INTO pgmigrations (name, run_on) VALUES ('0001_first', now())`);
    await c.query(`CREATE TABLE secrets (id int)`);
    await c.query(`GRANT SELECT ON secrets TO ${WORKER_ROLE}`);
  });
});
afterAll(async () => {
  await pg?.stop();
});

/** A login name no other test (or earlier run on a shared server) has used. */
const fresh = (prefix: string) => ({
  username: `${prefix}_${randomBytes(4).toString('hex')}`,
  password: `pw'"; ${randomBytes(8).toString('hex')}`,
});

async function attributes(username: string) {
  return withClient(url, async (c) => {
    const { rows } = await c.query(
      `SELECT r.rolcanlogin, r.rolinherit,
              ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                     WHERE m.member = r.oid ORDER BY 1) AS "memberOf",
              a.rolpassword
         FROM pg_roles r JOIN pg_authid a ON a.oid = r.oid WHERE r.rolname = $1`,
      [username],
    );
    return rows[0] as
      { rolcanlogin: boolean; rolinherit: boolean; memberOf: string[]; rolpassword: string } | undefined;
  });
}

/** The database URL with the login's name and password (a connection string's own win over `user`). */
function as(databaseUrl: string, credentials: { username: string; password: string }): string {
  const u = new URL(databaseUrl);
  u.username = encodeURIComponent(credentials.username);
  u.password = encodeURIComponent(credentials.password);
  return u.toString();
}

/** Logs in as `credentials` and runs `sql`; the error's SQLSTATE if it fails. */
async function asLogin(credentials: { username: string; password: string }, sql: string): Promise<unknown> {
  const client = new Client({ connectionString: as(url, credentials) });
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } catch (error) {
    return { code: (error as { code?: string }).code };
  } finally {
    await client.end();
  }
}

test('the jobs’ login: created as a LOGIN member of accounts_worker with its privileges and the migration names, nothing more', async () => {
  const login = fresh('jobs');
  expect(await withClient(url, (c) => ensureWorkerLogin(c, login))).toBe('created');
  expect(await attributes(login.username)).toMatchObject({
    rolcanlogin: true,
    rolinherit: true,
    memberOf: [WORKER_ROLE],
  });
  expect(await asLogin(login, 'SELECT count(*)::int AS n FROM secrets')).toEqual([{ n: 0 }]);
  expect(await asLogin(login, 'SELECT name FROM pgmigrations')).toEqual([{ name: '0001_first' }]);
  expect(await asLogin(login, 'SELECT run_on FROM pgmigrations')).toEqual({ code: '42501' });
});

test('the API’s login: created as a LOGIN member of authenticated, without the migration names', async () => {
  const login = fresh('api');
  expect(await withClient(url, (c) => ensureApiLogin(c, login))).toBe('created');
  expect(await attributes(login.username)).toMatchObject({ rolcanlogin: true, memberOf: [API_ROLE] });
  expect(await asLogin(login, 'SELECT name FROM pgmigrations')).toEqual({ code: '42501' });
  expect(await asLogin(login, 'SELECT count(*)::int AS n FROM secrets')).toEqual({ code: '42501' });
});

test('the API’s login: made a member of accounts_api_caller where that role exists (0019), and so may call what it may', async () => {
  const login = fresh('api_caller');
  await withClient(url, async (c) => {
    await c.query(`CREATE ROLE ${API_CALLER_ROLE} NOLOGIN`);
    await c.query(`CREATE FUNCTION only_for_the_api() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
    await c.query(`REVOKE ALL ON FUNCTION only_for_the_api() FROM PUBLIC`);
    await c.query(`GRANT EXECUTE ON FUNCTION only_for_the_api() TO ${API_CALLER_ROLE}`);
  });
  try {
    expect(await withClient(url, (c) => ensureApiLogin(c, login))).toBe('created');
    expect(await attributes(login.username)).toMatchObject({ memberOf: [API_CALLER_ROLE, API_ROLE] });
    expect(await asLogin(login, 'SELECT only_for_the_api() AS one')).toEqual([{ one: 1 }]);
  } finally {
    await withClient(url, async (c) => {
      await c.query(`DROP FUNCTION only_for_the_api()`);
      await c.query(`DROP OWNED BY ${login.username}`);
      await c.query(`DROP ROLE ${login.username}`);
      await c.query(`DROP ROLE ${API_CALLER_ROLE}`);
    });
  }
});

test('the API’s login: a password that works is left alone, one that does not is replaced', async () => {
  const login = fresh('api_existing');
  await withClient(url, async (c) => {
    expect(await ensureApiLogin(c, login)).toBe('created');
    const before = (await attributes(login.username))!.rolpassword;
    expect(await ensureApiLogin(c, login, async () => true)).toBe('unchanged');
    expect((await attributes(login.username))!.rolpassword).toBe(before);
    expect(await ensureApiLogin(c, login, async () => false)).toBe('updated');
    expect((await attributes(login.username))!.rolpassword).not.toBe(before);
  });
});

test('where no migration ran (no pgmigrations), the jobs’ login is made all the same', async () => {
  const empty = await pg.createDatabase();
  const login = fresh('jobs_empty');
  expect(await withClient(empty, (c) => ensureWorkerLogin(c, login))).toBe('created');
  const client = new Client({ connectionString: as(empty, login) });
  await client.connect();
  expect((await client.query('SELECT current_user AS name')).rows).toEqual([{ name: login.username }]);
  await client.end();
});

test('an existing login: a password that does not work is replaced, one that works is left alone; its membership is given back', async () => {
  const login = fresh('existing');
  await withClient(url, async (c) => {
    await c.query(`CREATE ROLE ${login.username} NOLOGIN PASSWORD 'old-password'`);
    const before = (await attributes(login.username))!.rolpassword;
    // passwordWorks answers true: nothing about the password changes, the membership is granted.
    expect(await ensureWorkerLogin(c, login, async () => true)).toBe('unchanged');
    expect(await attributes(login.username)).toMatchObject({ rolpassword: before, memberOf: [WORKER_ROLE] });
    // Without passwordWorks the password is taken not to work: LOGIN and the secret's password.
    expect(await ensureWorkerLogin(c, login)).toBe('updated');
    const after = (await attributes(login.username))!;
    expect(after.rolpassword).not.toBe(before);
    expect(after.rolpassword).toMatch(
      /^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}$/,
    );
    expect(after.rolcanlogin).toBe(true);
    expect(await ensureWorkerLogin(c, login, async () => false)).toBe('updated');
    expect((await attributes(login.username))!.rolpassword).not.toBe(after.rolpassword);
  });
  expect(await asLogin(login, 'SELECT current_user AS name')).toEqual([{ name: login.username }]);
});

test('a login created by another run between the check and CREATE ROLE is updated instead', async () => {
  const login = fresh('raced');
  const outcome = await withClient(url, async (c) => {
    const query = c.query.bind(c) as (...args: unknown[]) => Promise<unknown>;
    // The other run creates the role just after this one looked for it.
    const racing = Object.create(c, {
      query: {
        value: async (...args: unknown[]) => {
          const result = await query(...args);
          if (typeof args[0] === 'string' && args[0].includes('FROM pg_roles WHERE rolname'))
            await withClient(url, (other) => other.query(`CREATE ROLE ${login.username} NOLOGIN`));
          return result;
        },
      },
    }) as Client;
    return ensureWorkerLogin(racing, login);
  });
  expect(outcome).toBe('updated');
  expect(await attributes(login.username)).toMatchObject({ rolcanlogin: true, memberOf: [WORKER_ROLE] });
  expect(await asLogin(login, 'SELECT current_user AS name')).toEqual([{ name: login.username }]);
});

test('any other error of CREATE ROLE fails the call', async () => {
  const login = fresh('no_group');
  const failure = withClient(url, (c) => ensureLogin(c, login, 'no_such_group_role'));
  // undefined_object, from CREATE ROLE … IN ROLE (not from an ALTER ROLE of the missing login)
  await expect(failure).rejects.toMatchObject({ code: '42704', message: 'role "no_such_group_role" does not exist' });
  expect(await attributes(login.username)).toBeUndefined();
});

test.each([
  ['SUPERUSER', 'is a superuser'],
  ['BYPASSRLS', 'bypasses Row Level Security (BYPASSRLS)'],
  ['NOINHERIT', `does not inherit the privileges of ${WORKER_ROLE}`],
  ['SUPERUSER BYPASSRLS', 'is a superuser, bypasses Row Level Security (BYPASSRLS)'],
])('an existing login with %s stops the deploy, every problem named', async (attribute, problems) => {
  const login = fresh('unsafe');
  await withClient(url, async (c) => {
    await c.query(`CREATE ROLE ${login.username} LOGIN ${attribute}`);
    const failure = ensureWorkerLogin(c, login);
    await expect(failure).rejects.toThrow(UnsafeLoginError);
    await expect(failure).rejects.toThrow(
      `Login user ${login.username} ${problems}: it must have exactly the privileges of ${WORKER_ROLE}. Fix the role by hand (as a superuser), then deploy again.`,
    );
    await expect(failure).rejects.toMatchObject({ name: 'UnsafeLoginError' });
  });
});

test('a login that owns objects stops the deploy, with their number', async () => {
  const login = fresh('owner');
  await withClient(url, async (c) => {
    await c.query(`CREATE ROLE ${login.username} LOGIN`);
    for (const table of ['a', 'b']) {
      await c.query(`CREATE TABLE ${login.username}_${table} (id int)`);
      await c.query(`ALTER TABLE ${login.username}_${table} OWNER TO ${login.username}`);
    }
    await expect(ensureApiLogin(c, login)).rejects.toThrow(
      `Login user ${login.username} owns 2 object(s): it must have exactly the privileges of ${API_ROLE}.`,
    );
  });
});

test('the verifier is the server’s for the same salt and iterations, the password normalised (NFKC) as SCRAM does', async () => {
  // U+FB01 (the "fi" ligature) becomes "fi" under NFKC; the server's SASLprep does the same.
  const password = 'ﬁne p\u00e4ss \'"; w0rd';
  const stored = await withClient(url, async (c) => {
    await c.query(`SET password_encryption = 'scram-sha-256'`);
    const { rows } = await c.query(`SELECT format('CREATE ROLE %I PASSWORD %L', $1::text, $2::text) AS s`, [
      fresh('server').username,
      password,
    ]);
    await c.query(rows[0].s);
    const name = /CREATE ROLE (\S+)/.exec(rows[0].s as string)![1];
    return (await c.query(`SELECT rolpassword FROM pg_authid WHERE rolname = $1`, [name])).rows[0]
      .rolpassword as string;
  });
  const [, iterations, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(stored)!;
  expect(scramSha256Verifier(password, Buffer.from(salt, 'base64'), Number(iterations))).toBe(stored);
  expect(scramSha256Verifier(password.normalize('NFKC'), Buffer.from(salt, 'base64'), Number(iterations))).toBe(stored);
  // Defaults: 4096 iterations, a fresh 16-byte salt each time.
  const a = scramSha256Verifier(password);
  const b = scramSha256Verifier(password);
  expect(a).toMatch(/^SCRAM-SHA-256\$4096:[A-Za-z0-9+/]{22}==\$/);
  expect(a).not.toBe(b);
});
