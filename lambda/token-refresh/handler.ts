import type { Context } from 'aws-lambda';
import { jobContainer } from '../shared/job-handler';
import { SERVICE_NAMES } from '../shared/metric-names';
import { runTokenRefresh, TokenRefreshSummary } from './core';

/** EventBridge schedule (every 5 minutes): one run of the proactive token refresh. */
export async function handler(_event: unknown, context: Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'>): Promise<TokenRefreshSummary> {
  const c = await jobContainer(SERVICE_NAMES.tokenRefresh);
  c.logger.appendKeys({ requestId: context.awsRequestId });
  try {
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
