import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import type { Connections } from './connections';
import type { LwaEndpoint } from './lwa';

/**
 * Login with Amazon's consent page (`GET /{region}/ap/oa`), answered as if the user agreed:
 * a redirect to `redirect_uri` with an authorization code and the `state`.
 */
export function consentPage(
  options: { clientId: string; registry: Connections; lwa: LwaEndpoint },
  req: IncomingMessage,
  res: ServerResponse,
  region: AmazonRegion,
): void {
  const { clientId, registry } = options;
  const query = new URL(req.url ?? '/', 'http://fake').searchParams;
  const redirectUri = query.get('redirect_uri');
  const userId = query.get('user');
  const refuse = (message: string) =>
    void res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(message);
  if (req.method !== 'GET') return refuse('The consent page takes GET');
  if (query.get('client_id') !== clientId) return refuse('Unknown client_id');
  if (query.get('response_type') !== 'code') return refuse('response_type must be code');
  if (!redirectUri || !/^https?:\/\//.test(redirectUri)) return refuse('redirect_uri must be an http(s) URL');
  if (!userId || !registry.users.has(userId)) return refuse('The fake needs user=<a user it knows> to consent as');
  const challenge = query.get('code_challenge') ?? undefined;
  const method = query.get('code_challenge_method');
  if (challenge !== undefined && (method !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(challenge)))
    return refuse('code_challenge must be a base64url SHA-256 with code_challenge_method=S256');
  const target = new URL(redirectUri);
  target.searchParams.set('code', options.lwa.issueAuthorizationCode(userId, redirectUri, region, challenge));
  target.searchParams.set('scope', query.get('scope') ?? 'advertising::campaign_management');
  const state = query.get('state');
  if (state !== null) target.searchParams.set('state', state);
  res.writeHead(302, { location: target.toString() }).end();
}
