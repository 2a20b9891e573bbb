import { timingSafeEqual } from 'node:crypto';
import type { AmazonFailure } from '../shared/amazon/failure';
import { AMAZON_REGIONS as REGIONS, type AmazonRegion } from '../shared/amazon/regions';
import { sleep as defaultSleep } from '../shared/backoff';
import { isDatabaseBusy, type Database } from '../shared/db';
import type { AppLogger } from '../shared/logger';
import type { TokenCipher } from '../shared/token-crypto';
import {
  ApiProblem,
  ApiRequestEvent,
  ApiResult,
  header,
  jsonBody,
  jsonResult,
  limitText,
  problemResult,
  problems,
} from '../shared/http';
import type { TokenRefresher } from '../token-refresh/core';
import { REFRESH_OUTCOME_DEFAULTS } from '../token-refresh/outcome';
import { takeAccessToken, UnavailableReason } from '../token-refresh/on-demand';
import { ON_DEMAND_FRESH_SECONDS } from '../token-refresh/window';
import { TOKEN_ROUTE, TOKEN_ROUTE_PATH } from './route';

/**
 * Fresh access tokens on demand for the product's servers: `POST /internal/v1/access-tokens`
 * with `{"userId", "region"}` answers `{"accessToken", "expiresAt", "region", "refreshed"}`.
 *
 * - A stored token with more than five minutes left is returned as it is.
 * - Otherwise it is refreshed at once under the connection's refresh lease, the lease the
 *   scheduled token refresh and the account sync take too, and only when the connection is not
 *   backing off after a failure (`next_refresh_attempt_at`, as the job's claim): of concurrent
 *   requests (and the jobs) one refreshes, the others poll the row until the winner's
 *   write-back (or until the wait deadline, well under API Gateway's 30 s). A holder that died
 *   leaves a lease that expires; a waiter then takes it over. The one single-flight path of
 *   the route and the account sync: lambda/token-refresh/on-demand.ts.
 * - The route serves what it has: when the refresh fails (other than a revoked grant), is
 *   backing off, or cannot be waited for, a stored token still valid for at least a minute is
 *   returned (`refreshed: false`); only without one is the answer 502/503.
 * - Every request that finds the connection records its use (`last_used_at`), so the
 *   proactive refresh's window keeps the connection fresh from then on.
 * - The refresh draws from the shared Amazon rate budget (the LWA client's limiters); what a
 *   failure does to the connection is the token refresh's own policy
 *   (lambda/token-refresh/outcome.ts: invalid_grant turns refresh off and flags the region's
 *   accounts, 5xx, timeouts, malformed answers and 429s only back off), written by its own
 *   `saveResults`.
 *
 * In AWS the route is authorised by IAM at API Gateway (the caller signs with SigV4); the
 * handler refuses an event without an IAM identity as well. Responses are never logged: a
 * request's log line has its route, status, user, region and whether a refresh happened.
 */

export interface TokenRouteSettings {
  /** A stored token with more than this left is returned as it is. @default 300 */
  readonly minRemainingSeconds?: number;
  /**
   * The refresh lease this route takes: longer than the function's timeout (25 s), so a
   * holder's lease outlasts it, short enough that a dead holder's waiters take over soon.
   * @default 30
   */
  readonly leaseSeconds?: number;
  /** How long a request waits for another's refresh: under API Gateway's 30 s. @default 20000 */
  readonly waitDeadlineMs?: number;
  /** Between two reads of a connection another request is refreshing. @default 250 */
  readonly pollIntervalMs?: number;
  /**
   * A stored token with at least this left is returned when no new one can be had (the refresh
   * failed, is backing off, or another holder's write-back did not come in time). @default 60
   */
  readonly usableSeconds?: number;
  /** As the token refresh's (backoff after a failure). @default 60 */
  readonly retryBaseSeconds?: number;
  /** @default 3600 */
  readonly retryMaxSeconds?: number;
  /** As the token refresh's: Amazon's definite refusals in a row after which refresh is turned off. @default 5 */
  readonly maxConsecutiveRefusals?: number;
}

/** How the caller was authenticated, checked before anything else. */
export type CallerCheck = (event: ApiRequestEvent) => { readonly ok: true; readonly caller: string } | { ok: false };

export interface TokenRouteDeps {
  /** The database as the jobs' login. */
  readonly db: Database;
  /** The LWA client, drawing from the shared rate budget. */
  readonly lwa: TokenRefresher;
  readonly cipher: TokenCipher;
  readonly logger: AppLogger;
  /** @default iamCaller (API Gateway's IAM authorisation, in the event's request context) */
  readonly authorize?: CallerCheck;
  readonly settings?: TokenRouteSettings;
  /** @default Date.now */
  readonly now?: () => number;
  /** @default backoff's sleep */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Math.random */
  readonly random?: () => number;
}

const DEFAULTS = {
  minRemainingSeconds: ON_DEMAND_FRESH_SECONDS,
  leaseSeconds: 30,
  waitDeadlineMs: 20_000,
  pollIntervalMs: 250,
  usableSeconds: 60,
  ...REFRESH_OUTCOME_DEFAULTS,
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The IAM identity API Gateway puts in the event of a route with IAM authorisation. */
interface IamContext {
  readonly authorizer?: { readonly iam?: { readonly userArn?: string; readonly accountId?: string } };
}

/** The caller as API Gateway's IAM authorisation identified it; refused without one. */
export const iamCaller: CallerCheck = (event) => {
  const iam = (event.requestContext as IamContext).authorizer?.iam;
  return iam?.userArn ? { ok: true, caller: iam.userArn } : { ok: false };
};

/**
 * For `npm run api` only, where no IAM is in front: the caller must send this shared secret in
 * `X-Internal-Api-Key` (compared in constant time).
 */
export function sharedSecretCaller(secret: string): CallerCheck {
  const expected = Buffer.from(secret, 'utf8');
  return (event) => {
    const given = Buffer.from(header(event, 'x-internal-api-key') ?? '', 'utf8');
    const ok = given.length === expected.length && timingSafeEqual(given, expected);
    return ok ? { ok: true, caller: 'local shared secret' } : { ok: false };
  };
}

/** The answer of one request, before it becomes a response. */
interface Served {
  readonly accessToken: string;
  readonly expiresAt: Date;
  readonly region: AmazonRegion;
  readonly refreshed: boolean;
}

export function createTokenRoute(deps: TokenRouteDeps): (event: ApiRequestEvent) => Promise<ApiResult> {
  const s = { ...DEFAULTS, ...deps.settings };
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? defaultSleep;
  const random = deps.random ?? Math.random;
  const authorize = deps.authorize ?? iamCaller;

  return async function handle(event: ApiRequestEvent): Promise<ApiResult> {
    const started = now();
    const method = event.requestContext.http.method.toUpperCase();
    const path = event.rawPath.replace(/\/+$/, '') || '/';
    const line: Record<string, unknown> = { route: TOKEN_ROUTE };
    let status = 500;
    try {
      if (path !== TOKEN_ROUTE_PATH) throw problems.notFound();
      if (method !== 'POST') throw problems.methodNotAllowed();
      const caller = authorize(event);
      if (!caller.ok) throw forbidden();
      line.caller = caller.caller;
      const { userId, region } = readRequest(event);
      line.userId = userId;
      line.region = region;
      const served = await serve(userId, region);
      line.refreshed = served.refreshed;
      status = 200;
      return jsonResult(200, {
        accessToken: served.accessToken,
        expiresAt: served.expiresAt.toISOString(),
        region: served.region,
        refreshed: served.refreshed,
      });
    } catch (error) {
      // Busy, not broken (a statement timeout, too many connections, a lock or serialization
      // conflict, still resuming): 503 with Retry-After, as the accounts API answers.
      const problem =
        error instanceof ApiProblem ? error : isDatabaseBusy(error) ? problems.databaseBusy() : problems.internal();
      status = problem.status;
      if (!(error instanceof ApiProblem))
        deps.logger.error('Token request failed', { ...line, error: (error as Error)?.name ?? 'unknown' });
      return problemResult(problem, event.requestContext.requestId);
    } finally {
      // Never the body of the request's answer: the token stays out of every log.
      deps.logger.info('request', { ...line, status, durationMs: now() - started });
    }
  };

  /** The token to answer with: stored, refreshed here, or refreshed by whoever held the lease. */
  async function serve(userId: string, region: AmazonRegion): Promise<Served> {
    const taken = await takeAccessToken(
      { db: deps.db, lwa: deps.lwa, cipher: deps.cipher, logger: deps.logger, now, sleep, random },
      s,
      {
        userId,
        region,
        recordUse: true,
        deadline: now() + s.waitDeadlineMs,
      },
    );
    switch (taken.kind) {
      case 'token':
        return {
          accessToken: taken.accessToken,
          expiresAt: taken.expiresAt,
          region: taken.region,
          refreshed: taken.by !== 'stored',
        };
      case 'not-found':
        throw problems.notFound(`No Amazon connection in ${region} for this user.`);
      case 'reauth':
        throw reauthRequired(taken.region);
      case 'unreadable':
        throw problems.internal();
      case 'unavailable':
        throw unavailableProblem(taken.reason, taken.retryAfterSeconds, taken.failure, region);
    }
  }
}

/** The answer when no token could be had. */
function unavailableProblem(
  reason: UnavailableReason,
  retryAfterSeconds: number,
  failure: AmazonFailure | undefined,
  region: AmazonRegion,
): ApiProblem {
  switch (reason) {
    case 'backing-off':
      return unavailable('The refresh of this connection failed recently; try again later.', retryAfterSeconds);
    case 'taking-over':
      return unavailable('Try again shortly.', 2);
    case 'held':
      return unavailable('The connection is being refreshed by another run; try again shortly.', 2);
    case 'budget':
      return unavailable("Amazon's request budget for this region is used up; try again shortly.", 2);
    case 'failed':
      return problemFor(failure!, region);
  }
}

function problemFor(f: AmazonFailure, region: AmazonRegion): ApiProblem {
  switch (f.kind) {
    case 'permanent':
      return f.code === 'invalid_grant'
        ? reauthRequired(region)
        : problems.badGateway('Login with Amazon refused the refresh; the operators have been told.');
    case 'rate_limited':
      return unavailable('Login with Amazon is limiting requests; try again later.', f.retryAfterSeconds);
    case 'transient':
      return problems.badGateway('Login with Amazon did not answer; try again.');
    case 'malformed':
      return problems.badGateway('Login with Amazon answered with something that is not a token; try again.');
  }
}

function readRequest(event: ApiRequestEvent): { userId: string; region: AmazonRegion } {
  const body = jsonBody(event);
  const unknown = Object.keys(body).filter((k) => k !== 'userId' && k !== 'region');
  if (unknown.length) throw problems.badRequest(`Unknown field "${limitText(unknown[0])}".`);
  const { userId, region } = body;
  if (typeof userId !== 'string' || !UUID.test(userId)) throw problems.badRequest('userId must be a UUID.');
  if (typeof region !== 'string' || !(REGIONS as readonly string[]).includes(region))
    throw problems.badRequest(`region must be one of ${REGIONS.join(', ')}.`);
  return { userId: userId.toLowerCase(), region: region as AmazonRegion };
}

function forbidden(): ApiProblem {
  return new ApiProblem(403, 'forbidden', 'Forbidden', 'This route is for the product’s servers (IAM) only.');
}

function reauthRequired(region: AmazonRegion): ApiProblem {
  return new ApiProblem(
    409,
    'reauth-required',
    'Re-authorisation required',
    `The Amazon connection in ${region} must be authorised again by the user (or its refresh was switched off).`,
  );
}

function unavailable(detail: string, retryAfterSeconds: number): ApiProblem {
  const seconds = Math.max(1, Math.ceil(retryAfterSeconds));
  return new ApiProblem(
    503,
    'unavailable',
    'Service unavailable',
    detail,
    { retryAfterSeconds: seconds },
    { 'retry-after': String(seconds) },
  );
}
