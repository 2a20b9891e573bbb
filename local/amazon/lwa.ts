import { createHash, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import { Connections, PerUserCounts, UserState } from './connections';
import { sentAtOf, type Misbehaviour } from './misbehaviour';

/**
 * Login with Amazon's token endpoint (`POST /{region}/auth/o2/token`): the refresh_token grant
 * and the authorization_code grant (with PKCE), and the authorization codes the consent page
 * issues for it.
 */
export interface LwaEndpointOptions {
  readonly clientId: string;
  /** The client secret accepted now (it can be rotated). */
  readonly clientSecret: () => string;
  readonly expiresIn: number;
  readonly registry: Connections;
  readonly behaviour: Misbehaviour;
}

export interface LwaEndpoint {
  handle(req: IncomingMessage, res: ServerResponse, body: string, region: AmazonRegion): Promise<void>;
  issueAuthorizationCode(userId: string, redirectUri: string, region?: AmazonRegion, codeChallenge?: string): string;
  readonly refreshCalls: Map<string, number>;
  readonly refreshSuccesses: PerUserCounts;
  total(): number;
  authorizationCodeCalls(): number;
}

export function lwaEndpoint(options: LwaEndpointOptions): LwaEndpoint {
  const { clientId, expiresIn, registry, behaviour } = options;
  let total = 0;
  const refreshCalls = new Map<string, number>();
  const refreshSuccesses = new PerUserCounts();
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
    if (!registry.users.has(userId)) throw new Error(`Fake Amazon: unknown user ${userId}`);
    codesIssued += 1;
    const code = `ANfake${codesIssued}${randomUUID().replace(/-/g, '')}`;
    authorizationCodes.set(code, { userId, redirectUri, region, expiresAt: Date.now() + 5 * 60_000, codeChallenge });
    return code;
  }

  async function tokenEndpoint(
    req: IncomingMessage,
    res: ServerResponse,
    body: string,
    region: AmazonRegion,
  ): Promise<void> {
    total += 1;
    const form = new URLSearchParams(body);
    const refreshToken = form.get('refresh_token');
    if (refreshToken) refreshCalls.set(refreshToken, (refreshCalls.get(refreshToken) ?? 0) + 1);
    if (form.get('grant_type') === 'authorization_code') authorizationCodeCalls += 1;
    if (await behaviour.misbehave(res, 'lwa', region, sentAtOf(req.headers))) return;
    const error = (status: number, code: string, description: string) =>
      behaviour.answer(res, 'lwa', status, JSON.stringify({ error: code, error_description: description }));
    if (req.method !== 'POST') return error(400, 'invalid_request', 'The request method must be POST');
    if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
      return error(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
    }
    if (form.get('grant_type') === 'authorization_code') return authorizationCodeGrant(res, form, error, region);
    if (form.get('grant_type') !== 'refresh_token')
      return error(400, 'unsupported_grant_type', 'Only the refresh_token grant is supported');
    if (!refreshToken || !form.get('client_id') || !form.get('client_secret'))
      return error(400, 'invalid_request', 'A required parameter is missing');
    if (form.get('client_id') !== clientId || form.get('client_secret') !== options.clientSecret())
      return error(401, 'invalid_client', 'Client authentication failed');
    const state = registry.byRefreshToken.get(refreshToken);
    // A connection's refresh token is good only at its own region's endpoint.
    if (!state || state.revoked || state.refreshToken !== refreshToken || (state.region && state.region !== region))
      return error(400, 'invalid_grant', 'The request has an invalid grant parameter : refresh_token');
    const bad = behaviour.malformed('lwa');
    if (bad !== undefined) return behaviour.answer(res, 'lwa', 200, bad);
    state.issued += 1;
    // Named per connection: two regions' tokens never collide.
    const name = `${state.userId}${state.region ? `-${state.region}` : ''}-${state.issued}`;
    const accessToken = `Atza|fake-${name}`;
    state.accessTokens.push(accessToken);
    registry.byAccessToken.set(accessToken, state);
    if (state.mode === 'rotate') {
      registry.byRefreshToken.delete(state.refreshToken);
      state.refreshToken = `Atzr|fake-${name}`;
      registry.byRefreshToken.set(state.refreshToken, state);
    }
    refreshSuccesses.bump(state.userId, region);
    behaviour.answer(
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
    if (form.get('client_id') !== clientId || form.get('client_secret') !== options.clientSecret())
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
    const existing = (registry.users.get(grant.userId) ?? []).find(
      (c) => c.region === region || c.region === undefined,
    );
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
          profiles: registry.users.get(grant.userId)![0].profiles,
          issued: 0,
        };
        registry.users.set(grant.userId, [...registry.users.get(grant.userId)!, created]);
        return created;
      })();
    state.issued += 1;
    registry.byRefreshToken.delete(state.refreshToken);
    state.refreshToken = `Atzr|fake-${state.userId}${state.region ? `-${state.region}` : ''}-consent-${state.issued}`;
    state.revoked = false;
    registry.byRefreshToken.set(state.refreshToken, state);
    const accessToken = `Atza|fake-${state.userId}${state.region ? `-${state.region}` : ''}-consent-${state.issued}`;
    state.accessTokens.push(accessToken);
    registry.byAccessToken.set(accessToken, state);
    behaviour.answer(
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

  return {
    handle: tokenEndpoint,
    issueAuthorizationCode,
    refreshCalls,
    refreshSuccesses,
    total: () => total,
    authorizationCodeCalls: () => authorizationCodeCalls,
  };
}
