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
 * cores' own reserve, so a started message always claims); later ones are reported failed and
 * delivered again.
 */
export const MESSAGE_RESERVE_MS = 60_000;

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
 * (unreadable, or their run threw) or were not started because less than `reserveMs` of the
 * invocation remained: SQS delivers those again after the visibility timeout, and after a few
 * receives moves them to the dead-letter queue. The others are deleted.
 */
export async function consumeBatch(
  event: SqsBatchEvent,
  job: FanOutJob,
  o: {
    readonly work: (message: FanOutMessage) => Promise<unknown>;
    readonly remainingTimeMs: () => number;
    readonly reserveMs: number;
    readonly onFailure: (messageId: string, error: unknown) => void;
  },
): Promise<SqsBatchResponse> {
  const batchItemFailures: Array<{ itemIdentifier: string }> = [];
  for (const record of event.Records) {
    if (o.remainingTimeMs() <= o.reserveMs) {
      batchItemFailures.push({ itemIdentifier: record.messageId });
      continue;
    }
    try {
      await o.work(parseFanOutMessage(record.body, job));
    } catch (error) {
      o.onFailure(record.messageId, error);
      batchItemFailures.push({ itemIdentifier: record.messageId });
    }
  }
  return { batchItemFailures };
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
