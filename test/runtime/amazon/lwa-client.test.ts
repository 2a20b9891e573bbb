import {
  MalformedResponseError,
  PermanentAuthError,
  RateLimitedError,
  TransientError,
} from '../../../lambda/shared/amazon';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import { lwaCredentialsFromSecret, SecretsCache } from '../../../lambda/shared/secrets';
import { startFakeAmazon } from '../../../local/amazon/fake-amazon';
import { failure, fake, lwa, newUser, SECRETS, useFakeAmazon } from './fixture';

/** The Login with Amazon client (lambda/shared/amazon/lwa-client.ts) against the fake Amazon: wire shapes, regions and every error class. */
useFakeAmazon();

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
