import { FetchFunction } from './http';
import { RateLimiterRegistry, sharedRateLimiters } from './rate-limiter';
import { AmazonRetryOptions, callAmazon } from './call';
import { AccessTokenRejectedError, MalformedResponseError } from './errors';
import { ADS_API_BASE_URLS, AmazonRegion, regionalUrl } from './regions';
import { adsProfilesResponseSchema, AdsProfile, describeIssues, parseJsonKeepingProfileIds } from './schemas';

export interface AdsClientOptions {
  /** Sent as `Amazon-Advertising-API-ClientId` (the LWA client id). */
  readonly clientId: string;
  /**
   * Base URL override; `{region}` is replaced by NA/EU/FE (the fake Amazon:
   * `${fake.url}/{region}`). @default - advertising-api(-eu|-fe).amazon.com
   */
  readonly baseUrl?: string;
  /** Per-request timeout. @default 10000 */
  readonly timeoutMs?: number;
  /** Retries of 5xx/timeouts/resets (listing profiles is idempotent). @default - maxAttempts 3 */
  readonly retry?: AmazonRetryOptions;
  /** Retry-After assumed for a 429 without the header. @default 30 */
  readonly defaultRetryAfterSeconds?: number;
  /** @default sharedRateLimiters (process-wide) */
  readonly limiters?: RateLimiterRegistry;
  /** @default global fetch */
  readonly fetch?: FetchFunction;
}

export interface ListProfilesRequest {
  /** What errors are recorded against (the user id). */
  readonly itemId: string;
  readonly region: AmazonRegion;
  /** A valid (decrypted) LWA access token. */
  readonly accessToken: string;
  /** Longest the call may wait for the limiter or a retry (DeadlineExceededError beyond). @default - no limit */
  readonly maxWaitMs?: number;
}

/**
 * Amazon Ads API: `GET /v2/profiles` on the region's host with the bearer token and client id
 * header, through the process-wide `ads` limiter of that region. `profileId` comes back as
 * text (exact digits), ready for `user_accounts.amazon_account_id`.
 *
 * @throws AccessTokenRejectedError, RateLimitedError, TransientError, MalformedResponseError, DeadlineExceededError
 */
export class AdsClient {
  constructor(private readonly options: AdsClientOptions) {}

  /** The limiters this client's calls go through (the jobs carry their state across invocations). */
  get limiters(): RateLimiterRegistry {
    return this.options.limiters ?? sharedRateLimiters;
  }

  async listProfiles(request: ListProfilesRequest): Promise<AdsProfile[]> {
    const { itemId, region } = request;
    const response = await callAmazon({
      endpoint: 'ads',
      region,
      itemId,
      request: {
        method: 'GET',
        url: `${regionalUrl(this.options.baseUrl, ADS_API_BASE_URLS, region).replace(/\/+$/, '')}/v2/profiles`,
        headers: {
          authorization: `Bearer ${request.accessToken}`,
          'amazon-advertising-api-clientid': this.options.clientId,
          accept: 'application/json',
        },
        timeoutMs: this.options.timeoutMs ?? 10_000,
      },
      limiter: this.limiters.for('ads', region),
      fetch: this.options.fetch,
      retry: this.options.retry ?? {},
      defaultAttempts: 3,
      defaultRetryAfterSeconds: this.options.defaultRetryAfterSeconds ?? 30,
      maxWaitMs: request.maxWaitMs,
    });
    if (response.status === 401) throw new AccessTokenRejectedError(itemId, region);
    if (response.status !== 200)
      throw new MalformedResponseError(itemId, 'ads', region, response.status, [`unexpected HTTP ${response.status}`]);
    let json: unknown;
    try {
      json = parseJsonKeepingProfileIds(response.text);
    } catch (error) {
      throw new MalformedResponseError(itemId, 'ads', region, 200, ['body is not JSON'], { cause: error });
    }
    const parsed = adsProfilesResponseSchema.safeParse(json);
    if (!parsed.success) throw new MalformedResponseError(itemId, 'ads', region, 200, describeIssues(parsed.error));
    return parsed.data;
  }
}
