import type { Context } from 'aws-lambda';
import { jobContainer } from '../shared/job-handler';
import { SERVICE_NAMES } from '../shared/metric-names';
import { DryRunEvent, isDryRun } from '../shared/dry-run';
import { previewTokenRefresh, runTokenRefresh, TokenRefreshPreview, TokenRefreshSummary } from './core';

/**
 * EventBridge schedule (every 5 minutes): one run of the proactive token refresh.
 * `{"dryRun": true}` (a deploy check) only reports how many tokens are due.
 */
export async function handler(event: DryRunEvent, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<TokenRefreshPreview>;
export async function handler(event: unknown, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<TokenRefreshSummary>;
export async function handler(event: unknown, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<TokenRefreshSummary | TokenRefreshPreview> {
  const c = await jobContainer(SERVICE_NAMES.tokenRefresh);
  c.logger.appendKeys({ requestId: context.awsRequestId });
  try {
    if (isDryRun(event)) return await previewTokenRefresh({ db: c.db, logger: c.jobLogger });
    return await runTokenRefresh({
      db: c.db,
      lwa: c.lwa,
      cipher: c.cipher,
      logger: c.jobLogger,
      metrics: c.jobMetrics,
      remainingTimeMs: () => context.getRemainingTimeInMillis(),
    });
  } catch (error) {
    c.logger.error('Token refresh run failed', error as Error);
    throw error;
  } finally {
    c.metrics.publishStoredMetrics();
  }
}
