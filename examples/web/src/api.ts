/**
 * The accounts API from a browser: every call sends the signed-in user's bearer token; every
 * refusal is the API's problem+json (RFC 9457), surfaced as an {@link ApiError} with its
 * title and detail; a network failure (the API down, or CORS refusing this origin) is an
 * {@link ApiUnreachable}.
 */
export type Region = 'NA' | 'EU' | 'FE';

export interface Connection {
  readonly region: Region;
  readonly status: 'connected' | 'reauth_required' | 'refresh_failing';
  readonly expiresAt: string;
  readonly lastRefreshedAt: string | null;
  readonly lastError: string | null;
  readonly connectedAt: string;
  readonly accounts: {
    readonly total: number;
    readonly pending: number;
    readonly inProgress: number;
    readonly completed: number;
    readonly failed: number;
    readonly reauthRequired: number;
  };
  readonly lastSync: {
    readonly syncType: string;
    readonly syncStatus: 'started' | 'success' | 'failed';
    readonly startedAt: string;
    readonly completedAt: string | null;
    readonly accountsSynced: number;
    readonly accountsFailed: number;
  } | null;
  /** Present once the API reports a connection's health (a newer API); shown when it is. */
  readonly health?: unknown;
}

export interface Account {
  readonly id: string;
  readonly amazonAccountId: string;
  readonly region: Region;
  readonly status: 'pending' | 'active' | 'inactive';
  readonly syncStatus: 'pending' | 'in_progress' | 'completed' | 'failed' | 'reauth_required';
  readonly syncErrorMessage: string | null;
  readonly lastSyncedAt: string | null;
  readonly marketplaceStringId: string | null;
  readonly countryCode: string | null;
  readonly accountType: string | null;
  readonly accountName: string | null;
}

export interface HistoryItem {
  readonly id: string;
  readonly syncType: string;
  readonly syncStatus: string;
  readonly startedAt: string;
  readonly completedAt: string | null;
  readonly accountsSynced: number;
  readonly accountsFailed: number;
  readonly errorDetails: unknown;
}

export interface Page<T> {
  readonly items: T[];
  readonly nextCursor: string | null;
}

export interface AccountFilters {
  region?: string;
  status?: string;
  syncStatus?: string;
  marketplace?: string;
}

/** A problem+json answer. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string | undefined,
    /** From the Retry-After header (exposed by CORS) or the problem's retryAfterSeconds. */
    readonly retryAfterSeconds: number | undefined,
  ) {
    super(detail ? `${title}: ${detail}` : title);
  }
}

/** No answer at all: the API is down, unreachable, or refused this origin (CORS). */
export class ApiUnreachable extends Error {}

export class AccountsApi {
  private readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly token: () => string | undefined,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = {};
    const token = this.token();
    if (token) headers.authorization = `Bearer ${token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let answer: Response;
    try {
      answer = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiUnreachable(`The accounts API at ${this.baseUrl} cannot be reached. Is it running?`);
    }
    if (answer.status === 204) return undefined as T;
    const text = await answer.text();
    if (answer.ok) return JSON.parse(text) as T;
    let problem: { title?: string; detail?: string; retryAfterSeconds?: number } = {};
    try {
      problem = JSON.parse(text) as typeof problem;
    } catch {
      // Not problem+json (a proxy's page): the status line is all there is.
    }
    const header = answer.headers.get('retry-after');
    const retryAfter = header !== null && /^\d+$/.test(header) ? Number(header) : problem.retryAfterSeconds;
    throw new ApiError(answer.status, problem.title ?? `HTTP ${answer.status}`, problem.detail, retryAfter);
  }

  listConnections(): Promise<Page<Connection>> {
    return this.call('GET', '/v1/connections');
  }

  /** Starts connecting a region: where to send the browser (Amazon's consent page) and the state to check on return. */
  startConnect(
    region: Region,
    redirectUri: string,
  ): Promise<{ authorizationUrl: string; state: string; expiresAt: string }> {
    return this.call('POST', '/v1/connections/sessions', { region, redirectUri });
  }

  /** Finishes connecting with what Amazon sent back. */
  connect(region: Region, code: string, state: string): Promise<Connection> {
    return this.call('POST', '/v1/connections', { region, code, state });
  }

  disconnect(region: Region): Promise<void> {
    return this.call('DELETE', `/v1/connections/${region}`);
  }

  syncNow(region?: Region): Promise<{ status: string; regions: Region[] }> {
    return this.call('POST', '/v1/syncs', region ? { region } : {});
  }

  listAccounts(filters: AccountFilters, cursor?: string, limit = 10): Promise<Page<Account>> {
    const query = new URLSearchParams({ limit: String(limit) });
    for (const [name, value] of Object.entries(filters) as Array<[string, string | undefined]>)
      if (value) query.set(name, value);
    if (cursor) query.set('cursor', cursor);
    return this.call('GET', `/v1/accounts?${query}`);
  }

  accountHistory(accountId: string): Promise<Page<HistoryItem>> {
    return this.call('GET', `/v1/accounts/${encodeURIComponent(accountId)}/sync-history?limit=20`);
  }
}
