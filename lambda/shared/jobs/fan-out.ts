import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import * as z from '../validation';

/**
 * The fan-out's contract between a job's dispatcher and the job function consuming its queue
 * (docs/architecture.md, "Fan-out"): one SQS message carries up to {@link IDS_PER_MESSAGE} due
 * ids and the id of the dispatch that marked them.
 */

/** Ids a fan-out dispatcher sent, and the owner of the mark it put on them. */
export interface GivenIds {
  readonly ids: readonly string[];
  /** The dispatch whose mark (a lease in its name) counts as free. */
  readonly dispatchId: string;
}

/** The two jobs that fan out, by the name their messages carry. */
export const FAN_OUT_JOBS = ['token-refresh', 'account-sync'] as const;
export type FanOutJob = (typeof FAN_OUT_JOBS)[number];

/** Ids per message: about 9 KB of JSON, one consumer run of a few seconds at the jobs' concurrency. */
export const IDS_PER_MESSAGE = 200;

/** One message's body. */
export interface FanOutMessage extends GivenIds {
  readonly job: FanOutJob;
}

const messageSchema = z.object({
  job: z.enum(FAN_OUT_JOBS),
  dispatchId: z.uuid(),
  ids: z.array(z.uuid()).check(z.minLength(1), z.maxLength(1000)),
});

/** Not a fan-out message of this job: the message is reported failed (and ends in the dead-letter queue). */
export class InvalidFanOutMessageError extends Error {
  constructor(problem: string) {
    super(`Not a fan-out message: ${problem}`);
    this.name = 'InvalidFanOutMessageError';
  }
}

/** Reads one message's body; throws InvalidFanOutMessageError when it is not one of `job`'s. */
export function parseFanOutMessage(body: string, job: FanOutJob): FanOutMessage {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    throw new InvalidFanOutMessageError('the body is not JSON');
  }
  const parsed = messageSchema.safeParse(value);
  if (!parsed.success)
    throw new InvalidFanOutMessageError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  if (parsed.data.job !== job) throw new InvalidFanOutMessageError(`it is for ${parsed.data.job}, not ${job}`);
  return parsed.data;
}

/**
 * A message is started only while more than this remains of the invocation (more than the
 * cores' own reserve, so a started message always claims); later ones are sent to the queue
 * again (see consumeBatch).
 */
export const MESSAGE_RESERVE_MS = 60_000;

/** The variable that gives a job function consuming its queue that queue's URL (to send unstarted messages back). */
export const FAN_OUT_QUEUE_URL_ENV = 'FAN_OUT_QUEUE_URL';

/**
 * Sends messages back to the job's queue as new messages (same bodies); answers the message ids
 * of those it could not send.
 */
export type Requeue = (
  records: ReadonlyArray<{ readonly messageId: string; readonly body: string }>,
) => Promise<string[]>;

/** The SQS event Lambda's event source mapping delivers (the fields the consumers read). */
export interface SqsBatchEvent {
  readonly Records: ReadonlyArray<{ readonly messageId: string; readonly body: string; readonly eventSource: string }>;
}

/** The partial batch response (ReportBatchItemFailures): the messages to deliver again. */
export interface SqsBatchResponse {
  batchItemFailures: Array<{ itemIdentifier: string }>;
}

/** Whether a job function's event is a batch from its fan-out queue. */
export function isSqsBatch(event: unknown): event is SqsBatchEvent {
  if (typeof event !== 'object' || event === null || !('Records' in event)) return false;
  const records = event.Records;
  return (
    Array.isArray(records) &&
    records.length > 0 &&
    records.every(
      (r) => typeof r === 'object' && r !== null && (r as { eventSource?: unknown }).eventSource === 'aws:sqs',
    )
  );
}

/**
 * Runs `work` for each message of a batch in turn and reports, per message, those that failed
 * (unreadable, or their run threw): SQS delivers those again after the visibility timeout, and
 * after `maxReceiveCount` receives moves them to the dead-letter queue. The others are deleted.
 *
 * Messages not started because less than `reserveMs` of the invocation remained are no failure:
 * they are sent to the queue again as new messages (`requeue`) and then deleted like the done
 * ones. Reporting them as failures would spend one of their receives each time (changing their
 * visibility does not reset ApproximateReceiveCount), so a few slow batches could dead-letter
 * messages nobody tried and fire the dead-letter alarm. A new message starts at receive count 0
 * and keeps its dispatch id (its mark still counts as free for it). Only those `requeue` could
 * not send are reported failed, as before. At worst (the function dies between the send and
 * its answer) a message is delivered twice, which the consumers' claims make harmless.
 */
export async function consumeBatch(
  event: SqsBatchEvent,
  job: FanOutJob,
  o: {
    readonly work: (message: FanOutMessage) => Promise<unknown>;
    readonly remainingTimeMs: () => number;
    readonly reserveMs: number;
    readonly onFailure: (messageId: string, error: unknown) => void;
    /** Sends unstarted messages back to the queue. */
    readonly requeue: Requeue;
  },
): Promise<SqsBatchResponse> {
  const batchItemFailures: Array<{ itemIdentifier: string }> = [];
  const unstarted: Array<{ messageId: string; body: string }> = [];
  for (const record of event.Records) {
    if (unstarted.length > 0 || o.remainingTimeMs() <= o.reserveMs) {
      unstarted.push({ messageId: record.messageId, body: record.body });
      continue;
    }
    try {
      await o.work(parseFanOutMessage(record.body, job));
    } catch (error) {
      o.onFailure(record.messageId, error);
      batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  if (unstarted.length > 0) {
    let notSent: string[];
    try {
      notSent = await o.requeue(unstarted);
    } catch (error) {
      o.onFailure('(requeue)', error);
      notSent = unstarted.map((r) => r.messageId);
    }
    for (const messageId of notSent) batchItemFailures.push({ itemIdentifier: messageId });
  }
  return { batchItemFailures };
}

/**
 * The job function's `requeue` in AWS: SendMessageBatch of the unstarted bodies to the job's
 * queue (a batch is at most FAN_OUT_BATCH_SIZE, under SQS's 10 entries), entries SQS does not
 * list as sent count as not sent. Without a queue URL nothing can be sent: every message is
 * reported failed (delivered again, as before requeueing existed).
 */
export function sqsRequeue(client: Pick<SQSClient, 'send'>, queueUrl: string | undefined): Requeue {
  return async (records) => {
    if (!queueUrl) return records.map((r) => r.messageId);
    const response = await client.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: records.map((r, i) => ({ Id: String(i), MessageBody: r.body })),
      }),
    );
    const sent = new Set((response.Successful ?? []).map((s) => Number(s.Id)));
    return records.filter((_, i) => !sent.has(i)).map((r) => r.messageId);
  };
}

/**
 * How long a dispatcher's mark holds, per job: about two ticks of its schedule, so ids waiting
 * in the queue are not sent again by the next tick, and a lost message delays its ids by at
 * most this. It also bounds a tick: no more ids than the shared Amazon budget can serve within
 * the mark (see dispatchCap in lambda/dispatcher/core.ts).
 */
export const DISPATCH_MARK_SECONDS: Readonly<Record<FanOutJob, number>> = {
  'token-refresh': 600,
  'account-sync': 1800,
};
