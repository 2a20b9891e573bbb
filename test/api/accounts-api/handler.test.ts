import { InvokeCommand } from '@aws-sdk/client-lambda';
import { handler } from '../../../lambda/accounts-api/handler';
import { lambdaSyncStarter } from '../../../lambda/accounts-api/sync-starter';
import { API_ENV, readApiConfig } from '../../../lambda/shared/api-env';
import { ConfigError } from '../../../lambda/shared/config';

// What the Lambda reads from its environment and how it starts a sync in AWS (no AWS call).

const ENV = {
  APP_ENVIRONMENT: 'dev',
  DB_CLUSTER_ARN: 'arn:aws:rds:eu-west-1:123456789012:cluster:accounts',
  DB_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:api-login',
  DB_NAME: 'accounts',
  LWA_CLIENT_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa',
  TOKEN_ENCRYPTION_KEY_SECRET_ARN: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:key',
  API_JWT_ISSUER: 'https://abc.supabase.co/auth/v1',
  API_JWT_AUDIENCE: 'authenticated,web',
  ACCOUNT_SYNC_FUNCTION_NAME: 'AmazonAccounts-dev-AccountSync',
};

test('the API configuration: the jobs’ variables plus sign-in and the sync function', () => {
  expect(readApiConfig(ENV)).toMatchObject({
    environment: 'dev',
    databaseSecretArn: ENV.DB_SECRET_ARN,
    jwtIssuer: ENV.API_JWT_ISSUER,
    jwtAudience: ['authenticated', 'web'],
    jwksUrl: undefined,
    accountSyncFunctionName: ENV.ACCOUNT_SYNC_FUNCTION_NAME,
  });
  expect(readApiConfig({ ...ENV, API_JWKS_URL: 'https://keys.example.com/jwks.json' }).jwksUrl).toBe(
    'https://keys.example.com/jwks.json',
  );
});

test('a missing or malformed variable fails with every name at once, never a value', () => {
  let error: unknown;
  try {
    readApiConfig({ ...ENV, API_JWT_ISSUER: '', DB_NAME: undefined, API_JWKS_URL: 'http://insecure.example.com/k' });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).missing).toEqual(expect.arrayContaining([API_ENV.jwtIssuer, API_ENV.databaseName]));
  expect((error as ConfigError).invalid.join(' ')).toContain(API_ENV.jwksUrl);
  expect((error as Error).message).not.toContain('insecure.example.com');
});

test('a manual sync in AWS is an asynchronous Invoke of the account-sync function with the user id and the regions asked for', async () => {
  const sent: InvokeCommand[] = [];
  const starter = lambdaSyncStarter(
    {
      send: (command: InvokeCommand) => {
        sent.push(command);
        return Promise.resolve({ StatusCode: 202 });
      },
    } as never,
    'AmazonAccounts-dev-AccountSync',
  );
  await starter.start({ userId: 'c0ffee00-0000-4000-8000-000000000001', regions: ['NA'] });
  expect(sent).toHaveLength(1);
  expect(sent[0].input).toMatchObject({ FunctionName: 'AmazonAccounts-dev-AccountSync', InvocationType: 'Event' });
  expect(JSON.parse(Buffer.from(sent[0].input.Payload as Uint8Array).toString())).toEqual({
    syncType: 'manual',
    userId: 'c0ffee00-0000-4000-8000-000000000001',
    regions: ['NA'],
  });
  const refusing = lambdaSyncStarter({ send: () => Promise.resolve({ StatusCode: 500 }) } as never, 'f');
  await expect(refusing.start({ userId: 'u', regions: [] })).rejects.toThrow(/500/);
});

test('connect redirect URIs: a comma-separated allow-list of https (or loopback http) URLs', () => {
  expect(readApiConfig(ENV).connectRedirectUris).toEqual([]);
  expect(
    readApiConfig({
      ...ENV,
      CONNECT_REDIRECT_URIS: 'https://app.example.com/amazon/callback,http://localhost:3000/amazon/callback',
    }).connectRedirectUris,
  ).toEqual(['https://app.example.com/amazon/callback', 'http://localhost:3000/amazon/callback']);
  for (const bad of ['http://app.example.com/cb', 'https://app.example.com/cb#frag', 'not a url'])
    expect(() => readApiConfig({ ...ENV, CONNECT_REDIRECT_URIS: bad })).toThrow(API_ENV.connectRedirectUris);
});

test('in AWS every answer carries nosniff and HSTS, a container that cannot start included', async () => {
  const saved = { ...process.env };
  try {
    for (const name of Object.values(API_ENV)) delete process.env[name];
    const result = await handler({ rawPath: '/v1/accounts', requestContext: { http: { method: 'GET' } } });
    expect(result.statusCode).toBe(500);
    expect(result.headers).toMatchObject({
      'x-content-type-options': 'nosniff',
      'strict-transport-security': 'max-age=31536000; includeSubDomains',
    });
  } finally {
    process.env = saved;
  }
});
