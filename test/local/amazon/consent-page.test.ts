import { FakeAmazon, startFakeAmazon } from '../../../local/amazon/fake-amazon';

// The fake Amazon's consent page as a browser meets it (no `user` parameter): a form that
// approves or denies for one region, answered as Login with Amazon answers (a redirect with
// `code` and `state`, or `error=access_denied` and `state`). Fails on the auto-approving page,
// which refused any request without `user`.

let amazon: FakeAmazon;
beforeAll(async () => {
  amazon = await startFakeAmazon();
});
afterAll(() => amazon.close());

const REDIRECT = 'http://localhost:3000/amazon/callback';
const consentQuery = (region: string) => {
  const url = new URL(amazon.consentUrl.replace('{region}', region));
  url.search = new URLSearchParams({
    client_id: amazon.clientId,
    response_type: 'code',
    scope: 'advertising::campaign_management',
    redirect_uri: REDIRECT,
    state: 'state-123',
  }).toString();
  return url;
};

async function decide(region: string, decision: string, login = 'seller-1') {
  const form = new URLSearchParams(consentQuery(region).searchParams);
  form.set('decision', decision);
  form.set('login', login);
  const answer = await fetch(amazon.consentUrl.replace('{region}', region), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: form,
    redirect: 'manual',
  });
  return { status: answer.status, location: new URL(answer.headers.get('location') ?? 'about:blank') };
}

test('without user=, the page is a form naming the region, carrying the request, with Allow and Deny', async () => {
  const page = await fetch(consentQuery('EU'));
  expect(page.status).toBe(200);
  expect(page.headers.get('content-type')).toMatch(/^text\/html/);
  const html = await page.text();
  expect(html).toContain('Europe (EU)');
  expect(html).toMatch(/<form method="post">/);
  expect(html).toContain('name="state" value="state-123"');
  expect(html).toMatch(/<label for="login">/);
  expect(html).toContain('value="allow"');
  expect(html).toContain('value="deny"');
});

test('Allow redirects with a code and the state; the code is exchanged at that region’s token endpoint for tokens that list the region’s profiles', async () => {
  const { status, location } = await decide('FE', 'allow', 'seller-fe');
  expect(status).toBe(302);
  expect(`${location.origin}${location.pathname}`).toBe(REDIRECT);
  expect(location.searchParams.get('state')).toBe('state-123');
  const code = location.searchParams.get('code')!;
  const token = await fetch(amazon.lwaTokenUrl.replace('{region}', 'FE'), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT,
      client_id: amazon.clientId,
      client_secret: amazon.clientSecret,
    }),
  });
  expect(token.status).toBe(200);
  const { access_token } = (await token.json()) as { access_token: string };
  const profiles = await fetch(`${amazon.adsBaseUrl.replace('{region}', 'FE')}/v2/profiles`, {
    headers: { authorization: `Bearer ${access_token}`, 'amazon-advertising-api-clientid': amazon.clientId },
  });
  const listed = (await profiles.json()) as Array<{ countryCode: string }>;
  expect(listed).toHaveLength(3);
  expect(listed.every((p) => p.countryCode === 'JP')).toBe(true);
});

test('the same login consenting in a second region gets profiles there too', async () => {
  await decide('NA', 'allow', 'seller-two');
  const { location } = await decide('EU', 'allow', 'seller-two');
  expect(location.searchParams.get('code')).toMatch(/^ANfake/);
});

test('Deny redirects with error=access_denied and the state, and no code', async () => {
  const { status, location } = await decide('NA', 'deny');
  expect(status).toBe(302);
  expect(location.searchParams.get('error')).toBe('access_denied');
  expect(location.searchParams.get('state')).toBe('state-123');
  expect(location.searchParams.has('code')).toBe(false);
});

test('a decision that is neither, or a login with markup, is refused 400', async () => {
  expect((await decide('NA', 'maybe')).status).toBe(400);
  expect((await decide('NA', 'allow', '<script>')).status).toBe(400);
});
