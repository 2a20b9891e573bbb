import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { randomUUID } from 'node:crypto';
import { DISPATCHER_ENV, readDispatcherConfig } from '../../../lambda/dispatcher/config';
import { tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import { handler } from '../../../lambda/dispatcher/handler';
import { ConfigError, JOB_ENV } from '../../../lambda/shared/config';
import type { FanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { JobWorld, seedUsers, useJobWorld } from '../../support/jobs';

// The token refresh dispatcher's handler (lambda/dispatcher/handler.ts) as the stack configures
// it: the used-within window set in its environment reaches the selection, so a tick dispatches
// only connections used within it (or never recorded). On the Data API path (the emulator), SQS
// answered by a mock of the client.

let world: JobWorld;
useJobWorld((w) => (world = w));

const sqs = mockClient(SQSClient);
const QUEUE_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/AmazonAccounts-dev-TokenRefreshQueue';
const DAY = 86_400;
let saved: NodeJS.ProcessEnv;

function environment(): NodeJS.ProcessEnv {
  return {
    [JOB_ENV.environment]: 'dev',
    [JOB_ENV.clusterArn]: world.emulator.target.resourceArn,
    [JOB_ENV.databaseSecretArn]: world.emulator.target.secretArn,
    [JOB_ENV.databaseName]: world.emulator.target.database,
    AWS_ENDPOINT_URL_RDS_DATA: world.emulator.endpoint,
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    [DISPATCHER_ENV.job]: 'token-refresh',
    [DISPATCHER_ENV.queueUrl]: QUEUE_URL,
    [DISPATCHER_ENV.requestsPerSecond]: '10',
    [JOB_ENV.proactiveRefreshUsedWithinSeconds]: String(7 * DAY),
  };
}

beforeEach(() => {
  saved = { ...process.env };
  Object.assign(process.env, environment());
  sqs.reset();
  sqs.on(SendMessageBatchCommand).callsFake((input: { Entries: Array<{ Id: string }> }) => ({
    Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: 'x' })),
    Failed: [],
  }));
  // Powertools writes log lines and EMF metrics to stdout: kept out of the test output.
  jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
  for (const method of ['log', 'info', 'warn', 'error'] as const)
    jest.spyOn(console, method).mockImplementation(() => undefined);
});
afterEach(() => {
  jest.restoreAllMocks();
  process.env = saved;
});

test('the configuration reads the used-within window, and leaves it out when unset', () => {
  expect(readDispatcherConfig(environment()).usedWithinSeconds).toBe(7 * DAY);
  const { [JOB_ENV.proactiveRefreshUsedWithinSeconds]: _unset, ...without } = environment();
  expect(readDispatcherConfig(without)).not.toHaveProperty('usedWithinSeconds');
});

/** What the stack sets for an account sync dispatcher (readDispatcherConfig on its own: no world needed). */
const STACK_ENV = {
  [JOB_ENV.environment]: 'prod',
  [JOB_ENV.clusterArn]: 'arn:aws:rds:eu-west-1:123456789012:cluster:accounts',
  [JOB_ENV.databaseSecretArn]: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf',
  [JOB_ENV.databaseName]: 'amazon_accounts',
  [DISPATCHER_ENV.job]: 'account-sync',
  [DISPATCHER_ENV.queueUrl]: QUEUE_URL,
  [DISPATCHER_ENV.requestsPerSecond]: '2.5',
};

function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    readDispatcherConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('the configuration was accepted');
}

test('the configuration is read from the variables the stack sets, each value trimmed, the rate a number', () => {
  const padded = Object.fromEntries(Object.entries(STACK_ENV).map(([k, v]) => [k, ` ${v}\n`]));
  const expected = {
    environment: 'prod',
    clusterArn: STACK_ENV[JOB_ENV.clusterArn],
    databaseSecretArn: STACK_ENV[JOB_ENV.databaseSecretArn],
    databaseName: 'amazon_accounts',
    job: 'account-sync',
    queueUrl: QUEUE_URL,
    requestsPerSecond: 2.5,
  };
  expect(readDispatcherConfig(STACK_ENV)).toEqual(expected);
  expect(readDispatcherConfig(padded)).toEqual(expected);
  // Other partitions' ARNs are ARNs too.
  expect(
    readDispatcherConfig({
      ...STACK_ENV,
      [JOB_ENV.clusterArn]: 'arn:aws-cn:rds:cn-north-1:123456789012:cluster:a',
      [JOB_ENV.databaseSecretArn]: 'arn:aws-us-gov:secretsmanager:us-gov-west-1:123456789012:secret:s',
      [JOB_ENV.databaseName]: '_db$1',
      [DISPATCHER_ENV.requestsPerSecond]: '10',
    }),
  ).toMatchObject({ databaseName: '_db$1', requestsPerSecond: 10 });
});

test('unset, empty or blank variables are named missing (the used-within window may be unset), never also as invalid', () => {
  const error = configError({
    ...STACK_ENV,
    [JOB_ENV.environment]: undefined,
    [DISPATCHER_ENV.queueUrl]: '',
    [DISPATCHER_ENV.job]: '  ',
  });
  expect(error.missing).toEqual([JOB_ENV.environment, DISPATCHER_ENV.job, DISPATCHER_ENV.queueUrl]);
  expect(error.invalid).toEqual([]);
  expect(error.message).toBe(
    `Job configuration: missing ${JOB_ENV.environment}, ${DISPATCHER_ENV.job}, ${DISPATCHER_ENV.queueUrl}`,
  );
});

test.each([
  [JOB_ENV.environment, 'production'],
  [JOB_ENV.clusterArn, 'arn:aws:secretsmanager:eu-west-1:1:secret:x'],
  [JOB_ENV.clusterArn, 'see arn:aws:rds:eu-west-1:1:cluster:x'],
  [JOB_ENV.databaseSecretArn, 'arn:aws:rds:eu-west-1:1:cluster:x'],
  [JOB_ENV.databaseSecretArn, 'x-arn:aws:secretsmanager:eu-west-1:1:secret:x'],
  [JOB_ENV.databaseName, '1accounts'],
  [JOB_ENV.databaseName, 'amazon-accounts'],
  [JOB_ENV.databaseName, 'accounts;drop'],
  [DISPATCHER_ENV.job, 'token-reencrypt'],
  [DISPATCHER_ENV.queueUrl, 'not a url'],
  [DISPATCHER_ENV.requestsPerSecond, 'ten'],
  [DISPATCHER_ENV.requestsPerSecond, '10/s'],
  [DISPATCHER_ENV.requestsPerSecond, '.5'],
  [DISPATCHER_ENV.requestsPerSecond, '2.'],
  [DISPATCHER_ENV.requestsPerSecond, '-1'],
  [JOB_ENV.proactiveRefreshUsedWithinSeconds, '0'],
  [JOB_ENV.proactiveRefreshUsedWithinSeconds, '07'],
  [JOB_ENV.proactiveRefreshUsedWithinSeconds, '1.5'],
  [JOB_ENV.proactiveRefreshUsedWithinSeconds, '7d'],
  [JOB_ENV.proactiveRefreshWindowSeconds, '0'],
  [JOB_ENV.proactiveRefreshWindowSeconds, '07'],
  [JOB_ENV.proactiveRefreshWindowSeconds, '660s'],
  [JOB_ENV.proactiveRefreshWindowSeconds, 'about 660'],
])('%s=%j is refused as invalid, by name and never by value', (name, value) => {
  const error = configError({ ...STACK_ENV, [name]: value });
  expect(error.missing).toEqual([]);
  expect(error.invalid).toHaveLength(1);
  expect(error.invalid[0]).toMatch(new RegExp(`^${name}: \\S`));
  // The reason an operator reads in the function's error (the environment's is zod's own).
  if (name in REASONS) expect(error.invalid[0]).toBe(`${name}: ${REASONS[name]}`);
  expect(error.message).toMatch(new RegExp(`^Job configuration: invalid ${name}: `));
  expect(error.message).not.toContain(value);
});

/** The reason given for each malformed variable (the environment's is zod's enum message). */
const REASONS: Record<string, string> = {
  [JOB_ENV.clusterArn]: 'not an rds ARN',
  [JOB_ENV.databaseSecretArn]: 'not a secretsmanager ARN',
  [JOB_ENV.databaseName]: 'not a database name',
  [DISPATCHER_ENV.queueUrl]: 'not a URL',
  [DISPATCHER_ENV.requestsPerSecond]: 'not a rate',
  [JOB_ENV.proactiveRefreshUsedWithinSeconds]: 'not seconds',
  [JOB_ENV.proactiveRefreshWindowSeconds]: 'not seconds',
};

test.each(['dev', 'staging', 'prod'])('every environment the stack deploys is accepted: %s', (environment) => {
  expect(readDispatcherConfig({ ...STACK_ENV, [JOB_ENV.environment]: environment })).toMatchObject({ environment });
});

test('a rate with several decimals and the windows in whole seconds are read as numbers', () => {
  expect(
    readDispatcherConfig({
      ...STACK_ENV,
      [DISPATCHER_ENV.requestsPerSecond]: '2.25',
      [JOB_ENV.proactiveRefreshUsedWithinSeconds]: '604800',
      [JOB_ENV.proactiveRefreshWindowSeconds]: '660',
    }),
  ).toMatchObject({ requestsPerSecond: 2.25, usedWithinSeconds: 604_800, windowSeconds: 660 });
});

test('a missing and an invalid variable are both named, each once', () => {
  const error = configError({ ...STACK_ENV, [JOB_ENV.databaseName]: '', [DISPATCHER_ENV.requestsPerSecond]: 'fast' });
  expect(error.missing).toEqual([JOB_ENV.databaseName]);
  expect(error.invalid).toEqual([`${DISPATCHER_ENV.requestsPerSecond}: not a rate`]);
});

test('a tick of the token refresh dispatcher sends only connections used within the window of its environment', async () => {
  await seedUsers(world, { count: 3, expiresInSeconds: 600, regions: () => ['NA'] });
  const { rows } = await world.admin.query<{ id: string }>(`SELECT id FROM oauth_tokens ORDER BY id`);
  const [recent, idle, unknown] = rows.map((r) => r.id);
  await world.admin.query(
    `UPDATE oauth_tokens SET last_used_at = CASE id WHEN :recent::uuid THEN now() - interval '1 day'
                                                    WHEN :idle::uuid THEN now() - interval '30 days' END`,
    { recent, idle },
  );
  const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'req-1' } as unknown as Context;

  const summary = await handler({}, context);

  const sent = sqs
    .commandCalls(SendMessageBatchCommand)
    .flatMap((c) => c.args[0].input.Entries ?? [])
    .flatMap((e) => (JSON.parse(e.MessageBody!) as FanOutMessage).ids);
  expect(summary).toMatchObject({ job: 'token-refresh', dispatched: 2, notSent: 0 });
  expect(sent.sort()).toEqual([recent, unknown].sort());
  const { rows: marked } = await world.admin.query<{ id: string }>(
    `SELECT id FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL ORDER BY id`,
  );
  expect(marked.map((r) => r.id)).toEqual([recent, unknown].sort());
});

test('a tick of the token refresh dispatcher selects on the window its environment derives from the schedule', async () => {
  // 13 minutes left: outside the 5-minute schedule's window (11 minutes), inside a 10-minute one's (16).
  await seedUsers(world, { count: 2, expiresInSeconds: 780, regions: () => ['NA'] });
  const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'req-1' } as unknown as Context;
  expect(readDispatcherConfig(environment())).not.toHaveProperty('windowSeconds');

  expect(await handler({}, context)).toMatchObject({ job: 'token-refresh', dispatched: 0 });

  // The selection the handler builds from that configuration (a new container's).
  process.env[JOB_ENV.proactiveRefreshWindowSeconds] = '960';
  const config = readDispatcherConfig(process.env);
  expect(config.windowSeconds).toBe(960);
  const selection = tokenRefreshSelection(world.dataApi(), { windowSeconds: config.windowSeconds });
  expect(await selection.select({ dispatchId: randomUUID(), limit: 10 })).toHaveLength(2);
});
