import { randomUUID, timingSafeEqual } from 'node:crypto';
import { AmazonFailure, classifyAmazonError } from '../shared/amazon/failure';
import type { AmazonRegion } from '../shared/amazon/regions';
import { DeadlineExceededError, sleep as defaultSleep } from '../shared/backoff';
import type { Database } from '../shared/db/port';
import { describeError, nextRetryAt } from '../shared/jobs/runtime';
import type { AppLogger } from '../shared/logger';
import { isEncrypted, TokenCipher } from '../shared/token-crypto';
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
} from '../accounts-api/http';
import type { TokenRefresher } from '../token-refresh/core';
import { saveResults, TokenResult } from '../token-refresh/store';
import { TOKEN_ROUTE, TOKEN_ROUTE_PATH } from './route';
import { ConnectionState, readConnection, useConnection } from './store';

/**
 * Fresh access tokens on demand for the product's servers: `POST /internal/v1/access-tokens`
 * with `{"userId", "region"}` answers `{"accessToken", "expiresAt", "region", "refreshed"}`.
 *
 * - A stored token with more than five minutes left is returned as it is.
 * - Otherwise it is refreshed at once under the connection's refresh lease, the lease the
 *   scheduled token refresh takes too: of concurrent requests (and the job) one refreshes,
 *   the others poll the row until the winner's write-back (or until the wait deadline, well
 *   under API Gateway's 30 s: 503 with Retry-After). A holder that died leaves a lease that
 *   expires; a waiter then takes it over.
 * - Every request that finds the connection records its use (`last_used_at`), so the
 *   proactive refresh's window keeps the connection fresh from then on.
 * - The refresh draws from the shared Amazon rate budget (the LWA client's limiters) and its
 *   result is written by the token refresh's own `saveResults`: invalid_grant turns refresh off
 *   and flags the region's accounts for re-authorisation exactly as the job does.
 *
 * In AWS the route is authorised by IAM at API Gateway (the caller signs with SigV4); the
 * handler refuses an event without an IAM identity as well. Responses are never logged: a
 * request's log line has its route, status, user, region and whether a refresh happened.
 */

export interface TokenVendingSettings {
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
  /** As the token refresh's (backoff after a failure). @default 60 */
  readonly retryBaseSeconds?: number;
  /** @default 3600 */
  readonly retryMaxSeconds?: number;
  /** As the token refresh's: failures in a row after which refresh is turned off. @default 5 */
  readonly maxConsecutiveFailures?: number;
}

/** How the caller was authenticated, checked before anything else. */
export type CallerCheck = (event: ApiRequestEvent) => { readonly ok: true; readonly caller: string } | { ok: false };

export interface TokenVendingDeps {
  /** The database as the jobs' login. */
  readonly db: Database;
  /** The LWA client, drawing from the shared rate budget. */
  readonly lwa: TokenRefresher;
  readonly cipher: TokenCipher;
  readonly logger: AppLogger;
  /** @default iamCaller (API Gateway's IAM authorisation, in the event's request context) */
  readonly authorize?: CallerCheck;
  readonly settings?: TokenVendingSettings;
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
  retryBaseSeconds: 60,
  retryMaxSeconds: 3600,
  maxConsecutiveFailures: 5,
};

const REGIONS: readonly AmazonRegion[] = ['NA', 'EU', 'FE'];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The token refresh's message, so the job and the route record a revoked grant alike. */
const REVOKED = 'invalid_grant: the refresh token was revoked or has expired; the user must reconnect Amazon';

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

export function createTokenVending(deps: TokenVendingDeps): (event: ApiRequestEvent) => Promise<ApiResult> {
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
    let state = await useConnection(deps.db, options);
    if (!state) throw problems.notFound(`No Amazon connection in ${region} for this user.`);
    let waited = false;
    for (;;) {
      if (!state.refreshEnabled) throw reauthRequired(region);
      if (state.fresh) return stored(state, waited);
      if (state.claimed) return refresh(state, deadline, owner);
      if (state.lease === 'expired' || (state.lease === 'free' && state.retryInSeconds === null)) {
        // The holder died (its lease ran out) or let go without a result: take over.
        state = await useConnection(deps.db, options);
        if (!state) throw problems.notFound(`No Amazon connection in ${region} for this user.`);
        continue;
      }
      if (state.lease === 'free')
        // The holder's refresh failed and recorded a backoff: report it instead of calling again.
        throw unavailable('The refresh of this connection just failed; try again later.', state.retryInSeconds!);
      // Another request or the scheduled refresh is refreshing it: wait for its write-back.
      if (now() + s.pollIntervalMs > deadline)
        throw unavailable('The connection is being refreshed by another run; try again shortly.', 2);
      await sleep(s.pollIntervalMs);
      waited = true;
      state = await readConnection(deps.db, options);
      if (!state) throw problems.notFound(`No Amazon connection in ${region} for this user.`);
    }
  }

  function stored(state: ConnectionState, refreshed: boolean): Served {
    let accessToken: string;
    try {
      accessToken = deps.cipher.decrypt(state.storedAccessToken);
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
  async function refresh(state: ConnectionState, deadline: number, owner: string): Promise<Served> {
    const token = state.claimed!;
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
      refreshToken = deps.cipher.decrypt(token.storedRefreshToken);
    } catch (error) {
      const reason = `Stored refresh token is unreadable (${describeError(error)}); the user must reconnect Amazon`;
      await write(failure(token, { error: reason, countsAsFailure: true, disable: true, reauth: reason }));
      throw reauthRequired(state.region);
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
          accessToken: deps.cipher.encrypt(tokens.accessToken),
          refreshToken:
            tokens.refreshToken !== undefined || !isEncrypted(token.storedRefreshToken)
              ? deps.cipher.encrypt(tokens.refreshToken ?? refreshToken)
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
        throw unavailable("Amazon's request budget for this region is used up; try again shortly.", 2);
      }
      const f = classifyAmazonError(error);
      await write(failed(token, f));
      throw problemFor(f, token.region);
    }
  }

  /** The write-back of a failed refresh, as the token refresh job records it. */
  function failed(token: NonNullable<ConnectionState['claimed']>, f: AmazonFailure): TokenResult {
    const failures = token.refreshFailureCount + 1;
    switch (f.kind) {
      case 'permanent': {
        const revoked = f.code === 'invalid_grant';
        const disable = revoked || failures >= s.maxConsecutiveFailures;
        const message = revoked ? REVOKED : `${f.code}: Login with Amazon refused the refresh`;
        if (!revoked)
          deps.logger.error("Login with Amazon refused the application's request", {
            tokenId: token.id,
            amazonError: f.code,
          });
        return failure(token, {
          error: message,
          countsAsFailure: true,
          disable,
          reauth: disable ? message : undefined,
        });
      }
      case 'rate_limited':
        return failure(
          token,
          {
            error: `rate_limited: Login with Amazon answered 429, retry after ${f.retryAfterSeconds} s`,
            countsAsFailure: false,
            disable: false,
          },
          new Date(Math.max(now() + f.retryAfterSeconds * 1000, now() + s.retryBaseSeconds * 1000)),
        );
      case 'transient':
      case 'malformed': {
        const disable = failures >= s.maxConsecutiveFailures;
        const message = `${f.kind}: ${f.reason}${disable ? ` (${failures} failures in a row: proactive refresh turned off)` : ''}`;
        deps.logger.warn('Token refresh on demand failed', { tokenId: token.id, region: token.region, error: message });
        return failure(token, {
          error: message,
          countsAsFailure: true,
          disable,
          reauth: disable ? message : undefined,
        });
      }
    }
  }

  function failure(
    token: NonNullable<ConnectionState['claimed']>,
    f: { error: string; countsAsFailure: boolean; disable: boolean; reauth?: string },
    nextAttemptAt?: Date,
  ): TokenResult {
    return {
      kind: 'failure',
      result: {
        token,
        error: f.error,
        countsAsFailure: f.countsAsFailure,
        disable: f.disable,
        nextAttemptAt:
          nextAttemptAt ??
          nextRetryAt(new Date(now()), token.refreshFailureCount + 1, {
            baseSeconds: s.retryBaseSeconds,
            maxSeconds: s.retryMaxSeconds,
            random,
          }),
      },
      reauth: f.reauth,
    };
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
