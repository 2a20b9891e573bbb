import type { Context } from 'aws-lambda';
import { z } from 'zod';
import { jobContainer } from '../shared/job-handler';
import { SERVICE_NAMES } from '../shared/metric-names';
import { DryRunEvent, isDryRun } from '../shared/dry-run';
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
    super(`Not a sync request: ${problems}. Send {"syncType":"manual"|"webhook","userId":"<uuid>"} or a scheduled event.`);
    this.name = 'InvalidSyncEventError';
  }
}

export function parseSyncEvent(event: unknown): AccountSyncRequest {
  if (typeof event === 'object' && event !== null && 'syncType' in event) {
    const parsed = onDemandEvent.safeParse(event);
    if (!parsed.success) throw new InvalidSyncEventError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
    return parsed.data;
  }
  return { syncType: 'scheduled' };
}

export async function handler(event: DryRunEvent, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<AccountSyncPreview>;
export async function handler(event: unknown, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<AccountSyncSummary>;
export async function handler(event: unknown, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<AccountSyncSummary | AccountSyncPreview> {
  if (isDryRun(event)) {
    const c = await jobContainer(SERVICE_NAMES.accountSync);
    c.logger.appendKeys({ requestId: context.awsRequestId, syncType: 'dry-run' });
    try {
      return await previewAccountSync({ db: c.db, logger: c.jobLogger });
    } catch (error) {
      c.logger.error('Account sync dry run failed', error as Error);
      throw error;
    }
  }
  const request = parseSyncEvent(event);
  const c = await jobContainer(SERVICE_NAMES.accountSync);
  c.logger.appendKeys({ requestId: context.awsRequestId, syncType: request.syncType });
  try {
    return await runAccountSync(
      {
        db: c.db,
        ads: c.ads,
        cipher: c.cipher,
        logger: c.jobLogger,
        metrics: c.jobMetrics,
        remainingTimeMs: () => context.getRemainingTimeInMillis(),
      },
      request,
    );
  } catch (error) {
    c.logger.error('Account sync run failed', error as Error);
    throw error;
  } finally {
    c.metrics.publishStoredMetrics();
  }
}
