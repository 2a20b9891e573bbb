/**
 * `npm run api`: the accounts API on this machine, the same core as the Lambda (handler.ts),
 * served over HTTP on PORT (default 8787) against DATABASE_URL through node-postgres. Every
 * request runs in a transaction as `accounts_api_caller` (`SET LOCAL ROLE`), so Row Level Security
 * applies even when DATABASE_URL names a superuser. Amazon at LWA_TOKEN_URL / ADS_API_URL,
 * credentials from LWA_CLIENT_ID, LWA_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY (as `npm run job`).
 *
 * Sign-in: with API_JWT_ISSUER and API_JWT_AUDIENCE (and API_JWKS_URL when the key set is not
 * at `<issuer>/.well-known/jwks.json`) it trusts that issuer; without them, only the local
 * issuer, whose key is created in .local/identity and whose JWKS this server serves at
 * /.well-known/jwks.json (`npm run token` prints its tokens). A manual sync runs the
 * account-sync core in this process. Connect sessions allow the redirect URIs in
 * CONNECT_REDIRECT_URIS (comma-separated; loopback URIs when unset) and send the browser to
 * LWA_AUTHORIZE_URL (with `{region}`; Amazon's regional consent pages when unset). An aborted
 * or malformed request is answered or dropped, never a crash; every answer carries
 * `X-Content-Type-Options: nosniff`. The first line on stdout is
 * `Accounts API on http://127.0.0.1:<port>`; request logs go to stderr.
 *
 * The internal token route (POST /internal/v1/access-tokens, lambda/token-route) is served
 * only when INTERNAL_API_KEY is set. In AWS it is authorised by IAM (SigV4), which cannot be
 * checked here; locally the caller must send that key in `X-Internal-Api-Key` instead, the
 * server listens on 127.0.0.1 only, and the second line on stdout says which of the two it is.
 * Without the key the route answers 404, as an unknown route does.
 */
import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { runAccountSync } from '../lambda/account-sync/core';
import { createAccountsApi } from '../lambda/accounts-api/core';
import { ApiRequestEvent, MAX_BODY_BYTES, problemResult, problems } from '../lambda/shared/http';
import { inProcessSyncStarter, InProcessSyncStarter } from '../lambda/accounts-api/in-process-sync';
import { createTokenVerifier, TokenVerifier } from '../lambda/accounts-api/jwt';
import { AccountsStore } from '../lambda/accounts-api/store';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { LOCAL_API_ENV, LOCAL_CONNECT_REDIRECT_URIS, parseRedirectUris } from '../lambda/shared/api-env';
import { LocalJobConfig, readLocalJobConfig } from '../lambda/shared/config';
import { Database, PgDatabase } from '../lambda/shared/db';
import { MetricTotals } from '../lambda/shared/jobs/runtime';
import type { AppLogger } from '../lambda/shared/logger';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { budgetLimiters } from '../lambda/shared/amazon/api-share';
import { createTokenRoute, sharedSecretCaller } from '../lambda/token-route/core';
import { TOKEN_ROUTE, TOKEN_ROUTE_PATH } from '../lambda/token-route/route';
import { DEFAULT_WEB_PORT, localWebConfig, startWebExample, WebExample } from '../examples/web/server';
import { cors, LOCAL_CORS_ALLOWED_ORIGINS, parseOrigins } from '../local/api-gateway/cors';
import { localIssuer, LocalIssuer } from '../local/identity/issuer';
import { localSignIn } from '../local/identity/sign-in';
import { LOCAL_EVENTS_FILE, watchLocalEvents } from './local-events';

export const DEFAULT_API_PORT = 8787;

/** `npm run api`'s variables for the example web app (examples/web) and the browsers it allows. */
export const WEB_ENV = {
  /** Port of the example web app (3000 by default, a free one when taken); `off`: not served. */
  port: 'WEB_PORT',
  /** Comma-separated origins allowed by CORS (API Gateway's `api.corsAllowedOrigins`); default: the local web app's. */
  corsAllowedOrigins: 'CORS_ALLOWED_ORIGINS',
  /** With API_JWT_ISSUER: the web app's OIDC discovery URL. @default `<issuer>/.well-known/openid-configuration` */
  oidcDiscoveryUrl: 'WEB_OIDC_DISCOVERY_URL',
  /** With API_JWT_ISSUER: the web app's OIDC client id. @default accounts-web-example */
  oidcClientId: 'WEB_OIDC_CLIENT_ID',
} as const;

/**
 * The local stand-in for IAM on the internal token route: the caller sends this variable's
 * value in `X-Internal-Api-Key`. Unset: the route is not served.
 */
export const INTERNAL_API_KEY_ENV = 'INTERNAL_API_KEY';

export interface LocalApiOptions {
  readonly databaseUrl: string;
  readonly lwa: LwaClient;
  readonly ads: AdsClient;
  readonly cipher: TokenCipher;
  /** The issuer to trust; the local issuer (its JWKS served here) when absent. */
  readonly issuer?: { issuer: string; audience: readonly string[]; jwksUrl?: string };
  /** Where the local issuer keeps its key. @default .local/identity */
  readonly identityDir?: string;
  readonly port?: number;
  readonly logger: AppLogger;
  /** Redirect URIs a connect session may name. @default LOCAL_CONNECT_REDIRECT_URIS */
  readonly connectRedirectUris?: readonly string[];
  /** Consent page with `{region}` (the fake Amazon's). @default Amazon's regional consent pages */
  readonly consentUrl?: string;
  /**
   * Serve the internal token route, for callers that send this key in `X-Internal-Api-Key`
   * (the local stand-in for IAM). @default - the route is not served (404)
   */
  readonly internalApiKey?: string;
  /** The token route's LWA client (see {@link localLwaClients}). @default lwa */
  readonly tokenRouteLwa?: LwaClient;
  /** Origins whose browsers may call the API (CORS, as API Gateway answers). @default LOCAL_CORS_ALLOWED_ORIGINS */
  readonly corsAllowedOrigins?: readonly string[];
}

export interface LocalApi {
  readonly url: string;
  /** The local issuer, when it is the one trusted. */
  readonly localIssuer: LocalIssuer | undefined;
  readonly syncs: InProcessSyncStarter;
  /** Whether the internal token route is served (an internal API key was given). */
  readonly tokenRoute: boolean;
  close(): Promise<void>;
}

/** Starts the API server (see the file's header). */
export async function startLocalApi(options: LocalApiOptions): Promise<LocalApi> {
  const issuer = options.issuer ? undefined : localIssuer(options.identityDir);
  const db = new PgDatabase({ connection: options.databaseUrl, maxConnections: 10 });
  const syncDb = new PgDatabase({ connection: options.databaseUrl, maxConnections: 4 });
  const syncs = inProcessSyncStarter(
    (request) =>
      runAccountSync(
        {
          db: syncDb,
          ads: options.ads,
          lwa: options.lwa,
          cipher: options.cipher,
          logger: options.logger,
          metrics: new MetricTotals(),
          remainingTimeMs: () => 60_000,
        },
        request,
      ),
    options.logger,
  );
  const verifier: TokenVerifier = issuer
    ? {
        // Built once the port is known (the JWKS URL names it).
        verify: (token) => createdVerifier!.verify(token),
      }
    : createTokenVerifier({
        issuer: options.issuer!.issuer,
        audience: options.issuer!.audience,
        jwksUrl: options.issuer!.jwksUrl,
      });
  let createdVerifier: TokenVerifier | undefined;
  const handle = createAccountsApi({
    store: new AccountsStore({ db, assumeAuthenticatedRole: true }),
    verifier,
    lwa: options.lwa,
    cipher: () => Promise.resolve(options.cipher),
    syncs,
    logger: options.logger,
    settings: {
      connectRedirectUris: options.connectRedirectUris ?? LOCAL_CONNECT_REDIRECT_URIS,
      consentUrl: options.consentUrl,
    },
  });
  // The internal token route, as the jobs' code would run it (node-postgres here), its LWA
  // calls on the shared budget; its own logger line per request never carries the token.
  const tokenDb = options.internalApiKey
    ? new PgDatabase({ connection: options.databaseUrl, maxConnections: 4 })
    : undefined;
  const handleToken =
    tokenDb &&
    createTokenRoute({
      db: tokenDb,
      lwa: options.tokenRouteLwa ?? options.lwa,
      cipher: options.cipher,
      logger: options.logger,
      authorize: sharedSecretCaller(options.internalApiKey!),
    });
  // With the local issuer, a browser app signs in through it as through any OIDC provider.
  const signIn =
    issuer &&
    localSignIn({
      issuer,
      baseUrl: () => base,
      suggestions: async () =>
        (
          await db.query<{ sub: string; n: string }>(
            'SELECT user_id::text AS sub, count(*) AS n FROM user_accounts GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5',
          )
        ).rows.map((r) => ({ sub: r.sub, label: `a demo user with ${r.n} accounts` })),
    });
  let base = '';
  const corsOrigins = options.corsAllowedOrigins ?? LOCAL_CORS_ALLOWED_ORIGINS;
  const server: Server = createServer((req, res) => {
    // Nothing a client does may end the process: an aborted upload, a reset socket, a request
    // line Node cannot parse (clientError below), a path that is not a URL. Each is answered
    // when the socket is still there, else dropped.
    req.on('error', () => undefined);
    res.on('error', () => undefined);
    void (async () => {
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://local');
      } catch {
        send(res, problemResult(problems.badRequest('The request target is not valid.')));
        return;
      }
      const allowed = cors(req, corsOrigins);
      for (const [name, value] of Object.entries(allowed.headers)) res.setHeader(name, value);
      if (allowed.preflight) return void res.writeHead(204, LOCAL_RESPONSE_HEADERS).end();
      if (issuer && req.method === 'GET' && url.pathname === '/.well-known/jwks.json') {
        send(res, {
          statusCode: 200,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(issuer.jwks),
        });
        return;
      }
      const body = await readBody(req);
      if (body.status === 'aborted') return;
      if (signIn && body.status === 'read' && signIn.handle(req, res, url, body.text)) return;
      const route = handleToken && url.pathname.replace(/\/+$/, '') === TOKEN_ROUTE_PATH ? handleToken : handle;
      const result =
        body.status === 'too large'
          ? problemResult(problems.tooLarge())
          : await route(toEvent(req, url, body.text)).catch(() => problemResult(problems.internal()));
      send(res, result);
    })().catch((error: Error) => {
      options.logger.error('Local API request failed', { error: error?.name ?? 'unknown' });
      send(res, problemResult(problems.internal()));
    });
  });
  server.on('clientError', (_error, socket) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? DEFAULT_API_PORT, '127.0.0.1', () => resolve());
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  if (issuer)
    createdVerifier = createTokenVerifier({
      issuer: issuer.issuer,
      audience: issuer.audience,
      jwksUrl: `${base}/.well-known/jwks.json`,
      jwks: issuer.jwks,
    });
  return {
    url: base,
    localIssuer: issuer,
    syncs,
    tokenRoute: handleToken !== undefined,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await syncs.idle();
      await db.close();
      await syncDb.close();
      await tokenDb?.close();
    },
  };
}

/** Headers every answer of the local server carries, as API Gateway's do (lib/accounts-api.ts). */
export const LOCAL_RESPONSE_HEADERS: Readonly<Record<string, string>> = { 'x-content-type-options': 'nosniff' };

/** Writes the result unless the client is gone (then nothing: the socket is closed). */
function send(res: ServerResponse, result: { statusCode: number; headers: Record<string, string>; body: string }) {
  if (res.headersSent || res.destroyed || res.writableEnded) return;
  res.writeHead(result.statusCode, { ...LOCAL_RESPONSE_HEADERS, ...result.headers }).end(result.body);
}

/** A request's body as read: its text, or why there is none to pass on. */
export type ReadBody =
  | { readonly status: 'read'; readonly text: string }
  /** Larger than the API accepts: answered 413 at once. */
  | { readonly status: 'too large' }
  /** The client went away before sending all of it: nothing to answer. */
  | { readonly status: 'aborted' };

/** Reads the body; never rejects (an aborted upload or a socket error is 'aborted'). */
export function readBody(req: IncomingMessage): Promise<ReadBody> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES + 1) chunks.push(chunk);
    });
    req.on('end', () =>
      resolve(
        size > MAX_BODY_BYTES
          ? { status: 'too large' }
          : { status: 'read', text: Buffer.concat(chunks).toString('utf8') },
      ),
    );
    req.on('error', () => resolve({ status: 'aborted' }));
    req.on('close', () => {
      if (!req.complete) resolve({ status: 'aborted' });
    });
  });
}

/** An incoming request as API Gateway (HTTP API, payload 2.0) would pass it to the Lambda. */
function toEvent(req: IncomingMessage, url: URL, body: string): ApiRequestEvent {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers))
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(',') : value;
  return {
    rawPath: url.pathname,
    rawQueryString: url.search.replace(/^\?/, ''),
    headers,
    body: body.length ? body : undefined,
    isBase64Encoded: false,
    requestContext: { http: { method: req.method ?? 'GET', path: url.pathname } },
  };
}

/**
 * The LWA clients of `npm run api`, each with its limiters on the one budget in the database
 * (shared with `npm run job` on the same one), as deployed: the accounts API's calls (connects)
 * and the token route's take the interactive lane the jobs leave free, and beyond it at most
 * the API's share (lambda/shared/amazon/api-share.ts). The token route runs as the jobs do and
 * records its 429s in rate_limit_tracking like them; the accounts API does not (its login may
 * not write there).
 */
export function localLwaClients(
  config: Pick<LocalJobConfig, 'lwaClientId' | 'lwaClientSecret' | 'lwaTokenUrl' | 'amazonLimits'>,
  budgetDb: Database,
): { readonly api: LwaClient; readonly tokenRoute: LwaClient } {
  const client = (recordThrottles: boolean) =>
    new LwaClient({
      clientId: config.lwaClientId,
      clientSecret: config.lwaClientSecret,
      tokenUrl: config.lwaTokenUrl,
      limiters: budgetLimiters(budgetDb, config.amazonLimits, { interactive: true, recordThrottles }),
    });
  return { api: client(false), tokenRoute: client(true) };
}

const stderrLogger: AppLogger = {
  info: (message, attributes) => console.error(JSON.stringify({ level: 'INFO', message, ...attributes })),
  warn: (message, attributes) => console.error(JSON.stringify({ level: 'WARN', message, ...attributes })),
  error: (message, attributes) => console.error(JSON.stringify({ level: 'ERROR', message, ...attributes })),
};

async function main() {
  const env = process.env;
  const config = readLocalJobConfig(env);
  const issuerName = env[LOCAL_API_ENV.jwtIssuer]?.trim();
  const audience = env[LOCAL_API_ENV.jwtAudience]?.trim();
  if (issuerName && !audience)
    throw new Error(`${LOCAL_API_ENV.jwtAudience} is required with ${LOCAL_API_ENV.jwtIssuer}`);
  const port = env[LOCAL_API_ENV.port] ? Number(env[LOCAL_API_ENV.port]) : DEFAULT_API_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${LOCAL_API_ENV.port} is not a port`);
  // Amazon's rates are one budget in the database, shared with `npm run job` on the same one;
  // this server's calls (connects, the token route) take the interactive lane the jobs leave
  // free, and beyond it at most the API's share (lambda/shared/amazon/api-share.ts).
  const budgetDb = new PgDatabase({ connection: config.databaseUrl, maxConnections: 2 });
  const lwaClients = localLwaClients(config, budgetDb);
  const internalApiKey = env[INTERNAL_API_KEY_ENV]?.trim() || undefined;
  // The example web app on its own origin (WEB_PORT, 3000 by default; `off` serves none).
  let apiUrl = '';
  const webPort = env[WEB_ENV.port]?.trim() || String(DEFAULT_WEB_PORT);
  const webConfig = (origin: string) => ({
    ...localWebConfig(apiUrl)(origin),
    ...(issuerName
      ? {
          signIn: {
            discoveryUrl:
              env[WEB_ENV.oidcDiscoveryUrl]?.trim() ||
              `${issuerName.replace(/\/+$/, '')}/.well-known/openid-configuration`,
            clientId: env[WEB_ENV.oidcClientId]?.trim() || 'accounts-web-example',
            redirectUri: `${origin}/signed-in`,
          },
        }
      : {}),
  });
  let web: WebExample | undefined;
  if (webPort !== 'off') {
    if (!/^\d{1,5}$/.test(webPort)) throw new Error(`${WEB_ENV.port} is not a port (or off)`);
    web = await startWebExample({ port: Number(webPort), config: webConfig }).catch(() =>
      startWebExample({ port: 0, config: webConfig }),
    );
  }
  const webOrigins = web ? [web.url] : [];
  const api = await startLocalApi({
    corsAllowedOrigins: env[WEB_ENV.corsAllowedOrigins]?.trim()
      ? parseOrigins(env[WEB_ENV.corsAllowedOrigins]!)
      : [...LOCAL_CORS_ALLOWED_ORIGINS, ...webOrigins],
    databaseUrl: config.databaseUrl,
    lwa: lwaClients.api,
    tokenRouteLwa: lwaClients.tokenRoute,
    ads: new AdsClient({ clientId: config.lwaClientId, baseUrl: config.adsApiUrl }),
    cipher: new TokenCipher(config.tokenKeys),
    issuer: issuerName
      ? { issuer: issuerName, audience: audience!.split(','), jwksUrl: env[LOCAL_API_ENV.jwksUrl]?.trim() || undefined }
      : undefined,
    port,
    logger: stderrLogger,
    internalApiKey,
    connectRedirectUris: env[LOCAL_API_ENV.connectRedirectUris]?.trim()
      ? parseRedirectUris(env[LOCAL_API_ENV.connectRedirectUris]!)
      : [...LOCAL_CONNECT_REDIRECT_URIS, ...webOrigins.map((o) => `${o}/amazon/callback`)],
    consentUrl: env[LOCAL_API_ENV.lwaAuthorizeUrl]?.trim() || undefined,
  });
  apiUrl = api.url;
  process.stdout.write(`Accounts API on ${api.url}\n`);
  process.stdout.write(
    api.tokenRoute
      ? `Internal token route: ${TOKEN_ROUTE} on ${api.url} (IAM cannot be checked locally: callers send ${INTERNAL_API_KEY_ENV} in X-Internal-Api-Key; loopback only)\n`
      : `Internal token route: not served (set ${INTERNAL_API_KEY_ENV} to serve it with that key in X-Internal-Api-Key instead of IAM)\n`,
  );
  process.stdout.write(
    api.localIssuer
      ? `Sign-in: the local issuer (${api.localIssuer.issuer}); tokens: npm run token -- --sub <user uuid>\n`
      : `Sign-in: ${issuerName}\n`,
  );
  process.stdout.write(
    web
      ? `Example web app on ${web.url} (its origin allowed by CORS and as a connect redirect URI; docs/web-example.md)\n`
      : `Example web app: not served (${WEB_ENV.port}=off)\n`,
  );
  // Connection events: the outbox published every 5 s to .local/events.jsonl, each event printed.
  const events = watchLocalEvents({
    databaseUrl: config.databaseUrl,
    file: LOCAL_EVENTS_FILE,
    intervalMs: 5_000,
    print: (line) => process.stdout.write(`${line}\n`),
  });
  const stop = () =>
    void Promise.all([api.close(), budgetDb.close(), events.stop(), web?.close()]).then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) {
  main().catch((error: Error) => {
    console.error(`npm run api failed: ${error.message}`);
    process.exit(1);
  });
}
