import type { AmazonRegion } from '../../shared/amazon/regions';
import { CLAIM_TOKEN_CHARS } from '../../shared/db/limits';
import { Database, sqlJson, sqlUuid } from '../../shared/db/port';
import type { GivenIds } from '../../shared/jobs/fan-out';
import {
  GIVEN_ID_WITH_LEASE_FREE_OR_DISPATCH_MARKED,
  NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED,
  REFRESH_LEASE_FREE,
  REFRESH_ON_AND_EXPIRING_IN_WINDOW,
} from './due';

export type { GivenIds };

/** A token claimed for refresh: the lease is this invocation's until `leaseSeconds` pass. */
export interface ClaimedToken {
  readonly id: string;
  readonly userId: string;
  /** The stored value as read (`enc:v1:…` or legacy plaintext); the write-back guard compares it. */
  readonly storedRefreshToken: string;
  readonly region: AmazonRegion;
  readonly refreshFailureCount: number;
  /** Amazon's definite refusals in a row so far (`refresh_refusal_count`, 0021); see outcome.ts. */
  readonly refreshRefusalCount?: number;
}

export interface ClaimOptions {
  /** This invocation's id: the lease owner. */
  readonly owner: string;
  /** Tokens expiring within this many seconds are due. */
  readonly windowSeconds: number;
  readonly leaseSeconds: number;
  readonly limit: number;
  /** Regions whose token endpoint is paused by a Retry-After: their tokens are left alone. */
  readonly pausedRegions: readonly AmazonRegion[];
  /**
   * Only connections used within this many seconds (`last_used_at`; NULL, never recorded,
   * counts as used) are due; idle ones are refreshed when they are next wanted.
   * @default - every connection, used or not
   */
  readonly usedWithinSeconds?: number;
  /**
   * Most characters of stored refresh tokens one claim returns, so its response stays under
   * the Data API's 1 MiB limit whatever the tokens' size (Amazon allows refresh tokens of
   * 2,048 bytes: 2,775 characters encrypted). @default CLAIM_TOKEN_CHARS
   */
  readonly maxTokenChars?: number;
  /**
   * Claim only these tokens (ids a fan-out dispatcher sent), on the same conditions: an id no
   * longer due, or leased by a live run, is skipped. Their dispatch mark (a lease held by
   * `dispatchId`, see {@link markDueTokensDispatched}) counts as free.
   * @default - the next due tokens
   */
  readonly given?: GivenIds;
}

/** What a claim does with the due rows it locked: lease them within the response budget, return them. */
const SIZE_LEASE_AND_RETURN = `sized AS (
       -- Rows past the response budget stay unleased (locked only until this statement ends).
       -- (The first row always goes: its running total is its own size.)
       SELECT id FROM (
         SELECT id, chars, sum(chars) OVER (ORDER BY expires_at, id) AS running FROM due
       ) r
        WHERE running <= :maxTokenChars OR running = chars
     )
     UPDATE oauth_tokens t
        SET refresh_lease_owner = :owner,
            refresh_lease_expires_at = now() + make_interval(secs => :leaseSeconds)
       FROM sized
      WHERE t.id = sized.id
     RETURNING t.id, t.user_id, t.refresh_token, t.region, t.refresh_failure_count, t.refresh_refusal_count`;

interface ClaimedRow {
  id: string;
  user_id: string;
  refresh_token: string;
  region: AmazonRegion;
  refresh_failure_count: number;
  refresh_refusal_count: number;
}

/**
 * Claims up to `limit` due tokens in one statement: proactive refresh on, expiring within the
 * window, used within `usedWithinSeconds` when that is set (or never recorded), not leased (or
 * the lease expired: a run that died), not waiting for a retry. FOR
 * UPDATE SKIP LOCKED plus the lease make overlapping invocations claim disjoint sets.
 */
export async function claimDueTokens(db: Database, o: ClaimOptions): Promise<ClaimedToken[]> {
  const params = {
    owner: sqlUuid(o.owner),
    windowSeconds: o.windowSeconds,
    leaseSeconds: o.leaseSeconds,
    limit: o.limit,
    pausedRegions: sqlJson(o.pausedRegions),
    usedWithinSeconds: o.usedWithinSeconds ?? null,
    maxTokenChars: o.maxTokenChars ?? CLAIM_TOKEN_CHARS,
  };
  const { rows } = o.given
    ? await db.query<ClaimedRow>(
        `WITH due AS (
       SELECT id, expires_at, length(refresh_token) AS chars FROM oauth_tokens
        WHERE ${REFRESH_ON_AND_EXPIRING_IN_WINDOW}
          AND ${GIVEN_ID_WITH_LEASE_FREE_OR_DISPATCH_MARKED}
          AND ${NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED}
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
     ), ${SIZE_LEASE_AND_RETURN}`,
        { ...params, ids: sqlJson(o.given.ids), dispatchId: sqlUuid(o.given.dispatchId) },
      )
    : await db.query<ClaimedRow>(
        `WITH due AS (
       SELECT id, expires_at, length(refresh_token) AS chars FROM oauth_tokens
        WHERE ${REFRESH_ON_AND_EXPIRING_IN_WINDOW}
          AND ${REFRESH_LEASE_FREE}
          AND ${NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED}
        ORDER BY expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
     ), ${SIZE_LEASE_AND_RETURN}`,
        params,
      );
  return rows.map((r) => ({
    id: r.id,
    userId: r.user_id,
    storedRefreshToken: r.refresh_token,
    region: r.region,
    refreshFailureCount: Number(r.refresh_failure_count),
    refreshRefusalCount: Number(r.refresh_refusal_count),
  }));
}

/**
 * How many tokens a claim would take now (the claim's conditions, read only): for a dry run.
 * `paused` counts the due tokens of regions a Retry-After pauses, which a claim leaves alone.
 */
export async function countDueTokens(
  db: Database,
  o: Pick<ClaimOptions, 'windowSeconds' | 'pausedRegions' | 'usedWithinSeconds'>,
): Promise<{ due: number; paused: number }> {
  const { rows } = await db.query<{ due: number; paused: number }>(
    `SELECT count(*) FILTER (WHERE NOT paused)::int AS due, count(*) FILTER (WHERE paused)::int AS paused
       FROM (
         SELECT region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)) AS paused FROM oauth_tokens
          WHERE proactive_refresh_enabled = TRUE
            AND expires_at < now() + make_interval(secs => :windowSeconds)
            AND (refresh_lease_expires_at IS NULL OR refresh_lease_expires_at < now())
            AND (next_refresh_attempt_at IS NULL OR next_refresh_attempt_at <= now())
            AND (:usedWithinSeconds::int IS NULL
                 OR coalesce(last_used_at, 'infinity') >= now() - make_interval(secs => :usedWithinSeconds::int))
       ) t`,
    {
      windowSeconds: o.windowSeconds,
      pausedRegions: sqlJson(o.pausedRegions),
      usedWithinSeconds: o.usedWithinSeconds ?? null,
    },
  );
  return { due: Number(rows[0].due), paused: Number(rows[0].paused) };
}
