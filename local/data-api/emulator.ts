import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import type { RDSDataClient } from '@aws-sdk/client-rds-data';
import { createDataApiClient } from '../../lambda/shared/db/data-api-database';
import { DatabaseError as PgError, Pool, PoolClient, QueryResult } from 'pg';
import { rewriteNamedParameters } from '../../lambda/shared/db/named-parameters';
import { bindParameter, columnMetadata, encodeField, PgType, WireError, WireParameter } from './wire-values';

/**
 * An RDS Data API emulator: an HTTP server speaking the service's REST-JSON protocol exactly
 * as `@aws-sdk/client-rds-data` sends it (POST /Execute, /BatchExecute, /BeginTransaction,
 * /CommitTransaction, /RollbackTransaction) on top of a real PostgreSQL. Modelled on
 * koxudaxi/local-data-api (which needs Docker), for Aurora PostgreSQL behaviour:
 *
 * - parameters are typed as pgjdbc types them (strings are varchar unless type-hinted);
 * - SQL errors answer 400 BadRequestException with the database's message
 *   (`ERROR: … \n  Detail: …`), the error type in the `x-amzn-errortype` header;
 * - a response over 1 MiB answers BadRequestException "Database returned more than the
 *   allowed response size limit";
 * - a request over 4 MiB (headers and JSON body together, as the service counts it) is not
 *   run and answers BadRequestException ({@link REQUEST_TOO_LARGE_MESSAGE}: the service
 *   documents the limit and that the request fails unprocessed, not its exact wording);
 * - a transaction with no call for 3 minutes is rolled back and forgotten;
 * - a connection the database refuses (SQLSTATE class 28, e.g. a password changed by a
 *   rotation before its secret) answers DatabaseErrorException `ERROR: <message>; SQLState:
 *   <code>`, the shape Aurora's Data API gives connection errors (e.g. `ERROR: database "x"
 *   does not exist; SQLState: 3D000`); with `password` the emulator reads the login's password
 *   for every new connection, as the service reads the secret's current version per call;
 * - `failNextCalls(n)` answers DatabaseResumingException to the next n calls (auto-pause);
 *   `injectFault(…)` answers any error, to every call or to the statements matching a pattern
 *   (a service that stays unavailable, a deadlock on the write-back).
 *
 * Signatures and ARNs are not checked. Sessions run with TimeZone=UTC, as Aurora does.
 *
 * ```ts
 * const emulator = await startDataApiEmulator({ databaseUrl: await pg.createDatabase() });
 * const db = new DataApiDatabase({ client: emulator.createClient(), ...emulator.target });
 * // …
 * await emulator.close();
 * ```
 */
export interface DataApiEmulatorOptions {
  /** The PostgreSQL server and default database (a request's `database` picks another). */
  readonly databaseUrl: string;
  /** Idle time after which an open transaction is rolled back. @default 180000 (3 minutes) */
  readonly transactionIdleTimeoutMs?: number;
  /** Largest response body in bytes. @default 1048576 (1 MiB) */
  readonly maxResponseBytes?: number;
  /** Largest request (headers and body) in bytes. @default 4194304 (4 MiB) */
  readonly maxRequestBytes?: number;
  /** Clock for the idle timeout, so tests can move time. @default Date.now */
  readonly now?: () => number;
  /** @default - a random free port on 127.0.0.1 */
  readonly port?: number;
  /**
   * The login's password, asked for every new connection (a Secrets Manager read, in a
   * rotation test). @default - the password in `databaseUrl`
   */
  readonly password?: () => string | Promise<string>;
  /**
   * Open a new connection for every call instead of reusing idle ones, so that a password
   * change reaches the next call (the service's own connection reuse is not specified).
   * @default false
   */
  readonly newConnectionPerCall?: boolean;
}

export interface DataApiCallCounts {
  execute: number;
  batchExecute: number;
  beginTransaction: number;
  commitTransaction: number;
  rollbackTransaction: number;
  /** Calls answered with an injected error (failNextCalls). */
  injectedFailures: number;
  total: number;
}

export interface DataApiEmulator {
  /** `http://127.0.0.1:<port>`: the client's `endpoint`. */
  readonly endpoint: string;
  /** Dummy ARNs and the default database name, ready to spread into DataApiDatabase options. */
  readonly target: { readonly resourceArn: string; readonly secretArn: string; readonly database: string };
  /** An RDSDataClient pointed at this emulator with dummy credentials and no SDK retries. */
  createClient(): RDSDataClient;
  /** Answers the next `count` calls with `errorType` (DatabaseResumingException by default). */
  failNextCalls(count: number, errorType?: string): void;
  /**
   * Answers calls with an error until `count` of them have been answered so (every call when
   * `count` is omitted), or only those whose SQL matches `sql`. Replaces an earlier fault;
   * `injectFault(undefined)` removes it.
   */
  injectFault(fault: EmulatorFault | undefined): void;
  /** Calls received so far. */
  readonly calls: Readonly<DataApiCallCounts>;
  /** Transactions currently open. */
  openTransactions(): number;
  /** Stops the server, rolls back open transactions and closes the pools. */
  close(): Promise<void>;
}

export interface EmulatorFault {
  /** The error type (`x-amzn-errortype`), e.g. ServiceUnavailableError, BadRequestException. */
  readonly errorType: string;
  readonly statusCode: number;
  /** @default - a message naming the fault */
  readonly message?: string;
  /** Only calls whose SQL matches. @default - every call */
  readonly sql?: RegExp;
  /** Only calls whose request body (SQL and parameters, as JSON) matches. @default - every call */
  readonly body?: RegExp;
  /** Calls to answer with the fault, then it is gone. @default Infinity */
  readonly count?: number;
}

const ROUTES = [
  '/Execute',
  '/BatchExecute',
  '/BeginTransaction',
  '/CommitTransaction',
  '/RollbackTransaction',
] as const;
type Route = (typeof ROUTES)[number];

const RESUMING_MESSAGE =
  'The Aurora DB instance db-emulator is resuming after being auto-paused. Please wait a few seconds and try again.';
const TOO_LARGE_MESSAGE = 'Database returned more than the allowed response size limit';
export const REQUEST_TOO_LARGE_MESSAGE = 'Request size exceeds the maximum allowed request size of 4 MiB';

interface OpenTransaction {
  readonly client: PoolClient;
  lastUsed: number;
  busy: number;
}

export async function startDataApiEmulator(options: DataApiEmulatorOptions): Promise<DataApiEmulator> {
  const idleTimeoutMs = options.transactionIdleTimeoutMs ?? 180_000;
  const maxResponseBytes = options.maxResponseBytes ?? 1024 * 1024;
  const maxRequestBytes = options.maxRequestBytes ?? 4 * 1024 * 1024;
  const now = options.now ?? Date.now;
  const baseUrl = new URL(options.databaseUrl);
  const defaultDatabase = decodeURIComponent(baseUrl.pathname.replace(/^\//, '')) || 'postgres';
  const pools = new Map<string, Pool>();
  const typeCache = new Map<string, Map<number, PgType>>();
  const transactions = new Map<string, OpenTransaction>();
  const calls: DataApiCallCounts = {
    execute: 0,
    batchExecute: 0,
    beginTransaction: 0,
    commitTransaction: 0,
    rollbackTransaction: 0,
    injectedFailures: 0,
    total: 0,
  };
  let failures: { remaining: number; errorType: string } = { remaining: 0, errorType: 'DatabaseResumingException' };
  let fault: { spec: EmulatorFault; remaining: number } | undefined;

  function poolFor(database: string): Pool {
    let pool = pools.get(database);
    if (!pool) {
      const url = new URL(baseUrl.toString());
      url.pathname = `/${encodeURIComponent(database)}`;
      pool = new Pool({
        // node-postgres lets a connection string's password (even an empty one) win over
        // `password`: with a password source, the URL's parts are given one by one.
        ...(options.password
          ? {
              host: url.hostname,
              port: Number(url.port || 5432),
              database,
              user: decodeURIComponent(url.username),
              password: options.password,
            }
          : { connectionString: url.toString() }),
        ...(options.newConnectionPerCall ? { maxUses: 1 } : {}),
        max: 20,
        options: '-c TimeZone=UTC',
        // Values stay in PostgreSQL's text form; encodeField converts them to wire fields.
        types: { getTypeParser: () => (text: string) => text },
      });
      pool.on('error', () => undefined);
      pools.set(database, pool);
    }
    return pool;
  }

  async function typesOf(database: string, client: PoolClient | Pool): Promise<Map<number, PgType>> {
    let types = typeCache.get(database);
    if (!types) {
      const { rows } = await client.query<{ oid: string; typname: string; typelem: string }>(
        'SELECT oid, typname, typelem FROM pg_type',
      );
      types = new Map(rows.map((r) => [Number(r.oid), { name: r.typname, elem: Number(r.typelem) }]));
      typeCache.set(database, types);
    }
    return types;
  }

  function expireIdleTransactions(): void {
    for (const [id, tx] of transactions) {
      if (tx.busy === 0 && now() - tx.lastUsed > idleTimeoutMs) {
        transactions.delete(id);
        tx.client
          .query('ROLLBACK')
          .finally(() => tx.client.release())
          .catch(() => undefined);
      }
    }
  }
  const sweeper = setInterval(expireIdleTransactions, Math.max(50, Math.min(idleTimeoutMs, 1000)));
  sweeper.unref();

  function transaction(id: unknown): OpenTransaction {
    expireIdleTransactions();
    const tx = typeof id === 'string' ? transactions.get(id) : undefined;
    if (!tx) throw new WireError('BadRequestException', 400, `Transaction ${String(id)} is not found`);
    tx.lastUsed = now();
    return tx;
  }

  /** Runs `fn` on the request's transaction, or on a fresh connection in its own transaction. */
  async function withConnection<T>(body: Body, fn: (client: PoolClient, database: string) => Promise<T>): Promise<T> {
    const database = typeof body.database === 'string' && body.database ? body.database : defaultDatabase;
    if (body.transactionId !== undefined) {
      const tx = transaction(body.transactionId);
      tx.busy += 1;
      try {
        return await fn(tx.client, database);
      } finally {
        tx.busy -= 1;
        tx.lastUsed = now();
      }
    }
    const client = await poolFor(database).connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client, database);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw error;
    } finally {
      client.release();
    }
  }

  async function runStatement(
    client: PoolClient,
    sql: string,
    parameters: WireParameter[] | undefined,
  ): Promise<QueryResult> {
    const byName = new Map((parameters ?? []).map((p) => [p.name ?? '', p]));
    const values: unknown[] = [];
    const { text } = rewriteNamedParameters(sql, (name, position) => {
      const parameter = byName.get(name);
      if (!parameter) throw new WireError('BadRequestException', 400, `No value specified for parameter :${name}`);
      const { cast, value } = bindParameter(parameter);
      values[position - 1] = value;
      return cast ? `$${position}::${cast}` : `$${position}`;
    });
    const result = (await client.query(text, values)) as QueryResult | QueryResult[];
    return Array.isArray(result) ? result[result.length - 1] : result;
  }

  const handlers: Record<Route, (body: Body) => Promise<object>> = {
    '/Execute': async (body) => {
      calls.execute += 1;
      requireString(body, 'sql');
      // JSON records are not emulated: how the service renders each type there is not
      // pinned down by this project, and the port decodes fields instead.
      if (body.formatRecordsAs === 'JSON')
        throw new WireError('BadRequestException', 400, 'formatRecordsAs JSON is not supported by the emulator');
      return withConnection(body, async (client, database) => {
        const result = await runStatement(client, body.sql as string, body.parameters as WireParameter[] | undefined);
        const fields = result.fields ?? [];
        if (fields.length === 0) return { numberOfRecordsUpdated: result.rowCount ?? 0, generatedFields: [] };
        const types = await typesOf(database, client);
        const resultOptions = (body.resultSetOptions ?? {}) as { longReturnType?: string; decimalReturnType?: string };
        const encodeOptions = {
          longAsString: resultOptions.longReturnType === 'STRING',
          decimalAsNumber: resultOptions.decimalReturnType === 'DOUBLE_OR_LONG',
        };
        const fieldTypes = fields.map((f) => types.get(f.dataTypeID) ?? { name: 'text', elem: 0 });
        const records = (result.rows as Record<string, string | null>[]).map((row) =>
          fields.map((f, i) => encodeField(row[f.name], fieldTypes[i], types, encodeOptions)),
        );
        return {
          numberOfRecordsUpdated: 0,
          records,
          ...(body.includeResultMetadata
            ? { columnMetadata: fields.map((f, i) => columnMetadata(f, fieldTypes[i])) }
            : {}),
        };
      });
    },
    '/BatchExecute': async (body) => {
      calls.batchExecute += 1;
      requireString(body, 'sql');
      const sets = (body.parameterSets ?? []) as WireParameter[][];
      return withConnection(body, async (client) => {
        for (const set of sets) await runStatement(client, body.sql as string, set);
        return { updateResults: sets.map(() => ({ generatedFields: [] })) };
      });
    },
    '/BeginTransaction': async (body) => {
      calls.beginTransaction += 1;
      const database = typeof body.database === 'string' && body.database ? body.database : defaultDatabase;
      const client = await poolFor(database).connect();
      try {
        await client.query('BEGIN');
      } catch (error) {
        client.release();
        throw error;
      }
      const transactionId = randomBytes(138).toString('base64');
      transactions.set(transactionId, { client, lastUsed: now(), busy: 0 });
      return { transactionId };
    },
    '/CommitTransaction': async (body) => {
      calls.commitTransaction += 1;
      const tx = transaction(body.transactionId);
      transactions.delete(body.transactionId as string);
      try {
        await tx.client.query('COMMIT');
      } finally {
        tx.client.release();
      }
      return { transactionStatus: 'Transaction Committed' };
    },
    '/RollbackTransaction': async (body) => {
      calls.rollbackTransaction += 1;
      const tx = transaction(body.transactionId);
      transactions.delete(body.transactionId as string);
      try {
        await tx.client.query('ROLLBACK');
      } finally {
        tx.client.release();
      }
      return { transactionStatus: 'Rollback Complete' };
    },
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0] as Route;
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    try {
      if (req.method !== 'POST' || !ROUTES.includes(path))
        throw new WireError('UnknownOperationException', 404, `No route for ${req.method} ${path}`);
      calls.total += 1;
      const headerBytes = req.rawHeaders.reduce((n, h) => n + Buffer.byteLength(h) + 2, 0);
      if (headerBytes + chunks.reduce((n, c) => n + c.length, 0) > maxRequestBytes)
        throw new WireError('BadRequestException', 400, REQUEST_TOO_LARGE_MESSAGE);
      if (failures.remaining > 0) {
        failures.remaining -= 1;
        calls.injectedFailures += 1;
        throw new WireError(
          failures.errorType,
          failures.errorType === 'DatabaseResumingException' ? 400 : 503,
          RESUMING_MESSAGE,
        );
      }
      let body: Body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Body;
      } catch {
        throw new WireError('SerializationException', 400, 'Request body is not valid JSON');
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      if (
        fault &&
        (!fault.spec.sql || (typeof body.sql === 'string' && fault.spec.sql.test(body.sql))) &&
        (!fault.spec.body || fault.spec.body.test(raw))
      ) {
        const { spec } = fault;
        fault.remaining -= 1;
        if (fault.remaining <= 0) fault = undefined;
        calls.injectedFailures += 1;
        throw new WireError(spec.errorType, spec.statusCode, spec.message ?? `Injected ${spec.errorType}`);
      }
      requireString(body, 'resourceArn');
      requireString(body, 'secretArn');
      const output = await handlers[path](body);
      const json = JSON.stringify(output);
      if (Buffer.byteLength(json) > maxResponseBytes)
        throw new WireError('BadRequestException', 400, TOO_LARGE_MESSAGE);
      send(res, 200, json);
    } catch (error) {
      const wire = error instanceof WireError ? error : fromDatabaseError(error);
      res.setHeader('x-amzn-errortype', wire.errorType);
      send(res, wire.statusCode, JSON.stringify({ message: wire.message }));
    }
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, JSON.stringify({ message: String(error) }));
    });
  });
  // Keep idle connections open longer than the SDK client keeps them (as AWS's endpoints do):
  // Node's default of 5 s closes a socket a busy client is about to reuse (ECONNRESET).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const target = {
    resourceArn: 'arn:aws:rds:us-east-1:123456789012:cluster:emulator',
    secretArn: 'arn:aws:secretsmanager:us-east-1:123456789012:secret:emulator-AbCdEf',
    database: defaultDatabase,
  };

  return {
    endpoint,
    target,
    calls,
    // The jobs' own client factory (SDK retries off: the adapter retries), pointed here.
    createClient: () =>
      createDataApiClient({
        endpoint,
        region: 'us-east-1',
        credentials: { accessKeyId: 'AKIDEMULATOR', secretAccessKey: 'emulator-secret' },
      }),
    failNextCalls(count, errorType = 'DatabaseResumingException') {
      failures = { remaining: count, errorType };
    },
    injectFault(spec) {
      fault = spec ? { spec, remaining: spec.count ?? Infinity } : undefined;
    },
    openTransactions: () => transactions.size,
    async close() {
      clearInterval(sweeper);
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      for (const tx of transactions.values()) {
        await tx.client.query('ROLLBACK').catch(() => undefined);
        tx.client.release();
      }
      transactions.clear();
      await Promise.all([...pools.values()].map((pool) => pool.end()));
    },
  };
}

type Body = Record<string, unknown>;

function requireString(body: Body, key: string): void {
  if (typeof body[key] !== 'string' || body[key] === '')
    throw new WireError('BadRequestException', 400, `${key} is required`);
}

/** The service's rendering of a PostgreSQL error: pgjdbc's message lines. */
function fromDatabaseError(error: unknown): WireError {
  const e = error as Partial<PgError>;
  if (typeof e?.code === 'string' && e.code.startsWith('28')) {
    return new WireError('DatabaseErrorException', 400, `ERROR: ${e.message}; SQLState: ${e.code}`);
  }
  if (typeof e?.severity === 'string' || typeof e?.code === 'string') {
    let message = `ERROR: ${e.message}`;
    if (e.detail) message += `\n  Detail: ${e.detail}`;
    if (e.hint) message += `\n  Hint: ${e.hint}`;
    if (e.position) message += `\n  Position: ${e.position}`;
    return new WireError('BadRequestException', 400, message);
  }
  return new WireError('InternalServerErrorException', 500, `Internal error ${randomUUID()}`);
}

function send(res: ServerResponse, status: number, json: string): void {
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(json),
    'x-amzn-requestid': randomUUID(),
  });
  res.end(json);
}
