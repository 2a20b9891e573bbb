import { get } from 'node:http';
import {
  AccessTokenRejectedError,
  AdsClient,
  AmazonApiError,
  LwaClient,
  MalformedResponseError,
  PermanentAuthError,
  RateLimitedError,
  TransientError,
} from '../../lambda/shared/amazon';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { RateLimiterRegistry } from '../../lambda/shared/amazon/rate-limiter';
import { lwaCredentialsFromSecret, SecretsCache } from '../../lambda/shared/secrets';
import { FakeAmazon, startFakeAmazon } from '../../local/amazon/fake-amazon';
import { fakeProfile } from '../../local/amazon/profiles';

/** The Amazon clients against the fake Amazon: wire shapes, regions and every error class. */
let fake: FakeAmazon;
let limiters: RateLimiterRegistry;
const SECRETS: string[] = [];
let userCount = 0;

beforeEach(async () => {
  fake = await startFakeAmazon({ seed: 42 });
  limiters = new RateLimiterRegistry({
    lwa: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 50 },
    ads: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 50 },
  });
  SECRETS.push(fake.clientSecret);
});
afterEach(async () => {
  await fake.close();
});

function lwa(overrides: Partial<ConstructorParameters<typeof LwaClient>[0]> = {}) {
  return new LwaClient({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    tokenUrl: fake.lwaTokenUrl,
    limiters,
    timeoutMs: 2000,
    ...overrides,
  });
}
function ads(overrides: Partial<ConstructorParameters<typeof AdsClient>[0]> = {}) {
  return new AdsClient({
    clientId: fake.clientId,
    baseUrl: fake.adsBaseUrl,
    limiters,
    timeoutMs: 2000,
    retry: { sleep: async () => undefined },
    ...overrides,
  });
}
function newUser(options: Partial<Parameters<FakeAmazon['addUser']>[0]> = {}) {
  userCount += 1;
  const user = { userId: `user-${userCount}`, refreshToken: `Atzr|secret-refresh-${userCount}`, ...options };
  fake.addUser(user);
  SECRETS.push(user.refreshToken, `Atza|fake-initial-${user.userId}`);
  return user;
}
async function failure(promise: Promise<unknown>): Promise<AmazonApiError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AmazonApiError);
  // No token, secret or header ever reaches an error (message, fields or cause chain).
  const seen = new Set<unknown>();
  let text = '';
  for (let e: unknown = error; e && !seen.has(e); e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    text += `${String((e as Error).message)} ${JSON.stringify(e)} `;
  }
  for (const secret of SECRETS) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/Bearer|Atza\||Atzr\|/);
  return error as AmazonApiError;
}

describe('LWA client', () => {
  test('refreshes a token in the user’s region and returns the new access token', async () => {
    const user = newUser();
    const tokens = await lwa().refresh({ itemId: 'token-1', region: 'EU', refreshToken: user.refreshToken });
    expect(tokens).toEqual({
      accessToken: `Atza|fake-${user.userId}-1`,
      refreshToken: user.refreshToken,
      expiresInSeconds: 3600,
    });
    expect(fake.counters.refreshCalls(user.refreshToken)).toBe(1);
    expect(fake.counters.refreshSuccesses(user.userId)).toBe(1);
  });

  test('a response without refresh_token leaves it undefined (keep the stored one)', async () => {
    const user = newUser({ refreshTokenMode: 'omit' });
    const tokens = await lwa().refresh({ itemId: 'token-1', region: 'NA', refreshToken: user.refreshToken });
    expect(tokens.refreshToken).toBeUndefined();
  });

  test('rotating refresh tokens: the new one works, the old one is invalid_grant', async () => {
    const user = newUser({ refreshTokenMode: 'rotate' });
    const first = await lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken });
    expect(first.refreshToken).toBe(fake.currentRefreshToken(user.userId));
    expect(first.refreshToken).not.toBe(user.refreshToken);
    SECRETS.push(first.refreshToken!);
    await lwa().refresh({ itemId: 't', region: 'NA', refreshToken: first.refreshToken! });
    const error = await failure(lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }));
    expect(error).toBeInstanceOf(PermanentAuthError);
    expect((error as PermanentAuthError).code).toBe('invalid_grant');
  });

  test('a revoked token is a PermanentAuthError invalid_grant that needs re-authorisation, carrying the item id', async () => {
    const user = newUser();
    fake.revoke(user.userId);
    const error = await failure(
      lwa().refresh({ itemId: 'token-row-7', region: 'FE', refreshToken: user.refreshToken }),
    );
    expect(error).toBeInstanceOf(PermanentAuthError);
    expect(error).toMatchObject({
      itemId: 'token-row-7',
      region: 'FE',
      status: 400,
      code: 'invalid_grant',
      needsReauthorisation: true,
    });
    expect(error.message).toBe('LWA token refresh for token-row-7 (FE): invalid_grant');
  });

  test('a wrong client secret is invalid_client (401), not a re-authorisation', async () => {
    const user = newUser();
    SECRETS.push('wrong-secret');
    const error = await failure(
      lwa({ clientSecret: 'wrong-secret' }).refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }),
    );
    expect(error).toMatchObject({ status: 401, code: 'invalid_client', needsReauthorisation: false });
  });

  describe('a client secret replaced in Secrets Manager (read through the cache)', () => {
    const secretsManager = mockClient(SecretsManagerClient);
    const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-client-AbCdEf';
    let original: string;
    beforeEach(() => {
      original = fake.clientSecret;
    });
    afterEach(() => {
      fake.rotateClientSecret(original);
      secretsManager.reset();
    });
    function secretHolding(...values: string[]) {
      let mock = secretsManager.on(GetSecretValueCommand, { SecretId: ARN });
      for (const value of values.slice(0, -1)) {
        mock = mock.resolvesOnce({ SecretString: JSON.stringify({ clientId: fake.clientId, clientSecret: value }) });
      }
      mock.resolves({ SecretString: JSON.stringify({ clientId: fake.clientId, clientSecret: values.at(-1) }) });
      const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }));
      return lwaCredentialsFromSecret(cache, ARN);
    }

    test('on invalid_client the secret is read again once, and the refresh goes through with the new one', async () => {
      const user = newUser();
      SECRETS.push('rotated-secret');
      const client = lwa({
        clientId: undefined,
        clientSecret: undefined,
        credentials: secretHolding(original, 'rotated-secret'),
      });
      await client.refresh({ itemId: 't1', region: 'NA', refreshToken: user.refreshToken }); // cached: the old secret
      fake.rotateClientSecret('rotated-secret');
      const refreshed = await client.refresh({ itemId: 't2', region: 'NA', refreshToken: user.refreshToken });
      expect(refreshed.accessToken).toBe(fake.accessTokens(user.userId).at(-1));
      expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2);
      await client.refresh({ itemId: 't3', region: 'NA', refreshToken: user.refreshToken }); // the new one, cached
      expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2);
    });

    test('when the secret did not change, invalid_client fails after one re-read, not one per token', async () => {
      const user = newUser();
      const client = lwa({ clientId: undefined, clientSecret: undefined, credentials: secretHolding(original) });
      fake.rotateClientSecret('rotated-at-amazon-only');
      SECRETS.push('rotated-at-amazon-only');
      for (const itemId of ['t1', 't2', 't3']) {
        const error = await failure(client.refresh({ itemId, region: 'NA', refreshToken: user.refreshToken }));
        expect(error).toMatchObject({ status: 401, code: 'invalid_client' });
      }
      expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2); // the first read, one re-read
    });
  });

  test('429 is RateLimitedError with Retry-After, and pauses the endpoint’s shared limiter', async () => {
    let now = 1_000_000;
    const clocked = new RateLimiterRegistry({}, { now: () => now, sleep: async (ms) => void (now += ms) });
    const user = newUser();
    fake.setKnobs({ rate429: 1, retryAfterSeconds: 7 }, 'lwa');
    const error = await failure(
      lwa({ limiters: clocked }).refresh({ itemId: 't', region: 'EU', refreshToken: user.refreshToken }),
    );
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(error).toMatchObject({ status: 429, retryAfterSeconds: 7, endpoint: 'lwa', region: 'EU' });
    expect(clocked.for('lwa', 'EU').bucket.pausedUntilMs()).toBe(1_000_000 + 7000);
    expect(clocked.for('lwa', 'NA').bucket.pausedUntilMs()).toBe(0);
    // The next call in that region waits out the pause before it goes.
    fake.setKnobs({ rate429: 0 }, 'lwa');
    await lwa({ limiters: clocked }).refresh({ itemId: 't', region: 'EU', refreshToken: user.refreshToken });
    expect(now).toBeGreaterThanOrEqual(1_000_000 + 7000);
  });

  test('5xx is a TransientError (not retried by default: rotation makes refresh non-idempotent)', async () => {
    const user = newUser();
    fake.setKnobs({ failFirstN: 1 }, 'lwa');
    const error = await failure(lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }));
    expect(error).toBeInstanceOf(TransientError);
    expect(error).toMatchObject({ status: 500, reason: 'http_5xx' });
    expect(fake.counters.refreshCalls(user.refreshToken)).toBe(1);
  });

  test('a hanging endpoint times out as a TransientError', async () => {
    const user = newUser();
    fake.setKnobs({ hangRate: 1 }, 'lwa');
    const error = await failure(
      lwa({ timeoutMs: 150 }).refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }),
    );
    expect(error).toBeInstanceOf(TransientError);
    expect(error).toMatchObject({ reason: 'timeout', status: undefined });
  });

  test('a refused connection is a TransientError', async () => {
    const user = newUser();
    const closed = await startFakeAmazon();
    await closed.close();
    const error = await failure(
      lwa({ tokenUrl: closed.lwaTokenUrl }).refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }),
    );
    expect(error).toMatchObject({ reason: 'network' });
    expect(error.message).toMatch(/ECONNREFUSED/);
  });

  test.each([1, 2, 3, 4])('malformed 200 bodies are MalformedResponseError (sample %i)', async () => {
    const user = newUser();
    fake.setKnobs({ malformedRate: 1 }, 'lwa');
    const error = await failure(lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken }));
    expect(error).toBeInstanceOf(MalformedResponseError);
    expect((error as MalformedResponseError).problems.length).toBeGreaterThan(0);
  });
});

describe('Ads client', () => {
  test('lists the user’s profiles of the requested region only, with exact profile ids', async () => {
    const na = fakeProfile('NA', { profileId: '9007199254740993' });
    const eu = fakeProfile('EU', { accountInfo: { type: 'vendor', subType: 'KDP_AUTHOR' } });
    const user = newUser({ profiles: [na, eu, fakeProfile('FE')] });
    const access = fake.accessTokens(user.userId)[0];
    const naProfiles = await ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: access });
    const euProfiles = await ads().listProfiles({ itemId: user.userId, region: 'EU', accessToken: access });
    const { region: _na, ...naWire } = na;
    const { region: _eu, ...euWire } = eu;
    expect(naProfiles).toEqual([naWire]);
    expect(naProfiles[0].profileId).toBe('9007199254740993');
    expect(euProfiles).toEqual([euWire]);
    expect(fake.counters.profileCalls(user.userId)).toBe(2);
  });

  test('a user without profiles gets an empty list', async () => {
    const user = newUser();
    await expect(
      ads().listProfiles({ itemId: user.userId, region: 'FE', accessToken: fake.accessTokens(user.userId)[0] }),
    ).resolves.toEqual([]);
  });

  test('a refreshed access token is accepted; a rejected one is AccessTokenRejectedError', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    const { accessToken } = await lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken });
    SECRETS.push(accessToken);
    await expect(ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken })).resolves.toHaveLength(1);
    fake.expireAccessTokens(user.userId);
    const error = await failure(ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken }));
    expect(error).toBeInstanceOf(AccessTokenRejectedError);
    expect(error).toMatchObject({ itemId: user.userId, status: 401 });
  });

  test('the client id header is required', async () => {
    const user = newUser();
    const error = await failure(
      ads({ clientId: 'someone-else' }).listProfiles({
        itemId: user.userId,
        region: 'NA',
        accessToken: fake.accessTokens(user.userId)[0],
      }),
    );
    expect(error).toBeInstanceOf(AccessTokenRejectedError);
  });

  test('transient failures are retried with backoff (listing is idempotent)', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    const delays: number[] = [];
    fake.setKnobs({ failFirstN: 2 }, 'ads');
    const profiles = await ads({
      retry: {
        maxAttempts: 3,
        baseDelayMs: 100,
        maxDelayMs: 150,
        random: () => 0.5,
        sleep: async (ms) => void delays.push(ms),
      },
    }).listProfiles({
      itemId: user.userId,
      region: 'NA',
      accessToken: fake.accessTokens(user.userId)[0],
    });
    expect(profiles).toHaveLength(1);
    expect(fake.counters.profileCalls(user.userId)).toBe(3);
    expect(delays).toEqual([50, 75]);
  });

  test('retries spent: the last TransientError surfaces', async () => {
    const user = newUser();
    fake.setKnobs({ rate5xx: 1 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toBeInstanceOf(TransientError);
    expect([500, 503]).toContain(error.status);
    expect(fake.counters.profileCalls(user.userId)).toBe(3);
  });

  test('429 is RateLimitedError and is not retried', async () => {
    const user = newUser();
    fake.setKnobs({ rate429: 1, retryAfterSeconds: 3 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'FE', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toMatchObject({ retryAfterSeconds: 3, endpoint: 'ads', region: 'FE' });
    expect(fake.counters.profileCalls(user.userId)).toBe(1);
  });

  test.each([1, 2, 3, 4])('malformed bodies are MalformedResponseError (sample %i)', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    fake.setKnobs({ malformedRate: 1 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toBeInstanceOf(MalformedResponseError);
  });

  test('a hanging endpoint times out as a TransientError after the retries', async () => {
    const user = newUser();
    fake.setKnobs({ hangRate: 1 }, 'ads');
    const error = await failure(
      ads({ timeoutMs: 100, retry: { maxAttempts: 2, sleep: async () => undefined } }).listProfiles({
        itemId: user.userId,
        region: 'NA',
        accessToken: fake.accessTokens(user.userId)[0],
      }),
    );
    expect(error).toMatchObject({ reason: 'timeout' });
    expect(fake.counters.byStatus('ads')[0]).toBe(2);
  });
});

describe('fake Amazon', () => {
  test('knob randomness is deterministic for a seed', async () => {
    const sequence = async (seed: number) => {
      const f = await startFakeAmazon({ seed, knobs: { rate429: 0.3, retryAfterSeconds: 0, rate5xx: 0.3 } });
      f.addUser({ userId: 'u', refreshToken: 'r' });
      const client = new LwaClient({
        clientId: f.clientId,
        clientSecret: f.clientSecret,
        tokenUrl: f.lwaTokenUrl,
        limiters,
        defaultRetryAfterSeconds: 0,
      });
      const outcomes: string[] = [];
      for (let i = 0; i < 20; i++) {
        outcomes.push(
          await client.refresh({ itemId: 'i', region: 'NA', refreshToken: 'r' }).then(
            () => 'ok',
            (e: Error) => e.name,
          ),
        );
      }
      await f.close();
      return outcomes;
    };
    const a = await sequence(7);
    expect(await sequence(7)).toEqual(a);
    expect(new Set(a)).toEqual(new Set(['ok', 'RateLimitedError', 'TransientError']));
  });

  test('Amazon host names select the region too', async () => {
    const user = newUser({ profiles: [fakeProfile('EU')] });
    // fetch cannot set Host; node:http can, as a client resolving Amazon's host to the fake would.
    const [status, body] = await new Promise<[number | undefined, string]>((resolve, reject) => {
      const headers = {
        host: 'advertising-api-eu.amazon.com',
        authorization: `Bearer ${fake.accessTokens(user.userId)[0]}`,
        'amazon-advertising-api-clientid': fake.clientId,
      };
      get(`${fake.url}/v2/profiles`, { headers }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve([res.statusCode, text]));
      }).on('error', reject);
    });
    expect(status).toBe(200);
    expect(JSON.parse(body)).toHaveLength(1);
  });

  test('the token endpoint answers the documented error shapes', async () => {
    const post = (body: string) =>
      fetch(`${fake.url}/auth/o2/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body,
      }).then(async (r) => [r.status, await r.json()]);
    expect(await post('grant_type=password')).toEqual([
      400,
      { error: 'unsupported_grant_type', error_description: expect.any(String) },
    ]);
    expect(await post('grant_type=refresh_token')).toEqual([
      400,
      { error: 'invalid_request', error_description: expect.any(String) },
    ]);
    expect(
      await post(`grant_type=refresh_token&refresh_token=x&client_id=${fake.clientId}&client_secret=nope`),
    ).toEqual([401, { error: 'invalid_client', error_description: expect.any(String) }]);
  });
});
