import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import type { FakeProfile } from './profiles';

// The fake Amazon's public shapes (fake-amazon.ts starts it and documents its behaviour).

export interface FakeAmazonKnobs {
  /** Delay before every answer. @default 0 */
  readonly latencyMs: number;
  /** Share of calls answered 429 with Retry-After. @default 0 */
  readonly rate429: number;
  /** Retry-After of those 429s, in seconds. @default 1 */
  readonly retryAfterSeconds: number;
  /** Share of calls answered 500/503. @default 0 */
  readonly rate5xx: number;
  /** Share of calls never answered (the socket stays open until close()). @default 0 */
  readonly hangRate: number;
  /** Share of 200s with a malformed body (truncated JSON or a wrong shape). @default 0 */
  readonly malformedRate: number;
  /** The first N calls (counted per endpoint from this setting on) answer 500. @default 0 */
  readonly failFirstN: number;
  /**
   * Amazon's own limit, per region: a call that would make more than this many in the last
   * second (calls admitted, this endpoint and region) is answered 429 with Retry-After, after
   * `latencyMs` like any answer. Setting it starts the count afresh. 0 is no limit. @default 0
   */
  readonly limitPerSecond: number;
}

export type FakeEndpoint = 'lwa' | 'ads';

/**
 * How the token endpoint treats a user's refresh token: `echo` returns the same refresh token,
 * `omit` leaves `refresh_token` out, `rotate` issues a new one and invalidates the old
 * (`invalid_grant` when it is used again).
 */
export type RefreshTokenMode = 'echo' | 'omit' | 'rotate';

export interface FakeUser {
  /** Any id (the tests use users.id). */
  readonly userId: string;
  /**
   * The region of this connection: its tokens work only on that region's hosts. A user may be
   * added once per region. @default - one connection valid in every region
   */
  readonly region?: AmazonRegion;
  /** The user's current refresh token. */
  readonly refreshToken: string;
  /** An access token the Ads API accepts before any refresh. @default `Atza|fake-initial-<userId>` */
  readonly accessToken?: string;
  /** @default 'echo' */
  readonly refreshTokenMode?: RefreshTokenMode;
  /** Profiles across regions; GET /{region}/v2/profiles returns that region's. @default none */
  readonly profiles?: readonly FakeProfile[];
}

export interface StartFakeAmazonOptions {
  /** The LWA client id the fake accepts (also as Amazon-Advertising-API-ClientId). @default 'amzn1.application-oa2-client.fake' */
  readonly clientId?: string;
  /** @default 'fake-client-secret' */
  readonly clientSecret?: string;
  /** Seed of the knobs' randomness. @default 1 */
  readonly seed?: number;
  /** Knobs for both endpoints. @default - all off */
  readonly knobs?: Partial<FakeAmazonKnobs>;
  /** Access token lifetime reported in expires_in. @default 3600 */
  readonly expiresInSeconds?: number;
  /** @default - a random free port */
  readonly port?: number;
}

export interface FakeAmazonCounters {
  /** Token endpoint calls that carried this refresh token (whatever the answer). */
  refreshCalls(refreshToken: string): number;
  /** Successful refreshes of this user's tokens (at that region's token endpoint only, if given). */
  refreshSuccesses(userId: string, region?: AmazonRegion): number;
  /** Profiles calls authenticated as this user (whatever the answer; on that region's host only, if given). */
  profileCalls(userId: string, region?: AmazonRegion): number;
  /** Calls per endpoint. */
  total(endpoint: FakeEndpoint): number;
  /** Token endpoint calls with `grant_type=authorization_code` (whatever the answer). */
  authorizationCodeCalls(): number;
  /** Answers per endpoint and HTTP status (hangs count as status 0). */
  byStatus(endpoint: FakeEndpoint): Readonly<Record<number, number>>;
  /**
   * When each call to the endpoint in the region arrived (epoch ms, ascending): the time its
   * client stamped in {@link SENT_AT_HEADER} when it sent one.
   */
  arrivals(endpoint: FakeEndpoint, region: AmazonRegion): readonly number[];
  /** When calls over `limitPerSecond` arrived (answered 429), epoch ms. */
  limitedAt(endpoint: FakeEndpoint, region: AmazonRegion): readonly number[];
  /** The most calls to the endpoint in the region that arrived within any one second (sliding). */
  busiestSecond(endpoint: FakeEndpoint, region: AmazonRegion): number;
}

export interface FakeAmazon {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  /** `${url}/{region}/auth/o2/token`: LwaClient `tokenUrl`, `LWA_TOKEN_URL`. */
  readonly lwaTokenUrl: string;
  /** `${url}/{region}`: AdsClient `baseUrl`, `ADS_API_URL`. */
  readonly adsBaseUrl: string;
  readonly clientId: string;
  /** The client secret the token endpoint accepts now. */
  readonly clientSecret: string;
  /** Replaces the client secret (as rotating it at Amazon does): the old one gets invalid_client. */
  rotateClientSecret(secret: string): void;
  /** Adds a user's connection (one per region, or one for every region). */
  addUser(user: FakeUser): void;
  /** Adds profiles to a user (listed on their region's host to the user's connection there). */
  addProfiles(userId: string, profiles: readonly FakeProfile[]): void;
  /** Stops listing these profiles for the user (as when an account is closed or unlinked). */
  removeProfiles(userId: string, profileIds: readonly string[]): void;
  /** The refresh token now valid for the user's connection (changes under `rotate`); `region` picks one of several. */
  currentRefreshToken(userId: string, region?: AmazonRegion): string;
  /** Access tokens issued to the user's connection so far, the initial one included. */
  accessTokens(userId: string, region?: AmazonRegion): string[];
  /** Revokes the refresh token of the user's connection in `region` (every connection without it): `invalid_grant`. */
  revoke(userId: string, region?: AmazonRegion): void;
  /**
   * The user consents again for the connection in `region`: a fresh refresh token is issued
   * (the old one stays invalid, a revocation is lifted) and returned, for the test to store.
   */
  reconnect(userId: string, region?: AmazonRegion): string;
  /** Invalidates the access tokens of the user's connection in `region` (all without it): the Ads API answers 401. */
  expireAccessTokens(userId: string, region?: AmazonRegion): void;
  /**
   * `${url}/{region}/ap/oa`: the consent page (consent-page.ts). `GET` with `client_id`,
   * `response_type=code`, `redirect_uri`, optional `state`, optional PKCE `code_challenge`
   * with `code_challenge_method=S256`. With the fake's own `user` (which known user consents)
   * it redirects (302) at once to `redirect_uri?code=…&scope=…&state=…`, as Login with Amazon
   * does after the user agrees (auto-approved, for tests). Without `user` it shows a page with
   * Allow and Deny (in a browser): Allow redirects with a code, Deny with
   * `error=access_denied`. The code is for that region's connection of the user and, with a
   * challenge, is exchanged only with the matching `code_verifier`.
   */
  readonly consentUrl: string;
  /**
   * An authorization code for the user's connection in `region`, as the consent page issues
   * it: single use, valid for 5 minutes, for exactly this redirect URI and only at that
   * region's token endpoint (without `region`: at whichever region's endpoint exchanges it). Exchanging it (`grant_type=authorization_code`)
   * issues a new refresh token (the old one stops working, a revoked grant is granted again)
   * and an access token; a user without a connection in that region gets one. With
   * `codeChallenge` (PKCE S256, as the consent page's `code_challenge`), the exchange must send
   * the `code_verifier` whose SHA-256 (base64url) it is, else `invalid_grant`.
   */
  issueAuthorizationCode(userId: string, redirectUri: string, region?: AmazonRegion, codeChallenge?: string): string;
  /** Changes knobs for one endpoint or both; failFirstN restarts counting. */
  setKnobs(knobs: Partial<FakeAmazonKnobs>, endpoint?: FakeEndpoint): void;
  readonly counters: FakeAmazonCounters;
  /** Stops listening and destroys every socket, hanging ones included. */
  close(): Promise<void>;
}

export const DEFAULT_KNOBS: FakeAmazonKnobs = {
  latencyMs: 0,
  rate429: 0,
  retryAfterSeconds: 1,
  rate5xx: 0,
  hangRate: 0,
  malformedRate: 0,
  failFirstN: 0,
  limitPerSecond: 0,
};

/**
 * A header a test's or a bench's HTTP client may stamp with the epoch ms at which it sent the
 * call (never sent by the product's clients). The fake Amazon then counts the call at that time,
 * for its limit per second and its arrivals, rather than when the request reached it: the fake
 * runs in the same process as the code under test, and on a busy machine requests sent on time
 * reach its handler late and together, which Amazon's own count (across a network that does not
 * stall with the caller) would not see.
 */
export const SENT_AT_HEADER = 'x-fake-amazon-sent-at';

/**
 * `fetch` that stamps each request with {@link SENT_AT_HEADER}: for an LwaClient or AdsClient
 * (`fetch` option) in a run that counts its calls against the fake Amazon's limit per second.
 */
export function stampingSentAt(send: typeof fetch = fetch): typeof fetch {
  return (input, init) =>
    send(input, {
      ...init,
      headers: { ...(init?.headers as Record<string, string> | undefined), [SENT_AT_HEADER]: String(Date.now()) },
    });
}
