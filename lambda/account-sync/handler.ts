import * as z from '../shared/validation';
import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { DryRunEvent, isDryRun } from '../shared/jobs/dry-run';
import { SQSClient } from '@aws-sdk/client-sqs';
import {
  consumeBatch,
  FAN_OUT_QUEUE_URL_ENV,
  isSqsBatch,
  MESSAGE_RESERVE_MS,
  sqsRequeue,
  SqsBatchEvent,
  SqsBatchResponse,
} from '../shared/jobs/fan-out';
import { describeError } from '../shared/jobs/runtime';
import { AMAZON_REGIONS } from '../shared/amazon/regions';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { AccountSyncRequest, AccountSyncSummary, runAccountSync } from './core';
import { AccountSyncPreview, previewAccountSync } from './preview';

/**
 * The events this Lambda takes: EventBridge's scheduled event (every 10 minutes: every due
 * user), or `{"syncType": "manual" | "webhook", "userId": "<uuid>", "regions"?: ["NA", …]}` to sync one user now
 * (from the product's "refresh accounts" button or an Amazon notification), or
 * `{"dryRun": true}` (a deploy check: only reports how many users are due).
 */
const onDemandEvent = z.object({
  syncType: z.enum(['manual', 'webhook']),
  userId: z.uuid(),
  /** Only the user's connections in these regions (the accounts API's `POST /v1/syncs {"region"}`). */
  regions: z.optional(z.array(z.enum(AMAZON_REGIONS)).check(z.minLength(1))),
});

export class InvalidSyncEventError extends Error {
  constructor(problems: string) {
    super(
      `Not a sync request: ${problems}. Send {"syncType":"manual"|"webhook","userId":"<uuid>"} or a scheduled event.`,
    );
    this.name = 'InvalidSyncEventError';
  }
}

export function parseSyncEvent(event: unknown): AccountSyncRequest {
  if (typeof event === 'object' && event !== null && 'syncType' in event) {
    const parsed = onDemandEvent.safeParse(event);
    if (!parsed.success)
      throw new InvalidSyncEventError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    return parsed.data;
  }
  return { syncType: 'scheduled' };
}

/** The SQS client that sends unstarted fan-out messages back (built on first use, once per container). */
let sqs: SQSClient | undefined;
/**
 * One invocation: a scheduled or on-demand sync, a batch from the job's fan-out queue (one run
 * per message on its connections, failed messages reported), or `{"dryRun": true}` (a deploy check), which
 * only reports how many users are due.
 */
export async function handler(event: DryRunEvent, context: JobInvocationContext): Promise<AccountSyncPreview>;
export async function handler(event: SqsBatchEvent, context: JobInvocationContext): Promise<SqsBatchResponse>;
export async function handler(event: unknown, context: JobInvocationContext): Promise<AccountSyncSummary>;
export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<AccountSyncSummary | AccountSyncPreview | SqsBatchResponse> {
  if (isDryRun(event)) {
    return runJobInvocation(
      SERVICE_NAMES.accountSync,
      context,
      (c, runtime) => previewAccountSync({ db: c.db, logger: runtime.logger }),
      { syncType: 'dry-run' },
    );
  }
  if (isSqsBatch(event)) {
    // Fan-out: each message's connections, one run per message; failed messages are delivered again.
    return runJobInvocation(
      SERVICE_NAMES.accountSync,
      context,
      (c, runtime) =>
        consumeBatch(event, 'account-sync', {
          work: (message) =>
            runAccountSync(
              { db: c.db, ads: c.ads, lwa: c.lwa, cipher: c.cipher, ...runtime },
              { syncType: 'scheduled', given: message },
            ),
          remainingTimeMs: runtime.remainingTimeMs,
          reserveMs: MESSAGE_RESERVE_MS,
          onFailure: (messageId, error) =>
            runtime.logger.error('Fan-out message failed', { messageId, error: describeError(error) }),
          // Unstarted messages go back to the queue as new ones, spending none of their receives.
          requeue: sqsRequeue((sqs ??= new SQSClient({})), process.env[FAN_OUT_QUEUE_URL_ENV]),
        }),
      { syncType: 'scheduled' },
    );
  }
  const request = parseSyncEvent(event);
  return runJobInvocation(
    SERVICE_NAMES.accountSync,
    context,
    (c, runtime) => runAccountSync({ db: c.db, ads: c.ads, lwa: c.lwa, cipher: c.cipher, ...runtime }, request),
    { syncType: request.syncType },
  );
}
