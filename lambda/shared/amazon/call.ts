import { retry } from '../backoff';
import { FetchFunction, HttpRequest, HttpResponse, HttpTransportError, sendHttp } from './http';
import { EndpointLimiter } from './rate-limiter';
import { RateLimitedError, TransientError } from './errors';
import type { AmazonEndpoint, AmazonRegion } from './regions';

/** Retries of transient failures inside one client call (5xx, timeouts, resets). */
export interface AmazonRetryOptions {
  /** Attempts in total, the first included. */
  readonly maxAttempts?: number;
  /** @default 200 */
  readonly baseDelayMs?: number;
  /** @default 2000 */
  readonly maxDelayMs?: number;
  /** @default Math.random */
  readonly random?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface AmazonCall {
  readonly endpoint: AmazonEndpoint;
  readonly region: AmazonRegion;
  readonly itemId: string;
  readonly request: HttpRequest;
  readonly limiter: EndpointLimiter;
  readonly fetch: FetchFunction | undefined;
  readonly retry: AmazonRetryOptions;
  readonly defaultAttempts: number;
  /** Retry-After used when a 429 has none. */
  readonly defaultRetryAfterSeconds: number;
  /**
   * Longest this call may spend waiting, for the limiter and between retries, counted from
   * now (the invocation's remaining time minus its reserve). A wait that would be longer
   * throws DeadlineExceededError instead. @default - no limit
   */
  readonly maxWaitMs?: number;
}

/**
 * Sends one request through the endpoint's shared limiter. Throws {@link RateLimitedError}
 * for 429 (after pausing the limiter for everyone and cutting its rate) and
 * {@link TransientError} for 5xx and transport failures once retries are spent; any other
 * response is returned to the client to interpret. Throws DeadlineExceededError when a wait
 * (the limiter's, or a retry's backoff) would exceed `maxWaitMs`.
 */
export async function callAmazon(call: AmazonCall): Promise<HttpResponse> {
  const { endpoint, region, itemId } = call;
  const notAfter = call.limiter.now() + (call.maxWaitMs ?? Infinity);
  const budget = () => Math.max(0, notAfter - call.limiter.now());
  try {
    return await retry(
      () =>
        call.limiter.run(async () => {
          let response: HttpResponse;
          const sentAt = call.limiter.now();
          try {
            response = await sendHttp(call.request, call.fetch);
          } catch (error) {
            if (error instanceof HttpTransportError)
              throw new TransientError(itemId, endpoint, region, undefined, error.kind, error.message, {
                cause: error,
              });
            throw error;
          }
          if (response.status === 429) {
            const seconds =
              parseRetryAfterSeconds(response.headers.get('retry-after')) ?? call.defaultRetryAfterSeconds;
            call.limiter.throttled(seconds, sentAt);
            throw new RateLimitedError(itemId, endpoint, region, seconds);
          }
          if (response.status >= 500)
            throw new TransientError(itemId, endpoint, region, response.status, 'http_5xx', `HTTP ${response.status}`);
          call.limiter.succeeded();
          return response;
        }, budget()),
      {
        maxAttempts: call.retry.maxAttempts ?? call.defaultAttempts,
        baseDelayMs: call.retry.baseDelayMs ?? 200,
        maxDelayMs: call.retry.maxDelayMs ?? 2000,
        random: call.retry.random,
        sleep: call.retry.sleep,
        waitBudgetMs: budget,
        isRetryable: (error) => error instanceof TransientError,
      },
    );
  } catch (error) {
    // The last TransientError is more useful to the job than the retry wrapper.
    if (error instanceof Error && error.name === 'RetriesExhaustedError' && error.cause instanceof TransientError)
      throw error.cause;
    throw error;
  }
}

/** Retry-After as seconds (delta-seconds or an HTTP date), capped at one hour. */
export function parseRetryAfterSeconds(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  const trimmed = value.trim();
  let seconds: number;
  if (/^\d+$/.test(trimmed)) seconds = Number(trimmed);
  else {
    const date = Date.parse(trimmed);
    if (Number.isNaN(date)) return undefined;
    seconds = Math.max(0, Math.ceil((date - now) / 1000));
  }
  return Math.min(seconds, 3600);
}
