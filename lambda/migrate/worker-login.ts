import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import type { Client } from 'pg';
import { MIGRATIONS_TABLE } from './run-migrations';

/** The NOLOGIN role migration 0006 creates; the jobs' login user is a member of it. */
export const WORKER_ROLE = 'accounts_worker';

export interface WorkerCredentials {
  readonly username: string;
  readonly password: string;
}

/**
 * Creates the jobs' LOGIN user (member of `accounts_worker`) or, when it exists and its
 * secret's password does not work, sets its password to the secret's, so the Data API can log
 * in with that secret. A password that works is left alone: Secrets Manager rotates it, and
 * rewriting it during a rotation could undo the rotation's change.
 *
 * Identifiers and literals are quoted by the server (`format('%I', '%L')`), never by string
 * concatenation. The password is sent already hashed as a SCRAM-SHA-256 verifier (what the
 * server stores itself with `password_encryption = scram-sha-256`), never in clear text, so a
 * statement log (log_statement = 'ddl', slow-statement logging) cannot show it. Always SCRAM,
 * whatever `password_encryption` says: the Data API logs in with SCRAM only, and a
 * pre-hashed verifier is stored as it is.
 */
export async function ensureWorkerLogin(
  client: Client,
  credentials: WorkerCredentials,
  /** Whether the secret's password logs in today. @default - assume it does not */
  passwordWorks: () => Promise<boolean> = () => Promise.resolve(false),
): Promise<'created' | 'updated' | 'unchanged'> {
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
  if (!(await exists())) {
    try {
      await run('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', credentials.username, verifier, WORKER_ROLE);
      await grantMigrationNames(client, credentials.username);
      return 'created';
    } catch (error) {
      // Another run created it between our check and CREATE ROLE: update it instead.
      if ((error as { code?: string }).code !== '42710') throw error;
    }
  }
  const works = await passwordWorks();
  if (!works) await run('ALTER ROLE %I WITH LOGIN PASSWORD %L', credentials.username, verifier);
  await run('GRANT %I TO %I', WORKER_ROLE, credentials.username);
  await grantMigrationNames(client, credentials.username);
  return works ? 'unchanged' : 'updated';
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
