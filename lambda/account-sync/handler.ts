import * as z from '../shared/validation';
import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { DryRunEvent, isDryRun } from '../shared/jobs/dry-run';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { AccountSyncPreview, AccountSyncRequest, AccountSyncSummary, previewAccountSync, runAccountSync } from './core';

/**
 * The events this Lambda takes: EventBridge's scheduled event (every 15 minutes: every due
 * user), or `{"syncType": "manual" | "webhook", "userId": "<uuid>"}` to sync one user now
 * (from the product's "refresh accounts" button or an Amazon notification), or
 * `{"dryRun": true}` (a deploy check: only reports how many users are due).
 */
const onDemandEvent = z.object({ syncType: z.enum(['manual', 'webhook']), userId: z.uuid() });

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

/**
 * One invocation: a scheduled or on-demand sync, or `{"dryRun": true}` (a deploy check), which
 * only reports how many users are due.
 */
export async function handler(event: DryRunEvent, context: JobInvocationContext): Promise<AccountSyncPreview>;
export async function handler(event: unknown, context: JobInvocationContext): Promise<AccountSyncSummary>;
export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<AccountSyncSummary | AccountSyncPreview> {
  if (isDryRun(event)) {
    return runJobInvocation(
      SERVICE_NAMES.accountSync,
      context,
      (c, runtime) => previewAccountSync({ db: c.db, logger: runtime.logger }),
      { syncType: 'dry-run' },
    );
  }
  const request = parseSyncEvent(event);
  return runJobInvocation(
    SERVICE_NAMES.accountSync,
    context,
    (c, runtime) => runAccountSync({ db: c.db, ads: c.ads, cipher: c.cipher, ...runtime }, request),
    { syncType: request.syncType },
  );
}
