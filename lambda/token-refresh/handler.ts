import { jobConfig } from '../shared/config';
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
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import {
  previewTokenRefresh,
  runTokenRefresh,
  TokenRefreshPreview,
  TokenRefreshSettings,
  TokenRefreshSummary,
} from './core';

/** The SQS client that sends unstarted fan-out messages back (built on first use, once per container). */
let sqs: SQSClient | undefined;
/**
 * The settings the stack gives this function: the refresh window (derived from the schedule in
 * cdk.json) and the used-within window, when the environment sets them.
 */
function settings(): TokenRefreshSettings {
  const config = jobConfig();
  return {
    usedWithinSeconds: config.proactiveRefreshUsedWithinSeconds,
    ...(config.proactiveRefreshWindowSeconds === undefined
      ? {}
      : { windowSeconds: config.proactiveRefreshWindowSeconds }),
  };
}

/**
 * EventBridge schedule (every 5 minutes): one run of the proactive token refresh; or, when the
 * environment fans out, a batch from the job's queue (SQS event source mapping): one run per
 * message on its ids, the failed messages reported (partial batch response).
 * `{"dryRun": true}` (a deploy check) only reports how many tokens are due. Both cover only
 * connections used within PROACTIVE_REFRESH_USED_WITHIN_SECONDS when the stack sets it.
 */
export async function handler(event: DryRunEvent, context: JobInvocationContext): Promise<TokenRefreshPreview>;
export async function handler(event: SqsBatchEvent, context: JobInvocationContext): Promise<SqsBatchResponse>;
export async function handler(event: unknown, context: JobInvocationContext): Promise<TokenRefreshSummary>;
export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<TokenRefreshSummary | TokenRefreshPreview | SqsBatchResponse> {
  if (isDryRun(event)) {
    return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
      previewTokenRefresh({ db: c.db, logger: runtime.logger, settings: settings() }),
    );
  }
  if (isSqsBatch(event)) {
    // Fan-out: each message's ids, one run per message; failed messages are delivered again.
    return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
      consumeBatch(event, 'token-refresh', {
        work: (message) =>
          runTokenRefresh({
            db: c.db,
            lwa: c.lwa,
            cipher: c.cipher,
            ...runtime,
            settings: { ...settings(), given: message },
          }),
        remainingTimeMs: runtime.remainingTimeMs,
        reserveMs: MESSAGE_RESERVE_MS,
        onFailure: (messageId, error) =>
          runtime.logger.error('Fan-out message failed', { messageId, error: describeError(error) }),
        // Unstarted messages go back to the queue as new ones, spending none of their receives.
        requeue: sqsRequeue((sqs ??= new SQSClient({})), process.env[FAN_OUT_QUEUE_URL_ENV]),
      }),
    );
  }
  return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
    runTokenRefresh({ db: c.db, lwa: c.lwa, cipher: c.cipher, ...runtime, settings: settings() }),
  );
}
