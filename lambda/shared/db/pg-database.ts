import { Pool, PoolClient, PoolConfig, types as pgTypes } from 'pg';
import { AUTHENTICATION_RETRY_DELAY_MS, retryingAuthentication } from './authentication';
import { rewriteNamedParameters } from './named-parameters';
import { bindValue, parseUtcTimestamp } from './parameter-types';
import { Database, DatabaseCallCounts, DatabaseError, QueryResult, Row, SqlParams } from './port';

export interface PgDatabaseOptions {
  /**
   * A connection URL, or a node-postgres pool config (TLS, password from a secret). Its
   * `password` may be a function: node-postgres calls it for every new connection, so one that
   * reads the secret follows a rotation.
   */
  readonly connection: string | PoolConfig;
  /** Pool size. @default 5 */
  readonly maxConnections?: number;
  /** Parameter sets applied per statement round outside a transaction. @default 500 */
  readonly maxBatchSize?: number;
  /**
   * The pause before the one retry of a connection the database refused the login's password
   * for (SQLSTATE 28P01: a rotation between its password change and the secret's update).
   * `false`: not retried. @default 1500 ({@link AUTHENTICATION_RETRY_DELAY_MS})
   */
  readonly authenticationRetryDelayMs?: number | false;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** How long the pause may still take (the caller's deadline). @default - no limit */
  readonly waitBudgetMs?: () => number;
}

/** PostgreSQL type OIDs whose text form is decoded differently from node-postgres' defaults. */
const OID = {
  int8: 20,
  date: 1082,
  timestamp: 1114,
  timestamptz: 1184,
  int8Array: 1016,
  dateArray: 1182,
  timestampArray: 1115,
  timestamptzArray: 1185,
  textArray: 1009,
} as const;

const parseTextArray = pgTypes.getTypeParser(OID.textArray as Parameters<typeof pgTypes.getTypeParser>[0]) as (
  text: string,
) => (string | null)[];

/**
 * Decodes columns as the Data API adapter does (see port.ts "Rows"): int8 → bigint,
 * timestamps → Date in UTC, date → string. Scoped to this adapter's pool, never global.
 */
function typeParser(oid: number, format?: string): (text: string) => unknown {
  switch (oid) {
    case OID.int8:
      return (text) => BigInt(text);
    case OID.date:
      return (text) => text;
    case OID.timestamp:
    case OID.timestamptz:
      return (text) => parseUtcTimestamp(text);
    case OID.int8Array:
      return (text) => parseTextArray(text).map((v) => (v === null ? null : BigInt(v)));
    case OID.dateArray:
      return (text) => parseTextArray(text);
    case OID.timestampArray:
    case OID.timestamptzArray:
      return (text) => parseTextArray(text).map((v) => (v === null ? null : parseUtcTimestamp(v)));
    default:
      return pgTypes.getTypeParser(oid, (format ?? 'text') as 'text') as (text: string) => unknown;
  }
}

interface Counters {
  statements: number;
  batches: number;
  transactionCalls: number;
}

type Executor = Pool | PoolClient;

/**
 * The database port on node-postgres, for local runs and `npm run job`. Parameters are typed
 * like the Data API types them (`:name` → `$n::varchar` for a string, and so on), and the
 * session runs in UTC as Aurora does, so SQL behaves the same on both adapters.
 */
export class PgDatabase implements Database {
  private readonly pool: Pool | undefined;
  private readonly executor: Executor;
  private readonly counters: Counters;
  private readonly maxBatchSize: number;
  private readonly inTransaction: boolean;
  private readonly options: PgDatabaseOptions;

  constructor(options: PgDatabaseOptions);
  /** @internal a transaction's view on one pooled connection */
  constructor(options: PgDatabaseOptions, client: PoolClient, counters: Counters);
  constructor(options: PgDatabaseOptions, client?: PoolClient, counters?: Counters) {
    this.maxBatchSize = options.maxBatchSize ?? 500;
    if (client && counters) {
      this.executor = client;
      this.counters = counters;
      this.inTransaction = true;
      this.pool = undefined;
      this.options = options;
      return;
    }
    const config: PoolConfig =
      typeof options.connection === 'string' ? { connectionString: options.connection } : { ...options.connection };
    this.pool = new Pool({
      ...config,
      max: options.maxConnections ?? config.max ?? 5,
      options: [config.options, '-c TimeZone=UTC'].filter(Boolean).join(' '),
      types: { getTypeParser: typeParser as never },
    });
    // An idle client that loses its connection must not crash the process.
    this.pool.on('error', () => undefined);
    this.executor = this.pool;
    this.counters = { statements: 0, batches: 0, transactionCalls: 0 };
    this.inTransaction = false;
    this.options = options;
  }

  async query<T extends object = Row>(sql: string, params: SqlParams = {}): Promise<QueryResult<T>> {
    const { text, values } = compile(sql, params);
    this.counters.statements += 1;
    // Outside a transaction the pool connects first: a refused password is retried there.
    const result = this.inTransaction
      ? await run(() => this.executor.query(text, values))
      : await this.connecting(() => run(() => this.executor.query(text, values)));
    const returnsRows = Array.isArray(result.fields) && result.fields.length > 0;
    return { rows: result.rows as T[], rowsAffected: returnsRows ? 0 : (result.rowCount ?? 0) };
  }

  async batch(sql: string, paramSets: readonly SqlParams[]): Promise<void> {
    if (paramSets.length === 0) return;
    const chunkSize = this.inTransaction ? paramSets.length : this.maxBatchSize;
    for (let start = 0; start < paramSets.length; start += chunkSize) {
      const chunk = paramSets.slice(start, start + chunkSize);
      this.counters.batches += 1;
      const apply = async (client: Executor) => {
        for (const params of chunk) {
          const { text, values } = compile(sql, params);
          await run(() => client.query(text, values));
        }
      };
      if (this.inTransaction) await apply(this.executor);
      else await this.withTransaction(apply, false);
    }
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    if (this.inTransaction) throw new DatabaseError('Nested transactions are not supported');
    return this.withTransaction(
      (client) => fn(new PgDatabase(this.options, client as PoolClient, this.counters)),
      true,
    );
  }

  callCounts(): DatabaseCallCounts {
    const { statements, batches, transactionCalls } = this.counters;
    return { statements, batches, transactionCalls, retries: 0, total: statements + batches + transactionCalls };
  }

  async close(): Promise<void> {
    await this.pool?.end();
  }

  /** A call that opens a connection: once more after a pause if the password was refused. */
  private connecting<T>(call: () => Promise<T>): Promise<T> {
    return retryingAuthentication(call, {
      delayMs: this.options.authenticationRetryDelayMs ?? AUTHENTICATION_RETRY_DELAY_MS,
      sleep: this.options.sleep,
      waitBudgetMs: this.options.waitBudgetMs,
    });
  }

  /** Runs `fn` between BEGIN and COMMIT; `counted` is false for a batch's own transaction (one call). */
  private async withTransaction<T>(fn: (client: Executor) => Promise<T>, counted: boolean): Promise<T> {
    const count = counted ? 1 : 0;
    if (!this.pool) throw new DatabaseError('Nested transactions are not supported');
    const client = await this.connecting(() => run(() => this.pool!.connect()));
    let broken: unknown;
    try {
      this.counters.transactionCalls += count;
      await run(() => client.query('BEGIN'));
      try {
        const result = await fn(client);
        this.counters.transactionCalls += count;
        await run(() => client.query('COMMIT'));
        return result;
      } catch (error) {
        this.counters.transactionCalls += count;
        await client.query('ROLLBACK').catch((rollbackError: unknown) => {
          broken = rollbackError;
        });
        throw error;
      }
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }
}

function compile(sql: string, params: SqlParams): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const { text } = rewriteNamedParameters(sql, (name, position) => {
    if (!Object.prototype.hasOwnProperty.call(params, name)) throw new DatabaseError(`No value for parameter :${name}`);
    const bound = bindValue(name, params[name]);
    values[position - 1] =
      bound.kind === 'null' ? null : bound.kind === 'blob' ? Buffer.from(bound.value) : bound.value;
    return bound.kind === 'null' ? `$${position}` : `$${position}::${bound.pgType}`;
  });
  return { text, values };
}

async function run<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof DatabaseError) throw error;
    const e = error as { message?: string; code?: string };
    throw new DatabaseError(e.message ?? String(error), {
      cause: error,
      code: typeof e.code === 'string' ? e.code : undefined,
    });
  }
}
