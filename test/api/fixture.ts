import { ensureApiLogin } from '../../lambda/migrate/worker-login';
import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { runAccountSync } from '../../lambda/account-sync/core';
import { AccountsApiSettings, createAccountsApi, SyncStarter } from '../../lambda/accounts-api/core';
import type { ApiRequestEvent, ApiResult } from '../../lambda/shared/http';
import { inProcessSyncStarter, InProcessSyncStarter } from '../../lambda/accounts-api/in-process-sync';
import { createTokenVerifier } from '../../lambda/accounts-api/jwt';
import { AccountsStore } from '../../lambda/accounts-api/store';
import { LwaClient } from '../../lambda/shared/amazon';
import type { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { Database, DataApiDatabase, PgDatabase } from '../../lambda/shared/db';
import { DataApiEmulator, startDataApiEmulator } from '../../local/data-api/emulator';
import { ephemeralIssuer, LocalIssuer } from '../../local/identity/issuer';
import { serveJwks } from '../../local/identity/jwks-server';
import { JobWorld, RecordingLogger, runtime, startJobWorld } from '../support/jobs';

/**
 * The accounts API against the local world: PostgreSQL with every migration, the Data API
 * emulator connected as the API's own login (`accounts_api`, LOGIN, member of
 * `authenticated`, owner of nothing, no BYPASSRLS), an issuer with its JWKS served over HTTP,
 * the fake Amazon, and manual syncs run in-process by the account-sync core (as the jobs'
 * login, through the jobs' emulator).
 */
export interface ApiWorld extends JobWorld {
  /** node-postgres URL of the API login. */
  readonly apiLoginUrl: string;
  readonly apiEmulator: DataApiEmulator;
  readonly issuer: LocalIssuer;
  readonly jwksUrl: string;
  readonly jwksDownloads: () => number;
  readonly syncs: InProcessSyncStarter;
  readonly logger: RecordingLogger;
  /** A Data API adapter as `accounts_api` (the production path). */
  apiDataApi(): DataApiDatabase;
  /** The API's handler function on the Data API path (or on `db`, with `assumeAuthenticatedRole`). */
  api(options?: {
    db?: Database;
    assumeAuthenticatedRole?: boolean;
    manualSyncWindowSeconds?: number;
    syncs?: SyncStarter;
    settings?: AccountsApiSettings;
    /**
     * The limiters of the API's LWA client, as the deployed API draws from the shared budget
     * (`budgetLimiters`, or a registry on a budget store); by default the jobs' test client's,
     * which never wait.
     */
    lwaLimiters?: RateLimiterRegistry;
  }): Handler;
  token(sub: string, options?: { email?: string; expiresInSeconds?: number; extra?: Record<string, unknown> }): string;
}

export type Handler = (event: ApiRequestEvent) => Promise<ApiResult>;

export const API_LOGIN = 'accounts_api';
/** The redirect URI the test API allows for connecting. */
export const CONNECT_REDIRECT = 'https://app.example.com/amazon/callback';

export async function startApiWorld(): Promise<ApiWorld> {
  const world = await startJobWorld();
  const password = randomBytes(12).toString('hex');
  const owner = new Client({ connectionString: world.url });
  await owner.connect();
  try {
    // The login as the deploy creates it (the migration custom resource's own code).
    await ensureApiLogin(owner, { username: API_LOGIN, password });
  } finally {
    await owner.end();
  }
  const apiLoginUrl = `postgres://${API_LOGIN}:${password}@127.0.0.1:${world.pg.port}/${new URL(world.url).pathname.slice(1)}`;
  const apiEmulator = await startDataApiEmulator({ databaseUrl: apiLoginUrl });
  const issuer = ephemeralIssuer();
  const jwks = await serveJwks(() => issuer.jwks);
  const logger = new RecordingLogger();
  const syncs = inProcessSyncStarter(
    (request) =>
      runAccountSync(
        { db: world.dataApi(), ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime(), logger },
        request,
      ),
    logger,
  );
  const adapters: Array<{ close(): Promise<void> }> = [];
  const apiDataApi = () => {
    const db = new DataApiDatabase({
      client: apiEmulator.createClient(),
      ...apiEmulator.target,
      retry: { baseDelayMs: 5, maxDelayMs: 20 },
    });
    adapters.push(db);
    return db;
  };
  return {
    ...world,
    apiLoginUrl,
    apiEmulator,
    issuer,
    jwksUrl: jwks.url,
    jwksDownloads: jwks.downloads,
    syncs,
    logger,
    apiDataApi,
    api(options = {}) {
      const lwa = options.lwaLimiters
        ? new LwaClient({
            clientId: world.amazon.clientId,
            clientSecret: world.amazon.clientSecret,
            tokenUrl: world.amazon.lwaTokenUrl,
            limiters: options.lwaLimiters,
          })
        : world.lwa();
      // A verifier per API instance: its own JWKS cache, as one Lambda container has.
      const verifier = createTokenVerifier({ issuer: issuer.issuer, audience: issuer.audience, jwksUrl: jwks.url });
      return createAccountsApi({
        store: new AccountsStore({
          db: options.db ?? apiDataApi(),
          assumeAuthenticatedRole: options.assumeAuthenticatedRole,
        }),
        verifier,
        lwa,
        cipher: () => Promise.resolve(world.cipher),
        syncs: options.syncs ?? syncs,
        logger,
        settings: {
          manualSyncWindowSeconds: options.manualSyncWindowSeconds,
          connectRedirectUris: [CONNECT_REDIRECT],
          consentUrl: world.amazon.consentUrl,
          ...options.settings,
        },
      });
    },
    token: (sub, o = {}) => issuer.token({ sub, ...o }),
    async close() {
      await syncs.idle();
      await Promise.all(adapters.map((a) => a.close()));
      await apiEmulator.close();
      await jwks.close();
      await world.close();
    },
  };
}

/** What {@link useApiWorld} hands a test file once its world is up. */
export interface StartedApiWorld {
  readonly world: ApiWorld;
  /** node-postgres on the world's database as its owner (a superuser), for setup and checks. */
  readonly superuser: PgDatabase;
}

/**
 * A test file's API world: started (with a superuser adapter on its database) before the file's
 * tests, `use` called with both, and both closed after the last test. The file's own
 * `beforeEach` decides what is reset between tests.
 */
export function useApiWorld(use: (started: StartedApiWorld) => void | Promise<void>): void {
  let world: ApiWorld | undefined;
  let superuser: PgDatabase | undefined;
  beforeAll(async () => {
    world = await startApiWorld();
    superuser = new PgDatabase({ connection: world.url });
    await use({ world, superuser });
  });
  afterAll(async () => {
    await superuser?.close();
    await world?.close();
  });
}

/** An API Gateway HTTP API (payload 2.0) event. */
export function request(
  method: string,
  path: string,
  options: {
    token?: string;
    query?: Record<string, string>;
    rawQuery?: string;
    body?: unknown;
    rawBody?: string;
    contentType?: string;
    headers?: Record<string, string>;
  } = {},
): ApiRequestEvent {
  const rawQueryString = options.rawQuery ?? new URLSearchParams(options.query ?? {}).toString();
  const body = options.rawBody ?? (options.body === undefined ? undefined : JSON.stringify(options.body));
  return {
    rawPath: path,
    rawQueryString,
    headers: {
      ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
      ...(body !== undefined ? { 'content-type': options.contentType ?? 'application/json' } : {}),
      ...options.headers,
    },
    body,
    isBase64Encoded: false,
    requestContext: { requestId: randomBytes(8).toString('hex'), http: { method, path } },
  };
}

/** The product servers' role, as IAM names the caller of the token route. */
export const TOKEN_ROUTE_CALLER = 'arn:aws:sts::123456789012:assumed-role/product-server/i-0abc';

/** POST /internal/v1/access-tokens as API Gateway passes it after IAM authorised the caller. */
export function tokenRouteRequest(userId: string, region: string, callerArn = TOKEN_ROUTE_CALLER): ApiRequestEvent {
  return {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId, region }),
    isBase64Encoded: false,
    requestContext: {
      requestId: randomBytes(8).toString('hex'),
      http: { method: 'POST', path: '/internal/v1/access-tokens' },
      authorizer: { iam: { userArn: callerArn, accountId: '123456789012' } },
    },
  } as ApiRequestEvent;
}

export { RecordingLogger };

/** Runtime collaborators for a job core run from a test, logging to the world's logger. */
export function runtimeFor(world: ApiWorld) {
  return { ...runtime(), logger: world.logger };
}

/** A connect session's answer. */
export interface ConnectSession {
  readonly authorizationUrl: string;
  readonly state: string;
  readonly expiresAt: string;
}

/** POST /v1/connections/sessions; the session, or throws with the answer. */
export async function startConnectSession(
  api: Handler,
  token: string,
  region: string,
  redirectUri = CONNECT_REDIRECT,
): Promise<ConnectSession> {
  const result = await api(request('POST', '/v1/connections/sessions', { token, body: { region, redirectUri } }));
  if (result.statusCode !== 201) throw new Error(`session: ${result.statusCode} ${result.body}`);
  return JSON.parse(result.body) as ConnectSession;
}

/**
 * The browser's part: the consent URL, opened at the fake Amazon as `amazonUserId`, who agrees;
 * the code and state of the redirect back.
 */
export async function consent(
  session: Pick<ConnectSession, 'authorizationUrl'>,
  amazonUserId: string,
): Promise<{ code: string; state: string | null; redirect: URL }> {
  const url = new URL(session.authorizationUrl);
  url.searchParams.set('user', amazonUserId);
  const answer = await fetch(url, { redirect: 'manual' });
  const location = answer.headers.get('location');
  if (answer.status !== 302 || !location) throw new Error(`consent: ${answer.status} ${await answer.text()}`);
  const redirect = new URL(location);
  return { code: redirect.searchParams.get('code')!, state: redirect.searchParams.get('state'), redirect };
}

/** Session → consent (as `amazonUserId`) → POST /v1/connections: the connect's answer. */
export async function connectThroughConsent(
  api: Handler,
  token: string,
  amazonUserId: string,
  region: string,
): Promise<ApiResult> {
  const session = await startConnectSession(api, token, region);
  const { code, state } = await consent(session, amazonUserId);
  return api(request('POST', '/v1/connections', { token, body: { region, code, state } }));
}
