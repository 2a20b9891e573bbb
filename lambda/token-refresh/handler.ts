import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { runTokenRefresh, TokenRefreshSummary } from './core';

/** EventBridge schedule (every 5 minutes): one run of the proactive token refresh. */
export async function handler(_event: unknown, context: JobInvocationContext): Promise<TokenRefreshSummary> {
  return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
    runTokenRefresh({ db: c.db, lwa: c.lwa, cipher: c.cipher, ...runtime }),
  );
}
