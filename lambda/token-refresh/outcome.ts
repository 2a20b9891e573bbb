import type { AmazonFailure } from '../shared/amazon/failure';
import { nextRetryAt } from '../shared/jobs/runtime';
import type { ClaimedToken, TokenResult } from './store';

/**
 * What a failed refresh does to a connection: the one policy of the scheduled token refresh
 * (core.ts) and the on-demand token route (lambda/token-route/core.ts), so that a failure
 * means the same whoever called Amazon.
 *
 * - `invalid_grant` (the grant is revoked or expired), or a stored refresh token that cannot be
 *   decrypted: refresh off at once, the region's accounts flagged `reauth_required`.
 * - Amazon's other definite refusals (`invalid_client`, `unauthorized_client`, `invalid_request`,
 *   `unsupported_grant_type`): counted as refusals; `maxConsecutiveRefusals` of them in a row
 *   (`refresh_refusal_count`, migration 0021) turn refresh off and flag the accounts.
 * - A 5xx, a timeout, a network error or a malformed answer: Amazon said nothing about the
 *   token. Backed off (the failure count grows the backoff) but never a refusal, so no outage
 *   however long turns a connection off.
 * - A 429: Amazon's pace, not the token's fault: no failure, no refusal; retried after its
 *   Retry-After (at least the base delay).
 *
 * Every failure counts in `refresh_failure_count` except a 429 (it sets the backoff's exponent
 * and shows as `refresh_failing`); a success clears both counts.
 */
export interface RefreshOutcomePolicy {
  /** Definite refusals in a row after which refresh is turned off. @default 5 */
  readonly maxConsecutiveRefusals: number;
  /** First retry delay after a failure; doubles per failure (full jitter, floor of half). @default 60 */
  readonly retryBaseSeconds: number;
  /** @default 3600 */
  readonly retryMaxSeconds: number;
}

export const REFRESH_OUTCOME_DEFAULTS: RefreshOutcomePolicy = {
  maxConsecutiveRefusals: 5,
  retryBaseSeconds: 60,
  retryMaxSeconds: 3600,
};

/** `last_refresh_error` (and the accounts' message) after `invalid_grant`. */
export const REVOKED_MESSAGE =
  'invalid_grant: the refresh token was revoked or has expired; the user must reconnect Amazon';

/** The clock and randomness of the caller (the job's run, or the route's request). */
export interface OutcomeClock {
  readonly now: Date;
  readonly random: () => number;
}

/** The outcome of a refresh Amazon refused or did not answer properly. */
export function refreshFailureOutcome(
  token: ClaimedToken,
  f: AmazonFailure,
  policy: RefreshOutcomePolicy,
  clock: OutcomeClock,
): TokenResult {
  switch (f.kind) {
    case 'permanent': {
      const revoked = f.code === 'invalid_grant';
      const refusals = (token.refreshRefusalCount ?? 0) + 1;
      const disable = revoked || refusals >= policy.maxConsecutiveRefusals;
      const message = revoked
        ? REVOKED_MESSAGE
        : `${f.code}: Login with Amazon refused the refresh${disable ? ` (${refusals} refusals in a row: proactive refresh turned off)` : ''}`;
      return failure(token, { error: message, counts: true, refusal: true, disable }, policy, clock);
    }
    case 'rate_limited': {
      const until = clock.now.getTime() + f.retryAfterSeconds * 1000;
      return failure(
        token,
        {
          error: `rate_limited: Login with Amazon answered 429, retry after ${f.retryAfterSeconds} s`,
          counts: false,
          refusal: false,
          disable: false,
        },
        policy,
        clock,
        new Date(Math.max(until, clock.now.getTime() + policy.retryBaseSeconds * 1000)),
      );
    }
    case 'transient':
    case 'malformed':
      return failure(
        token,
        { error: `${f.kind}: ${f.reason}`, counts: true, refusal: false, disable: false },
        policy,
        clock,
      );
  }
}

/** A stored refresh token nobody can decrypt: nobody can refresh it until the user reconnects. */
export function unreadableTokenOutcome(
  token: ClaimedToken,
  cause: string,
  policy: RefreshOutcomePolicy,
  clock: OutcomeClock,
): TokenResult {
  const reason = `Stored refresh token is unreadable (${cause}); the user must reconnect Amazon`;
  return failure(token, { error: reason, counts: true, refusal: true, disable: true }, policy, clock);
}

/** Whether a failure outcome turned refresh off because the grant is gone (the route answers 409). */
export function needsReauthorisation(result: TokenResult): boolean {
  return result.kind === 'failure' && result.result.disable;
}

function failure(
  token: ClaimedToken,
  f: { error: string; counts: boolean; refusal: boolean; disable: boolean },
  policy: RefreshOutcomePolicy,
  clock: OutcomeClock,
  nextAttemptAt?: Date,
): TokenResult {
  return {
    kind: 'failure',
    result: {
      token,
      error: f.error,
      countsAsFailure: f.counts,
      countsAsRefusal: f.refusal,
      disable: f.disable,
      nextAttemptAt:
        nextAttemptAt ??
        nextRetryAt(clock.now, token.refreshFailureCount + 1, {
          baseSeconds: policy.retryBaseSeconds,
          maxSeconds: policy.retryMaxSeconds,
          random: clock.random,
        }),
    },
    // Refresh off: the region's accounts say why.
    reauth: f.disable ? f.error : undefined,
  };
}
