import type { AccountSyncDeps } from './run-context';
import { countDueConnections } from './store';

/** What a dry run (`{"dryRun": true}`) reports instead of running. */
export interface AccountSyncPreview {
  readonly job: 'account-sync';
  readonly dryRun: true;
  /** Connections a scheduled run started now would claim and sync. */
  readonly due: number;
  /** Due connections whose access token expires too soon: they wait for the token refresh. */
  readonly waitingForTokenRefresh: number;
  /** Accounts a run would flag for re-authorisation (their user's token is off). */
  readonly accountsToFlagForReauth: number;
  readonly databaseCalls: number;
}

/**
 * A dry run of the scheduled account sync: reads what a run would start on and returns it.
 * Claims nothing, writes nothing (no history row either), calls no Amazon.
 */
export async function previewAccountSync(
  deps: Pick<AccountSyncDeps, 'db' | 'settings' | 'logger'>,
): Promise<AccountSyncPreview> {
  const callsBefore = deps.db.callCounts().total;
  const counts = await countDueConnections(deps.db, {
    minTokenValiditySeconds: deps.settings?.minTokenValiditySeconds ?? 120,
  });
  const preview: AccountSyncPreview = {
    job: 'account-sync',
    dryRun: true,
    due: counts.due,
    waitingForTokenRefresh: counts.waitingForToken,
    accountsToFlagForReauth: counts.needReauth,
    databaseCalls: deps.db.callCounts().total - callsBefore,
  };
  deps.logger.info('Account sync dry run: nothing claimed, written or sent to Amazon', { ...preview });
  return preview;
}
