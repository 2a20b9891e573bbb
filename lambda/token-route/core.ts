import { randomUUID, timingSafeEqual } from 'node:crypto';
import { AmazonFailure, classifyAmazonError } from '../shared/amazon/failure';
import { AMAZON_REGIONS as REGIONS, type AmazonRegion } from '../shared/amazon/regions';
import { DeadlineExceededError, sleep as defaultSleep } from '../shared/backoff';
import type { Database } from '../shared/db/port';
import { describeError } from '../shared/jobs/runtime';
import type { AppLogger } from '../shared/logger';
import { oauthTokenBinding, TokenCipher } from '../shared/token-crypto';
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
import {
  needsReauthorisation,
  REFRESH_OUTCOME_DEFAULTS,
  refreshFailureOutcome,
  unreadableTokenOutcome,
} from '../token-refresh/outcome';
import { saveResults, TokenResult } from '../token-refresh/store';
import { TOKEN_ROUTE, TOKEN_ROUTE_PATH } from './route';
import { ConnectionState, readConnection, useConnection } from './store';

/**
 * Fresh access tokens on demand for the product's servers: `POST /internal/v1/access-tokens`
 * with `{"userId", "region"}` answers `{"accessToken", "expiresAt", "region", "refreshed"}`.
 *
 * - A stored token with more than five minutes left is returned as it is.
 * - Otherwise it is refreshed at once under the connection's refresh lease, the lease the
 *   scheduled token refresh takes too, and only when the connection is not backing off after a
 *   failure (`next_refresh_attempt_at`, as the job's claim): of concurrent requests (and the
 *   job) one refreshes, the others poll the row until the winner's write-back (or until the
 *   wait deadline, well under API Gateway's 30 s). A holder that died leaves a lease that
 *   expires; a waiter then takes it over.
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
  minRemainingSeconds: 300,
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
      const problem = error instanceof ApiProblem ? error : problems.internal();
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
    const owner = randomUUID();
    const deadline = now() + s.waitDeadlineMs;
    const options = { userId, region, owner, minRemainingSeconds: s.minRemainingSeconds, leaseSeconds: s.leaseSeconds };
    const found = (state: ConnectionState | undefined): Read => {
      if (!state) throw problems.notFound(`No Amazon connection in ${region} for this user.`);
      return { state, at: now() };
    };
    let read = found(await useConnection(deps.db, options));
    let waited = false;
    for (;;) {
      const { state } = read;
      if (!state.refreshEnabled) throw reauthRequired(region);
      if (state.fresh) return stored(state, waited);
      if (state.claimed) return refresh(read, deadline, owner);
      if (state.retryInSeconds !== null && state.lease !== 'held') {
        // Backing off after a failure (this route's, another request's or the job's): nobody
        // calls Amazon for it until then. Serve what is stored while it is usable.
        return storedOr(read, () =>
          unavailable('The refresh of this connection failed recently; try again later.', state.retryInSeconds!),
        );
      }
      if (state.lease !== 'held') {
        // The holder died (its lease ran out) or let go without a result: take over.
        if (now() > deadline) return storedOr(read, () => unavailable('Try again shortly.', 2));
        read = found(await useConnection(deps.db, options));
        continue;
      }
      // Another request or the scheduled refresh is refreshing it: wait for its write-back.
      if (now() + s.pollIntervalMs > deadline)
        return storedOr(read, () =>
          unavailable('The connection is being refreshed by another run; try again shortly.', 2),
        );
      await sleep(s.pollIntervalMs);
      waited = true;
      read = found(await readConnection(deps.db, options));
    }
  }

  /** The stored token while it has at least `usableSeconds` left (counted from its read), else `otherwise`'s problem. */
  async function storedOr(read: Read, otherwise: () => ApiProblem): Promise<Served> {
    const left = read.state.remainingSeconds - (now() - read.at) / 1000;
    if (left >= s.usableSeconds) return stored(read.state, false);
    throw otherwise();
  }

  async function stored(state: ConnectionState, refreshed: boolean): Promise<Served> {
    let accessToken: string;
    try {
      accessToken = await deps.cipher.decrypt(state.storedAccessToken, oauthTokenBinding(state, 'access_token'));
    } catch (error) {
      deps.logger.error('Stored access token is unreadable', {
        tokenId: state.id,
        userId: state.userId,
        error: describeError(error),
      });
      throw problems.internal();
    }
    return { accessToken, expiresAt: state.expiresAt, region: state.region, refreshed };
  }

  /** Refreshes under this request's lease and writes the result back (releasing the lease). */
  async function refresh(read: Read, deadline: number, owner: string): Promise<Served> {
    const token = read.state.claimed!;
    const clock = () => ({ now: new Date(now()), random });
    const write = async (result: TokenResult) => {
      const { rejected } = await saveResults(deps.db, owner, [result]);
      for (const r of rejected)
        deps.logger.error('Token result refused by the database; its lease was given back', {
          tokenId: r.token.id,
          userId: r.token.userId,
          error: r.error,
        });
    };
    let refreshToken: string;
    try {
      refreshToken = await deps.cipher.decrypt(token.storedRefreshToken, oauthTokenBinding(token, 'refresh_token'));
    } catch (error) {
      await write(unreadableTokenOutcome(token, describeError(error), s, clock()));
      throw reauthRequired(token.region);
    }
    const requestedAt = now();
    try {
      const tokens = await deps.lwa.refresh({
        itemId: token.id,
        region: token.region,
        refreshToken,
        maxWaitMs: Math.max(0, deadline - now()),
      });
      const expiresAt = new Date(requestedAt + tokens.expiresInSeconds * 1000);
      await write({
        kind: 'success',
        result: {
          token,
          accessToken: deps.cipher.encrypt(tokens.accessToken, oauthTokenBinding(token, 'access_token')),
          refreshToken:
            tokens.refreshToken !== undefined || !deps.cipher.isCurrent(token.storedRefreshToken)
              ? deps.cipher.encrypt(tokens.refreshToken ?? refreshToken, oauthTokenBinding(token, 'refresh_token'))
              : token.storedRefreshToken,
          expiresAt,
        },
      });
      return { accessToken: tokens.accessToken, expiresAt, region: token.region, refreshed: true };
    } catch (error) {
      if (error instanceof ApiProblem) throw error;
      if (error instanceof DeadlineExceededError) {
        // The shared budget (a pause after a 429, or the rate) would have made us wait too long.
        await write({ kind: 'released', token });
        return storedOr(read, () =>
          unavailable("Amazon's request budget for this region is used up; try again shortly.", 2),
        );
      }
      const f = classifyAmazonError(error);
      const outcome = refreshFailureOutcome(token, f, s, clock());
      if (f.kind === 'permanent' && f.code !== 'invalid_grant')
        deps.logger.error("Login with Amazon refused the application's request", {
          tokenId: token.id,
          amazonError: f.code,
        });
      else if (f.kind !== 'permanent')
        deps.logger.warn('Token refresh on demand failed', {
          tokenId: token.id,
          region: token.region,
          error: outcome.kind === 'failure' ? outcome.result.error : f.kind,
        });
      await write(outcome);
      if (needsReauthorisation(outcome)) throw reauthRequired(token.region);
      return storedOr(read, () => problemFor(f, token.region));
    }
  }
}

/** A connection as read, and when (this function's clock), to count down what its token has left. */
interface Read {
  readonly state: ConnectionState;
  readonly at: number;
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
