import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context } from 'aws-lambda';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
// The static import also tells jest (and so the mutation run, which runs a module's related
// tests) that this file tests handler.ts: the per-test loads below, `jest.requireActual<…>(…)`
// with type arguments, are not read as dependencies.
import { dispatcherService, type handler as DispatcherHandlerFn } from '../../../lambda/dispatcher/handler';
import type * as DispatcherCore from '../../../lambda/dispatcher/core';
import { DISPATCHER_ENV } from '../../../lambda/dispatcher/config';
import type { FanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { handler as refresh } from '../../../lambda/token-refresh/handler';
import { JobWorld, seedUsers, useJobWorld } from '../../support/jobs';

/**
 * The fan-out as it runs in AWS, on the Data API path: the dispatcher's handler sends through
 * the real @aws-sdk/client-sqs to a local endpoint speaking SQS's JSON protocol (AWS JSON 1.0,
 * `AmazonSQS.SendMessageBatch`), and the token refresh's handler consumes what it received as
 * the SQS event Lambda's event source mapping delivers.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

interface SqsRequest {
  readonly target: string | undefined;
  readonly contentType: string | undefined;
  readonly body: { QueueUrl: string; Entries: Array<{ Id: string; MessageBody: string }> };
}

/** A local SQS endpoint for SendMessageBatch: keeps what it accepted, refuses what `refuse` says. */
class SqsStandIn {
  readonly requests: SqsRequest[] = [];
  readonly accepted: Array<{ messageId: string; body: string }> = [];
  refuse: (request: number, entryId: string) => boolean = () => false;
  private server?: Server;

  async start(): Promise<string> {
    this.server = createServer((req, res) => {
      void read(req).then((text) => {
        const request: SqsRequest = {
          target: req.headers['x-amz-target'] as string | undefined,
          contentType: req.headers['content-type'],
          body: JSON.parse(text) as SqsRequest['body'],
        };
        const index = this.requests.push(request) - 1;
        const successful = [];
        const failed = [];
        for (const entry of request.body.Entries) {
          if (this.refuse(index, entry.Id)) {
            failed.push({ Id: entry.Id, SenderFault: false, Code: 'InternalError', Message: 'try again' });
            continue;
          }
          const messageId = randomUUID();
          this.accepted.push({ messageId, body: entry.MessageBody });
          const md5 = createHash('md5').update(entry.MessageBody).digest('hex');
          successful.push({ Id: entry.Id, MessageId: messageId, MD5OfMessageBody: md5 });
        }
        res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
        res.end(JSON.stringify({ Successful: successful, Failed: failed }));
      });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

function read(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const sqs = new SqsStandIn();
let sqsEndpoint: string;
/** The queue's URL is on the local endpoint, as with any SQS stand-in: the client sends to the queue URL's host. */
let QUEUE_URL: string;
beforeAll(async () => {
  sqsEndpoint = await sqs.start();
  QUEUE_URL = `${sqsEndpoint}/123456789012/AmazonAccounts-dev-TokenRefreshQueue`;
});
afterAll(async () => {
  await sqs.close();
});

const secrets = mockClient(SecretsManagerClient);
const ARNS = {
  lwa: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-client-AbCdEf',
  key: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:token-key-AbCdEf',
};
let saved: NodeJS.ProcessEnv;

/**
 * The dispatcher's module as a new Lambda container loads it, one per test: its handler builds
 * the container (the configuration, the Data API client and its wait budget, the service name
 * its logs and metrics carry) on its first invocation and keeps it. With one module for the file
 * only the file's first test would build it, so only that test would run those lines (and the
 * mutation run's per-test coverage would give them to that test alone, not to the tests below
 * that check them).
 */
let dispatcher: typeof DispatcherHandlerFn;
let DispatchSendError: typeof DispatcherCore.DispatchSendError;

beforeEach(() => {
  jest.isolateModules(() => {
    ({ handler: dispatcher } = jest.requireActual<{ handler: typeof DispatcherHandlerFn }>(
      '../../../lambda/dispatcher/handler',
    ));
    ({ DispatchSendError } = jest.requireActual<typeof DispatcherCore>('../../../lambda/dispatcher/core'));
  });
  saved = { ...process.env };
  Object.assign(process.env, {
    APP_ENVIRONMENT: 'dev',
    DB_CLUSTER_ARN: world.emulator.target.resourceArn,
    DB_SECRET_ARN: world.emulator.target.secretArn,
    DB_NAME: world.emulator.target.database,
    LWA_CLIENT_SECRET_ARN: ARNS.lwa,
    TOKEN_ENCRYPTION_KEY_SECRET_ARN: ARNS.key,
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    ADS_API_URL: world.amazon.adsBaseUrl,
    AWS_ENDPOINT_URL_RDS_DATA: world.emulator.endpoint,
    AWS_ENDPOINT_URL_SQS: sqsEndpoint,
    AWS_REGION: 'eu-west-1',
    AWS_ACCESS_KEY_ID: 'test',
    AWS_SECRET_ACCESS_KEY: 'test',
    [DISPATCHER_ENV.job]: 'token-refresh',
    [DISPATCHER_ENV.queueUrl]: QUEUE_URL,
    [DISPATCHER_ENV.requestsPerSecond]: '10',
  });
  secrets.reset();
  secrets.on(GetSecretValueCommand, { SecretId: ARNS.lwa }).resolves({
    SecretString: JSON.stringify({ clientId: world.amazon.clientId, clientSecret: world.amazon.clientSecret }),
  });
  secrets.on(GetSecretValueCommand, { SecretId: ARNS.key }).resolves({ SecretString: world.keyBase64 });
  sqs.requests.length = 0;
  sqs.accepted.length = 0;
  sqs.refuse = () => false;
  // Powertools writes log lines and EMF metrics to stdout and stderr: kept out of the test output.
  for (const stream of [process.stdout, process.stderr]) jest.spyOn(stream, 'write').mockImplementation(() => true);
  for (const method of ['log', 'info', 'warn', 'error'] as const)
    jest.spyOn(console, method).mockImplementation(() => undefined);
});
afterEach(() => {
  jest.restoreAllMocks();
  process.env = saved;
});

const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'req-1' } as unknown as Context;

async function tokenIds(): Promise<string[]> {
  const { rows } = await world.admin.query<{ id: string }>('SELECT id FROM oauth_tokens ORDER BY id');
  return rows.map((r) => r.id);
}

test('the dispatcher sends the due ids through the SQS client; the job function consumes them and reports only the bad message', async () => {
  const users = await seedUsers(world, { count: 250, expiresInSeconds: 600 });

  const summary = await dispatcher({}, context);

  // One SendMessageBatch in SQS's JSON protocol, to the configured queue, 200 ids per message.
  expect(summary).toMatchObject({ dispatched: 250, messages: 2, notSent: 0 });
  expect(sqs.requests).toHaveLength(1);
  expect(sqs.requests[0]).toMatchObject({
    target: 'AmazonSQS.SendMessageBatch',
    contentType: 'application/x-amz-json-1.0',
    body: { QueueUrl: QUEUE_URL },
  });
  const messages = sqs.accepted.map((m) => JSON.parse(m.body) as FanOutMessage);
  expect(messages.map((m) => m.ids.length)).toEqual([200, 50]);
  expect(messages.flatMap((m) => m.ids).sort()).toEqual(await tokenIds());

  const event = {
    Records: [
      ...sqs.accepted.map((m) => ({ messageId: m.messageId, body: m.body, eventSource: 'aws:sqs' })),
      { messageId: 'unreadable', body: 'not a message', eventSource: 'aws:sqs' },
    ],
  };
  const response = await refresh(event, context);

  expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'unreadable' }] });
  for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  // Delivered again (at least once), the messages do nothing more.
  expect(await refresh(event, context)).toEqual({ batchItemFailures: [{ itemIdentifier: 'unreadable' }] });
  for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
});

test('an entry SQS refuses twice fails the tick, and its ids are sent by the next one', async () => {
  await seedUsers(world, { count: 250, expiresInSeconds: 600 });
  // The second message is refused, and so is its retry (a request of its own, entry `0`).
  sqs.refuse = (request, entryId) => (request === 0 && entryId === '1') || request === 1;

  const error = await dispatcher({}, context).catch((e: unknown) => e);

  expect(error).toBeInstanceOf(DispatchSendError);
  expect((error as DispatcherCore.DispatchSendError).summary).toMatchObject({ dispatched: 200, notSent: 50 });
  expect(sqs.requests.map((r) => r.body.Entries.length)).toEqual([2, 1]);
  // The failure is logged as the dispatcher's service (the name its alarms and metrics use),
  // and the tick's metrics are published with it.
  const written = [process.stdout, process.stderr]
    .flatMap((stream) => jest.spyOn(stream, 'write').mock.calls)
    .flatMap(([chunk]) => String(chunk).split('\n'))
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
  expect(written).toContainEqual(
    expect.objectContaining({ level: 'ERROR', message: 'Dispatch failed', service: 'token-refresh-dispatcher' }),
  );
  expect(written).toContainEqual(
    expect.objectContaining({ service: 'token-refresh-dispatcher', IdsDispatched: 200, IdsNotDispatched: 50 }),
  );

  const next = await dispatcher({}, context);
  expect(next).toMatchObject({ dispatched: 50, notSent: 0 });
  const sent = sqs.accepted.flatMap((m) => (JSON.parse(m.body) as FanOutMessage).ids);
  expect(sent.sort()).toEqual(await tokenIds());
});

test('a paused database is waited for only while the invocation has time left: the handler keeps 2 s of it, so with less left the tick gives up after the first refusal', async () => {
  await seedUsers(world, { count: 3, expiresInSeconds: 600 });
  const before = world.emulator.calls.injectedFailures;
  // Aurora resuming: every Data API call is refused for a while (DatabaseResumingException).
  world.emulator.failNextCalls(50);
  // The invocation's clock: just over the tick's reserve (10 s) when it checks whether to start
  // a round, then 1,999 ms: less than the 2 s the handler keeps, so any wait is too long.
  let asked = 0;
  const late = {
    getRemainingTimeInMillis: () => (asked++ === 0 ? 10_001 : 1_999),
    awsRequestId: 'req-late',
  } as unknown as Context;
  try {
    await expect(dispatcher({}, late)).rejects.toThrow(/Data API unavailable after 1 attempts, not retried/);
    expect(world.emulator.calls.injectedFailures - before).toBe(1);
    expect(sqs.requests).toHaveLength(0);
  } finally {
    world.emulator.failNextCalls(0);
  }
});

test('as the account sync’s dispatcher (FAN_OUT_JOB=account-sync) the handler sends the due connections as account sync messages', async () => {
  await seedUsers(world, { count: 3, regions: () => ['NA'], accountsDueInSeconds: -60 });
  // This test's container is built with the account sync's variables (each test loads the module afresh).
  process.env[DISPATCHER_ENV.job] = 'account-sync';

  const summary = await dispatcher({}, context);

  expect(summary).toMatchObject({ job: 'account-sync', dispatched: 3, notSent: 0 });
  const messages = sqs.accepted.map((m) => JSON.parse(m.body) as FanOutMessage);
  expect(messages.map((m) => m.job)).toEqual(['account-sync']);
  expect(messages.flatMap((m) => m.ids).sort()).toEqual(await tokenIds());
  // Marked for the account sync (its lease), not for the token refresh.
  const { rows } = await world.admin.query<{ sync: number; refresh: number }>(
    `SELECT count(sync_lease_owner)::int AS sync, count(refresh_lease_owner)::int AS refresh FROM oauth_tokens`,
  );
  expect(rows).toEqual([{ sync: 3, refresh: 0 }]);
});

test('each job’s dispatcher logs and counts as `<job>-dispatcher`, the service its alarms and dashboards name', () => {
  expect(dispatcherService('token-refresh')).toBe('token-refresh-dispatcher');
  expect(dispatcherService('account-sync')).toBe('account-sync-dispatcher');
});
