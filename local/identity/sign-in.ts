import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LocalIssuer } from './issuer';

/**
 * The local issuer as an OpenID Connect provider, so a browser app signs in locally exactly as
 * it does against the product's identity provider in AWS: discovery, the authorization code
 * flow with PKCE (S256), a token endpoint a page may call (CORS). `npm run api` serves it
 * beside the local issuer's JWKS:
 *
 *   GET  /.well-known/openid-configuration
 *   GET  /local/sign-in/authorize   a page: sign in as which user (sub, a uuid) and e-mail
 *   POST /local/sign-in/authorize   redirects to redirect_uri with code and state
 *   POST /local/sign-in/token       grant_type=authorization_code, code, redirect_uri,
 *                                    code_verifier → access_token and id_token (the issuer's)
 *
 * Local only: whoever reaches the page signs in as anyone; codes are single use, live for
 * five minutes and are bound to their redirect URI and PKCE challenge.
 */
export interface LocalSignIn {
  /** Answers the request when it is one of the routes above; false otherwise. */
  handle(req: IncomingMessage, res: ServerResponse, url: URL, body: string): boolean;
}

export interface LocalSignInOptions {
  readonly issuer: LocalIssuer;
  /** The server's base URL (`http://127.0.0.1:<port>`), known once it listens. */
  readonly baseUrl: () => string;
  /** Users to offer on the page (a demo user with accounts, say). @default none */
  readonly suggestions?: () => Promise<ReadonlyArray<{ sub: string; label: string }>>;
}

export const SIGN_IN_PATHS = {
  discovery: '/.well-known/openid-configuration',
  authorize: '/local/sign-in/authorize',
  token: '/local/sign-in/token',
} as const;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function localSignIn(options: LocalSignInOptions): LocalSignIn {
  const codes = new Map<
    string,
    { sub: string; email: string; redirectUri: string; challenge: string; expiresAt: number }
  >();
  const json = (res: ServerResponse, status: number, value: unknown) =>
    void res
      .writeHead(status, {
        'content-type': 'application/json',
        'cache-control': 'no-store',
        // A page on another origin reads these (discovery, tokens); nothing here uses cookies.
        'access-control-allow-origin': '*',
      })
      .end(JSON.stringify(value));
  const refuse = (res: ServerResponse, message: string) =>
    void res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(message);

  function authorize(req: IncomingMessage, res: ServerResponse, params: URLSearchParams): void {
    const redirectUri = params.get('redirect_uri') ?? '';
    const challenge = params.get('code_challenge') ?? '';
    if (params.get('response_type') !== 'code') return refuse(res, 'response_type must be code');
    if (!/^https?:\/\//.test(redirectUri)) return refuse(res, 'redirect_uri must be an http(s) URL');
    if (params.get('code_challenge_method') !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(challenge))
      return refuse(res, 'PKCE is required: code_challenge with code_challenge_method=S256');
    if (req.method === 'GET') return void showPage(res, params, options.suggestions);
    const sub = (params.get('sub') ?? '').trim();
    const email = (params.get('email') ?? '').trim();
    if (!UUID.test(sub)) return refuse(res, 'sub must be a uuid');
    if (email.length > 200 || /[\s<>]/.test(email)) return refuse(res, 'email is not valid');
    const code = randomBytes(24).toString('base64url');
    codes.set(code, { sub: sub.toLowerCase(), email, redirectUri, challenge, expiresAt: Date.now() + 5 * 60_000 });
    const target = new URL(redirectUri);
    target.searchParams.set('code', code);
    const state = params.get('state');
    if (state !== null) target.searchParams.set('state', state);
    res.writeHead(302, { location: target.toString() }).end();
  }

  function token(res: ServerResponse, form: URLSearchParams): void {
    const code = form.get('code') ?? '';
    const grant = codes.get(code);
    codes.delete(code);
    const verifier = form.get('code_verifier') ?? '';
    if (form.get('grant_type') !== 'authorization_code') return json(res, 400, { error: 'unsupported_grant_type' });
    if (
      !grant ||
      grant.expiresAt < Date.now() ||
      grant.redirectUri !== form.get('redirect_uri') ||
      createHash('sha256').update(verifier).digest('base64url') !== grant.challenge
    )
      return json(res, 400, { error: 'invalid_grant' });
    const signed = options.issuer.token({ sub: grant.sub, email: grant.email || undefined, expiresInSeconds: 3600 });
    json(res, 200, { access_token: signed, id_token: signed, token_type: 'Bearer', expires_in: 3600 });
  }

  return {
    handle(req, res, url, body) {
      const base = options.baseUrl();
      if (url.pathname === SIGN_IN_PATHS.discovery && req.method === 'GET') {
        json(res, 200, {
          issuer: options.issuer.issuer,
          authorization_endpoint: `${base}${SIGN_IN_PATHS.authorize}`,
          token_endpoint: `${base}${SIGN_IN_PATHS.token}`,
          jwks_uri: `${base}/.well-known/jwks.json`,
          response_types_supported: ['code'],
          grant_types_supported: ['authorization_code'],
          code_challenge_methods_supported: ['S256'],
          subject_types_supported: ['public'],
          id_token_signing_alg_values_supported: ['ES256'],
        });
        return true;
      }
      if (url.pathname === SIGN_IN_PATHS.authorize && (req.method === 'GET' || req.method === 'POST')) {
        authorize(req, res, req.method === 'GET' ? url.searchParams : new URLSearchParams(body));
        return true;
      }
      if (url.pathname === SIGN_IN_PATHS.token && req.method === 'POST') {
        token(res, new URLSearchParams(body));
        return true;
      }
      return false;
    },
  };
}

const escape = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

async function showPage(
  res: ServerResponse,
  params: URLSearchParams,
  suggestions: LocalSignInOptions['suggestions'],
): Promise<void> {
  const offered = (await suggestions?.().catch(() => [])) ?? [];
  const hidden = [...params.entries()]
    .filter(([name]) => !['sub', 'email'].includes(name))
    .map(([name, value]) => `<input type="hidden" name="${escape(name)}" value="${escape(value)}">`)
    .join('\n      ');
  const options = offered.map((o) => `<option value="${escape(o.sub)}">${escape(o.label)}</option>`).join('');
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Local sign-in</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 0; background: #eef2f6; color: #111; }
    main { max-width: 30rem; margin: 2rem auto; background: #fff; padding: 1.5rem; border-radius: 8px; border: 1px solid #ccd; }
    label { display: block; margin: 1rem 0 0.25rem; font-weight: 600; }
    input { width: 100%; box-sizing: border-box; padding: 0.5rem; font-size: 1rem; }
    button { margin-top: 1.25rem; font-size: 1rem; padding: 0.6rem 1.2rem; border-radius: 6px; border: 1px solid #1d4ed8; background: #1d4ed8; color: #fff; }
    button:focus-visible, input:focus-visible { outline: 3px solid #111; outline-offset: 2px; }
    .hint { color: #444; font-size: 0.9rem; }
  </style>
</head>
<body>
  <main>
    <h1>Local sign-in</h1>
    <p class="hint">The local identity provider of <code>npm start</code> / <code>npm run api</code>: sign in as any user. In AWS, your own OpenID Connect provider shows its page here.</p>
    <form method="post">
      ${hidden}
      <label for="sub">User id (the token's sub)</label>
      <input id="sub" name="sub" value="${escape(offered[0]?.sub ?? randomUUID())}" list="users" required pattern="[0-9a-fA-F-]{36}">
      <datalist id="users">${options}</datalist>
      <label for="email">E-mail (optional)</label>
      <input id="email" name="email" type="email" value="" autocomplete="email">
      <button type="submit">Sign in</button>
    </form>
  </main>
</body>
</html>
`;
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html);
}
