import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { randomUUID } from 'node:crypto';
import { DispatchSelection, DispatchSendError, runDispatch } from '../../../lambda/dispatcher/core';
import { sqsQueueSender } from '../../../lambda/dispatcher/sqs-sender';
import type { FanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { runtime } from '../../support/jobs';

// The dispatcher's SQS sender (lambda/dispatcher/sqs-sender.ts): SendMessageBatch's answer lists
// each entry as Successful or Failed; an entry in neither list was not sent as far as anyone
// can tell, and must count as failed (sent once more, then its ids released), never as sent.

const sqs = mockClient(SQSClient);
const QUEUE_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/AmazonAccounts-dev-TokenRefreshQueue';

beforeEach(() => sqs.reset());

type Entry = { Id: string; MessageBody: string };
const entriesOf = (call: number) =>
  (sqs.commandCalls(SendMessageBatchCommand)[call].args[0].input.Entries ?? []) as Entry[];

test('entries SQS lists as failed, and entries it does not mention at all, are reported failed; the listed successes are not', async () => {
  sqs.on(SendMessageBatchCommand).resolves({
    Successful: [
      { Id: '0', MessageId: 'm0', MD5OfMessageBody: 'x' },
      { Id: '3', MessageId: 'm3', MD5OfMessageBody: 'x' },
    ],
    Failed: [{ Id: '1', SenderFault: false, Code: 'InternalError' }],
  });
  const sender = sqsQueueSender(new SQSClient({ region: 'eu-west-1' }), QUEUE_URL);

  const { failed } = await sender.sendBatch(['a', 'b', 'c', 'd', 'e']);

  expect([...failed].sort()).toEqual([1, 2, 4]);
  expect(entriesOf(0)).toEqual(['a', 'b', 'c', 'd', 'e'].map((body, i) => ({ Id: String(i), MessageBody: body })));
  expect(sqs.commandCalls(SendMessageBatchCommand)[0].args[0].input.QueueUrl).toBe(QUEUE_URL);
});

test('an answer with neither list fails every entry', async () => {
  sqs.on(SendMessageBatchCommand).resolves({});
  const sender = sqsQueueSender(new SQSClient({ region: 'eu-west-1' }), QUEUE_URL);
  expect(await sender.sendBatch(['a', 'b'])).toEqual({ failed: [0, 1] });
});

test('a tick sends an unmentioned entry once more, and releases its ids when it is left out again; the rest stay sent', async () => {
  // Every answer leaves out the entry whose body carries the first id: SQS said nothing of it.
  const ids = Array.from({ length: 6 }, () => randomUUID());
  const lost = ids[0];
  sqs.on(SendMessageBatchCommand).callsFake((input: { Entries: Entry[] }) => ({
    Successful: input.Entries.filter((e) => !e.MessageBody.includes(lost)).map((e) => ({
      Id: e.Id,
      MessageId: randomUUID(),
      MD5OfMessageBody: 'x',
    })),
    Failed: [],
  }));
  const released: string[][] = [];
  let selected = false;
  const selection: DispatchSelection = {
    job: 'token-refresh',
    select: () => {
      if (selected) return Promise.resolve([]);
      selected = true;
      return Promise.resolve(ids);
    },
    release: (_dispatchId, unsent) => {
      released.push([...unsent]);
      return Promise.resolve();
    },
  };

  const tick = runDispatch({
    selection,
    queue: sqsQueueSender(new SQSClient({ region: 'eu-west-1' }), QUEUE_URL),
    ...runtime(),
    settings: { maxIds: 100, idsPerMessage: 2 },
  });

  const error = (await tick.then(
    () => undefined,
    (e: unknown) => e,
  )) as DispatchSendError;
  expect(error).toBeInstanceOf(DispatchSendError);
  expect(error.summary).toMatchObject({ dispatched: 4, messages: 2, notSent: 2 });
  expect(released).toEqual([ids.slice(0, 2)]);
  // The second request carried only the unmentioned entry.
  const second = entriesOf(1).map((e) => (JSON.parse(e.MessageBody) as FanOutMessage).ids);
  expect(second).toEqual([ids.slice(0, 2)]);
  expect(sqs.commandCalls(SendMessageBatchCommand)).toHaveLength(2);
});
