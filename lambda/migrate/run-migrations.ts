import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import { basename, extname, resolve } from 'node:path';
import { Client, type ClientConfig } from 'pg';
import type { AppLogger } from '../shared/logger';

/** Where the migrations live: next to the bundle in Lambda, `migrations/` in the repository. */
export const DEFAULT_MIGRATIONS_DIR = resolve(__dirname, '..', '..', 'migrations');
export const MIGRATIONS_TABLE = 'pgmigrations';

/** A migration failed. Carries the migration's name and the database's own message. */
export class MigrationError extends Error {
  constructor(
    readonly migration: string | undefined,
    readonly databaseMessage: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(`Migration ${migration ?? '(before any migration)'} failed: ${databaseMessage}`, options);
    this.name = 'MigrationError';
  }
}

export interface RunMigrationsOptions {
  /** A connection URL or node-postgres client config (TLS settings, password from a secret). */
  readonly database: string | ClientConfig;
  /** @default 'up' */
  readonly direction?: 'up' | 'down';
  /** How many migrations to apply or undo. @default - all pending for up, 1 for down */
  readonly count?: number;
  /** @default DEFAULT_MIGRATIONS_DIR */
  readonly dir?: string;
  /**
   * How many times to retry the run when a migration gave up waiting for a lock
   * (lock_timeout, SQLSTATE 55P03) or the server was starting up; each migration is in its
   * own transaction or idempotent, so a retry resumes where the failed attempt stopped. (The
   * lock steps of the non-transactional migrations retry a busy lock themselves, up to the
   * deadline: migrations/lib/online.js; this retries the SQL migrations' transactions.)
   * @default 5
   */
  readonly lockRetries?: number;
  /** Base delay between those retries. @default 1000 */
  readonly retryBaseDelayMs?: number;
  /** @default - node-pg-migrate's progress lines are discarded */
  readonly logger?: AppLogger;
  /** Injected for tests. @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * Milliseconds the caller has left (the Lambda's remaining time). Each attempt then caps
   * every statement, lock wait and node-pg-migrate's advisory-lock wait at that time minus
   * `reserveMs`, and gives up with a clear error rather than outlive the caller.
   * @default - no cap (local runs, the CLI)
   */
  readonly remainingTimeMs?: () => number;
  /** Time kept back for the caller to report the outcome. @default 30000 */
  readonly reserveMs?: number;
}

/**
 * The session setting (epoch seconds) up to which the migrations' lock-needing steps retry a
 * busy lock (migrations/lib/online.js); without it they retry for `migrations.lock_wait`
 * (default 5 minutes) each, which is what the CLI (`npm run migrate`) gets.
 */
export const LOCK_RETRY_DEADLINE_SETTING = 'migrations.deadline';
/** How long before the cap the lock retries stop (at most a fifth of the budget). */
const LOCK_RETRY_MARGIN_MS = 2000;
/** One try of a lock step and its pause (500 ms each in migrations/lib/online.js). */
const LOCK_TRY_MS = 1000;

/** How often the server checks that the client of a running statement is still there. */
export const CLIENT_CONNECTION_CHECK_INTERVAL = '10s';

export interface MigrationResult {
  /** Names of the migrations applied (or undone) by this run, in order. */
  readonly applied: string[];
  /** Attempts made (1 when nothing had to be retried). */
  readonly attempts: number;
}

/** SQLSTATEs worth retrying: lock_not_available, cannot_connect_now, deadlock_detected. */
const RETRYABLE = new Set(['55P03', '57P03', '40P01']);

type Runner = (options: Record<string, unknown>) => Promise<Array<{ name: string }>>;
let runnerPromise: Promise<Runner> | undefined;

/** node-pg-migrate is ESM-only; load it once. */
function loadRunner(): Promise<Runner> {
  runnerPromise ??= import('node-pg-migrate').then((m) => m.runner as unknown as Runner);
  return runnerPromise;
}

interface MigrationUnit {
  id: string;
  filePaths: string[];
  actions: unknown;
}

type MigrationAction = (pgm: unknown, done?: () => void) => unknown;

interface MigrationModule {
  up?: MigrationAction | false;
  down?: MigrationAction | false;
  [other: string]: unknown;
}

/**
 * A JS migration's action that reports its migration's name when node-pg-migrate calls it.
 * node-pg-migrate announces a migration ("### MIGRATION … ###") only after its action has
 * returned the SQL to run, so an action that throws (or awaits a query that fails) would be
 * blamed on the migration before it. Keeps the arity: node-pg-migrate passes a callback to
 * two-argument actions.
 */
function reporting(name: string, action: MigrationAction | false | undefined, onStart: (name: string) => void) {
  if (typeof action !== 'function') return action;
  if (action.length === 2) {
    return (pgm: unknown, done?: () => void) => {
      onStart(name);
      return action(pgm, done);
    };
  }
  return (pgm: unknown) => {
    onStart(name);
    return action(pgm);
  };
}

/**
 * How migration files are loaded, the same everywhere (tests, `npm start`, the Lambda): `.sql`
 * by node-pg-migrate's own SQL loader, `.js`/`.cjs` with Node's `require` (CommonJS, as the
 * migrations are written), never through node-pg-migrate's default loader, jiti, which the
 * Lambda bundle leaves out (lambda/migrate/jiti-unavailable.ts). TypeScript and ESM migrations
 * are refused with a clear message instead of working locally and failing in the deploy.
 * `onStart` hears each JS migration's name as its action starts.
 */
const requireMigration = createRequire(__filename);
function migrationLoaders(onStart: (name: string) => void) {
  return [
    { extensions: ['.sql'], loader: 'legacySql' },
    {
      extensions: ['.js', '.cjs'],
      loader: (filePaths: string[]): Promise<MigrationUnit[]> =>
        Promise.resolve(
          filePaths.map((filePath) => {
            const migration = requireMigration(filePath) as MigrationModule;
            const name = basename(filePath, extname(filePath)); // node-pg-migrate's name for it
            // A missing `down` stays missing: node-pg-migrate then undoes the migration by
            // running `up` in reverse, and `down: false` still refuses to undo it.
            const actions = {
              ...migration,
              up: reporting(name, migration.up, onStart),
              down: reporting(name, migration.down, onStart),
            };
            return { id: filePath, filePaths: [filePath], actions };
          }),
        ),
    },
    {
      extensions: ['.ts', '.mts', '.cts', '.mjs'],
      loader: (filePaths: string[]): Promise<MigrationUnit[]> =>
        Promise.reject(
          new Error(`${filePaths.map((f) => basename(f)).join(', ')}: migrations must be .sql or CommonJS .js files`),
        ),
    },
  ];
}

/**
 * Applies pending migrations with node-pg-migrate: each migration in its own transaction (or,
 * where a migration says so, none), the advisory lock in "wait" mode so that concurrent runners
 * apply each migration exactly once, and retries when a migration's lock_timeout fired. With
 * `remainingTimeMs`, nothing outlives the caller: each statement and lock wait (the advisory
 * lock's too) is capped by the time left, and the run gives up with a clear MigrationError.
 */
export async function runMigrations(options: RunMigrationsOptions): Promise<MigrationResult> {
  const runner = await loadRunner();
  const retries = options.lockRetries ?? 5;
  const baseDelay = options.retryBaseDelayMs ?? 1000;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const applied: string[] = [];
  // The migration the previous attempt stopped at (a lock timeout), which the next one resumes.
  let resuming: string | undefined;
  for (let attempt = 1; ; attempt++) {
    // node-pg-migrate announces each migration just before running it: the last one
    // announced is the one that failed, the ones before it were applied.
    // A JS migration is known from its action's start (see `reporting`), an SQL one from the
    // announcement, which comes before any of its SQL runs.
    const started: string[] = [];
    const starting = (name: string) => {
      if (started.at(-1) !== name) started.push(name);
    };
    const log = (level: keyof AppLogger) => (message: string) => {
      const match = /^### MIGRATION (.+) \((UP|DOWN)\) ###$/.exec(message);
      if (match) starting(match[1]);
      options.logger?.[level](message);
    };
    const budgetMs = options.remainingTimeMs
      ? Math.floor(options.remainingTimeMs() - (options.reserveMs ?? 30_000))
      : undefined;
    if (budgetMs !== undefined && budgetMs < 1000) {
      throw new MigrationError(
        resuming,
        `no time left to run migrations (attempt ${attempt}; ${Math.max(0, budgetMs)} ms of the function's time left after its reserve)`,
        undefined,
      );
    }
    // Until when a migration step retries a busy lock (migrations/lib/online.js): a little
    // before the cap, so that it gives up with its own error naming the step, not a cancel.
    const lockDeadline =
      budgetMs === undefined ? undefined : Date.now() + budgetMs - Math.min(LOCK_RETRY_MARGIN_MS, budgetMs / 5);
    const session = cappedSession(options.database, budgetMs, lockDeadline);
    const watchdog = budgetMs === undefined ? undefined : cancelAt(session, budgetMs);
    // Our own client, not node-pg-migrate's: it does not wait for its connection to close, so
    // the server could end that session after the run (a restart, a terminated backend) and
    // the 'error' it emits, with no listener, would crash the process. Errors of a running
    // statement still reach its query; the client is closed before the attempt returns.
    const client = new Client(session);
    client.on('error', () => undefined);
    try {
      await client.connect();
      const done = await runner({
        dbClient: client,
        dir: options.dir ?? DEFAULT_MIGRATIONS_DIR,
        migrationsTable: MIGRATIONS_TABLE,
        direction: options.direction ?? 'up',
        // Undefined: node-pg-migrate applies every pending one up, and undoes one down.
        count: options.count,
        singleTransaction: false,
        checkOrder: true,
        advisoryLockMode: 'wait',
        migrationLoaderStrategies: migrationLoaders(starting),
        logger: { debug: () => undefined, info: log('info'), warn: log('warn'), error: log('error') },
      });
      applied.push(...done.map((m) => m.name));
      return { applied, attempts: attempt };
    } catch (error) {
      const code = findCode(error);
      const current = started.at(-1);
      applied.push(...started.slice(0, -1));
      const outOfTime =
        watchdog?.fired() ||
        (budgetMs !== undefined && options.remainingTimeMs!() - (options.reserveMs ?? 30_000) < 1000) ||
        // A step that retried its lock until the deadline has used the time a new attempt would need.
        (lockDeadline !== undefined && Date.now() + LOCK_TRY_MS > lockDeadline);
      if (outOfTime && current === undefined && (code === '55P03' || code === '57014')) {
        throw new MigrationError(
          undefined,
          `gave up waiting for the migration lock after ${budgetMs} ms (the function's time left): another ` +
            `session holds node-pg-migrate's advisory lock (a concurrent deploy, or a session a killed run left behind)`,
          code,
          { cause: error },
        );
      }
      if (outOfTime && code === '57014') {
        throw new MigrationError(
          current,
          `cancelled after ${budgetMs} ms, the time the function had left (${rootMessage(error)}); ` +
            'run a migration this long by hand before the deploy',
          code,
          { cause: error },
        );
      }
      if (code && RETRYABLE.has(code) && attempt <= retries && !outOfTime) {
        options.logger?.warn(
          `${current ? `Migration ${current}` : 'Before any migration,'} attempt ${attempt} hit ${code}; retrying`,
        );
        resuming = current;
        await sleep(Math.min(30_000, baseDelay * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2));
        continue;
      }
      throw new MigrationError(current, rootMessage(error), code, { cause: error });
    } finally {
      watchdog?.stop();
      await releaseSession(client);
      await client.end().catch(() => undefined);
    }
  }
}

/**
 * The connection node-pg-migrate opens: the server ends the session if the client is gone
 * (a killed Lambda) while a statement runs, and, with a budget, statement_timeout and
 * lock_timeout default to it (node-pg-migrate's advisory-lock wait included). A migration may
 * SET a longer timeout for itself: {@link cancelAt} caps those too.
 */
function cappedSession(
  database: string | ClientConfig,
  budgetMs: number | undefined,
  lockDeadline: number | undefined,
): ClientConfig {
  const base: ClientConfig = typeof database === 'string' ? { connectionString: database } : database;
  const settings = [`client_connection_check_interval=${CLIENT_CONNECTION_CHECK_INTERVAL}`];
  if (budgetMs !== undefined) settings.push(`statement_timeout=${budgetMs}`, `lock_timeout=${budgetMs}`);
  if (lockDeadline !== undefined) settings.push(`${LOCK_RETRY_DEADLINE_SETTING}=${(lockDeadline / 1000).toFixed(3)}`);
  return {
    ...base,
    // Unique per run, so the watchdog cancels only this session; the caller's name stays in front.
    application_name: `${base.application_name ?? 'schema-migration'}-${randomBytes(6).toString('hex')}`,
    options: [base.options, ...settings.map((s) => `-c ${s}`)].filter(Boolean).join(' '),
  };
}

/**
 * At `budgetMs`, cancels whatever the run's session is still executing (found by its
 * application_name), whatever statement_timeout a migration set for itself.
 */
function cancelAt(session: ClientConfig, budgetMs: number): { fired(): boolean; stop(): void } {
  let fired = false;
  const timer = setTimeout(() => {
    fired = true;
    const { application_name: name, options: _options, ...config } = session;
    const client = new Client(config);
    // A connection the server ends (a restart, a terminated backend) emits 'error'; without a
    // listener that would crash the process. The cancel is best effort either way.
    client.on('error', () => undefined);
    client
      .connect()
      .then(() =>
        client.query(
          `SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid()`,
          [name],
        ),
      )
      .catch(() => undefined) // the statement_timeout of the session still applies
      .finally(() => void client.end().catch(() => undefined));
  }, budgetMs);
  timer.unref();
  return { fired: () => fired, stop: () => clearTimeout(timer) };
}

/**
 * Leaves the session as node-pg-migrate should have: outside any transaction and without its
 * advisory lock. A migration that failed inside its transaction leaves the transaction aborted,
 * in which node-pg-migrate's own pg_advisory_unlock fails (it only warns); the lock would then
 * live until the connection is gone. Best effort: closing the connection releases it anyway.
 */
async function releaseSession(client: Client): Promise<void> {
  try {
    await client.query('ROLLBACK');
    await client.query('SELECT pg_advisory_unlock_all()');
  } catch {
    // the connection is gone, and with it the session's locks
  }
}

function findCode(error: unknown): string | undefined {
  for (let e: unknown = error, depth = 0; e && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

function rootMessage(error: unknown): string {
  let e: unknown = error;
  for (let depth = 0; depth < 5 && (e as { cause?: unknown })?.cause; depth++) e = (e as { cause?: unknown }).cause;
  return e instanceof Error ? e.message : String(e);
}
