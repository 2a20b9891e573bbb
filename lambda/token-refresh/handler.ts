import { jobConfig } from '../shared/config';
import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { DryRunEvent, isDryRun } from '../shared/jobs/dry-run';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import {
  previewTokenRefresh,
  runTokenRefresh,
  TokenRefreshPreview,
  TokenRefreshSettings,
  TokenRefreshSummary,
} from './core';

/** The settings the stack gives this function: the used-within window, when the environment sets one. */
function settings(): TokenRefreshSettings {
  return { usedWithinSeconds: jobConfig().proactiveRefreshUsedWithinSeconds };
}

/**
 * EventBridge schedule (every 5 minutes): one run of the proactive token refresh.
 * `{"dryRun": true}` (a deploy check) only reports how many tokens are due. Both cover only
 * connections used within PROACTIVE_REFRESH_USED_WITHIN_SECONDS when the stack sets it.
 */
export async function handler(event: DryRunEvent, context: JobInvocationContext): Promise<TokenRefreshPreview>;
export async function handler(event: unknown, context: JobInvocationContext): Promise<TokenRefreshSummary>;
export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<TokenRefreshSummary | TokenRefreshPreview> {
  if (isDryRun(event)) {
    return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
      previewTokenRefresh({ db: c.db, logger: runtime.logger, settings: settings() }),
    );
  }
  return runJobInvocation(SERVICE_NAMES.tokenRefresh, context, (c, runtime) =>
    runTokenRefresh({ db: c.db, lwa: c.lwa, cipher: c.cipher, ...runtime, settings: settings() }),
  );
}
