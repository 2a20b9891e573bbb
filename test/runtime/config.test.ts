import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { ConfigError, readJobConfig, readLocalJobConfig } from '../../lambda/shared/config';
import { JOB_ENV, LOCAL_JOB_ENV } from '../../lambda/shared/config';
import {
  loadJobSecrets,
  SECRET_TTL_MS,
  SecretError,
  SecretsCache,
  tokenCipherFromSecret,
} from '../../lambda/shared/secrets';
import { TokenCipher } from '../../lambda/shared/token-crypto';

const KEY = Buffer.alloc(32, 9).toString('base64');
const LWA_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-AbCdEf';
const KEY_ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-key-AbCdEf';
const validEnv = {
  [JOB_ENV.environment]: 'staging',
  [JOB_ENV.clusterArn]: 'arn:aws:rds:eu-west-1:123456789012:cluster:accounts',
  [JOB_ENV.databaseSecretArn]: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:worker-AbCdEf',
  [JOB_ENV.databaseName]: 'accounts',
  [JOB_ENV.lwaClientSecretArn]: LWA_ARN,
  [JOB_ENV.tokenKeySecretArn]: KEY_ARN,
};

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    if (error instanceof ConfigError) return error;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('job configuration', () => {
  test('reads every variable', () => {
    expect(readJobConfig(validEnv)).toEqual({
      environment: 'staging',
      clusterArn: validEnv[JOB_ENV.clusterArn],
      databaseSecretArn: validEnv[JOB_ENV.databaseSecretArn],
      databaseName: 'accounts',
      lwaClientSecretArn: LWA_ARN,
      tokenKeySecretArn: KEY_ARN,
      amazonLimits: {},
    });
  });

  test('the shared budgets’ rates are optional, positive and at most 10,000 per second', () => {
    expect(
      readJobConfig({ ...validEnv, [JOB_ENV.lwaRequestsPerSecond]: '25', [JOB_ENV.adsRequestsPerSecond]: '2.5' })
        .amazonLimits,
    ).toEqual({ lwa: 25, ads: 2.5 });
    for (const bad of ['0', '-3', 'fast', '1e3', '10001']) {
      const error = configError(() => readJobConfig({ ...validEnv, [JOB_ENV.lwaRequestsPerSecond]: bad }));
      expect(error.invalid.join(' ')).toContain(JOB_ENV.lwaRequestsPerSecond);
    }
    for (const bad of ['0', '-3', 'fast', '1e3', '10001']) {
      const error = configError(() =>
        readLocalJobConfig({
          [LOCAL_JOB_ENV.databaseUrl]: 'postgres://u:p@127.0.0.1:5432/db',
          [LOCAL_JOB_ENV.lwaClientId]: 'client',
          [LOCAL_JOB_ENV.lwaClientSecret]: 'shh',
          [LOCAL_JOB_ENV.tokenEncryptionKey]: KEY,
          [LOCAL_JOB_ENV.adsRequestsPerSecond]: bad,
        }),
      );
      expect(error.invalid).toEqual([`${LOCAL_JOB_ENV.adsRequestsPerSecond}: not a rate between 0 and 10000`]);
    }
  });

  test('fails fast naming every missing variable at once (empty counts as missing)', () => {
    const error = configError(() => readJobConfig({ [JOB_ENV.environment]: 'dev', [JOB_ENV.databaseName]: '  ' }));
    expect([...error.missing].sort()).toEqual(
      [
        JOB_ENV.clusterArn,
        JOB_ENV.databaseSecretArn,
        JOB_ENV.databaseName,
        JOB_ENV.lwaClientSecretArn,
        JOB_ENV.tokenKeySecretArn,
      ].sort(),
    );
    for (const name of error.missing) expect(error.message).toContain(name);
  });

  test('names malformed variables without echoing their values', () => {
    const error = configError(() =>
      readJobConfig({ ...validEnv, [JOB_ENV.clusterArn]: 'secret-looking-value', [JOB_ENV.environment]: 'qa' }),
    );
    expect(error.missing).toEqual([]);
    expect(error.invalid.join(' ')).toContain(JOB_ENV.clusterArn);
    expect(error.invalid.join(' ')).toContain(JOB_ENV.environment);
    expect(error.message).not.toContain('secret-looking-value');
  });

  test('the proactive refresh window is optional, a whole number of seconds', () => {
    expect(readJobConfig(validEnv).proactiveRefreshUsedWithinSeconds).toBeUndefined();
    expect(
      readJobConfig({ ...validEnv, [JOB_ENV.proactiveRefreshUsedWithinSeconds]: '86400' })
        .proactiveRefreshUsedWithinSeconds,
    ).toBe(86400);
    expect(
      readJobConfig({ ...validEnv, [JOB_ENV.proactiveRefreshUsedWithinSeconds]: ' ' })
        .proactiveRefreshUsedWithinSeconds,
    ).toBeUndefined();
    for (const value of ['0', '-3600', '1.5', '1h', '99999999999']) {
      const error = configError(() =>
        readJobConfig({ ...validEnv, [JOB_ENV.proactiveRefreshUsedWithinSeconds]: value }),
      );
      expect(error.missing).toEqual([]);
      expect(error.invalid).toHaveLength(1);
      expect(error.invalid[0]).toContain(JOB_ENV.proactiveRefreshUsedWithinSeconds);
      expect(error.invalid[0]).not.toContain(value);
    }
  });

  test('local runs read the proactive refresh window under the same name', () => {
    const local = {
      [LOCAL_JOB_ENV.databaseUrl]: 'postgres://u:p@127.0.0.1:5432/db',
      [LOCAL_JOB_ENV.lwaClientId]: 'client',
      [LOCAL_JOB_ENV.lwaClientSecret]: 'shh',
      [LOCAL_JOB_ENV.tokenEncryptionKey]: KEY,
    };
    expect(readLocalJobConfig(local).proactiveRefreshUsedWithinSeconds).toBeUndefined();
    expect(
      readLocalJobConfig({ ...local, [JOB_ENV.proactiveRefreshUsedWithinSeconds]: '3600' })
        .proactiveRefreshUsedWithinSeconds,
    ).toBe(3600);
    const error = configError(() =>
      readLocalJobConfig({ ...local, [JOB_ENV.proactiveRefreshUsedWithinSeconds]: 'soon' }),
    );
    expect(error.invalid.join(' ')).toContain(JOB_ENV.proactiveRefreshUsedWithinSeconds);
  });

  test('local runs: DATABASE_URL, LWA credentials and the token key, Amazon URLs optional', () => {
    const config = readLocalJobConfig({
      [LOCAL_JOB_ENV.databaseUrl]: 'postgres://u:p@127.0.0.1:5432/db',
      [LOCAL_JOB_ENV.lwaClientId]: 'client',
      [LOCAL_JOB_ENV.lwaClientSecret]: 'shh',
      [LOCAL_JOB_ENV.tokenEncryptionKey]: KEY,
      [LOCAL_JOB_ENV.adsApiUrl]: 'http://127.0.0.1:4010/{region}',
    });
    expect(config).toMatchObject({
      lwaClientId: 'client',
      lwaTokenUrl: undefined,
      adsApiUrl: 'http://127.0.0.1:4010/{region}',
    });
    expect(config.tokenKey).toEqual(Buffer.alloc(32, 9));
  });

  test('local runs: a short key is reported with the missing variables', () => {
    const error = configError(() =>
      readLocalJobConfig({ [LOCAL_JOB_ENV.tokenEncryptionKey]: Buffer.alloc(8).toString('base64') }),
    );
    expect([...error.missing].sort()).toEqual(
      [LOCAL_JOB_ENV.databaseUrl, LOCAL_JOB_ENV.lwaClientId, LOCAL_JOB_ENV.lwaClientSecret].sort(),
    );
    expect(error.invalid).toEqual([
      `${LOCAL_JOB_ENV.tokenEncryptionKey}: Token encryption key must be 32 bytes, got 8`,
    ]);
  });
});

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
      tokenKey: Buffer.alloc(32, 9),
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
    const written = TokenCipher.fromBase64(newKey).encrypt('Atzr|after-the-key-changed');
    expect(() => first.decrypt(written)).toThrow();
    now += SECRET_TTL_MS;
    const second = await currentCipher();
    expect(second).not.toBe(first);
    expect(second.decrypt(written)).toBe('Atzr|after-the-key-changed');
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
