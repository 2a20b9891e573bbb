/**
 * The database port: the only way job code talks to PostgreSQL.
 *
 * Two adapters implement it with the same observable behaviour (one contract test suite runs
 * against both): {@link DataApiDatabase} (RDS Data API, production) and {@link PgDatabase}
 * (node-postgres, local runs and `npm run job`).
 *
 * ## Parameters
 * SQL names its parameters `:name` (the Data API's own syntax); values are passed in a record.
 * `::casts`, string literals, quoted identifiers and comments are never mistaken for
 * parameters. Values are sent with a type, exactly as the Data API binds them, so a query that
 * works locally works in production:
 *
 * | JavaScript value             | PostgreSQL type of the parameter            |
 * |------------------------------|---------------------------------------------|
 * | `string`                     | `varchar` (cast it, or use a helper below)  |
 * | `number` (integer)           | `bigint`                                    |
 * | `number` (fractional)        | `double precision`                          |
 * | `bigint`                     | `numeric` (exact; assignable to `bigint`)   |
 * | `boolean`                    | `boolean`                                   |
 * | `null`                       | unknown (PostgreSQL infers it)              |
 * | `Date`                       | `timestamp` in UTC (assignable to `timestamptz`) |
 * | `Uint8Array` / `Buffer`      | `bytea`                                     |
 * | `sqlUuid(s)`                 | `uuid`                                      |
 * | `sqlJson(v)`                 | `json` (write `:p::jsonb` where jsonb operators need it) |
 * | `sqlDecimal(s)`              | `numeric`                                   |
 *
 * Arrays cannot be parameters (the Data API does not support them): pass a list as
 * `sqlJson([...])` and unnest it in SQL, e.g. `WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`.
 *
 * ## Rows
 * Columns decode the same way on both adapters: `uuid`, `text`, `varchar`, `numeric`, `date`,
 * `time` → `string`; `int2`, `int4`, `float4`, `float8` → `number`; `int8` → `bigint` (write
 * `count(*)::int` when a `number` is wanted); `bool` → `boolean`; `timestamptz` and
 * `timestamp` (read as UTC) → `Date`; `json`, `jsonb` → parsed value; `bytea` → `Buffer`;
 * arrays of those scalars → arrays; SQL NULL → `null`.
 */

/** A value that can be bound to a `:name` parameter. See the table above. */
export type SqlValue = string | number | bigint | boolean | null | Date | Uint8Array | SqlTypedValue;

/** A string or JSON value with an explicit PostgreSQL type (the Data API's `typeHint`). */
export interface SqlTypedValue {
  readonly sqlType: 'uuid' | 'json' | 'decimal';
  readonly value: string;
}

/** Named parameters of one statement: `{ id: sqlUuid(x) }` for `... WHERE id = :id`. */
export type SqlParams = Readonly<Record<string, SqlValue>>;

/** A row as decoded by the adapters (see "Rows" above). */
export type Row = Record<string, unknown>;

/** A `uuid` parameter. */
export function sqlUuid(value: string): SqlTypedValue {
  return { sqlType: 'uuid', value };
}

/** A `json` parameter holding `JSON.stringify(value)`. */
export function sqlJson(value: unknown): SqlTypedValue {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError('sqlJson: value is not representable as JSON');
  return { sqlType: 'json', value: text };
}

/** An exact `numeric` parameter given as its decimal text, e.g. `'12.50'`. */
export function sqlDecimal(value: string): SqlTypedValue {
  return { sqlType: 'decimal', value };
}

export function isSqlTypedValue(value: unknown): value is SqlTypedValue {
  return typeof value === 'object' && value !== null && 'sqlType' in value && 'value' in value;
}

export interface QueryResult<T> {
  /** Rows returned by the statement (SELECT, or any statement with RETURNING). */
  readonly rows: T[];
  /**
   * Rows inserted, updated or deleted by a statement that returns no rows; 0 for statements
   * that return rows (count `rows` instead: with RETURNING, that is the number changed).
   */
  readonly rowsAffected: number;
}

/** How many calls an adapter made to the database since it was created. */
export interface DatabaseCallCounts {
  /** Single statements (ExecuteStatement / one node-postgres query). */
  readonly statements: number;
  /** Batch executions (BatchExecuteStatement / one prepared statement run per parameter set). */
  readonly batches: number;
  /** Transactions begun, committed and rolled back. */
  readonly transactionCalls: number;
  /** Calls repeated after a retryable error (Data API only; 0 for node-postgres). */
  readonly retries: number;
  /** Every call made to the database, retries included: the `DataApiCalls` metric. */
  readonly total: number;
}

/**
 * The database port. Implementations: {@link DataApiDatabase}, {@link PgDatabase}.
 *
 * Transactions on the Data API are closed by the service after 3 minutes without a call:
 * never hold one open across an Amazon call; claim rows in one short transaction (or one
 * statement), call Amazon, then write results back.
 */
export interface Database {
  /**
   * Runs one statement. `T` describes the decoded row (not checked at run time).
   * A result larger than the Data API's 1 MiB response limit fails with
   * {@link ResultTooLargeError}: read big results with `readAllPages`.
   */
  query<T extends object = Row>(sql: string, params?: SqlParams): Promise<QueryResult<T>>;
  /**
   * Runs one statement once per parameter set (INSERT/UPDATE/DELETE, no rows returned).
   * Outside a transaction each chunk of `maxBatchSize` sets is applied atomically; inside
   * {@link Database.transaction} all or nothing. An empty list makes no call.
   */
  batch(sql: string, paramSets: readonly SqlParams[]): Promise<void>;
  /**
   * Runs `fn` in a transaction: committed when `fn` resolves, rolled back (and the error
   * rethrown) when it rejects. Calls inside must go through the `tx` argument. Not nestable.
   */
  transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T>;
  /** Calls made so far (for the `DataApiCalls` metric and for tests). */
  callCounts(): DatabaseCallCounts;
  /** Releases connections (node-postgres pool); a no-op for the Data API. */
  close(): Promise<void>;
}

/** A statement failed in the database. `message` is the database's own message. */
export class DatabaseError extends Error {
  /** SQLSTATE when the adapter knows it (node-postgres); the Data API does not report it. */
  readonly code: string | undefined;
  constructor(message: string, options?: { cause?: unknown; code?: string }) {
    super(message, { cause: options?.cause });
    this.name = 'DatabaseError';
    this.code = options?.code;
  }
}

/** The result exceeded the Data API's 1 MiB response limit (page it: `readAllPages`). */
export class ResultTooLargeError extends DatabaseError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ResultTooLargeError';
  }
}

/** The database stayed unavailable (e.g. still resuming) after every retry. */
export class DatabaseUnavailableError extends DatabaseError {
  constructor(
    message: string,
    readonly attempts: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'DatabaseUnavailableError';
  }
}

/** The transaction no longer exists (e.g. closed by the Data API after 3 idle minutes). */
export class TransactionExpiredError extends DatabaseError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransactionExpiredError';
  }
}
