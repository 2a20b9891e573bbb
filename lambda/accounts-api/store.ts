import { Database, DatabaseError, sqlJson, sqlUuid, SqlParams } from '../shared/db';
import type { Caller } from './jwt';

/**
 * The accounts API's SQL: one call of a function in schema `api` (migration 0013) per request.
 * Every function takes the caller's claims and sets them transaction-locally before reading, so
 * Row Level Security decides what the statement sees.
 *
 * - Data API (production): the login is `accounts_api`, a member of `accounts_api_caller` (the
 *   only role that may call the `api` functions, migration 0019) and of `authenticated`, and each
 *   call is one statement in its own transaction: 1 Data API call per request.
 * - node-postgres (`npm run api`, `npm start`): `DATABASE_URL` may name a superuser or the
 *   table owner, whom RLS does not restrict, so each call runs in a transaction that first
 *   does `SET LOCAL ROLE accounts_api_caller` ({@link AccountsStoreOptions.assumeAuthenticatedRole}), a
 *   member of `authenticated` whose own-row policies then apply.
 */
export interface AccountsStoreOptions {
  readonly db: Database;
  /** Run each call in a transaction as `accounts_api_caller` (node-postgres). @default false */
  readonly assumeAuthenticatedRole?: boolean;
}

export interface AccountFilters {
  readonly marketplace?: string;
  readonly accountType?: string;
  readonly countryCode?: string;
  readonly region?: string;
  readonly status?: string;
  readonly syncStatus?: string;
}

export type AccountItem = Record<string, unknown> & { id: string; amazonAccountId: string };
export type HistoryItem = Record<string, unknown> & { id: string; startedAt: string };
export type ConnectionItem = Record<string, unknown> & { region: string };

export type ManualSyncDecision =
  | { readonly allowed: true; readonly regions: string[] }
  | { readonly allowed: false; readonly regions: string[]; readonly retryAfterSeconds?: number };

export type ConnectSessionDecision =
  | { readonly allowed: true; readonly expiresAt: string }
  | { readonly allowed: false; readonly retryAfterSeconds: number };

export type ConnectSessionClaim =
  | { readonly outcome: 'ok'; readonly redirectUri: string; readonly codeVerifier: string }
  | { readonly outcome: 'limited'; readonly retryAfterSeconds: number }
  | { readonly outcome: 'invalid' };

const REFUSALS = ['email in use', 'email required', 'user not creatable', 'no caller', 'invalid region'] as const;

/**
 * A refusal the functions raise on purpose (`accounts-api: …`), or `invalid input`: PostgreSQL
 * refused a value of the request itself (SQLSTATE class 22, data exception), which the API's
 * own checks should have caught first.
 */
export class StoreRefusal extends Error {
  constructor(readonly reason: (typeof REFUSALS)[number] | 'invalid input') {
    super(`accounts-api: ${reason}`);
    this.name = 'StoreRefusal';
  }
}

/**
 * A data exception (SQLSTATE class 22: a value PostgreSQL cannot take, e.g. a NUL in text or a
 * malformed timestamp). node-postgres reports the SQLSTATE; the Data API reports only the
 * message (the emulator sends PostgreSQL's own message; the service adds `SQLState: …` to it),
 * so the message is matched too.
 */
export function isDataException(error: unknown): boolean {
  if (!(error instanceof DatabaseError)) return false;
  if (error.code !== undefined) return error.code.startsWith('22');
  return (
    /SQLState: 22[0-9A-Z]{3}/.test(error.message) ||
    /ERROR: +(invalid input syntax for type|invalid byte sequence for encoding|unsupported Unicode escape sequence|invalid input value for enum|value too long for type|[a-z /]*out of range|date\/time field value out of range|time zone .* not recognized)/.test(
      error.message,
    )
  );
}

export function claimsOf(caller: Caller): SqlParams[string] {
  return sqlJson({ sub: caller.userId, role: 'authenticated', ...(caller.email ? { email: caller.email } : {}) });
}

export class AccountsStore {
  constructor(private readonly options: AccountsStoreOptions) {}

  get db(): Database {
    return this.options.db;
  }

  /** Runs `SELECT <call> AS result` and returns `result` (a jsonb value, decoded). */
  private async call<T>(sql: string, params: SqlParams): Promise<T> {
    const statement = `SELECT ${sql} AS result`;
    try {
      if (!this.options.assumeAuthenticatedRole) {
        return (await this.options.db.query<{ result: T }>(statement, params)).rows[0].result;
      }
      return await this.options.db.transaction(async (tx) => {
        await tx.query('SET LOCAL ROLE accounts_api_caller');
        return (await tx.query<{ result: T }>(statement, params)).rows[0].result;
      });
    } catch (error) {
      const message = error instanceof Error ? error.message : '';
      const refusal = REFUSALS.find((r) => message.includes(`accounts-api: ${r}`));
      if (refusal) throw new StoreRefusal(refusal);
      if (isDataException(error)) throw new StoreRefusal('invalid input');
      throw error;
    }
  }

  listAccounts(
    caller: Caller,
    filters: AccountFilters,
    pageSize: number,
    after: readonly [string, string] | undefined,
  ): Promise<AccountItem[]> {
    const meta: Record<string, string> = {};
    if (filters.marketplace !== undefined) meta.marketplaceStringId = filters.marketplace;
    if (filters.accountType !== undefined) meta.accountType = filters.accountType;
    if (filters.countryCode !== undefined) meta.countryCode = filters.countryCode;
    return this.call(
      `api.list_accounts(:claims::jsonb, :meta::jsonb, :region, :status, :syncStatus, :pageSize::int, :afterAccount, :afterId::uuid)`,
      {
        claims: claimsOf(caller),
        meta: Object.keys(meta).length ? sqlJson(meta) : null,
        region: filters.region ?? null,
        status: filters.status ?? null,
        syncStatus: filters.syncStatus ?? null,
        pageSize,
        afterAccount: after?.[0] ?? null,
        afterId: after ? sqlUuid(after[1]) : null,
      },
    );
  }

  getAccount(caller: Caller, accountId: string): Promise<AccountItem | null> {
    return this.call(`api.get_account(:claims::jsonb, :id::uuid)`, {
      claims: claimsOf(caller),
      id: sqlUuid(accountId),
    });
  }

  listSyncHistory(
    caller: Caller,
    accountId: string | undefined,
    pageSize: number,
    after: readonly [string, string] | undefined,
  ): Promise<{ found: boolean; items?: HistoryItem[] }> {
    return this.call(
      `api.list_sync_history(:claims::jsonb, :accountId::uuid, :pageSize::int, :afterStarted::timestamptz, :afterId::uuid)`,
      {
        claims: claimsOf(caller),
        accountId: accountId ? sqlUuid(accountId) : null,
        pageSize,
        afterStarted: after?.[0] ?? null,
        afterId: after ? sqlUuid(after[1]) : null,
      },
    );
  }

  listConnections(caller: Caller): Promise<ConnectionItem[]> {
    return this.call(`api.list_connections(:claims::jsonb)`, { claims: claimsOf(caller) });
  }

  /** Stores the caller's encrypted tokens for the region (creating their users row if needed). */
  connect(
    caller: Caller,
    region: string,
    encryptedAccessToken: string,
    encryptedRefreshToken: string,
    expiresAt: Date,
  ): Promise<ConnectionItem> {
    return this.call(`api.connect(:claims::jsonb, :region, :accessToken, :refreshToken, :expiresAt::timestamptz)`, {
      claims: claimsOf(caller),
      region,
      accessToken: encryptedAccessToken,
      refreshToken: encryptedRefreshToken,
      expiresAt,
    });
  }

  /** Removes the region's connection; false when there was none. */
  disconnect(caller: Caller, region: string, message: string): Promise<boolean> {
    return this.call(`api.disconnect(:claims::jsonb, :region, :message)`, {
      claims: claimsOf(caller),
      region,
      message,
    });
  }

  /**
   * A connect session for the caller (their users row created from the claims first when
   * missing), unless the session limit refuses it. The state is passed as its SHA-256 (hex),
   * the verifier encrypted.
   */
  createConnectSession(
    caller: Caller,
    session: {
      region: string;
      redirectUri: string;
      stateDigest: string;
      encryptedCodeVerifier: string;
      ttlSeconds: number;
    },
    limit: { max: number; windowSeconds: number },
  ): Promise<ConnectSessionDecision> {
    return this.call(
      `api.create_connect_session(:claims::jsonb, :region, :redirectUri, :stateDigest, :verifier, :ttl::int, :max::int, :window::int)`,
      {
        claims: claimsOf(caller),
        region: session.region,
        redirectUri: session.redirectUri,
        stateDigest: session.stateDigest,
        verifier: session.encryptedCodeVerifier,
        ttl: session.ttlSeconds,
        max: limit.max,
        window: limit.windowSeconds,
      },
    );
  }

  /** Marks the caller's session of this state and region used, unless the connect limit refuses first. */
  claimConnectSession(
    caller: Caller,
    region: string,
    stateDigest: string,
    limit: { max: number; windowSeconds: number },
  ): Promise<ConnectSessionClaim> {
    return this.call(`api.claim_connect_session(:claims::jsonb, :region, :stateDigest, :max::int, :window::int)`, {
      claims: claimsOf(caller),
      region,
      stateDigest,
      max: limit.max,
      window: limit.windowSeconds,
    });
  }

  requestManualSync(caller: Caller, region: string | undefined, windowSeconds: number): Promise<ManualSyncDecision> {
    return this.call(`api.request_manual_sync(:claims::jsonb, :region, :window::int)`, {
      claims: claimsOf(caller),
      region: region ?? null,
      window: windowSeconds,
    });
  }
}
