import {
  AccessTokenRejectedError,
  MalformedResponseError,
  PermanentAuthError,
  RateLimitedError,
  TransientError,
} from './errors';
import { describeError } from '../jobs/runtime';

/** How the jobs treat a failed Amazon call, whatever the client's error class. */
export type AmazonFailure =
  /** Amazon refused for good: `code` is its OAuth error (invalid_grant, invalid_client, …). */
  | { readonly kind: 'permanent'; readonly code: string }
  | { readonly kind: 'rate_limited'; readonly retryAfterSeconds: number }
  | { readonly kind: 'transient'; readonly reason: string }
  | { readonly kind: 'malformed'; readonly reason: string };

/**
 * Maps an error from the Amazon clients onto {@link AmazonFailure}. Anything unexpected is
 * transient: retried on the item's backoff, never a reason to turn a user's refresh off.
 * Reasons name the class and fields, never values (they may hold tokens).
 */
export function classifyAmazonError(error: unknown): AmazonFailure {
  if (error instanceof PermanentAuthError) return { kind: 'permanent', code: error.code };
  if (error instanceof RateLimitedError) return { kind: 'rate_limited', retryAfterSeconds: error.retryAfterSeconds };
  if (error instanceof AccessTokenRejectedError)
    return { kind: 'transient', reason: 'access token rejected (401); the token refresh renews it' };
  if (error instanceof TransientError)
    return { kind: 'transient', reason: `${error.reason}${error.status ? ` (HTTP ${error.status})` : ''}` };
  if (error instanceof MalformedResponseError)
    return { kind: 'malformed', reason: `HTTP ${error.status}: ${error.problems.join('; ')}` };
  return { kind: 'transient', reason: `unexpected ${describeError(error)}` };
}
