import {
  BatchExecuteStatementCommand,
  BeginTransactionCommand,
  BeginTransactionCommandOutput,
  CommitTransactionCommand,
  ExecuteStatementCommand,
  ExecuteStatementCommandOutput,
  RDSDataClient,
  RDSDataClientConfig,
  RollbackTransactionCommand,
} from '@aws-sdk/client-rds-data';
import { DeadlineExceededError, retry, RetriesExhaustedError } from '../backoff';
import { AUTHENTICATION_RETRY_DELAY_MS, retryingAuthentication } from './authentication';
import { decodeRecords, toSqlParameters } from './data-api-values';
import { rewriteNamedParameters } from './named-parameters';
import {
  Database,
  DatabaseCallCounts,
  DatabaseError,
  DatabaseUnavailableError,
  QueryResult,
  ResultTooLargeError,
  Row,
  SqlParams,
  TransactionExpiredError,
} from './port';

/**
 * The RDS Data API client the jobs use: the SDK's own retries are off (`maxAttempts: 1`)
 * because {@link DataApiDatabase} retries every call itself, longer and with the errors Aurora
 * needs (a resuming cluster); both together would multiply (8 adapter attempts × 3 SDK
 * attempts = 24 requests for one call the adapter counts as 8).
 */
export function createDataApiClient(config: RDSDataClientConfig = {}): RDSDataClient {
  return new RDSDataClient({ ...config, maxAttempts: 1 });
}

export interface DataApiRetryOptions {
  /** Attempts per call, the first included. Aurora Serverless v2 resumes within ~15 s. @default 8 */
  readonly maxAttempts?: number;
  /** @default 250 */
  readonly baseDelayMs?: number;
  /** @default 5000 */
  readonly maxDelayMs?: number;
  /** @default Math.random */
  readonly random?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * How long retries may still wait, asked before each one (e.g. the Lambda invocation's
   * remaining time minus the time one request takes). A retry whose delay would not fit is not
   * made: the call fails at once with {@link DatabaseUnavailableError}, so a resuming cluster
   * never keeps an invocation past its timeout. @default - no limit
   */
  readonly waitBudgetMs?: () => number;
  /**
   * The pause before the one retry of a call the database refused the login's password for
   * (a rotation between its password change and the secret's update; the Data API reads the
   * secret's current version on each call), within `waitBudgetMs`. `false`: not retried.
   * @default 1500 ({@link AUTHENTICATION_RETRY_DELAY_MS})
   */
  readonly authenticationRetryDelayMs?: number | false;
}

export interface DataApiDatabaseOptions {
  /** An RDS Data API client (its `endpoint` points at the emulator in tests). */
  readonly client: RDSDataClient;
  /** The Aurora cluster ARN. */
  readonly resourceArn: string;
  /** The Secrets Manager secret holding the database user's credentials. */
  readonly secretArn: string;
  /** The database name. */
  readonly database: string;
  /** Parameter sets per BatchExecuteStatement call (keeps requests small). @default 200 */
  readonly maxBatchSize?: number;
  /** Retries of resuming/unavailable/throttled calls. @default - see {@link DataApiRetryOptions} */
  readonly retry?: DataApiRetryOptions;
}

/**
 * Errors after which the statement certainly or very likely did not run, so a retry is safe:
 * the cluster is resuming from zero capacity or briefly unavailable, the service throttled
 * the call, or the connection failed. The SDK's own retry does not cover
 * DatabaseResumingException (a 400) and gives up after seconds; Aurora needs longer.
 */
const RETRYABLE_NAMES = new Set([
  'DatabaseResumingException',
  'DatabaseUnavailableException',
  'ServiceUnavailableError',
  'InternalServerErrorException',
  'ThrottlingException',
  'TooManyRequestsException',
  'TimeoutError',
]);
const RETRYABLE_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN']);

export function isRetryableDataApiError(error: unknown): boolean {
  const e = error as { name?: string; code?: string; $retryable?: unknown } | undefined;
  return !!e && (RETRYABLE_NAMES.has(e.name ?? '') || RETRYABLE_CODES.has(e.code ?? ''));
}

const TOO_LARGE = /more than the allowed response size limit/i;
const TRANSACTION_GONE = /transaction .* (is not found|not found)|invalid transaction id/i;

interface Counters {
  statements: number;
  batches: number;
  transactionCalls: number;
  retries: number;
  total: number;
}

/**
 * The database port on the RDS Data API (production).
 *
 * - Parameters are sent with type hints (UUID, JSON, DECIMAL, TIMESTAMP); results are read
 *   field by field with column metadata, integers as strings (`longReturnType: STRING`) so
 *   that `int8` values beyond 2^53 arrive exactly. Field decoding rather than
 *   `formatRecordsAs: 'JSON'`: the column's type name says how to decode (timestamp → Date,
 *   jsonb → value, int8 → bigint), where JSON records would have lost that distinction.
 * - Each call is retried with capped exponential backoff and full jitter while the cluster is
 *   resuming or the service is unavailable ({@link isRetryableDataApiError}), and once, after a
 *   pause, when the database refused the login's password (a rotation under way).
 * - A response may not exceed 1 MiB: such a query fails with {@link ResultTooLargeError};
 *   `readAllPages` reads any size in keyset pages.
 * - Every call, retries included, is counted ({@link DataApiDatabase.callCounts}).
 */
export class DataApiDatabase implements Database {
  private readonly counters: Counters;
  private readonly transactionId: string | undefined;

  constructor(options: DataApiDatabaseOptions);
  /** @internal a transaction's view */
  constructor(options: DataApiDatabaseOptions, transactionId: string, counters: Counters);
  constructor(
    private readonly options: DataApiDatabaseOptions,
    transactionId?: string,
    counters?: Counters,
  ) {
    this.transactionId = transactionId;
    this.counters = counters ?? { statements: 0, batches: 0, transactionCalls: 0, retries: 0, total: 0 };
  }

  async query<T extends object = Row>(sql: string, params: SqlParams = {}): Promise<QueryResult<T>> {
    const parameters = toSqlParameters(namesIn(sql), params);
    this.counters.statements += 1;
    const output = await this.send<ExecuteStatementCommandOutput>(
      () =>
        new ExecuteStatementCommand({
          ...this.target(),
          sql,
          parameters,
          transactionId: this.transactionId,
          includeResultMetadata: true,
          resultSetOptions: { decimalReturnType: 'STRING', longReturnType: 'STRING' },
        }),
    );
    const rows = decodeRecords(output.records, output.columnMetadata) as T[];
    return { rows, rowsAffected: output.records ? 0 : (output.numberOfRecordsUpdated ?? 0) };
  }

  async batch(sql: string, paramSets: readonly SqlParams[]): Promise<void> {
    if (paramSets.length === 0) return;
    const names = namesIn(sql);
    const chunkSize = this.options.maxBatchSize ?? 200;
    for (let start = 0; start < paramSets.length; start += chunkSize) {
      const parameterSets = paramSets.slice(start, start + chunkSize).map((params) => toSqlParameters(names, params));
      this.counters.batches += 1;
      await this.send(
        () =>
          new BatchExecuteStatementCommand({ ...this.target(), sql, parameterSets, transactionId: this.transactionId }),
      );
    }
  }

  async transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    if (this.transactionId) throw new DatabaseError('Nested transactions are not supported');
    this.counters.transactionCalls += 1;
    const { resourceArn, secretArn, database } = this.options;
    const begun = await this.send<BeginTransactionCommandOutput>(
      () => new BeginTransactionCommand({ resourceArn, secretArn, database }),
    );
    const transactionId = begun.transactionId;
    if (!transactionId) throw new DatabaseError('BeginTransaction returned no transaction id');
    let result: T;
    try {
      result = await fn(new DataApiDatabase(this.options, transactionId, this.counters));
    } catch (error) {
      this.counters.transactionCalls += 1;
      // The transaction may already be gone (an expired one is rolled back by the service).
      await this.send(() => new RollbackTransactionCommand({ resourceArn, secretArn, transactionId })).catch(
        () => undefined,
      );
      throw error;
    }
    this.counters.transactionCalls += 1;
    await this.send(() => new CommitTransactionCommand({ resourceArn, secretArn, transactionId }));
    return result;
  }

  callCounts(): DatabaseCallCounts {
    return { ...this.counters };
  }

  async close(): Promise<void> {
    // The client is owned by the caller (one per container); nothing to release here.
  }

  private target() {
    return {
      resourceArn: this.options.resourceArn,
      secretArn: this.options.secretArn,
      database: this.options.database,
    };
  }

  /**
   * Sends one command with retries, translating service errors into the port's errors; a call
   * refused for the login's password is sent once more after a pause (see authentication.ts).
   */
  private send<Output>(command: () => unknown): Promise<Output> {
    const r = this.options.retry ?? {};
    return retryingAuthentication(() => this.sendRetrying<Output>(command), {
      delayMs: r.authenticationRetryDelayMs ?? AUTHENTICATION_RETRY_DELAY_MS,
      sleep: r.sleep,
      waitBudgetMs: r.waitBudgetMs,
      onRetry: () => {
        this.counters.retries += 1;
      },
    });
  }

  private async sendRetrying<Output>(command: () => unknown): Promise<Output> {
    const r = this.options.retry ?? {};
    let attempts = 0;
    try {
      return await retry(
        async () => {
          attempts += 1;
          this.counters.total += 1;
          return (await this.options.client.send(command() as never)) as Output;
        },
        {
          maxAttempts: r.maxAttempts ?? 8,
          baseDelayMs: r.baseDelayMs ?? 250,
          maxDelayMs: r.maxDelayMs ?? 5000,
          random: r.random,
          sleep: r.sleep,
          isRetryable: isRetryableDataApiError,
          waitBudgetMs: r.waitBudgetMs,
          onRetry: () => {
            this.counters.retries += 1;
          },
        },
      );
    } catch (error) {
      if (error instanceof DeadlineExceededError) {
        const cause = error.cause as { name?: string; message?: string } | undefined;
        throw new DatabaseUnavailableError(
          `Data API unavailable after ${attempts} attempts, not retried: the next attempt (in ${Math.round(error.waitMs)} ms) ` +
            `would outlast the time left (${Math.max(0, Math.round(error.budgetMs))} ms): ${cause?.name ?? 'Error'}: ${cause?.message ?? ''}`.trim(),
          attempts,
          { cause: error.cause },
        );
      }
      throw toDatabaseError(error);
    }
  }
}

function namesIn(sql: string): string[] {
  return rewriteNamedParameters(sql, (name) => `:${name}`).names;
}

function toDatabaseError(error: unknown): DatabaseError {
  if (error instanceof DatabaseError) return error;
  if (error instanceof RetriesExhaustedError) {
    const cause = error.cause as { name?: string; message?: string } | undefined;
    return new DatabaseUnavailableError(
      `Data API unavailable after ${error.attempts} attempts: ${cause?.name ?? 'Error'}: ${cause?.message ?? ''}`.trim(),
      error.attempts,
      {
        cause: error.cause,
      },
    );
  }
  const e = error as { name?: string; message?: string };
  const message = e.message ?? String(error);
  if (TOO_LARGE.test(message)) return new ResultTooLargeError(message, { cause: error });
  if (e.name === 'TransactionNotFoundException' || TRANSACTION_GONE.test(message))
    return new TransactionExpiredError(message, { cause: error });
  return new DatabaseError(message, { cause: error });
}
