import { ConfigError, readJobConfig, readLocalJobConfig } from '../../lambda/shared/config';
import { JOB_ENV, LOCAL_JOB_ENV } from '../../lambda/shared/config';
import { TokenKeyRing } from '../../lambda/shared/token-crypto';

import { KEY, KEY_ARN, LWA_ARN, validEnv } from './job-config';

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

  test('the refresh window (derived by the stack from the schedule) is optional, a whole number of seconds', () => {
    expect(readJobConfig(validEnv).proactiveRefreshWindowSeconds).toBeUndefined();
    expect(
      readJobConfig({ ...validEnv, [JOB_ENV.proactiveRefreshWindowSeconds]: '660' }).proactiveRefreshWindowSeconds,
    ).toBe(660);
    for (const value of ['0', '-660', '6.5', '11m']) {
      const error = configError(() => readJobConfig({ ...validEnv, [JOB_ENV.proactiveRefreshWindowSeconds]: value }));
      expect(error.invalid).toHaveLength(1);
      expect(error.invalid[0]).toContain(JOB_ENV.proactiveRefreshWindowSeconds);
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
    expect(config.tokenKeys.keyIds).toEqual(['legacy']);
    expect(config.tokenKeys.deriveKey('x')).toEqual(TokenKeyRing.single(Buffer.alloc(32, 9)).deriveKey('x'));
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
