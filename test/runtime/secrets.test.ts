import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { readJobConfig } from '../../lambda/shared/config';
import {
  loadJobSecrets,
  SECRET_TTL_MS,
  SecretError,
  SecretsCache,
  tokenCipherFromSecret,
} from '../../lambda/shared/secrets';
import { oauthTokenBinding, TokenCipher, TokenKeyRing } from '../../lambda/shared/token-crypto';
import { KEY, KEY_ARN, LWA_ARN, validEnv } from './job-config';

// The jobs' secrets (lambda/shared/secrets.ts) read through Secrets Manager (mocked): cached
// for a time to live, read again after it, refused without echoing a value.

describe('secrets', () => {
  const secretsManager = mockClient(SecretsManagerClient);
  afterEach(() => secretsManager.reset());

  function givenSecrets(lwa: unknown = { clientId: 'amzn1.application-oa2-client.x', clientSecret: 'shh' }, key = KEY) {
    secretsManager.on(GetSecretValueCommand, { SecretId: LWA_ARN }).resolves({ SecretString: JSON.stringify(lwa) });
    secretsManager.on(GetSecretValueCommand, { SecretId: KEY_ARN }).resolves({ SecretString: key });
  }

  test('are fetched once per container and cached, concurrent calls included', async () => {
    givenSecrets();
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }));
    const [a, b] = await Promise.all([loadJobSecrets(validConfig(), cache), loadJobSecrets(validConfig(), cache)]);
    const c = await loadJobSecrets(validConfig(), cache);
    expect(a).toEqual({
      lwaClientId: 'amzn1.application-oa2-client.x',
      lwaClientSecret: 'shh',
      tokenKeys: TokenKeyRing.single(Buffer.alloc(32, 9)),
    });
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(
      secretsManager
        .commandCalls(GetSecretValueCommand)
        .map((call) => call.args[0].input.SecretId)
        .sort(),
    ).toEqual([KEY_ARN, LWA_ARN].sort());
  });

  test('are read again once their time to live has passed, and at once on refresh', async () => {
    let now = 1_000_000;
    secretsManager
      .on(GetSecretValueCommand, { SecretId: KEY_ARN })
      .resolvesOnce({ SecretString: 'first' })
      .resolvesOnce({ SecretString: 'second' })
      .resolves({ SecretString: 'third' });
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }), {
      ttlMs: SECRET_TTL_MS,
      now: () => now,
    });
    await expect(cache.getString(KEY_ARN)).resolves.toBe('first');
    now += SECRET_TTL_MS - 1;
    await expect(cache.getString(KEY_ARN)).resolves.toBe('first');
    now += 1;
    await expect(cache.getString(KEY_ARN)).resolves.toBe('second');
    await expect(cache.refresh(KEY_ARN)).resolves.toBe('third');
    await expect(cache.getString(KEY_ARN)).resolves.toBe('third');
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(3);
    expect(SECRET_TTL_MS).toBeGreaterThanOrEqual(60_000); // minutes, not per call
  });

  test('a replaced token key is used once the time to live has passed, without a cold start', async () => {
    let now = 1_000_000;
    const newKey = Buffer.alloc(32, 7).toString('base64');
    secretsManager
      .on(GetSecretValueCommand, { SecretId: KEY_ARN })
      .resolvesOnce({ SecretString: KEY })
      .resolves({ SecretString: newKey });
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }), { now: () => now });
    const currentCipher = tokenCipherFromSecret(cache, KEY_ARN);
    const first = await currentCipher();
    expect(await currentCipher()).toBe(first); // within the time to live: the same cipher
    const at = oauthTokenBinding({ userId: '0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f', region: 'EU' }, 'refresh_token');
    const written = TokenCipher.fromBase64(newKey).encrypt('Atzr|after-the-key-changed', at);
    await expect(first.decrypt(written, at)).rejects.toThrow();
    now += SECRET_TTL_MS;
    const second = await currentCipher();
    expect(second).not.toBe(first);
    expect(await second.decrypt(written, at)).toBe('Atzr|after-the-key-changed');
    expect(await currentCipher()).toBe(second); // rebuilt only when the key changed
  });

  test('a failed fetch is not cached', async () => {
    secretsManager
      .on(GetSecretValueCommand)
      .rejectsOnce(new ResourceNotFoundException({ message: 'nope', $metadata: {} }))
      .resolves({ SecretString: KEY });
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }));
    await expect(cache.getString(KEY_ARN)).rejects.toThrow(SecretError);
    await expect(cache.getString(KEY_ARN)).resolves.toBe(KEY);
    expect(secretsManager.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  test('the stack placeholder and malformed secrets are refused without echoing values', async () => {
    givenSecrets({ clientId: 'REPLACE_ME', clientSecret: 'generated-placeholder-value' });
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }));
    const error = await loadJobSecrets(validConfig(), cache).catch((e: unknown) => e as SecretError);
    expect(error).toBeInstanceOf(SecretError);
    expect(error).toMatchObject({ secretArn: LWA_ARN });
    expect((error as Error).message).toMatch(/placeholder/);
    expect((error as Error).message).not.toContain('generated-placeholder-value');
  });

  test('a token key secret that is not 32 bytes is refused', async () => {
    givenSecrets(undefined, 'c2hvcnQ=');
    const cache = new SecretsCache(new SecretsManagerClient({ region: 'eu-west-1' }));
    const error = await loadJobSecrets(validConfig(), cache).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SecretError);
    expect(error).toMatchObject({
      secretArn: KEY_ARN,
      message: `Secret ${KEY_ARN}: Token encryption key must be 32 bytes, got 5`,
    });
  });
});

function validConfig() {
  return readJobConfig(validEnv);
}
