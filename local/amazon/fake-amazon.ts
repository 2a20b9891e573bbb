import { createHash, randomUUID } from 'node:crypto';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import { AmazonRegion, isAmazonRegion } from '../../lambda/shared/amazon/regions';
import { FakeProfile, profilesToWireJson } from './profiles';

/**
 * A fake Amazon on 127.0.0.1: the Login with Amazon token endpoint and the Ads API profiles
 * endpoint with the wire shapes of docs/architecture.md, for tests, `npm start` and the benchmark.
 *
 * One server serves every region. The region is the first path segment, or the default NA
 * when absent:
 *   POST {url}/{region}/auth/o2/token     GET {url}/{region}/v2/profiles
 * so clients are pointed at it with `{region}` templates:
 *   new LwaClient({ tokenUrl: fake.lwaTokenUrl, … })   // `${url}/{region}/auth/o2/token`
 *   new AdsClient({ baseUrl: fake.adsBaseUrl, … })      // `${url}/{region}`
 * (`LWA_TOKEN_URL` / `ADS_API_URL` take the same templates.) A Host header naming one of
 * Amazon's regional hosts (api.amazon.co.uk, advertising-api-fe.amazon.com…) also selects the region.
 *
 * Regions are kept apart as Amazon Ads keeps them: a region's host lists only that region's
 * profiles, and a user connected per region (FakeUser.region, one addUser per connection) has
 * a refresh token that only that region's token endpoint accepts (`invalid_grant` elsewhere)
 * and access tokens that only that region's Ads host accepts (401 elsewhere), so a job that
 * uses the wrong host fails loudly. A FakeUser without a region is one connection valid in
 * every region (its profiles still filtered by the host's region).
 *
 * Behaviour is deterministic for a given seed and request order.
 */
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
   * second (arrivals, this endpoint and region) is answered 429 with Retry-After. 0 is no
   * limit. @default 0
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
  /** When each call to the endpoint in the region arrived (epoch ms, in order). */
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
   * `${url}/{region}/ap/oa`: the consent page. `GET` with `client_id`, `response_type=code`,
   * `redirect_uri`, optional `state`, optional PKCE `code_challenge` with
   * `code_challenge_method=S256`, and the fake's own `user` (which known user consents)
   * redirects (302) to `redirect_uri?code=…&scope=…&state=…`, as Login with Amazon does after
   * the user agrees (auto-approved). The code is for that region's connection of the user and,
   * with a challenge, is exchanged only with the matching `code_verifier`.
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

const DEFAULT_KNOBS: FakeAmazonKnobs = {
  latencyMs: 0,
  rate429: 0,
  retryAfterSeconds: 1,
  rate5xx: 0,
  hangRate: 0,
  malformedRate: 0,
  failFirstN: 0,
  limitPerSecond: 0,
};

const REGION_HOSTS: Record<string, AmazonRegion> = {
  'api.amazon.com': 'NA',
  'api.amazon.co.uk': 'EU',
  'api.amazon.co.jp': 'FE',
  'advertising-api.amazon.com': 'NA',
  'advertising-api-eu.amazon.com': 'EU',
  'advertising-api-fe.amazon.com': 'FE',
};

interface UserState {
  readonly userId: string;
  readonly region?: AmazonRegion;
  refreshToken: string;
  revoked: boolean;
  readonly mode: RefreshTokenMode;
  readonly accessTokens: string[];
  readonly profiles: FakeProfile[];
  issued: number;
}

/** mulberry32: a small seeded PRNG. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function startFakeAmazon(options: StartFakeAmazonOptions = {}): Promise<FakeAmazon> {
  const clientId = options.clientId ?? 'amzn1.application-oa2-client.fake';
  let clientSecret = options.clientSecret ?? 'fake-client-secret';
  const expiresIn = options.expiresInSeconds ?? 3600;
  const random = seededRandom(options.seed ?? 1);
  const knobs: Record<FakeEndpoint, FakeAmazonKnobs> = {
    lwa: { ...DEFAULT_KNOBS, ...options.knobs },
    ads: { ...DEFAULT_KNOBS, ...options.knobs },
  };
  const callsSinceKnobs: Record<FakeEndpoint, number> = { lwa: 0, ads: 0 };
  /** Each user's connections. */
  const users = new Map<string, UserState[]>();
  const byRefreshToken = new Map<string, UserState>();
  const byAccessToken = new Map<string, UserState>();
  const refreshCalls = new Map<string, number>();
  const refreshSuccesses = new Map<string, number>();
  const profileCalls = new Map<string, number>();
  const totals: Record<FakeEndpoint, number> = { lwa: 0, ads: 0 };
  const statuses: Record<FakeEndpoint, Record<number, number>> = { lwa: {}, ads: {} };
  const sockets = new Set<Socket>();
  const bump = (map: Map<string, number>, key: string) => map.set(key, (map.get(key) ?? 0) + 1);
  const authorizationCodes = new Map<
    string,
    {
      userId: string;
      redirectUri: string;
      region: AmazonRegion | undefined;
      expiresAt: number;
      codeChallenge: string | undefined;
    }
  >();
  let codesIssued = 0;
  let authorizationCodeCalls = 0;
  function issueAuthorizationCode(
    userId: string,
    redirectUri: string,
    region?: AmazonRegion,
    codeChallenge?: string,
  ): string {
    if (!users.has(userId)) throw new Error(`Fake Amazon: unknown user ${userId}`);
    codesIssued += 1;
    const code = `ANfake${codesIssued}${randomUUID().replace(/-/g, '')}`;
    authorizationCodes.set(code, { userId, redirectUri, region, expiresAt: Date.now() + 5 * 60_000, codeChallenge });
    return code;
  }

  /** The user's connections, or the one in `region` (a connection for every region counts too). */
  function connections(userId: string, region?: AmazonRegion): UserState[] {
    const all = users.get(userId) ?? [];
    const found = region === undefined ? all : all.filter((c) => c.region === region || c.region === undefined);
    if (found.length === 0) throw new Error(`Fake Amazon: unknown user ${userId}${region ? ` in ${region}` : ''}`);
    return found;
  }

  function user(userId: string, region?: AmazonRegion): UserState {
    const found = connections(userId, region);
    if (found.length > 1) throw new Error(`Fake Amazon: user ${userId} has several connections; name the region`);
    return found[0];
  }

  /** Counters per user, and per user and region of the host called. */
  const bumpUser = (map: Map<string, number>, userId: string, region: AmazonRegion) => {
    bump(map, userId);
    bump(map, `${userId}/${region}`);
  };
  const userCount = (map: Map<string, number>, userId: string, region?: AmazonRegion) =>
    map.get(region ? `${userId}/${region}` : userId) ?? 0;

  function answer(
    res: ServerResponse,
    endpoint: FakeEndpoint,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    statuses[endpoint][status] = (statuses[endpoint][status] ?? 0) + 1;
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID(), ...headers });
    res.end(body);
  }

  const arrivals = new Map<string, number[]>();
  /** Calls let through by limitPerSecond (a refused call does not use up Amazon's allowance). */
  const admitted = new Map<string, number[]>();
  const refused = new Map<string, number[]>();
  /** Records the arrival; true when it is over the endpoint's limit per second in that region. */
  function overLimit(endpoint: FakeEndpoint, region: AmazonRegion): boolean {
    const key = `${endpoint}:${region}`;
    const now = Date.now();
    // Appended in place: a copy per call made a long run (the scale simulation) quadratic.
    const seen = arrivals.get(key) ?? [];
    if (seen.length === 0) arrivals.set(key, seen);
    seen.push(now);
    const limit = knobs[endpoint].limitPerSecond;
    if (!(limit > 0)) return false;
    const recent = (admitted.get(key) ?? []).filter((t) => now - t < 1000);
    if (recent.length >= limit) {
      admitted.set(key, recent);
      const over = refused.get(key) ?? [];
      if (over.length === 0) refused.set(key, over);
      over.push(now);
      return true;
    }
    admitted.set(key, [...recent, now]);
    return false;
  }

  /** Applies the knobs; returns true when the call was answered (or left hanging). */
  async function misbehave(res: ServerResponse, endpoint: FakeEndpoint, region: AmazonRegion): Promise<boolean> {
    const k = knobs[endpoint];
    callsSinceKnobs[endpoint] += 1;
    if (overLimit(endpoint, region)) {
      const body = endpoint === 'lwa' ? '{"error":"TooManyRequests"}' : '{"code":"429","details":"Too Many Requests"}';
      answer(res, endpoint, 429, body, { 'retry-after': String(k.retryAfterSeconds) });
      return true;
    }
    if (callsSinceKnobs[endpoint] <= k.failFirstN) {
      answer(
        res,
        endpoint,
        500,
        endpoint === 'lwa' ? '{"error":"server_error"}' : '{"code":"500","details":"Internal Server Error"}',
      );
      return true;
    }
    if (k.hangRate > 0 && random() < k.hangRate) {
      statuses[endpoint][0] = (statuses[endpoint][0] ?? 0) + 1;
      return true;
    }
    if (k.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, k.latencyMs));
    if (k.rate429 > 0 && random() < k.rate429) {
      const body = endpoint === 'lwa' ? '{"error":"TooManyRequests"}' : '{"code":"429","details":"Too Many Requests"}';
      answer(res, endpoint, 429, body, { 'retry-after': String(k.retryAfterSeconds) });
      return true;
    }
    if (k.rate5xx > 0 && random() < k.rate5xx) {
      const status = random() < 0.5 ? 500 : 503;
      answer(
        res,
        endpoint,
        status,
        endpoint === 'lwa' ? '{"error":"server_error"}' : `{"code":"${status}","details":"Service Unavailable"}`,
      );
      return true;
    }
    return false;
  }

  function malformed(endpoint: FakeEndpoint): string | undefined {
    const k = knobs[endpoint];
    if (!(k.malformedRate > 0 && random() < k.malformedRate)) return undefined;
    const truncated = random() < 0.5;
    if (endpoint === 'lwa')
      return truncated ? '{"access_token":"Atza|trunc' : '{"access_token":"","token_type":"mac","expires_in":"soon"}';
    return truncated ? '[{"profileId":12' : '[{"profileId":"not-a-number","countryCode":1}]';
  }

  async function tokenEndpoint(
    req: IncomingMessage,
    res: ServerResponse,
    body: string,
    region: AmazonRegion,
  ): Promise<void> {
    totals.lwa += 1;
    const form = new URLSearchParams(body);
    const refreshToken = form.get('refresh_token');
    if (refreshToken) bump(refreshCalls, refreshToken);
    if (form.get('grant_type') === 'authorization_code') authorizationCodeCalls += 1;
    if (await misbehave(res, 'lwa', region)) return;
    const error = (status: number, code: string, description: string) =>
      answer(res, 'lwa', status, JSON.stringify({ error: code, error_description: description }));
    if (req.method !== 'POST') return error(400, 'invalid_request', 'The request method must be POST');
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      return error(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
    }
    if (form.get('grant_type') === 'authorization_code') return authorizationCodeGrant(res, form, error, region);
    if (form.get('grant_type') !== 'refresh_token')
      return error(400, 'unsupported_grant_type', 'Only the refresh_token grant is supported');
    if (!refreshToken || !form.get('client_id') || !form.get('client_secret'))
      return error(400, 'invalid_request', 'A required parameter is missing');
    if (form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret)
      return error(401, 'invalid_client', 'Client authentication failed');
    const state = byRefreshToken.get(refreshToken);
    // A connection's refresh token is good only at its own region's endpoint.
    if (!state || state.revoked || state.refreshToken !== refreshToken || (state.region && state.region !== region))
      return error(400, 'invalid_grant', 'The request has an invalid grant parameter : refresh_token');
    const bad = malformed('lwa');
    if (bad !== undefined) return answer(res, 'lwa', 200, bad);
    state.issued += 1;
    // Named per connection: two regions' tokens never collide.
    const name = `${state.userId}${state.region ? `-${state.region}` : ''}-${state.issued}`;
    const accessToken = `Atza|fake-${name}`;
    state.accessTokens.push(accessToken);
    byAccessToken.set(accessToken, state);
    if (state.mode === 'rotate') {
      byRefreshToken.delete(state.refreshToken);
      state.refreshToken = `Atzr|fake-${name}`;
      byRefreshToken.set(state.refreshToken, state);
    }
    bumpUser(refreshSuccesses, state.userId, region);
    answer(
      res,
      'lwa',
      200,
      JSON.stringify({
        access_token: accessToken,
        token_type: 'bearer',
        expires_in: expiresIn,
        ...(state.mode === 'omit' ? {} : { refresh_token: state.refreshToken }),
      }),
    );
  }

  function authorizationCodeGrant(
    res: ServerResponse,
    form: URLSearchParams,
    error: (status: number, code: string, description: string) => void,
    region: AmazonRegion,
  ): void {
    const code = form.get('code');
    if (!code || !form.get('redirect_uri') || !form.get('client_id') || !form.get('client_secret'))
      return error(400, 'invalid_request', 'A required parameter is missing');
    if (form.get('client_id') !== clientId || form.get('client_secret') !== clientSecret)
      return error(401, 'invalid_client', 'Client authentication failed');
    const grant = authorizationCodes.get(code);
    authorizationCodes.delete(code); // single use, whatever the outcome
    // A code is good once, for its redirect URI, at its own region's token endpoint, and (when
    // the consent request carried a PKCE challenge) with the verifier of that challenge.
    const verifier = form.get('code_verifier');
    if (
      !grant ||
      grant.expiresAt < Date.now() ||
      grant.redirectUri !== form.get('redirect_uri') ||
      (grant.region !== undefined && grant.region !== region) ||
      (grant.codeChallenge !== undefined &&
        (verifier === null || createHash('sha256').update(verifier).digest('base64url') !== grant.codeChallenge))
    )
      return error(400, 'invalid_grant', 'The request has an invalid grant parameter : code');
    const existing = (users.get(grant.userId) ?? []).find((c) => c.region === region || c.region === undefined);
    const state =
      existing ??
      (() => {
        // The user's first consent in this region: a new connection there.
        const created: UserState = {
          userId: grant.userId,
          region,
          refreshToken: '',
          revoked: false,
          mode: 'echo',
          accessTokens: [],
          profiles: users.get(grant.userId)![0].profiles,
          issued: 0,
        };
        users.set(grant.userId, [...users.get(grant.userId)!, created]);
        return created;
      })();
    state.issued += 1;
    byRefreshToken.delete(state.refreshToken);
    state.refreshToken = `Atzr|fake-${state.userId}${state.region ? `-${state.region}` : ''}-consent-${state.issued}`;
    state.revoked = false;
    byRefreshToken.set(state.refreshToken, state);
    const accessToken = `Atza|fake-${state.userId}${state.region ? `-${state.region}` : ''}-consent-${state.issued}`;
    state.accessTokens.push(accessToken);
    byAccessToken.set(accessToken, state);
    answer(
      res,
      'lwa',
      200,
      JSON.stringify({
        access_token: accessToken,
        token_type: 'bearer',
        expires_in: expiresIn,
        refresh_token: state.refreshToken,
      }),
    );
  }

  function consentPage(req: IncomingMessage, res: ServerResponse, region: AmazonRegion): void {
    const query = new URL(req.url ?? '/', 'http://fake').searchParams;
    const redirectUri = query.get('redirect_uri');
    const userId = query.get('user');
    const refuse = (message: string) =>
      void res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(message);
    if (req.method !== 'GET') return refuse('The consent page takes GET');
    if (query.get('client_id') !== clientId) return refuse('Unknown client_id');
    if (query.get('response_type') !== 'code') return refuse('response_type must be code');
    if (!redirectUri || !/^https?:\/\//.test(redirectUri)) return refuse('redirect_uri must be an http(s) URL');
    if (!userId || !users.has(userId)) return refuse('The fake needs user=<a user it knows> to consent as');
    const challenge = query.get('code_challenge') ?? undefined;
    const method = query.get('code_challenge_method');
    if (challenge !== undefined && (method !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(challenge)))
      return refuse('code_challenge must be a base64url SHA-256 with code_challenge_method=S256');
    const target = new URL(redirectUri);
    target.searchParams.set('code', issueAuthorizationCode(userId, redirectUri, region, challenge));
    target.searchParams.set('scope', query.get('scope') ?? 'advertising::campaign_management');
    const state = query.get('state');
    if (state !== null) target.searchParams.set('state', state);
    res.writeHead(302, { location: target.toString() }).end();
  }

  async function profilesEndpoint(req: IncomingMessage, res: ServerResponse, region: AmazonRegion): Promise<void> {
    totals.ads += 1;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const state = token ? byAccessToken.get(token) : undefined;
    if (state) bumpUser(profileCalls, state.userId, region);
    if (await misbehave(res, 'ads', region)) return;
    const unauthorized = () =>
      answer(
        res,
        'ads',
        401,
        JSON.stringify({ code: '401', details: 'Authentication failed', requestId: randomUUID() }),
      );
    if (req.method !== 'GET') return answer(res, 'ads', 405, '{"code":"405","details":"Method Not Allowed"}');
    if (!state || req.headers['amazon-advertising-api-clientid'] !== clientId) return unauthorized();
    // A connection's access token is good only on its own region's host.
    if (state.region && state.region !== region) return unauthorized();
    const bad = malformed('ads');
    if (bad !== undefined) return answer(res, 'ads', 200, bad);
    answer(res, 'ads', 200, profilesToWireJson(state.profiles.filter((p) => p.region === region)));
  }

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://fake').pathname;
      const segments = path.split('/').filter(Boolean);
      const host = (req.headers.host ?? '').split(':')[0];
      let region: AmazonRegion = REGION_HOSTS[host] ?? 'NA';
      if (isAmazonRegion(segments[0])) region = segments.shift() as AmazonRegion;
      const route = `/${segments.join('/')}`;
      const handled =
        route === '/auth/o2/token'
          ? tokenEndpoint(req, res, Buffer.concat(chunks).toString('utf8'), region)
          : route === '/v2/profiles'
            ? profilesEndpoint(req, res, region)
            : route === '/ap/oa'
              ? Promise.resolve(consentPage(req, res, region))
              : Promise.resolve(
                  void res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not Found"}'),
                );
      handled.catch(() => {
        if (!res.headersSent && !res.destroyed) res.writeHead(500).end();
      });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    lwaTokenUrl: `${url}/{region}/auth/o2/token`,
    adsBaseUrl: `${url}/{region}`,
    consentUrl: `${url}/{region}/ap/oa`,
    issueAuthorizationCode,
    clientId,
    get clientSecret() {
      return clientSecret;
    },
    rotateClientSecret(secret) {
      clientSecret = secret;
    },
    addUser(input) {
      const existing = users.get(input.userId) ?? [];
      if (existing.some((c) => c.region === undefined || input.region === undefined || c.region === input.region))
        throw new Error(`Fake Amazon: user ${input.userId} exists${input.region ? ` in ${input.region}` : ''}`);
      const accessToken =
        input.accessToken ?? `Atza|fake-initial-${input.userId}${input.region ? `-${input.region}` : ''}`;
      const state: UserState = {
        userId: input.userId,
        region: input.region,
        refreshToken: input.refreshToken,
        revoked: false,
        mode: input.refreshTokenMode ?? 'echo',
        accessTokens: [accessToken],
        // One list per user, shared by the user's connections (each host lists its region's).
        profiles: existing[0]?.profiles ?? [],
        issued: 0,
      };
      state.profiles.push(...(input.profiles ?? []));
      users.set(input.userId, [...existing, state]);
      byRefreshToken.set(input.refreshToken, state);
      byAccessToken.set(accessToken, state);
    },
    addProfiles(userId, profiles) {
      connections(userId)[0].profiles.push(...profiles);
    },
    removeProfiles(userId, profileIds) {
      const shared = connections(userId)[0].profiles;
      shared.splice(0, shared.length, ...shared.filter((p) => !profileIds.includes(p.profileId)));
    },
    currentRefreshToken: (userId, region) => user(userId, region).refreshToken,
    accessTokens: (userId, region) => [...user(userId, region).accessTokens],
    revoke(userId, region) {
      for (const state of connections(userId, region)) state.revoked = true;
    },
    reconnect(userId, region) {
      const state = user(userId, region);
      state.issued += 1;
      byRefreshToken.delete(state.refreshToken);
      state.refreshToken = `Atzr|fake-${userId}${state.region ? `-${state.region}` : ''}-reconnected-${state.issued}`;
      state.revoked = false;
      byRefreshToken.set(state.refreshToken, state);
      return state.refreshToken;
    },
    expireAccessTokens(userId, region) {
      for (const state of connections(userId, region))
        for (const token of state.accessTokens) byAccessToken.delete(token);
    },
    setKnobs(changes, endpoint) {
      for (const e of endpoint ? [endpoint] : (['lwa', 'ads'] as const)) {
        knobs[e] = { ...knobs[e], ...changes };
        if (changes.failFirstN !== undefined) callsSinceKnobs[e] = 0;
      }
    },
    counters: {
      refreshCalls: (refreshToken) => refreshCalls.get(refreshToken) ?? 0,
      refreshSuccesses: (userId, region) => userCount(refreshSuccesses, userId, region),
      profileCalls: (userId, region) => userCount(profileCalls, userId, region),
      total: (endpoint) => totals[endpoint],
      authorizationCodeCalls: () => authorizationCodeCalls,
      byStatus: (endpoint) => ({ ...statuses[endpoint] }),
      arrivals: (endpoint, region) => [...(arrivals.get(`${endpoint}:${region}`) ?? [])],
      limitedAt: (endpoint, region) => [...(refused.get(`${endpoint}:${region}`) ?? [])],
      busiestSecond: (endpoint, region) => {
        const times = arrivals.get(`${endpoint}:${region}`) ?? [];
        let most = 0;
        for (let i = 0, j = 0; i < times.length; i += 1) {
          while (times[i] - times[j] >= 1000) j += 1;
          most = Math.max(most, i - j + 1);
        }
        return most;
      },
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
