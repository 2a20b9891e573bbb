import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import type { ApiRequestEvent } from '../../../lambda/shared/http';
import { handler } from '../../../lambda/token-route/handler';
import { JobWorld, seedUsers, useJobWorld } from '../../support/jobs';

// The token route's Lambda handler as AWS runs it: the jobs' container (Data API through the
// emulator as the jobs' login, secrets from a mocked Secrets Manager, the LWA client on the
// shared budget), Powertools writing to stdout/stderr, captured here: the token served never
// appears in any of it.

let world: JobWorld;
useJobWorld((w) => (world = w));

const secrets = mockClient(SecretsManagerClient);
const ARNS = {
  lwa: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-client-AbCdEf',
  key: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-key-AbCdEf',
};
let saved: NodeJS.ProcessEnv;
let output: string[];

beforeEach(() => {
  saved = { ...process.env };
  Object.assign(process.env, {
    APP_ENVIRONMENT: 'dev',
    DB_CLUSTER_ARN: world.emulator.target.resourceArn,
    DB_SECRET_ARN: world.emulator.target.secretArn,
    DB_NAME: world.emulator.target.database,
    LWA_CLIENT_SECRET_ARN: ARNS.lwa,
    TOKEN_ENCRYPTION_KEY_SECRET_ARN: ARNS.key,
    LWA_REQUESTS_PER_SECOND: '50',
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    AWS_ENDPOINT_URL_RDS_DATA: world.emulator.endpoint,
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    POWERTOOLS_DEV: 'false',
  });
  secrets.reset();
  secrets.on(GetSecretValueCommand, { SecretId: ARNS.lwa }).resolves({
    SecretString: JSON.stringify({ clientId: world.amazon.clientId, clientSecret: world.amazon.clientSecret }),
  });
  secrets.on(GetSecretValueCommand, { SecretId: ARNS.key }).resolves({ SecretString: world.keyBase64 });
  output = [];
  for (const stream of [process.stdout, process.stderr]) {
    jest.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
      output.push(String(chunk));
      return true;
    });
  }
  for (const method of ['log', 'info', 'warn', 'error'] as const)
    jest
      .spyOn(console, method)
      .mockImplementation((...args: unknown[]) => void output.push(args.map(String).join(' ')));
});
afterEach(() => {
  jest.restoreAllMocks();
  process.env = saved;
});

function event(body: unknown): ApiRequestEvent {
  const e = {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      requestId: 'req-token-1',
      http: { method: 'POST', path: '/internal/v1/access-tokens' },
      authorizer: {
        iam: { userArn: 'arn:aws:sts::123456789012:assumed-role/product/task', accountId: '123456789012' },
      },
    },
  };
  return e;
}

const context = { getRemainingTimeInMillis: () => 25_000, awsRequestId: 'req-1', functionName: 'token-route' };

test('the handler refreshes an expiring token on the Data API path; no log line carries a token', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 60, regions: () => ['FE'] });

  const result = await handler(event({ userId: user.userId, region: 'FE' }), context);

  expect(result.statusCode).toBe(200);
  const served = JSON.parse(result.body) as { accessToken: string; refreshed: boolean };
  expect(served.refreshed).toBe(true);
  expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
  const logged = output.join('\n');
  expect(logged).toContain('"route":"POST /internal/v1/access-tokens"');
  for (const secret of [served.accessToken, user.accessToken, user.refreshToken, world.keyBase64])
    expect(logged).not.toContain(secret);
  // The use is recorded and the shared budget of FE was drawn from: its interactive lane
  // (migration 0026), not the jobs' schedule.
  const { rows } = await world.admin.query<{ used: boolean; lane: number; jobs: number }>(
    `SELECT last_used_at IS NOT NULL AS used,
            (SELECT count(*)::int FROM amazon_rate_budget WHERE endpoint = 'lwa-token:interactive' AND region = 'FE') AS lane,
            (SELECT count(*)::int FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'FE') AS jobs
       FROM oauth_tokens WHERE user_id = :userId::uuid`,
    { userId: user.userId },
  );
  expect(rows).toEqual([{ used: true, lane: 1, jobs: 0 }]);
});

test('a stored token with time left is served as it is; still nothing of it in the log', async () => {
  const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 3000, regions: () => ['NA'] });

  const result = await handler(event({ userId: user.userId, region: 'NA' }), context);

  expect(result.statusCode).toBe(200);
  expect(JSON.parse(result.body)).toMatchObject({ accessToken: user.accessToken, refreshed: false });
  expect(output.join('\n')).not.toContain(user.accessToken);
});
