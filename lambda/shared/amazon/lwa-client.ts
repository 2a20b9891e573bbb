import { FetchFunction } from './http';
import { RateLimiterRegistry, sharedRateLimiters } from './rate-limiter';
import { AmazonRetryOptions, callAmazon } from './call';
import { MalformedResponseError, PermanentAuthError, PermanentAuthErrorCode } from './errors';
import { AmazonRegion, LWA_TOKEN_URLS, regionalUrl } from './regions';
import { describeIssues, lwaErrorResponseSchema, lwaTokenResponseSchema } from './schemas';

/** The application's LWA credentials. */
export interface LwaCredentials {
  readonly clientId: string;
  readonly clientSecret: string;
}

/**
 * Where LwaClient gets its credentials on every call (e.g. Secrets Manager through a cache
 * with a time to live); `refresh` reads them again at once.
 */
export interface LwaCredentialsProvider {
  get(): Promise<LwaCredentials>;
  refresh(): Promise<LwaCredentials>;
}

/** Credentials re-read for `invalid_client` are reused for this long (one re-read per burst). */
export const CREDENTIALS_REREAD_INTERVAL_MS = 30_000;

export interface LwaClientOptions {
  /** The Login with Amazon client id (with `clientSecret`, or give `credentials`). */
  readonly clientId?: string;
  /** The Login with Amazon client secret. */
  readonly clientSecret?: string;
  /**
   * Credentials read on every call instead of fixed ones. On `invalid_client` they are read
   * again (at most once per {@link CREDENTIALS_REREAD_INTERVAL_MS}) and, when they changed,
   * the call is made once more with the new ones before the error is given up.
   */
  readonly credentials?: LwaCredentialsProvider;
  /**
   * Token endpoint override; `{region}` is replaced by NA/EU/FE (the fake Amazon:
   * `${fake.url}/{region}/auth/o2/token`). @default - api.amazon.com / .co.uk / .co.jp
   */
  readonly tokenUrl?: string;
  /** Per-request timeout. @default 10000 */
  readonly timeoutMs?: number;
  /**
   * Retries of 5xx/timeouts/resets inside one call. A refresh is not idempotent when Amazon
   * rotates refresh tokens (a lost response may have consumed the old one), so the default is
   * no retry: the job retries on its own schedule. @default - maxAttempts 1
   */
  readonly retry?: AmazonRetryOptions;
  /** Retry-After assumed for a 429 without the header. @default 30 */
  readonly defaultRetryAfterSeconds?: number;
  /** @default sharedRateLimiters (process-wide) */
  readonly limiters?: RateLimiterRegistry;
  /** @default global fetch */
  readonly fetch?: FetchFunction;
}

export interface RefreshRequest {
  /** What errors are recorded against (the oauth_tokens row id). */
  readonly itemId: string;
  readonly region: AmazonRegion;
  /** The decrypted refresh token. */
  readonly refreshToken: string;
  /** Longest the call may wait for the limiter or a retry (DeadlineExceededError beyond). @default - no limit */
  readonly maxWaitMs?: number;
}

export interface RefreshedTokens {
  readonly accessToken: string;
  /** Present when Amazon rotated the refresh token: store it; else keep the old one. */
  readonly refreshToken: string | undefined;
  readonly expiresInSeconds: number;
}

/** An authorization code from Login with Amazon's consent page, to exchange for tokens. */
export interface AuthorizationCodeRequest {
  /** What errors are recorded against (the caller's user id). */
  readonly itemId: string;
  readonly region: AmazonRegion;
  readonly code: string;
  /** The redirect URI the code was issued for (LWA requires the same value). */
  readonly redirectUri: string;
  /** The PKCE code verifier of the consent request's `code_challenge` (S256), when it sent one. */
  readonly codeVerifier?: string;
  /** Longest the call may wait for the limiter (DeadlineExceededError beyond). @default - no limit */
  readonly maxWaitMs?: number;
}

/** Both tokens of a new connection. */
export interface AuthorizedTokens {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly expiresInSeconds: number;
}

const PERMANENT_CODES = new Set<PermanentAuthErrorCode>([
  'invalid_grant',
  'invalid_client',
  'unsupported_grant_type',
  'invalid_request',
  'unauthorized_client',
]);

/**
 * Login with Amazon: the refresh-token grant, `POST /auth/o2/token`, form-encoded, on the
 * region's host, through the process-wide `lwa` limiter of that region.
 *
 * @throws PermanentAuthError, RateLimitedError, TransientError, MalformedResponseError, DeadlineExceededError
 */
export class LwaClient {
  private reread: { at: number; credentials: Promise<LwaCredentials> } | undefined;

  constructor(private readonly options: LwaClientOptions) {
    if (!options.credentials && (options.clientId === undefined || options.clientSecret === undefined)) {
      throw new TypeError('LwaClient needs clientId and clientSecret, or credentials');
    }
  }

  /** The client id (the consent page's `client_id`). */
  async clientId(): Promise<string> {
    return this.options.credentials ? (await this.options.credentials.get()).clientId : this.options.clientId!;
  }

  /** The limiters this client's calls go through (the jobs carry their state across invocations). */
  get limiters(): RateLimiterRegistry {
    return this.options.limiters ?? sharedRateLimiters;
  }

  async refresh(request: RefreshRequest): Promise<RefreshedTokens> {
    const provider = this.options.credentials;
    const credentials = provider
      ? await provider.get()
      : { clientId: this.options.clientId!, clientSecret: this.options.clientSecret! };
    try {
      return await this.refreshWith(request, credentials);
    } catch (error) {
      if (!provider || !(error instanceof PermanentAuthError) || error.code !== 'invalid_client') throw error;
      // The client secret may have been replaced (Secrets Manager, Amazon's console): read it
      // again once; Amazon refused the client before looking at the refresh token.
      const fresh = await this.rereadCredentials(provider);
      if (fresh.clientId === credentials.clientId && fresh.clientSecret === credentials.clientSecret) throw error;
      return this.refreshWith(request, fresh);
    }
  }

  /**
   * The authorization-code grant (`grant_type=authorization_code`, the code, the redirect URI,
   * the PKCE `code_verifier` when given, and the client's credentials) at the region's token endpoint, once: a code can be used
   * only once, so a lost answer is not retried. Amazon's refusal (`invalid_grant` for a used,
   * expired or unknown code, …) is a {@link PermanentAuthError} with Amazon's code; an answer
   * without a refresh token is malformed.
   */
  async exchangeAuthorizationCode(request: AuthorizationCodeRequest): Promise<AuthorizedTokens> {
    const credentials = this.options.credentials
      ? await this.options.credentials.get()
      : { clientId: this.options.clientId!, clientSecret: this.options.clientSecret! };
    const { itemId, region } = request;
    const response = await callAmazon({
      endpoint: 'lwa',
      region,
      itemId,
      request: {
        method: 'POST',
        url: regionalUrl(this.options.tokenUrl, LWA_TOKEN_URLS, region),
        headers: { 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8', accept: 'application/json' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: request.code,
          redirect_uri: request.redirectUri,
          ...(request.codeVerifier === undefined ? {} : { code_verifier: request.codeVerifier }),
          client_id: credentials.clientId,
          client_secret: credentials.clientSecret,
        }).toString(),
        timeoutMs: this.options.timeoutMs ?? 10_000,
      },
      limiter: this.limiters.for('lwa', region),
      fetch: this.options.fetch,
      retry: { maxAttempts: 1 },
      defaultAttempts: 1,
      defaultRetryAfterSeconds: this.options.defaultRetryAfterSeconds ?? 30,
      maxWaitMs: request.maxWaitMs,
    });
    const json = parseJson(response.text);
    if (response.status === 200) {
      const parsed = lwaTokenResponseSchema.safeParse(json);
      if (!parsed.success || parsed.data.refresh_token === undefined)
        throw new MalformedResponseError(
          itemId,
          'lwa',
          region,
          200,
          json === undefined
            ? ['body is not JSON']
            : parsed.success
              ? ['refresh_token: missing']
              : describeIssues(parsed.error),
        );
      return {
        accessToken: parsed.data.access_token,
        refreshToken: parsed.data.refresh_token,
        expiresInSeconds: parsed.data.expires_in,
      };
    }
    throwLwaError(itemId, region, response.status, json);
  }

  private rereadCredentials(provider: LwaCredentialsProvider): Promise<LwaCredentials> {
    const now = Date.now();
    if (!this.reread || now - this.reread.at >= CREDENTIALS_REREAD_INTERVAL_MS) {
      const entry = { at: now, credentials: provider.refresh() };
      this.reread = entry;
      entry.credentials.catch(() => {
        if (this.reread === entry) this.reread = undefined;
      });
    }
    return this.reread.credentials;
  }

  private async refreshWith(request: RefreshRequest, credentials: LwaCredentials): Promise<RefreshedTokens> {
    const { itemId, region } = request;
    const body = new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: request.refreshToken,
      client_id: credentials.clientId,
      client_secret: credentials.clientSecret,
    }).toString();
    const response = await callAmazon({
      endpoint: 'lwa',
      region,
      itemId,
      request: {
        method: 'POST',
        url: regionalUrl(this.options.tokenUrl, LWA_TOKEN_URLS, region),
        headers: { 'content-type': 'application/x-www-form-urlencoded;charset=UTF-8', accept: 'application/json' },
        body,
        timeoutMs: this.options.timeoutMs ?? 10_000,
      },
      limiter: this.limiters.for('lwa', region),
      fetch: this.options.fetch,
      retry: this.options.retry ?? {},
      defaultAttempts: 1,
      defaultRetryAfterSeconds: this.options.defaultRetryAfterSeconds ?? 30,
      maxWaitMs: request.maxWaitMs,
    });
    const json = parseJson(response.text);
    if (response.status === 200) {
      const parsed = lwaTokenResponseSchema.safeParse(json);
      if (!parsed.success)
        throw new MalformedResponseError(
          itemId,
          'lwa',
          region,
          200,
          json === undefined ? ['body is not JSON'] : describeIssues(parsed.error),
        );
      return {
        accessToken: parsed.data.access_token,
        refreshToken: parsed.data.refresh_token,
        expiresInSeconds: parsed.data.expires_in,
      };
    }
    throwLwaError(itemId, region, response.status, json);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * A token endpoint answer that is not a success: Amazon's permanent refusals (`invalid_grant`,
 * `invalid_client`, …) as {@link PermanentAuthError}, anything else as malformed.
 */
function throwLwaError(itemId: string, region: AmazonRegion, status: number, json: unknown): never {
  const error = lwaErrorResponseSchema.safeParse(json);
  if (
    (status === 400 || status === 401) &&
    error.success &&
    PERMANENT_CODES.has(error.data.error as PermanentAuthErrorCode)
  )
    throw new PermanentAuthError(itemId, region, status, error.data.error as PermanentAuthErrorCode);
  throw new MalformedResponseError(itemId, 'lwa', region, status, [
    error.success ? `unexpected error code for HTTP ${status}` : `unexpected HTTP ${status}`,
  ]);
}
