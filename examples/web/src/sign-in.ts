import type { WebConfig } from './config';

/**
 * Sign-in with the product's OpenID Connect provider: the authorization code flow with PKCE
 * (S256), as a public client (no secret in the page). The token is kept in sessionStorage
 * (gone when the tab closes) and sent to the accounts API as a bearer token.
 */
const TOKEN_KEY = 'accounts-example.token';
const PENDING_KEY = 'accounts-example.sign-in';

interface Discovery {
  readonly authorization_endpoint: string;
  readonly token_endpoint: string;
}

const base64url = (bytes: Uint8Array) =>
  btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '');

const randomText = () => base64url(crypto.getRandomValues(new Uint8Array(32)));

async function discover(config: WebConfig): Promise<Discovery> {
  const answer = await fetch(config.signIn.discoveryUrl);
  if (!answer.ok) throw new Error(`The sign-in provider's discovery document answered HTTP ${answer.status}`);
  return (await answer.json()) as Discovery;
}

export function currentToken(): string | undefined {
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Sends the browser to the provider's sign-in page. */
export async function startSignIn(config: WebConfig): Promise<void> {
  const discovery = await discover(config);
  const verifier = randomText();
  const state = randomText();
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier)));
  sessionStorage.setItem(PENDING_KEY, JSON.stringify({ verifier, state }));
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: config.signIn.clientId,
    redirect_uri: config.signIn.redirectUri,
    scope: config.signIn.scope ?? 'openid email',
    state,
    code_challenge: base64url(digest),
    code_challenge_method: 'S256',
  }).toString();
  location.assign(url.toString());
}

/** On the redirect back (`/signed-in?code&state`): exchanges the code for the token. */
export async function finishSignIn(config: WebConfig, params: URLSearchParams): Promise<void> {
  const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) ?? 'null') as {
    verifier: string;
    state: string;
  } | null;
  sessionStorage.removeItem(PENDING_KEY);
  if (params.get('error')) throw new Error(`Sign-in was refused: ${params.get('error')}`);
  if (!pending || params.get('state') !== pending.state)
    throw new Error('Sign-in failed: the answer does not match the request; sign in again.');
  const discovery = await discover(config);
  const answer = await fetch(discovery.token_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code: params.get('code') ?? '',
      redirect_uri: config.signIn.redirectUri,
      client_id: config.signIn.clientId,
      code_verifier: pending.verifier,
    }),
  });
  if (!answer.ok) throw new Error(`Sign-in failed: the token endpoint answered HTTP ${answer.status}`);
  const tokens = (await answer.json()) as Record<string, string>;
  const token = tokens[config.signIn.token ?? 'access_token'];
  if (!token) throw new Error('Sign-in failed: no token in the answer');
  sessionStorage.setItem(TOKEN_KEY, token);
}
