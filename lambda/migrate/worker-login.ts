import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import { MIGRATIONS_TABLE } from './run-migrations';

/** The NOLOGIN role migration 0006 creates; the jobs' login user is a member of it. */
export const WORKER_ROLE = 'accounts_worker';

/**
 * The end users' role (migration 0001, Supabase-compatible): the accounts API's login user is a
 * member of it and inherits its privileges, so the Row Level Security policies `TO authenticated`
 * decide what each request sees.
 */
export const API_ROLE = 'authenticated';

export interface LoginCredentials {
  readonly username: string;
  readonly password: string;
}
/** The jobs' login (the name predates the API's login). */
export type WorkerCredentials = LoginCredentials;

export type LoginOutcome = 'created' | 'updated' | 'unchanged';

/** A login user is not what it must be (it bypasses RLS, owns objects, …); the deploy stops. */
export class UnsafeLoginError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnsafeLoginError';
  }
}

/**
 * Creates the jobs' LOGIN user (member of `accounts_worker`) or, when it exists and its
 * secret's password does not work, sets its password to the secret's (see ensureLogin). The
 * jobs' login may also read the names of the applied migrations (grantMigrationNames).
 */
export function ensureWorkerLogin(
  client: Client,
  credentials: WorkerCredentials,
  /** Whether the secret's password logs in today. @default - assume it does not */
  passwordWorks?: () => Promise<boolean>,
): Promise<LoginOutcome> {
  return ensureLogin(client, credentials, WORKER_ROLE, { passwordWorks, readMigrationNames: true });
}

/**
 * The NOLOGIN role of migration 0018 whose members may draw from the shared Amazon rate budget
 * (its functions and table, nothing else): the accounts API's authorization-code exchange.
 */
export const RATE_BUDGET_ROLE = 'amazon_rate_budget_user';

/**
 * The NOLOGIN role of migration 0019, the only one that may call the functions of schema `api`
 * and hold the writes of connect and disconnect (a member of `authenticated`, so the own-row
 * policies apply to it). Not `authenticated` itself: that role is every signed-in Supabase user.
 */
export const API_CALLER_ROLE = 'accounts_api_caller';

/**
 * Creates the accounts API's LOGIN user (member of `authenticated`, inheriting its privileges)
 * or updates its password, as ensureLogin does. The login is also made a member of
 * {@link API_CALLER_ROLE} (migration 0019: EXECUTE on the `api` functions, the writes of
 * connect and disconnect) and of {@link RATE_BUDGET_ROLE} (migration 0018: its LWA call draws
 * from the shared budget), each where that role exists (its migration applied).
 */
export async function ensureApiLogin(
  client: Client,
  credentials: LoginCredentials,
  /** Whether the secret's password logs in today. @default - assume it does not */
  passwordWorks?: () => Promise<boolean>,
): Promise<LoginOutcome> {
  const outcome = await ensureLogin(client, credentials, API_ROLE, { passwordWorks });
  for (const role of [API_CALLER_ROLE, RATE_BUDGET_ROLE]) {
    const { rows } = await client.query<{ statement: string | null }>(
      `SELECT CASE WHEN to_regrole($1) IS NOT NULL THEN format('GRANT %I TO %I', $1::text, $2::text) END AS statement`,
      [role, credentials.username],
    );
    if (rows[0].statement) await client.query(rows[0].statement);
  }
  return outcome;
}

export interface EnsureLoginOptions {
  /** Whether the secret's password logs in today. @default - assume it does not */
  readonly passwordWorks?: () => Promise<boolean>;
  /** Let the login read `pgmigrations.name` (see grantMigrationNames). @default false */
  readonly readMigrationNames?: boolean;
}

/**
 * Creates a LOGIN user that is a member of the NOLOGIN role `groupRole` and inherits its
 * privileges, or, when it exists and its secret's password does not work, sets its password to
 * the secret's, so the Data API can log in with that secret. A password that works is left
 * alone: Secrets Manager rotates it, and rewriting it during a rotation could undo the
 * rotation's change. Afterwards the login is checked (checkLogin): it must not be a superuser,
 * must not bypass Row Level Security, must inherit `groupRole` and must own nothing; otherwise
 * UnsafeLoginError stops the deploy, since the login's privileges would not be `groupRole`'s.
 *
 * Identifiers and literals are quoted by the server (`format('%I', '%L')`), never by string
 * concatenation. The password is sent already hashed as a SCRAM-SHA-256 verifier (what the
 * server stores itself with `password_encryption = scram-sha-256`), never in clear text, so a
 * statement log (log_statement = 'ddl', slow-statement logging) cannot show it. Always SCRAM,
 * whatever `password_encryption` says: the Data API logs in with SCRAM only, and a
 * pre-hashed verifier is stored as it is.
 */
export async function ensureLogin(
  client: Client,
  credentials: LoginCredentials,
  groupRole: string,
  options: EnsureLoginOptions = {},
): Promise<LoginOutcome> {
  const verifier = scramSha256Verifier(credentials.password);
  const exists = async () =>
    (await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [credentials.username])).rowCount === 1;
  const run = async (template: string, ...args: string[]) => {
    const placeholders = args.map((_, i) => `$${i + 1}::text`).join(', ');
    const { rows } = await client.query<{ statement: string }>(
      `SELECT format('${template}', ${placeholders}) AS statement`,
      args,
    );
    await client.query(rows[0].statement);
  };
  const finish = async (outcome: LoginOutcome) => {
    if (options.readMigrationNames) await grantMigrationNames(client, credentials.username);
    await checkLogin(client, credentials.username, groupRole);
    return outcome;
  };
  if (!(await exists())) {
    try {
      await run('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', credentials.username, verifier, groupRole);
      return await finish('created');
    } catch (error) {
      // Another run created it between our check and CREATE ROLE: update it instead.
      if ((error as { code?: string }).code !== '42710') throw error;
    }
  }
  const works = await (options.passwordWorks ?? (() => Promise.resolve(false)))();
  if (!works) await run('ALTER ROLE %I WITH LOGIN PASSWORD %L', credentials.username, verifier);
  await run('GRANT %I TO %I', groupRole, credentials.username);
  return finish(works ? 'unchanged' : 'updated');
}

/**
 * What makes a login's privileges exactly its group role's: no superuser, no BYPASSRLS (Row
 * Level Security applies to it), the group's privileges inherited (`pg_has_role(…, 'USAGE')`),
 * and no object owned in any database (an owner is not subject to its table's RLS and may
 * grant on it). Not repaired here: changing SUPERUSER or BYPASSRLS needs a superuser, which
 * the master user on Aurora is not, and ownership is a decision for a person.
 */
async function checkLogin(client: Client, username: string, groupRole: string): Promise<void> {
  const { rows } = await client.query<{
    rolsuper: boolean;
    rolbypassrls: boolean;
    inherits: boolean;
    owned: number;
  }>(
    `SELECT r.rolsuper, r.rolbypassrls, pg_has_role(r.oid, $2::text, 'USAGE') AS inherits,
            (SELECT count(*)::int FROM pg_shdepend d
              WHERE d.refclassid = 'pg_authid'::regclass AND d.refobjid = r.oid AND d.deptype = 'o') AS owned
       FROM pg_roles r WHERE r.rolname = $1`,
    [username, groupRole],
  );
  const login = rows[0];
  const problems = [
    login.rolsuper ? 'is a superuser' : '',
    login.rolbypassrls ? 'bypasses Row Level Security (BYPASSRLS)' : '',
    login.inherits ? '' : `does not inherit the privileges of ${groupRole}`,
    login.owned > 0 ? `owns ${login.owned} object(s)` : '',
  ].filter(Boolean);
  if (problems.length > 0) {
    throw new UnsafeLoginError(
      `Login user ${username} ${problems.join(', ')}: it must have exactly the privileges of ${groupRole}. Fix the role by hand (as a superuser), then deploy again.`,
    );
  }
}

/** PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677, as pg's own client builds it). */
export function scramSha256Verifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/**
 * Lets the login user (not the role `accounts_worker`, whose privileges stay the jobs' own)
 * read the names of the applied migrations, and nothing else of node-pg-migrate's table, so
 * a deploy check (`npm run verify`) can read the schema's version through the Data API as
 * the jobs log in. Skipped where the table does not exist (no migration ran there).
 */
async function grantMigrationNames(client: Client, username: string): Promise<void> {
  const { rows } = await client.query<{ statement: string | null }>(
    `SELECT CASE WHEN to_regclass($1) IS NOT NULL THEN format('GRANT SELECT (name) ON %s TO %I', to_regclass($1), $2::text) END AS statement`,
    [MIGRATIONS_TABLE, username],
  );
  if (rows[0].statement) await client.query(rows[0].statement);
}
