import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { randomUUID } from 'node:crypto';
import { DISPATCHER_ENV, readDispatcherConfig } from '../../../lambda/dispatcher/config';
import { tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import { handler } from '../../../lambda/dispatcher/handler';
import { JOB_ENV } from '../../../lambda/shared/config';
import type { FanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { JobWorld, seedUsers, useJobWorld } from '../fixture';

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
