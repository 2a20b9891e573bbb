import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import type { ClaimOptions } from './claims';
import { NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED, REFRESH_LEASE_FREE, REFRESH_ON_AND_EXPIRING_IN_WINDOW } from './due';

export interface DispatchOptions extends Pick<ClaimOptions, 'windowSeconds' | 'pausedRegions' | 'usedWithinSeconds'> {
  /** This dispatch's id: the owner of the mark. */
  readonly dispatchId: string;
  /** How long the mark holds: a lost message delays its tokens by at most this. */
  readonly markSeconds: number;
  readonly limit: number;
}

/**
 * The fan-out dispatcher's selection: up to `limit` due tokens (the claim's conditions, same
 * order), marked as dispatched by taking their lease for `markSeconds` in `dispatchId`'s name,
 * so the next tick does not send them again while they wait in the queue; the consumer's claim
 * of given ids takes the lease over from the mark. Returns only their ids.
 */
export async function markDueTokensDispatched(db: Database, o: DispatchOptions): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `WITH due AS (
       SELECT id FROM oauth_tokens
        WHERE ${REFRESH_ON_AND_EXPIRING_IN_WINDOW}
          AND ${REFRESH_LEASE_FREE}
          AND ${NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED}
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
     )
     UPDATE oauth_tokens t
        SET refresh_lease_owner = :dispatchId,
            refresh_lease_expires_at = now() + make_interval(secs => :markSeconds)
       FROM due
      WHERE t.id = due.id
     RETURNING t.id`,
    {
      dispatchId: sqlUuid(o.dispatchId),
      markSeconds: o.markSeconds,
      limit: o.limit,
      windowSeconds: o.windowSeconds,
      pausedRegions: sqlJson(o.pausedRegions),
      usedWithinSeconds: o.usedWithinSeconds ?? null,
    },
  );
  return rows.map((r) => r.id);
}

/** Takes the dispatch mark off tokens that could not be sent, so the next tick sends them. */
export async function releaseDispatchedTokens(db: Database, dispatchId: string, ids: readonly string[]): Promise<void> {
  await db.query(
    `UPDATE oauth_tokens SET refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
      WHERE refresh_lease_owner = :dispatchId AND id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
    { dispatchId: sqlUuid(dispatchId), ids: sqlJson(ids) },
  );
}
