import { randomBytes, randomInt } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import type { Connections } from './connections';
import type { LwaEndpoint } from './lwa';
import { fakeProfile } from './profiles';

/**
 * Login with Amazon's consent page, `/{region}/ap/oa`.
 *
 * `GET` with `client_id`, `response_type=code`, `redirect_uri`, optional `state`, optional PKCE
 * `code_challenge` (`code_challenge_method=S256`):
 * - with the fake's own `user` parameter (a user it knows), it is approved at once: a 302 to
 *   `redirect_uri?code=…&scope=…&state=…` (the tests and the benchmark, no browser);
 * - without it, a page as Amazon shows one: who asks, for which region, an Amazon login to
 *   consent as (any name; a new one is created with a few profiles in the region), and
 *   Allow / Deny. The form posts back here; Allow redirects with `code`, `scope` and `state`,
 *   Deny with `error=access_denied`, `error_description` and `state`, as Login with Amazon does.
 */
export function consentPage(
  options: { clientId: string; registry: Connections; lwa: LwaEndpoint },
  req: IncomingMessage,
  res: ServerResponse,
  region: AmazonRegion,
  body: string,
): void {
  const { clientId, registry } = options;
  const query = req.method === 'POST' ? new URLSearchParams(body) : new URL(req.url ?? '/', 'http://fake').searchParams;
  const redirectUri = query.get('redirect_uri');
  const userId = query.get('user');
  const refuse = (message: string) =>
    void res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' }).end(message);
  if (req.method !== 'GET' && req.method !== 'POST') return refuse('The consent page takes GET (and its form POST)');
  if (query.get('client_id') !== clientId) return refuse('Unknown client_id');
  if (query.get('response_type') !== 'code') return refuse('response_type must be code');
  if (!redirectUri || !/^https?:\/\//.test(redirectUri)) return refuse('redirect_uri must be an http(s) URL');
  const challenge = query.get('code_challenge') ?? undefined;
  const method = query.get('code_challenge_method');
  if (challenge !== undefined && (method !== 'S256' || !/^[A-Za-z0-9_-]{43}$/.test(challenge)))
    return refuse('code_challenge must be a base64url SHA-256 with code_challenge_method=S256');

  const redirect = (params: Record<string, string>) => {
    const target = new URL(redirectUri);
    for (const [name, value] of Object.entries(params)) target.searchParams.set(name, value);
    const state = query.get('state');
    if (state !== null) target.searchParams.set('state', state);
    res.writeHead(302, { location: target.toString() }).end();
  };
  const approve = (consenting: string) =>
    redirect({
      code: options.lwa.issueAuthorizationCode(consenting, redirectUri, region, challenge),
      scope: query.get('scope') ?? 'advertising::campaign_management',
    });

  if (req.method === 'GET' && userId !== null) {
    if (!registry.users.has(userId)) return refuse('The fake needs user=<a user it knows> to consent as');
    return approve(userId);
  }
  if (req.method === 'GET') return void showPage(res, region, query);

  const decision = query.get('decision');
  if (decision === 'deny')
    return redirect({ error: 'access_denied', error_description: 'The user denied the request' });
  if (decision !== 'allow') return refuse('decision must be allow or deny');
  const login = (query.get('login') ?? '').trim();
  if (!/^[\w.@+-]{1,100}$/.test(login)) return refuse('login must be 1 to 100 letters, digits or . @ + - _');
  ensureConsentingUser(registry, login, region);
  approve(login);
}

/** A login seen for the first time gets a connection with three profiles in the region; a known one gains profiles there if it has none. */
function ensureConsentingUser(registry: Connections, login: string, region: AmazonRegion): void {
  // Random ids: a login made in an earlier `npm start` run must not meet the same ids again.
  const profiles = () =>
    Array.from({ length: 3 }, () =>
      fakeProfile(region, { profileId: String(4_000_000_000_000 + randomInt(1_000_000_000_000)) }),
    );
  if (!registry.users.has(login)) {
    registry.add({ userId: login, region, refreshToken: `Atzr|fake-${randomBytes(8).toString('hex')}` });
    registry.addProfiles(login, profiles());
  } else if (!registry.connections(login)[0].profiles.some((p) => p.region === region)) {
    registry.addProfiles(login, profiles());
  }
}

const escape = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const REGION_NAMES: Record<AmazonRegion, string> = {
  NA: 'North America',
  EU: 'Europe',
  FE: 'Far East',
};

function showPage(res: ServerResponse, region: AmazonRegion, query: URLSearchParams): void {
  const hidden = [...query.entries()]
    .filter(([name]) => !['decision', 'login', 'user'].includes(name))
    .map(([name, value]) => `<input type="hidden" name="${escape(name)}" value="${escape(value)}">`)
    .join('\n      ');
  const html = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Amazon (fake): allow access in ${region}</title>
  <style>
    body { font-family: system-ui, sans-serif; margin: 0; background: #f3f3f3; color: #111; }
    main { max-width: 28rem; margin: 2rem auto; background: #fff; padding: 1.5rem; border: 1px solid #ccc; border-radius: 8px; }
    h1 { font-size: 1.3rem; }
    label { display: block; margin: 1rem 0 0.25rem; font-weight: 600; }
    input[type=text] { width: 100%; box-sizing: border-box; padding: 0.5rem; font-size: 1rem; }
    .actions { display: flex; gap: 0.75rem; margin-top: 1.25rem; }
    button { font-size: 1rem; padding: 0.6rem 1.2rem; border-radius: 6px; border: 1px solid #555; cursor: pointer; }
    button[value=allow] { background: #ffd814; border-color: #a88734; }
    button[value=deny] { background: #fff; }
    button:focus-visible, input:focus-visible { outline: 3px solid #0b57d0; outline-offset: 2px; }
  </style>
</head>
<body>
  <main>
    <h1>Allow access to your Amazon Ads data in ${escape(REGION_NAMES[region])} (${region})?</h1>
    <p>This is the local fake of Login with Amazon. An app asks to manage your advertising
    accounts in this region. Allow it, or deny it.</p>
    <form method="post">
      ${hidden}
      <label for="login">Amazon login (fake: any name; a new one gets three ${region} profiles)</label>
      <input type="text" id="login" name="login" value="demo-seller" autocomplete="username" required>
      <div class="actions">
        <button type="submit" name="decision" value="allow">Allow</button>
        <button type="submit" name="decision" value="deny" formnovalidate>Deny</button>
      </div>
    </form>
  </main>
</body>
</html>
`;
  res
    .writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:",
    })
    .end(html);
}
