import { sleep as defaultSleep } from '../shared/backoff';
import { oauthTokenBinding } from '../shared/token-crypto';
import { takeAccessToken } from '../token-refresh/on-demand';
import { REFRESH_OUTCOME_DEFAULTS } from '../token-refresh/outcome';
import { failed, holdRegion, retryAt, type SyncContext } from './run-context';
import { ClaimedConnection, ConnectionSyncOutcome, REAUTH_MESSAGE } from './store';

/**
 * The refresh lease the sync takes for a token on demand: it outlasts the item's wait (at most
 * MAX_ITEM_WAIT_MS), Login with Amazon's answer (10 s timeout) and the write-back.
 */
export const ON_DEMAND_LEASE_SECONDS = 60;

/**
 * The connection's access token: the stored one while it has more than
 * `minTokenValiditySeconds` left (no database call); else taken on demand, single-flight with
 * the token route and the token refresh (lambda/token-refresh/on-demand.ts): refreshed once
 * under the connection's refresh lease, the refresh's outcome policy applied once, without
 * recording a use (so an idle connection stays out of the proactive refresh's window and is
 * refreshed once per sync cycle, when the sync needs its token). What cannot be had by
 * `notAfter` is given back.
 */
export async function accessTokenFor(
  c: SyncContext,
  connection: ClaimedConnection,
  notAfter: number,
): Promise<{ kind: 'token'; accessToken: string } | { kind: 'none'; outcome: ConnectionSyncOutcome }> {
  const { deps, settings: s, now } = c;
  const failures = connection.retryCount + 1;
  const unreadable = (reason: string) => ({
    kind: 'none' as const,
    outcome: failed({
      connection,
      error: `Stored access token is unreadable (${reason})`,
      errorDetails: { class: 'token', reason },
      nextAttemptAt: retryAt(c, failures),
    }),
  });
  if (connection.expiresAt.getTime() - now().getTime() > s.minTokenValiditySeconds * 1000) {
    try {
      return {
        kind: 'token',
        accessToken: await deps.cipher.decrypt(
          connection.storedAccessToken,
          oauthTokenBinding(connection, 'access_token'),
        ),
      };
    } catch {
      // Unreadable (moved from another row or column, or under a key the ring lacks): the
      // on-demand path below logs it and has a new one from Amazon, as for an expiring token.
    }
  }
  const released = { kind: 'none' as const, outcome: { kind: 'released' as const, connection } };
  const { region } = connection;
  if ((c.tokensHeldUntil.get(region) ?? 0) > notAfter) return released;
  const taken = await takeAccessToken(
    {
      db: deps.db,
      lwa: deps.lwa,
      cipher: deps.cipher,
      logger: deps.logger,
      now: () => now().getTime(),
      sleep: deps.sleep ?? defaultSleep,
      random: c.random,
    },
    {
      ...REFRESH_OUTCOME_DEFAULTS,
      minRemainingSeconds: s.minTokenValiditySeconds,
      leaseSeconds: ON_DEMAND_LEASE_SECONDS,
      pollIntervalMs: 250,
      usableSeconds: 60,
    },
    { userId: connection.userId, region, recordUse: false, deadline: notAfter },
  );
  switch (taken.kind) {
    case 'token':
      if (taken.by === 'refreshed') c.tokensRefreshed += 1;
      return { kind: 'token', accessToken: taken.accessToken };
    case 'unreadable':
      return unreadable(taken.error);
    case 'reauth':
      // Refresh was turned off (the grant is gone): its write-back flagged the accounts.
      return {
        kind: 'none',
        outcome: failed({
          connection,
          error: REAUTH_MESSAGE,
          errorDetails: { class: 'reauth' },
          nextAttemptAt: retryAt(c, failures),
        }),
      };
    case 'not-found':
      // Disconnected meanwhile: nothing to sync (its write-back writes nothing for it).
      return released;
    case 'unavailable':
      if (taken.reason === 'failed' && (taken.failure?.kind === 'transient' || taken.failure?.kind === 'malformed'))
        return {
          kind: 'none',
          outcome: failed({
            connection,
            error: `token: the access token could not be refreshed (${taken.failure.kind}: ${taken.failure.reason})`,
            errorDetails: { class: 'token', reason: `${taken.failure.kind}: ${taken.failure.reason}` },
            nextAttemptAt: retryAt(c, failures, taken.retryAfterSeconds),
          }),
        };
      // Login with Amazon's pace (a 429, the budget), a backoff, or another caller still
      // refreshing: given back, the region's tokens left alone for a while in this run.
      if (taken.reason === 'budget' || taken.failure?.kind === 'rate_limited')
        holdRegion(c.tokensHeldUntil, region, now().getTime() + taken.retryAfterSeconds * 1000);
      return released;
  }
}
