import * as z from '../shared/validation';
import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { AccountSyncRequest, AccountSyncSummary, runAccountSync } from './core';

/**
 * The events this Lambda takes: EventBridge's scheduled event (every 15 minutes: every due
 * user), or `{"syncType": "manual" | "webhook", "userId": "<uuid>"}` to sync one user now
 * (from the product's "refresh accounts" button or an Amazon notification).
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

export async function handler(event: unknown, context: JobInvocationContext): Promise<AccountSyncSummary> {
  const request = parseSyncEvent(event);
  return runJobInvocation(
    SERVICE_NAMES.accountSync,
    context,
    (c, runtime) => runAccountSync({ db: c.db, ads: c.ads, cipher: c.cipher, ...runtime }, request),
    { syncType: request.syncType },
  );
}
