import { DeleteMessageBatchCommand, ReceiveMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { runDispatch } from '../../../lambda/dispatcher/core';
import { tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import { sqsQueueSender } from '../../../lambda/dispatcher/sqs-sender';
import { consumeBatch, sqsRequeue, type FanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { FAN_OUT_BATCH_SIZE, FAN_OUT_MAX_RECEIVE_COUNT } from '../../../lib/scheduled-jobs';
import { SqsStandIn } from '../../../local/sqs/stand-in';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * The fan-out's queue as SQS runs it: the real @aws-sdk/client-sqs against a local SQS
 * (local/sqs/stand-in.ts) with the stack's redrive (FAN_OUT_MAX_RECEIVE_COUNT) and a dead-letter
 * queue, and Lambda's event source mapping played out here: receive a batch, run the job
 * function's consumeBatch on it, delete what it did not report failed.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const sqs = new SqsStandIn();
let client: SQSClient;
beforeAll(async () => {
  const endpoint = await sqs.start();
  client = new SQSClient({
    endpoint,
    region: 'eu-west-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  });
});
afterAll(async () => {
  client.destroy();
  await sqs.close();
});

const VISIBILITY_SECONDS = 1440;
let queueUrl: string;
beforeEach(() => {
  sqs.createQueue('dlq', { visibilityTimeoutSeconds: 30 });
  queueUrl = sqs.createQueue('work', {
    visibilityTimeoutSeconds: VISIBILITY_SECONDS,
    deadLetter: { queueName: 'dlq', maxReceiveCount: FAN_OUT_MAX_RECEIVE_COUNT },
  });
});

function dispatch(db: Database, idsPerMessage: number) {
  return runDispatch({
    selection: tokenRefreshSelection(db),
    queue: sqsQueueSender(client, queueUrl),
    ...runtime(),
    settings: { maxIds: 10_000, idsPerMessage },
  });
}

/**
 * One invocation of the job function on what the event source mapping receives. Each message's
 * run takes `msPerMessage` of the invocation's `budgetMs`. Answers how many messages it received.
 */
async function invocation(
  db: Database,
  o: {
    budgetMs: number;
    msPerMessage: number;
    fails?: (m: FanOutMessage) => boolean;
    /** Bodies the batch puts last (neither SQS nor the event source mapping orders a standard queue). */
    last?: string;
  },
): Promise<number> {
  const { Messages: received = [] } = await client.send(
    new ReceiveMessageCommand({ QueueUrl: queueUrl, MaxNumberOfMessages: FAN_OUT_BATCH_SIZE }),
  );
  const Messages = [...received.filter((m) => m.Body !== o.last), ...received.filter((m) => m.Body === o.last)];
  if (Messages.length === 0) return 0;
  let remaining = o.budgetMs;
  const response = await consumeBatch(
    { Records: Messages.map((m) => ({ messageId: m.MessageId!, body: m.Body!, eventSource: 'aws:sqs' })) },
    'token-refresh',
    {
      work: async (message) => {
        remaining -= o.msPerMessage;
        if (o.fails?.(message)) throw new Error('injected failure');
        return runTokenRefresh({
          db,
          lwa: world.lwa(),
          cipher: world.cipher,
          ...runtime(),
          settings: { given: message },
        });
      },
      remainingTimeMs: () => remaining,
      reserveMs: 60_000,
      onFailure: () => undefined,
      requeue: sqsRequeue(client, queueUrl),
    },
  );
  const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
  const done = Messages.filter((m) => !failed.has(m.MessageId!));
  if (done.length > 0)
    await client.send(
      new DeleteMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle! })),
      }),
    );
  return Messages.length;
}

/** Invocations until the queue is empty, the visibility timeout passing between them. */
async function drain(db: Database, o: Parameters<typeof invocation>[1]): Promise<number> {
  let invocations = 0;
  for (let round = 0; round < 100; round++) {
    const received = await invocation(db, o);
    if (received === 0 && sqs.bodies('work').length === 0) return invocations;
    if (received > 0) invocations++;
    sqs.advance(VISIBILITY_SECONDS + 1);
  }
  throw new Error('the queue never emptied');
}

describe.each(PATHS)('%s', (_path, database) => {
  test('batches cut short by the deadline send their unstarted messages back: nothing reaches the dead-letter queue, every token is refreshed once', async () => {
    const users = await seedUsers(world, { count: 12, expiresInSeconds: 600 });
    const db = database();
    expect(await dispatch(db, 1)).toMatchObject({ dispatched: 12, messages: 12 });
    // One message always comes last in its batch.
    const [last] = sqs.bodies('work');

    // Each invocation has time for one message only (70 s each of 120 s, 60 s kept back), so
    // that message is left unstarted by more batches than FAN_OUT_MAX_RECEIVE_COUNT.
    const invocations = await drain(db, { budgetMs: 120_000, msPerMessage: 70_000, last });

    expect(sqs.bodies('dlq')).toEqual([]);
    expect(invocations).toBe(12);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  });

  test('a message that really fails reaches the dead-letter queue; its ids are dispatched again once their mark expires', async () => {
    const users = await seedUsers(world, { count: 3, expiresInSeconds: 600 });
    const db = database();
    const first = await dispatch(db, 10);
    expect(first).toMatchObject({ dispatched: 3, messages: 1 });

    // Its run fails every time: after FAN_OUT_MAX_RECEIVE_COUNT receives it is dead-lettered.
    await drain(db, { budgetMs: 600_000, msPerMessage: 1000, fails: () => true });
    expect(sqs.bodies('dlq').map((b) => (JSON.parse(b) as FanOutMessage).dispatchId)).toEqual([first.dispatchId]);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(0);

    // While the dispatch mark holds, the next tick does not send them again.
    expect(await dispatch(db, 10)).toMatchObject({ dispatched: 0 });
    // The mark runs out (DISPATCH_MARK_SECONDS after the dispatch): they are due, and sent again.
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_expires_at = now() - interval '1 second'
        WHERE refresh_lease_owner = :owner::uuid`,
      { owner: first.dispatchId },
    );
    expect(await dispatch(db, 10)).toMatchObject({ dispatched: 3 });
    await drain(db, { budgetMs: 600_000, msPerMessage: 1000 });
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  });
});
