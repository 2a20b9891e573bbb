import { createHash, randomBytes } from 'node:crypto';
import {
  PermanentAuthError,
  RateLimitedError,
  type AmazonRegion,
  type AuthorizationCodeRequest,
  type AuthorizedTokens,
} from '../shared/amazon';
import { AMAZON_REGIONS as REGIONS, LWA_CONSENT_URLS, regionalUrl } from '../shared/amazon/regions';
import { DeadlineExceededError } from '../shared/backoff';
import { isDatabaseBusy } from '../shared/db';
import type { AppLogger } from '../shared/logger';
import { oauthTokenBinding, type TokenBinding, type TokenCipher } from '../shared/token-crypto';
import { decodeCursor, encodeCursor, Listing } from './cursor';
import {
  ApiProblem,
  ApiRequestEvent,
  ApiResult,
  emptyResult,
  header,
  jsonBody,
  jsonResult,
  limitText,
  problemResult,
  problems,
  queryParameters,
} from '../shared/http';
import { bearerToken, Caller, TokenVerifier, Unauthenticated } from './jwt';
import { AccountFilters, AccountsStore, StoreRefusal } from './store';

/**
 * The accounts API, independent of where it runs: an API Gateway event in, a response out.
 * The Lambda handler (handler.ts) and the local server (scripts/api.ts) build its
 * dependencies; tests call it directly.
 *
 * Every /v1 route needs a verified bearer token (401 otherwise, before anything else is
 * looked at); every database read is one call of an `api.*` function under the caller's
 * claims (store.ts), so what a caller sees is decided by Row Level Security.
 */

/** Starts a manual (or first) sync of a user's connections; resolves once it has been handed over. */
export interface SyncStarter {
  start(request: { readonly userId: string; readonly regions: readonly string[] }): Promise<void>;
}

/** What the API needs of the LWA client. */
export interface AuthorizationCodeExchanger {
  exchangeAuthorizationCode(request: AuthorizationCodeRequest): Promise<AuthorizedTokens>;
  /** The application's LWA client id (the consent page's `client_id`). */
  clientId(): Promise<string>;
}

/** A per-user limit: at most `max` per `windowSeconds`. */
export interface UserLimit {
  readonly max: number;
  readonly windowSeconds: number;
}

export interface AccountsApiSettings {
  /** One manual sync per user per this many seconds. @default 60 */
  readonly manualSyncWindowSeconds?: number;
  /**
   * Redirect URIs a connect session may name (exact match): the environment's allow-list
   * (`api.connectRedirectUris` in cdk.json, `CONNECT_REDIRECT_URIS` locally). @default none
   */
  readonly connectRedirectUris?: readonly string[];
  /** Consent page with `{region}`, instead of Amazon's (the fake Amazon). @default LWA_CONSENT_URLS */
  readonly consentUrl?: string;
  /** How long a connect session can be used. @default 600 */
  readonly connectSessionTtlSeconds?: number;
  /** Connect sessions per user. @default 10 per 600 s */
  readonly connectSessionLimit?: UserLimit;
  /** Connects (state checks) per user. @default 10 per 600 s */
  readonly connectLimit?: UserLimit;
  /**
   * Longest a request waits for the shared Login with Amazon budget before it is answered 503
   * with Retry-After. @default 2000
   */
  readonly amazonMaxWaitMs?: number;
}

/** The consent scope of the Amazon Ads API. */
export const ADS_CONSENT_SCOPE = 'advertising::campaign_management';
/** HKDF purpose of the cursor HMAC key (derived from the token key). */
export const CURSOR_KEY_PURPOSE = 'accounts-api-cursor';

export interface AccountsApiDeps {
  readonly store: AccountsStore;
  readonly verifier: TokenVerifier;
  readonly lwa: AuthorizationCodeExchanger;
  /** The token cipher as it is now (Secrets Manager through its cache in AWS). */
  readonly cipher: () => Promise<TokenCipher>;
  readonly syncs: SyncStarter;
  readonly logger: AppLogger;
  readonly settings?: AccountsApiSettings;
  /** @default Date.now */
  readonly now?: () => number;
}

export const DISCONNECTED_MESSAGE =
  'Amazon connection removed by the user: reconnect Amazon to sync this account again';

const ACCOUNT_TYPES = ['seller', 'vendor', 'agency'] as const;
const STATUSES = ['pending', 'active', 'inactive'] as const;
const SYNC_STATUSES = ['pending', 'in_progress', 'completed', 'failed', 'reauth_required'] as const;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A timestamp as the API writes it (jsonb of timestamptz: ISO 8601 with offset). */
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}(:\d{2})?)$/;
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
/** Retry-After when the wait for the shared Login with Amazon budget ran out. */
const BUSY_RETRY_SECONDS = 5;
const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 100;

type Handler = (event: ApiRequestEvent, caller: Caller, params: Record<string, string>) => Promise<ApiResult>;

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly name: string;
  readonly handle: Handler;
}

export function createAccountsApi(deps: AccountsApiDeps): (event: ApiRequestEvent) => Promise<ApiResult> {
  const now = deps.now ?? Date.now;
  const settings = deps.settings ?? {};
  const windowSeconds = settings.manualSyncWindowSeconds ?? 60;
  const redirectUris = new Set(settings.connectRedirectUris ?? []);
  const sessionTtlSeconds = settings.connectSessionTtlSeconds ?? 600;
  const sessionLimit = settings.connectSessionLimit ?? { max: 10, windowSeconds: 600 };
  const connectLimit = settings.connectLimit ?? { max: 10, windowSeconds: 600 };
  const amazonMaxWaitMs = settings.amazonMaxWaitMs ?? 2000;
  const { store } = deps;
  const cursorKey = async () => (await deps.cipher()).deriveKey(CURSOR_KEY_PURPOSE);

  const routes: Route[] = [
    { method: 'GET', pattern: /^\/v1\/accounts$/, name: 'GET /v1/accounts', handle: listAccounts },
    { method: 'GET', pattern: /^\/v1\/accounts\/(?<id>[^/]+)$/, name: 'GET /v1/accounts/{id}', handle: getAccount },
    {
      method: 'GET',
      pattern: /^\/v1\/accounts\/(?<id>[^/]+)\/sync-history$/,
      name: 'GET /v1/accounts/{id}/sync-history',
      handle: (e, c, p) => listHistory(e, c, p.id),
    },
    {
      method: 'GET',
      pattern: /^\/v1\/sync-history$/,
      name: 'GET /v1/sync-history',
      handle: (e, c) => listHistory(e, c),
    },
    { method: 'GET', pattern: /^\/v1\/connections$/, name: 'GET /v1/connections', handle: listConnections },
    { method: 'POST', pattern: /^\/v1\/connections$/, name: 'POST /v1/connections', handle: connect },
    {
      method: 'POST',
      pattern: /^\/v1\/connections\/sessions$/,
      name: 'POST /v1/connections/sessions',
      handle: createSession,
    },
    {
      method: 'DELETE',
      pattern: /^\/v1\/connections\/(?<region>[^/]+)$/,
      name: 'DELETE /v1/connections/{region}',
      handle: disconnect,
    },
    { method: 'POST', pattern: /^\/v1\/syncs$/, name: 'POST /v1/syncs', handle: manualSync },
  ];

  function limitOf(query: Record<string, string>): number {
    const raw = query.limit;
    if (raw === undefined) return DEFAULT_LIMIT;
    if (!/^\d{1,3}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_LIMIT)
      throw problems.badRequest(`limit must be an integer from 1 to ${MAX_LIMIT}.`);
    return Number(raw);
  }

  function oneOf<T extends string>(name: string, value: string | undefined, allowed: readonly T[]): T | undefined {
    if (value === undefined) return undefined;
    if (!(allowed as readonly string[]).includes(value))
      throw problems.badRequest(`${name} must be one of ${allowed.join(', ')}.`);
    return value as T;
  }

  async function page<T extends Record<string, unknown>>(
    rows: T[],
    limit: number,
    listing: Listing,
    key: (last: T) => [string, string],
  ): Promise<{ items: T[]; nextCursor: string | null }> {
    const items = rows.slice(0, limit);
    const nextCursor =
      rows.length > limit ? encodeCursor(key(items[items.length - 1]), listing, await cursorKey()) : null;
    return { items, nextCursor };
  }

  async function listAccounts(event: ApiRequestEvent, caller: Caller): Promise<ApiResult> {
    const query = queryParameters(event, [
      'limit',
      'cursor',
      'marketplace',
      'accountType',
      'countryCode',
      'region',
      'status',
      'syncStatus',
    ]);
    const limit = limitOf(query);
    if (query.marketplace !== undefined && (query.marketplace.length < 1 || query.marketplace.length > 64))
      throw problems.badRequest('marketplace must be 1 to 64 characters.');
    if (query.countryCode !== undefined && !/^[A-Z]{2}$/.test(query.countryCode))
      throw problems.badRequest('countryCode must be two capital letters (ISO 3166-1 alpha-2).');
    const filters: AccountFilters = {
      marketplace: query.marketplace,
      countryCode: query.countryCode,
      accountType: oneOf('accountType', query.accountType, ACCOUNT_TYPES),
      region: oneOf('region', query.region, REGIONS),
      status: oneOf('status', query.status, STATUSES),
      syncStatus: oneOf('syncStatus', query.syncStatus, SYNC_STATUSES),
    };
    const listing: Listing = { route: 'accounts', ...filters };
    const after =
      query.cursor === undefined
        ? undefined
        : afterKey(decodeCursor(query.cursor, listing, 2, await cursorKey()), accountIdKey);
    const rows = await store.listAccounts(caller, filters, limit + 1, after);
    return jsonResult(200, await page(rows, limit, listing, (last) => [last.amazonAccountId, last.id]));
  }

  async function getAccount(_event: ApiRequestEvent, caller: Caller, params: Record<string, string>) {
    const account = UUID.test(params.id) ? await store.getAccount(caller, params.id.toLowerCase()) : null;
    if (!account) throw problems.notFound('No such account.');
    return jsonResult(200, account);
  }

  async function listHistory(event: ApiRequestEvent, caller: Caller, accountId?: string): Promise<ApiResult> {
    if (accountId !== undefined && !UUID.test(accountId)) throw problems.notFound('No such account.');
    const query = queryParameters(event, ['limit', 'cursor']);
    const limit = limitOf(query);
    const listing: Listing = { route: 'sync-history', account: accountId?.toLowerCase() };
    const after =
      query.cursor === undefined
        ? undefined
        : afterKey(decodeCursor(query.cursor, listing, 2, await cursorKey()), timestampKey);
    const result = await store.listSyncHistory(caller, accountId?.toLowerCase(), limit + 1, after);
    if (!result.found) throw problems.notFound('No such account.');
    return jsonResult(200, await page(result.items ?? [], limit, listing, (last) => [last.startedAt, last.id]));
  }

  async function listConnections(event: ApiRequestEvent, caller: Caller): Promise<ApiResult> {
    queryParameters(event, []);
    return jsonResult(200, { items: await store.listConnections(caller) });
  }

  /**
   * POST /v1/connections/sessions: a connect session for the region and an allowed redirect
   * URI: the state (256 random bits, kept as its SHA-256) and a PKCE verifier (kept encrypted),
   * and the consent URL carrying the state and the verifier's S256 challenge.
   */
  async function createSession(event: ApiRequestEvent, caller: Caller): Promise<ApiResult> {
    const body = jsonBody(event);
    const unknown = Object.keys(body).filter((k) => !['region', 'redirectUri'].includes(k));
    if (unknown.length) throw problems.badRequest(`Unknown field "${limitText(unknown[0])}".`);
    const region = oneOf('region', stringField(body, 'region'), REGIONS);
    const redirectUri = stringField(body, 'redirectUri');
    if (!region || !redirectUri) throw problems.badRequest('region and redirectUri are required.');
    if (!redirectUris.has(redirectUri))
      throw problems.badRequest('redirectUri is not one of the redirect URIs allowed for connecting.');
    const state = randomBytes(32).toString('base64url');
    const verifier = randomBytes(32).toString('base64url');
    const cipher = await deps.cipher();
    const decision = await store.createConnectSession(
      caller,
      {
        region,
        redirectUri,
        stateDigest: digest(state),
        encryptedCodeVerifier: cipher.encrypt(verifier, verifierBinding(caller.userId, region)),
        ttlSeconds: sessionTtlSeconds,
      },
      sessionLimit,
    );
    if (!decision.allowed)
      throw problems.tooManyRequests(
        decision.retryAfterSeconds,
        `Too many connect sessions; try again in ${decision.retryAfterSeconds} s.`,
      );
    const url = new URL(regionalUrl(settings.consentUrl, LWA_CONSENT_URLS, region));
    url.searchParams.set('client_id', await deps.lwa.clientId());
    url.searchParams.set('scope', ADS_CONSENT_SCOPE);
    url.searchParams.set('response_type', 'code');
    url.searchParams.set('redirect_uri', redirectUri);
    url.searchParams.set('state', state);
    url.searchParams.set('code_challenge', createHash('sha256').update(verifier).digest('base64url'));
    url.searchParams.set('code_challenge_method', 'S256');
    return jsonResult(201, {
      authorizationUrl: url.toString(),
      state,
      expiresAt: new Date(decision.expiresAt).toISOString(),
    });
  }

  /**
   * POST /v1/connections: every check that can refuse (the body, the connect limit, the
   * caller's session of this state) runs before Amazon is called; then the code is exchanged
   * with the session's redirect URI and PKCE verifier, waiting at most `amazonMaxWaitMs` for
   * the shared budget.
   */
  async function connect(event: ApiRequestEvent, caller: Caller): Promise<ApiResult> {
    const body = jsonBody(event);
    const unknown = Object.keys(body).filter((k) => !['region', 'code', 'state'].includes(k));
    if (unknown.length) throw problems.badRequest(`Unknown field "${limitText(unknown[0])}".`);
    const region = oneOf('region', stringField(body, 'region'), REGIONS);
    const code = stringField(body, 'code');
    const state = stringField(body, 'state');
    if (!region || !code || !state) throw problems.badRequest('region, code and state are required.');
    if (code.length > 2048 || CONTROL.test(code)) throw problems.badRequest('code is not valid.');
    if (!/^[A-Za-z0-9_-]{43}$/.test(state)) throw problems.invalidState();
    const claim = await store.claimConnectSession(caller, region, digest(state), connectLimit);
    if (claim.outcome === 'limited')
      throw problems.tooManyRequests(
        claim.retryAfterSeconds,
        `Too many connect attempts; try again in ${claim.retryAfterSeconds} s.`,
      );
    if (claim.outcome !== 'ok') throw problems.invalidState();
    const cipher = await deps.cipher();
    let tokens: AuthorizedTokens;
    try {
      tokens = await deps.lwa.exchangeAuthorizationCode({
        itemId: caller.userId,
        region,
        code,
        redirectUri: claim.redirectUri,
        codeVerifier: await cipher.decrypt(claim.codeVerifier, verifierBinding(caller.userId, region)),
        maxWaitMs: amazonMaxWaitMs,
      });
    } catch (error) {
      if (error instanceof PermanentAuthError) {
        deps.logger.warn('Login with Amazon refused an authorization code', { region, amazonError: error.code });
        throw problems.badRequest(`Login with Amazon refused the authorization code: ${error.code}.`, {
          amazonError: error.code,
        });
      }
      if (error instanceof DeadlineExceededError || error instanceof RateLimitedError) {
        const retryAfter =
          error instanceof RateLimitedError ? Math.max(1, Math.ceil(error.retryAfterSeconds)) : BUSY_RETRY_SECONDS;
        deps.logger.warn('Login with Amazon budget busy: connect answered 503', { region, retryAfter });
        throw problems.unavailable(
          retryAfter,
          'Login with Amazon is busy; start connecting again (a new session) in a few seconds.',
        );
      }
      deps.logger.error('Authorization code exchange failed', { region, error: (error as Error).name });
      throw problems.badGateway('Login with Amazon did not answer as expected; try again.');
    }
    const expiresAt = new Date(now() + tokens.expiresInSeconds * 1000);
    const connection = await store.connect(
      caller,
      region,
      cipher.encrypt(tokens.accessToken, oauthTokenBinding({ userId: caller.userId, region }, 'access_token')),
      cipher.encrypt(tokens.refreshToken, oauthTokenBinding({ userId: caller.userId, region }, 'refresh_token')),
      expiresAt,
    );
    await startSync(caller.userId, [region], 'first');
    return jsonResult(201, connection, { location: `/v1/connections/${region}` });
  }

  async function disconnect(_event: ApiRequestEvent, caller: Caller, params: Record<string, string>) {
    const region = oneOf('region', params.region, REGIONS)!;
    if (!(await store.disconnect(caller, region, DISCONNECTED_MESSAGE)))
      throw problems.notFound(`No Amazon connection in ${region}.`);
    return emptyResult(204);
  }

  async function manualSync(event: ApiRequestEvent, caller: Caller): Promise<ApiResult> {
    const hasBody = (event.body ?? '').length > 0;
    const body = hasBody || header(event, 'content-type') ? jsonBody(event) : {};
    const unknown = Object.keys(body).filter((k) => k !== 'region');
    if (unknown.length) throw problems.badRequest(`Unknown field "${limitText(unknown[0])}".`);
    if (body.region !== undefined && typeof body.region !== 'string')
      throw problems.badRequest('region must be a string.');
    const region = oneOf('region', body.region, REGIONS);
    const decision = await store.requestManualSync(caller, region, windowSeconds);
    if (!decision.allowed && decision.regions.length === 0)
      throw problems.conflict(region ? `No Amazon connection in ${region}.` : 'No Amazon connection to sync.');
    if (!decision.allowed) throw problems.tooManyRequests(decision.retryAfterSeconds ?? windowSeconds);
    await startSync(caller.userId, decision.regions, 'manual');
    return jsonResult(202, { status: 'accepted', regions: decision.regions });
  }

  async function startSync(userId: string, regions: readonly string[], kind: 'first' | 'manual'): Promise<void> {
    try {
      await deps.syncs.start({ userId, regions });
    } catch (error) {
      // The connection is stored; the scheduled sync picks it up (it is due now).
      deps.logger.error('Could not start a sync', { kind, userId, error: (error as Error).name });
      if (kind === 'manual') throw problems.badGateway('The sync could not be started; try again later.');
    }
  }

  return async function handle(event: ApiRequestEvent): Promise<ApiResult> {
    const started = now();
    const method = event.requestContext.http.method.toUpperCase();
    const path = event.rawPath.replace(/\/+$/, '') || '/';
    let routeName = 'unknown';
    let status = 500;
    let userId: string | undefined;
    try {
      if (path === '/health' && method === 'GET') {
        routeName = 'GET /health';
        status = 200;
        return jsonResult(200, { status: 'ok' });
      }
      const matches = routes.map((r) => ({ route: r, match: r.pattern.exec(path) })).filter((m) => m.match !== null);
      if (matches.length === 0) throw problems.notFound();
      const found = matches.find((m) => m.route.method === method);
      if (!found) throw problems.methodNotAllowed();
      routeName = found.route.name;
      const caller = await authenticate(event);
      userId = caller.userId;
      const params = Object.fromEntries(
        Object.entries(found.match!.groups ?? {}).map(([k, v]) => [k, decodeURIComponent(v)]),
      );
      const result = await found.route.handle(event, caller, params);
      status = result.statusCode;
      return result;
    } catch (error) {
      const problem = toProblem(error);
      status = problem.status;
      if (problem.status >= 500 && !(error instanceof ApiProblem))
        deps.logger.error('Request failed', { route: routeName, error: (error as Error)?.name ?? 'unknown' });
      return problemResult(problem, event.requestContext.requestId);
    } finally {
      deps.logger.info('request', { route: routeName, status, userId, durationMs: now() - started });
    }
  };

  async function authenticate(event: ApiRequestEvent): Promise<Caller> {
    const token = bearerToken(header(event, 'authorization'));
    if (!token) throw problems.unauthorized();
    try {
      return await deps.verifier.verify(token);
    } catch (error) {
      if (error instanceof Unauthenticated) throw problems.unauthorized();
      throw error;
    }
  }
}

function toProblem(error: unknown): ApiProblem {
  if (error instanceof ApiProblem) return error;
  if (error instanceof URIError) return problems.badRequest('The path is not valid.');
  if (error instanceof StoreRefusal) {
    switch (error.reason) {
      // One answer whatever the cause, so that it never tells whether an address is registered.
      case 'email in use':
      case 'email required':
      case 'user not creatable':
        return problems.forbidden('This sign-in cannot be used to create a user here.');
      case 'invalid input':
        return problems.badRequest('A value of the request is not valid.');
      case 'invalid region':
        return problems.badRequest('Unknown region.');
      case 'no caller':
        return problems.unauthorized();
    }
  }
  // Busy, not broken: the caller may try again shortly (503 with Retry-After, not a 500).
  if (isDatabaseBusy(error)) return problems.databaseBusy();
  return problems.internal();
}

/** An account's Amazon id as a cursor key: what the API wrote, printable, bounded. */
const accountIdKey = (value: string) => value.length >= 1 && value.length <= 255 && !CONTROL.test(value);
/** A history row's startedAt as a cursor key: a timestamp PostgreSQL reads. */
const timestampKey = (value: string) => TIMESTAMP.test(value) && Number.isFinite(Date.parse(value));

function afterKey(key: readonly (string | number)[], firstValid: (value: string) => boolean): [string, string] {
  const [first, second] = key;
  if (typeof first !== 'string' || typeof second !== 'string' || !firstValid(first) || !UUID.test(second))
    throw problems.badRequest('The cursor is not valid for this listing.');
  return [first, second];
}

function digest(state: string): string {
  return createHash('sha256').update(state).digest('hex');
}

function stringField(body: Record<string, unknown>, name: string): string | undefined {
  const value = body[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw problems.badRequest(`${name} must be a string.`);
  return value;
}

export type { AmazonRegion };

/** Where a connect session's PKCE verifier lives (connect_sessions.code_verifier of the caller's session). */
function verifierBinding(userId: string, region: string): TokenBinding {
  return { table: 'connect_sessions', userId, region, column: 'code_verifier' };
}
