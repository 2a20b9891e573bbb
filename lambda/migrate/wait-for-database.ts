import { Client, type ClientConfig } from 'pg';

/** The database did not accept a connection within the time the handler could spend waiting. */
export class DatabaseUnavailableError extends Error {
  constructor(
    readonly attempts: number,
    readonly waitedMs: number,
    options: { cause: unknown },
  ) {
    super(
      `Database not reachable after ${attempts} attempts over ${Math.round(waitedMs / 1000)} s: ${messageOf(options.cause)}`,
      options,
    );
    this.name = 'DatabaseUnavailableError';
  }
}

export interface WaitForDatabaseOptions {
  /** Builds the connection settings; called before every attempt so a rotated password is picked up. */
  readonly connection: () => Promise<ClientConfig>;
  /** How long to keep trying, in milliseconds. */
  readonly budgetMs: number;
  /** Delay before the second attempt; doubles up to `maxDelayMs`. @default 1000 */
  readonly baseDelayMs?: number;
  /** @default 15000 */
  readonly maxDelayMs?: number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Date.now */
  readonly now?: () => number;
  /** @default - attempts are not logged */
  readonly onRetry?: (attempt: number, error: unknown) => void;
}

/**
 * Errors that mean "not yet": the cluster is being created, resuming from 0 ACU, restarting, or
 * its master password is mid-rotation (the secret's new version is not current yet).
 * SQLSTATE 57P03 cannot_connect_now, 53300 too_many_connections, 28P01 invalid_password.
 */
const TRANSIENT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  '57P03',
  '53300',
  '28P01',
]);
const TRANSIENT_MESSAGES =
  /timeout|terminated|Connection ended|the database system is (starting up|shutting down|in recovery)/i;

export function isTransientConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code === 'string' && TRANSIENT_CODES.has(code)) return true;
  return TRANSIENT_MESSAGES.test(messageOf(error));
}

/**
 * Connects until the database answers `SELECT 1`, with exponential backoff, for at most
 * `budgetMs`. Returns the settings that worked. A non-transient error (wrong database name,
 * TLS failure) is thrown at once.
 */
export async function waitForDatabase(options: WaitForDatabaseOptions): Promise<ClientConfig> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = options.now ?? Date.now;
  const base = options.baseDelayMs ?? 1000;
  const max = options.maxDelayMs ?? 15_000;
  const started = now();
  for (let attempt = 1; ; attempt++) {
    try {
      const config = await options.connection();
      const client = new Client(config);
      try {
        await client.connect();
        await client.query('SELECT 1');
      } finally {
        await client.end().catch(() => undefined);
      }
      return config;
    } catch (error) {
      const elapsed = now() - started;
      const delay = Math.min(max, base * 2 ** (attempt - 1));
      if (!isTransientConnectionError(error) || elapsed + delay > options.budgetMs) {
        if (!isTransientConnectionError(error)) throw error;
        throw new DatabaseUnavailableError(attempt, elapsed, { cause: error });
      }
      options.onRetry?.(attempt, error);
      await sleep(delay);
    }
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
