import { randomUUID } from 'node:crypto';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { DISPATCHER_ENV } from '../../../lambda/dispatcher/config';
import {
  consumeBatch,
  FAN_OUT_QUEUE_URL_ENV,
  InvalidFanOutMessageError,
  isSqsBatch,
  parseFanOutMessage,
  sqsRequeue,
  type FanOutMessage,
  type SqsBatchEvent,
} from '../../../lambda/shared/jobs/fan-out';

/**
 * The fan-out's consumer side (lambda/shared/jobs/fan-out.ts) on its own: which events are SQS
 * batches, what an unreadable message says, which messages of a batch are started, sent back
 * or reported failed, and what the SQS requeue reports as not sent. The dispatcher's tests
 * (test/jobs/dispatcher/) run it end to end with the jobs.
 */

const record = (body: string, messageId = randomUUID()) => ({ messageId, body, eventSource: 'aws:sqs' });
const message = (): FanOutMessage => ({ job: 'token-refresh', dispatchId: randomUUID(), ids: [randomUUID()] });

describe('isSqsBatch', () => {
  test('a batch of SQS records is one', () => {
    expect(isSqsBatch({ Records: [record('{}'), record('{}')] })).toBe(true);
  });

  test.each([
    ['undefined', undefined],
    ['null', null],
    ['a string', 'Records'],
    ['an object without Records', { detail: {} }],
    ['Records that is not an array', { Records: { eventSource: 'aws:sqs' } }],
    ['no records', { Records: [] }],
    ['a record of another source among SQS ones', { Records: [record('{}'), { eventSource: 'aws:sns' }] }],
    ['a record without a source', { Records: [record('{}'), {}] }],
    ['a null record', { Records: [record('{}'), null] }],
    ['a record that is a string', { Records: [record('{}'), 'aws:sqs'] }],
  ])('%s is not one', (_name, event) => {
    expect(isSqsBatch(event)).toBe(false);
  });
});

describe('parseFanOutMessage', () => {
  test('an unreadable message is an InvalidFanOutMessageError that names each problem by its path', () => {
    const body = JSON.stringify({ job: 'token-refresh', dispatchId: 'not-a-uuid', ids: [randomUUID(), 'x'] });
    let error: unknown;
    try {
      parseFanOutMessage(body, 'token-refresh');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidFanOutMessageError);
    const { name, message: text } = error as Error;
    expect(name).toBe('InvalidFanOutMessageError');
    // Two problems, each `path: message`, separated by "; " (an array element's path is dotted).
    expect(text).toMatch(/^Not a fan-out message: dispatchId: [^;]+; ids\.1: [^;]+$/);
  });

  test('a message of the other job is refused, and a readable one is returned as sent', () => {
    const m = message();
    expect(() => parseFanOutMessage(JSON.stringify(m), 'account-sync')).toThrow(
      'Not a fan-out message: it is for token-refresh, not account-sync',
    );
    expect(parseFanOutMessage(JSON.stringify(m), 'token-refresh')).toEqual(m);
  });
});

describe('consumeBatch', () => {
  const batch = (n: number): SqsBatchEvent => ({
    Records: Array.from({ length: n }, () => record(JSON.stringify(message()))),
  });

  test('once a message is left unstarted, the later ones are too, even when the clock would allow them', async () => {
    const event = batch(3);
    // Enough time for the first, not for the second; the third would see time again.
    const remaining = [120_000, 30_000, 120_000];
    const worked: string[] = [];
    const requeued: string[][] = [];
    const response = await consumeBatch(event, 'token-refresh', {
      work: async (m) => void worked.push(m.dispatchId),
      remainingTimeMs: () => remaining.shift() ?? 120_000,
      reserveMs: 60_000,
      onFailure: () => undefined,
      requeue: async (records) => {
        requeued.push(records.map((r) => r.messageId));
        return [];
      },
    });
    expect(worked).toHaveLength(1);
    expect(requeued).toEqual([[event.Records[1].messageId, event.Records[2].messageId]]);
    expect(response).toEqual({ batchItemFailures: [] });
  });

  test('a message is not started when exactly the reserve remains', async () => {
    const event = batch(1);
    const work = jest.fn(async () => undefined);
    const requeue = jest.fn(async () => []);
    await consumeBatch(event, 'token-refresh', {
      work,
      remainingTimeMs: () => 60_000,
      reserveMs: 60_000,
      onFailure: () => undefined,
      requeue,
    });
    expect(work).not.toHaveBeenCalled();
    expect(requeue).toHaveBeenCalledWith([{ messageId: event.Records[0].messageId, body: event.Records[0].body }]);
  });

  test('a requeue that throws is reported once as "(requeue)", and every unstarted message fails', async () => {
    const event = batch(2);
    const failures: Array<[string, unknown]> = [];
    const refused = new Error('SQS is down');
    const response = await consumeBatch(event, 'token-refresh', {
      work: async () => undefined,
      remainingTimeMs: () => 0,
      reserveMs: 60_000,
      onFailure: (id, error) => failures.push([id, error]),
      requeue: async () => {
        throw refused;
      },
    });
    expect(failures).toEqual([['(requeue)', refused]]);
    expect(response.batchItemFailures).toEqual(event.Records.map((r) => ({ itemIdentifier: r.messageId })));
  });
});

describe('sqsRequeue', () => {
  test('the job functions read their queue from the variable the dispatcher reads it from (one name in the docs)', () => {
    expect(FAN_OUT_QUEUE_URL_ENV).toBe(DISPATCHER_ENV.queueUrl);
  });

  const sqs = mockClient(SQSClient);
  afterEach(() => sqs.reset());
  const records = [
    { messageId: 'm0', body: 'b0' },
    { messageId: 'm1', body: 'b1' },
    { messageId: 'm2', body: 'b2' },
  ];

  test('without a queue URL nothing is sent and every message is not sent', async () => {
    const client = new SQSClient({ region: 'eu-west-1' });
    expect(await sqsRequeue(client, undefined)(records)).toEqual(['m0', 'm1', 'm2']);
    expect(await sqsRequeue(client, '')(records)).toEqual(['m0', 'm1', 'm2']);
    expect(sqs.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
  });

  test('the bodies are sent to the queue; the entries SQS does not list as successful are the ones not sent', async () => {
    sqs.on(SendMessageBatchCommand).resolves({
      Successful: [
        { Id: '0', MessageId: 'x', MD5OfMessageBody: '' },
        { Id: '2', MessageId: 'y', MD5OfMessageBody: '' },
      ],
      Failed: [{ Id: '1', SenderFault: false, Code: 'InternalError' }],
    });
    const client = new SQSClient({ region: 'eu-west-1' });
    expect(await sqsRequeue(client, 'https://sqs.example/queue')(records)).toEqual(['m1']);
    expect(sqs.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input)).toEqual([
      {
        QueueUrl: 'https://sqs.example/queue',
        Entries: [
          { Id: '0', MessageBody: 'b0' },
          { Id: '1', MessageBody: 'b1' },
          { Id: '2', MessageBody: 'b2' },
        ],
      },
    ]);
  });

  test('every entry sent: none is reported', async () => {
    sqs.on(SendMessageBatchCommand).resolves({
      Successful: records.map((_, i) => ({ Id: String(i), MessageId: `x${i}`, MD5OfMessageBody: '' })),
      Failed: [],
    });
    expect(await sqsRequeue(new SQSClient({ region: 'eu-west-1' }), 'https://sqs.example/queue')(records)).toEqual([]);
  });
});
