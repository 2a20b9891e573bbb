import {
  flagAccountsNeedingReauth,
  markDueConnectionsDispatched,
  MIN_TOKEN_VALIDITY_SECONDS,
  REAUTH_MESSAGE,
  releaseDispatchedConnections,
} from '../account-sync/store';
import type { AmazonEndpoint, AmazonRegion } from '../shared/amazon/regions';
import type { Database } from '../shared/db/port';
import { readRegionPauses } from '../shared/jobs/region-pauses';
import { DISPATCH_MARK_SECONDS } from '../shared/jobs/fan-out';
import { markDueTokensDispatched, releaseDispatchedTokens, TOKEN_REFRESH_WINDOW_SECONDS } from '../token-refresh/store';
import type { DispatchSelection } from './core';

/**
 * Regions whose endpoint is paused now (the shared budget's real pause, or the last Retry-After
 * recorded): their ids are not dispatched until the pause ends (a later tick sends them).
 */
async function pausedRegions(db: Database, endpoint: AmazonEndpoint): Promise<AmazonRegion[]> {
  return [...(await readRegionPauses(db, endpoint)).keys()];
}

/**
 * The token refresh's due tokens, on the claim's conditions (the window from the schedule and
 * the used-within window when the environment sets them), marked for DISPATCH_MARK_SECONDS.
 */
export function tokenRefreshSelection(
  db: Database,
  o: { readonly usedWithinSeconds?: number; readonly windowSeconds?: number; readonly markSeconds?: number } = {},
): DispatchSelection {
  return {
    job: 'token-refresh',
    select: async ({ dispatchId, limit }) =>
      markDueTokensDispatched(db, {
        dispatchId,
        limit,
        markSeconds: o.markSeconds ?? DISPATCH_MARK_SECONDS['token-refresh'],
        windowSeconds: o.windowSeconds ?? TOKEN_REFRESH_WINDOW_SECONDS,
        pausedRegions: await pausedRegions(db, 'lwa'),
        usedWithinSeconds: o.usedWithinSeconds,
      }),
    release: (dispatchId, ids) => releaseDispatchedTokens(db, dispatchId, ids),
  };
}

/**
 * The account sync's due connections, on the scheduled claim's conditions, marked for
 * DISPATCH_MARK_SECONDS; once per tick, the accounts of connections that need re-authorisation
 * are flagged first (what a scheduled run does when it does not fan out).
 */
export function accountSyncSelection(db: Database, o: { readonly markSeconds?: number } = {}): DispatchSelection {
  return {
    job: 'account-sync',
    beforeTick: async () => {
      await flagAccountsNeedingReauth(db, REAUTH_MESSAGE);
    },
    select: async ({ dispatchId, limit }) =>
      markDueConnectionsDispatched(db, {
        dispatchId,
        limit,
        markSeconds: o.markSeconds ?? DISPATCH_MARK_SECONDS['account-sync'],
        minTokenValiditySeconds: MIN_TOKEN_VALIDITY_SECONDS,
        pausedRegions: await pausedRegions(db, 'ads'),
      }),
    release: (dispatchId, ids) => releaseDispatchedConnections(db, dispatchId, ids),
  };
}
