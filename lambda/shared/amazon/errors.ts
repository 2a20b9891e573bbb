import type { AmazonEndpoint, AmazonRegion } from './regions';

/**
 * Failures of one Amazon call, classified so the jobs can decide per item: give up and ask
 * the user to re-authorise ({@link PermanentAuthError}), back off the endpoint
 * ({@link RateLimitedError}), retry later ({@link TransientError}), or record bad data
 * ({@link MalformedResponseError}). Every error carries the item it was for and the cause;
 * messages never contain tokens, secrets or headers.
 */
export abstract class AmazonApiError extends Error {
  constructor(
    /** The job's item (token row id, user id): what the failure is recorded against. */
    readonly itemId: string,
    readonly endpoint: AmazonEndpoint,
    readonly region: AmazonRegion,
    /** HTTP status when a response arrived. */
    readonly status: number | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(
      `${endpoint === 'lwa' ? 'LWA token refresh' : 'Ads API profiles'} for ${itemId} (${region}): ${message}`,
      options,
    );
    this.name = new.target.name;
  }
}

/** LWA error codes after which retrying the same request cannot succeed. */
export type PermanentAuthErrorCode =
  'invalid_grant' | 'invalid_client' | 'unsupported_grant_type' | 'invalid_request' | 'unauthorized_client';

/**
 * The refresh token or the client is rejected for good: `invalid_grant` (revoked or expired:
 * the user must re-authorise), `invalid_client` (our client id/secret), `invalid_request`,
 * `unsupported_grant_type`, `unauthorized_client`.
 */
export class PermanentAuthError extends AmazonApiError {
  constructor(
    itemId: string,
    region: AmazonRegion,
    status: number,
    /** The LWA `error` code. */
    readonly code: PermanentAuthErrorCode,
  ) {
    super(itemId, 'lwa', region, status, code);
  }

  /** Whether the user must re-authorise (their grant is gone) rather than operators fixing config. */
  get needsReauthorisation(): boolean {
    return this.code === 'invalid_grant';
  }
}

/** The Ads API refused the access token (401): refresh the token, then try again. */
export class AccessTokenRejectedError extends AmazonApiError {
  constructor(itemId: string, region: AmazonRegion, options?: { cause?: unknown }) {
    super(itemId, 'ads', region, 401, 'access token rejected (401)', options);
  }
}

/** HTTP 429. The endpoint's shared limiter is already paused for `retryAfterSeconds`. */
export class RateLimitedError extends AmazonApiError {
  constructor(
    itemId: string,
    endpoint: AmazonEndpoint,
    region: AmazonRegion,
    /** From the Retry-After header, or the client's default when absent. */
    readonly retryAfterSeconds: number,
  ) {
    super(itemId, endpoint, region, 429, `rate limited, retry after ${retryAfterSeconds}s`);
  }
}

/** A failure worth retrying later: 5xx, timeout, connection refused or reset. */
export class TransientError extends AmazonApiError {
  constructor(
    itemId: string,
    endpoint: AmazonEndpoint,
    region: AmazonRegion,
    status: number | undefined,
    /** `http_5xx`, `timeout` or `network`. */
    readonly reason: 'http_5xx' | 'timeout' | 'network',
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(itemId, endpoint, region, status, detail, options);
  }
}

/** The response does not match Amazon's documented shape (or has an undocumented status). */
export class MalformedResponseError extends AmazonApiError {
  constructor(
    itemId: string,
    endpoint: AmazonEndpoint,
    region: AmazonRegion,
    status: number,
    /** What did not match, by field path; never values. */
    readonly problems: readonly string[],
    options?: { cause?: unknown },
  ) {
    super(itemId, endpoint, region, status, `malformed response (HTTP ${status}): ${problems.join('; ')}`, options);
  }
}
