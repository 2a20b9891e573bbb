import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { QueueSender } from './core';

/**
 * The dispatcher's sends in AWS: SendMessageBatch on the job's queue, entry ids `0`…`9` (the
 * bodies' indexes), the entries SQS lists as failed returned for a second try.
 */
export function sqsQueueSender(client: Pick<SQSClient, 'send'>, queueUrl: string): QueueSender {
  return {
    async sendBatch(bodies) {
      const response = await client.send(
        new SendMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: bodies.map((body, i) => ({ Id: String(i), MessageBody: body })),
        }),
      );
      const failed = (response.Failed ?? []).map((f) => Number(f.Id));
      // An entry SQS mentions neither as sent nor as failed counts as failed.
      const sent = new Set((response.Successful ?? []).map((s) => Number(s.Id)));
      for (let i = 0; i < bodies.length; i++) if (!sent.has(i) && !failed.includes(i)) failed.push(i);
      return { failed };
    },
  };
}
