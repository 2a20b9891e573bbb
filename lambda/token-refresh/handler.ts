import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { DryRunEvent, isDryRun } from '../shared/jobs/dry-run';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { previewTokenRefresh, runTokenRefresh, TokenRefreshPreview, TokenRefreshSummary } from './core';

/**
 * EventBridge schedule (every 5 minutes): one run of the proactive token refresh.
 * `{"dryRun": true}` (a deploy check) only reports how many tokens are due.
 */
export async function handler(event: DryRunEvent, context: JobInvocationContext): Promise<TokenRefreshPreview>;
export async function handler(event: unknown, context: JobInvocationContext): Promise<TokenRefreshSummary>;
export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<TokenRefreshSummary | TokenRefreshPreview> {
  if (isDryRun(event)) {
    return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
      previewTokenRefresh({ db: c.db, logger: runtime.logger }),
    );
  }
  return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
    runTokenRefresh({ db: c.db, lwa: c.lwa, cipher: c.cipher, ...runtime }),
  );
}
