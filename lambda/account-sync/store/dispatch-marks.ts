import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import type { AmazonRegion } from '../../shared/amazon/regions';
import {
  DUE_CONNECTIONS,
  REFRESH_ON_TOKEN_OF_DUE_CONNECTION,
  REGION_NOT_PAUSED,
  SYNC_LEASE_FREE,
  TOKEN_OBTAINABLE,
} from './due';

export interface DispatchConnectionsOptions {
  /** This dispatch's id: the owner of the mark. */
  readonly dispatchId: string;
  /** How long the mark holds: a lost message delays its connections by at most this. */
  readonly markSeconds: number;
  readonly limit: number;
  readonly minTokenValiditySeconds: number;
  /** @default none */
  readonly pausedRegions?: readonly AmazonRegion[];
}

/**
 * The fan-out dispatcher's selection: up to `limit` connections a scheduled claim would take
 * (the claim's due and claimable conditions), marked as dispatched by taking their sync lease
 * for `markSeconds` in `dispatchId`'s name, so the next tick does not send them again while they
 * wait in the queue; the consumer's claim of given ids takes the lease over from the mark (and
 * takes a token about to expire on demand). Returns only the ids.
 */
export async function markDueConnectionsDispatched(db: Database, o: DispatchConnectionsOptions): Promise<string[]> {
  const { rows } = await db.query<{ id: string }>(
    `WITH due AS (
       ${DUE_CONNECTIONS}
     ), candidates AS (
       SELECT t.id FROM oauth_tokens t
        WHERE ${REFRESH_ON_TOKEN_OF_DUE_CONNECTION}
          AND ${TOKEN_OBTAINABLE}
          AND ${SYNC_LEASE_FREE}
          AND ${REGION_NOT_PAUSED}
        ORDER BY t.id
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
     )
     UPDATE oauth_tokens t
        SET sync_lease_owner = :dispatchId, sync_lease_expires_at = now() + make_interval(secs => :markSeconds)
       FROM candidates c
      WHERE t.id = c.id
     RETURNING t.id`,
    {
      userId: null,
      dispatchId: sqlUuid(o.dispatchId),
      markSeconds: o.markSeconds,
      limit: o.limit,
      minTokenValiditySeconds: o.minTokenValiditySeconds,
      pausedRegions: sqlJson(o.pausedRegions ?? []),
    },
  );
  return rows.map((r) => r.id);
}

/** Takes the dispatch mark off connections that could not be sent, so the next tick sends them. */
export async function releaseDispatchedConnections(
  db: Database,
  dispatchId: string,
  ids: readonly string[],
): Promise<void> {
  await db.query(
    `UPDATE oauth_tokens SET sync_lease_owner = NULL, sync_lease_expires_at = NULL
      WHERE sync_lease_owner = :dispatchId AND id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
    { dispatchId: sqlUuid(dispatchId), ids: sqlJson(ids) },
  );
}
