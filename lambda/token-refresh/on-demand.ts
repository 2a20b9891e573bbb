import { randomUUID } from 'node:crypto';
import { AmazonFailure, classifyAmazonError } from '../shared/amazon/failure';
import type { AmazonRegion } from '../shared/amazon/regions';
import { DeadlineExceededError } from '../shared/backoff';
import type { Database } from '../shared/db/port';
import { describeError } from '../shared/jobs/runtime';
import type { AppLogger } from '../shared/logger';
import { oauthTokenBinding, type TokenCipher } from '../shared/token-crypto';
import type { TokenRefresher } from './core';
import { needsReauthorisation, RefreshOutcomePolicy, refreshFailureOutcome, unreadableTokenOutcome } from './outcome';
import { ConnectionState, readConnection, saveResults, TokenResult, useConnection } from './store';

/**
 * A connection's access token on demand, single-flight: the one path of the token route
 * (lambda/token-route/core.ts) and of the account sync (a claimed connection whose stored token
 * is about to expire).
 *
 * - A stored token with more than `minRemainingSeconds` left is returned as it is.
 * - Otherwise it is refreshed at once under the connection's refresh lease, the lease the
 *   scheduled token refresh takes too, and only when the connection is not backing off after a
 *   failure (`next_refresh_attempt_at`, as the job's claim): of concurrent callers (and the
 *   job) one refreshes, the others poll the row until the winner's write-back (or until
 *   `deadline`). A holder that died leaves a lease that expires; a waiter then takes it over.
 * - What a failure does to the connection is the token refresh's own policy (outcome.ts),
 *   applied once, by the caller that called Amazon, and written by `saveResults`.
 * - When no new token can be had (the refresh failed other than for a revoked grant, is backing
 *   off, or cannot be waited for), a stored token still valid for at least `usableSeconds` is
 *   returned (`by: 'stored'`); only without one is the answer `unavailable`.
 */
export interface OnDemandSettings extends RefreshOutcomePolicy {
  /** A stored token with more than this left is returned as it is. */
  readonly minRemainingSeconds: number;
  /** The refresh lease a caller takes: it must outlast the caller's refresh and write-back. */
  readonly leaseSeconds: number;
  /** Between two reads of a connection another caller is refreshing. */
  readonly pollIntervalMs: number;
  /** A stored token with at least this left is returned when no new one can be had. */
  readonly usableSeconds: number;
}

export interface OnDemandDeps {
  /** The database as the jobs' login. */
  readonly db: Database;
  /** The LWA client, drawing from the shared rate budget. */
  readonly lwa: TokenRefresher;
  readonly cipher: TokenCipher;
  readonly logger: AppLogger;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  readonly random: () => number;
}

export interface OnDemandRequest {
  readonly userId: string;
  readonly region: AmazonRegion;
  /** Record the use (`last_used_at`, see useConnection): the route does, the account sync does not. */
  readonly recordUse: boolean;
  /** No waiting (for another's refresh, or for the rate budget) past this (epoch ms, `now`'s clock). */
  readonly deadline: number;
}

/** Why no token could be had (besides a connection that is gone or must be authorised again). */
export type UnavailableReason =
  /** A recorded failure's backoff (`next_refresh_attempt_at`) has not ended. */
  | 'backing-off'
  /** Another caller holds the refresh lease and did not write back before the deadline. */
  | 'held'
  /** The lease's holder let go (or died) and the deadline came before this caller could take it. */
  | 'taking-over'
  /** The shared rate budget (a pause after a 429, or the rate) would have waited past the deadline. */
  | 'budget'
  /** Amazon refused or did not answer (`failure`); its outcome is written. */
  | 'failed';

export type OnDemandToken =
  | {
      readonly kind: 'token';
      readonly accessToken: string;
      readonly expiresAt: Date;
      readonly region: AmazonRegion;
      /** 'refreshed': this call refreshed it; 'other': another caller did while this one waited; 'stored': as it was. */
      readonly by: 'refreshed' | 'other' | 'stored';
    }
  | { readonly kind: 'not-found' }
  /** Refresh is off (or was just turned off): the user must authorise again. */
  | { readonly kind: 'reauth'; readonly region: AmazonRegion }
  /** The stored access token cannot be decrypted (logged, without the token). */
  | { readonly kind: 'unreadable'; readonly error: string }
  | {
      readonly kind: 'unavailable';
      readonly reason: UnavailableReason;
      /** When to try again (seconds, at least 1). */
      readonly retryAfterSeconds: number;
      readonly failure?: AmazonFailure;
    };

/** A connection as read, and when (the caller's clock), to count down what its token has left. */
interface Read {
  readonly state: ConnectionState;
  readonly at: number;
}

/** The connection's access token: stored, refreshed here, or refreshed by whoever held the lease. */
export async function takeAccessToken(
  deps: OnDemandDeps,
  s: OnDemandSettings,
  request: OnDemandRequest,
): Promise<OnDemandToken> {
  const { now } = deps;
  const owner = randomUUID();
  const { userId, region, deadline } = request;
  const options = {
    userId,
    region,
    owner,
    minRemainingSeconds: s.minRemainingSeconds,
    leaseSeconds: s.leaseSeconds,
    recordUse: request.recordUse,
  };
  const at = (state: ConnectionState | undefined): Read | undefined => (state ? { state, at: now() } : undefined);
  let read = at(await useConnection(deps.db, options));
  let waited = false;
  for (;;) {
    if (!read) return { kind: 'not-found' };
    const { state } = read;
    if (!state.refreshEnabled) return { kind: 'reauth', region: state.region };
    if (state.fresh) return stored(deps, state, waited ? 'other' : 'stored');
    if (state.claimed) return refresh(deps, s, read, state.claimed, owner, deadline);
    if (state.retryInSeconds !== null && state.lease !== 'held') {
      // Backing off after a failure (a route's, the sync's or the job's): nobody calls Amazon
      // for it until then. Serve what is stored while it is usable.
      return storedOr(deps, s, read, 'backing-off', state.retryInSeconds);
    }
    if (state.lease !== 'held') {
      // The holder died (its lease ran out) or let go without a result: take over.
      if (now() > deadline) return storedOr(deps, s, read, 'taking-over', 2);
      read = at(await useConnection(deps.db, options));
      continue;
    }
    // Another caller or the scheduled refresh is refreshing it: wait for its write-back.
    if (now() + s.pollIntervalMs > deadline) return storedOr(deps, s, read, 'held', 2);
    await deps.sleep(s.pollIntervalMs);
    waited = true;
    read = at(await readConnection(deps.db, options));
  }
}

/** The stored token while it has at least `usableSeconds` left (counted from its read), else unavailable. */
async function storedOr(
  deps: OnDemandDeps,
  s: OnDemandSettings,
  read: Read,
  reason: UnavailableReason,
  retryAfterSeconds: number,
  failure?: AmazonFailure,
): Promise<OnDemandToken> {
  const left = read.state.remainingSeconds - (deps.now() - read.at) / 1000;
  if (left >= s.usableSeconds) return stored(deps, read.state, 'stored');
  return { kind: 'unavailable', reason, retryAfterSeconds: Math.max(1, Math.ceil(retryAfterSeconds)), failure };
}

async function stored(deps: OnDemandDeps, state: ConnectionState, by: 'other' | 'stored'): Promise<OnDemandToken> {
  try {
    const accessToken = await deps.cipher.decrypt(state.storedAccessToken, oauthTokenBinding(state, 'access_token'));
    return { kind: 'token', accessToken, expiresAt: state.expiresAt, region: state.region, by };
  } catch (error) {
    deps.logger.error('Stored access token is unreadable', {
      tokenId: state.id,
      userId: state.userId,
      error: describeError(error),
    });
    return { kind: 'unreadable', error: describeError(error) };
  }
}

/** Refreshes under this caller's lease and writes the result back (releasing the lease). */
async function refresh(
  deps: OnDemandDeps,
  s: OnDemandSettings,
  read: Read,
  token: NonNullable<ConnectionState['claimed']>,
  owner: string,
  deadline: number,
): Promise<OnDemandToken> {
  const { now } = deps;
  const clock = () => ({ now: new Date(now()), random: deps.random });
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
    return { kind: 'reauth', region: token.region };
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
    return { kind: 'token', accessToken: tokens.accessToken, expiresAt, region: token.region, by: 'refreshed' };
  } catch (error) {
    if (error instanceof DeadlineExceededError) {
      // The shared budget (a pause after a 429, or the rate) would have made us wait too long.
      await write({ kind: 'released', token });
      return storedOr(deps, s, read, 'budget', 2);
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
    if (needsReauthorisation(outcome)) return { kind: 'reauth', region: token.region };
    const retryAfterSeconds =
      outcome.kind === 'failure' ? (outcome.result.nextAttemptAt.getTime() - now()) / 1000 : s.retryBaseSeconds;
    return storedOr(deps, s, read, 'failed', f.kind === 'rate_limited' ? f.retryAfterSeconds : retryAfterSeconds, f);
  }
}
