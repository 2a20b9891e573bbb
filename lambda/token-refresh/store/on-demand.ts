import type { AmazonRegion } from '../../shared/amazon/regions';
import { Database, sqlUuid } from '../../shared/db/port';
import type { ClaimedToken } from './claims';

/**
 * A token on demand's SQL (the token route's, and the account sync's when the token it claimed
 * is about to expire: see ../on-demand.ts), on `oauth_tokens` as the jobs' login (`accounts_worker`):
 * only columns that login already reads and writes (migrations 0011, 0014, 0016), and the
 * token refresh's own lease (`refresh_lease_owner`, `refresh_lease_expires_at`), so the
 * scheduled refresh and this route never refresh one connection at the same time. Results
 * are written back by the token refresh's `saveResults` (write-back.ts):
 * the same guards (lease owner, refresh token unchanged) and the same re-authorisation flag.
 *
 * Every comparison with the clock is the database's (`now()`), as the job's claim does.
 */

/** How a connection's refresh lease stands, seen from one request. */
export type LeaseState =
  /** Nobody holds it. */
  | 'free'
  /** Another run or request holds it and its time has not run out. */
  | 'held'
  /** Its holder's time ran out (it died, or took too long): anyone may take it over. */
  | 'expired'
  /** This request holds it (it just took it). */
  | 'mine';

export interface ConnectionState {
  readonly id: string;
  readonly userId: string;
  readonly region: AmazonRegion;
  /** The stored access token (`enc:v1:…` or legacy plaintext). */
  readonly storedAccessToken: string;
  readonly expiresAt: Date;
  /** More than `minRemainingSeconds` left (database clock). */
  readonly fresh: boolean;
  /** Seconds the stored access token has left when the row was read (database clock; negative once expired). */
  readonly remainingSeconds: number;
  /** `proactive_refresh_enabled`: false when the user must re-authorise (or refresh was switched off). */
  readonly refreshEnabled: boolean;
  readonly lease: LeaseState;
  /**
   * Seconds until `next_refresh_attempt_at` (a recorded failure's backoff), when it is in the
   * future: until then nobody takes the lease, neither this route nor the scheduled refresh.
   */
  readonly retryInSeconds: number | null;
  /** When `lease` is 'mine': the token as the token refresh's write-back expects it. */
  readonly claimed?: ClaimedToken;
}

interface StateRow {
  id: string;
  user_id: string;
  region: AmazonRegion;
  access_token: string;
  expires_at: Date | string;
  fresh: boolean;
  remaining_seconds: number | string;
  proactive_refresh_enabled: boolean;
  lease: LeaseState;
  retry_in_seconds: number | null;
  refresh_token: string | null;
  refresh_failure_count: number;
  refresh_refusal_count: number;
}

/**
 * The columns both statements return (as `t`); `lease` as seen after the statement, 'mine'
 * when `:owner` (the request's id) holds it.
 */
const STATE_COLUMNS = `
  t.id, t.user_id, t.region, t.access_token, t.expires_at,
  t.expires_at > now() + make_interval(secs => :minRemainingSeconds) AS fresh,
  extract(epoch FROM t.expires_at - now())::float8 AS remaining_seconds,
  t.proactive_refresh_enabled,
  CASE WHEN t.refresh_lease_owner IS NOT DISTINCT FROM :owner THEN 'mine'
       WHEN t.refresh_lease_expires_at IS NULL THEN 'free'
       WHEN t.refresh_lease_expires_at < now() THEN 'expired'
       ELSE 'held' END AS lease,
  CASE WHEN t.next_refresh_attempt_at > now()
       THEN ceil(extract(epoch FROM t.next_refresh_attempt_at - now()))::int END AS retry_in_seconds,
  CASE WHEN t.refresh_lease_owner IS NOT DISTINCT FROM :owner THEN t.refresh_token END AS refresh_token,
  t.refresh_failure_count, t.refresh_refusal_count`;

/**
 * When this request may take the lease: refresh on, less than `minRemainingSeconds` left, the
 * lease free or expired, and not waiting for a retry (`next_refresh_attempt_at`, the backoff
 * after a failure or a 429, which the scheduled refresh's claim honours too). Evaluated on the row as it is when the UPDATE gets its lock (PostgreSQL
 * re-evaluates SET expressions on the newest version after waiting for a concurrent writer),
 * so of many requests at once exactly one takes it.
 */
const CLAIMABLE = `(t.proactive_refresh_enabled
   AND t.expires_at <= now() + make_interval(secs => :minRemainingSeconds)
   AND (t.refresh_lease_expires_at IS NULL OR t.refresh_lease_expires_at < now())
   AND (t.next_refresh_attempt_at IS NULL OR t.next_refresh_attempt_at <= now()))`;

export interface UseOptions {
  readonly userId: string;
  readonly region: AmazonRegion;
  /** This request's id: the lease owner if it takes the lease. */
  readonly owner: string;
  readonly minRemainingSeconds: number;
  readonly leaseSeconds: number;
  /**
   * Record the use (`last_used_at`): the product's servers use the token (the route); the
   * account sync only needs it once per sync cycle, so it does not keep an idle connection in
   * the proactive refresh's window.
   */
  readonly recordUse: boolean;
}

/**
 * One statement: records the use when asked (`last_used_at = now()`, which keeps the connection
 * in the proactive refresh's window from now on) and, when the token is due and nobody else is
 * refreshing it, takes the refresh lease. Returns the connection as it is afterwards, or
 * undefined when the user has no connection in that region.
 */
export async function useConnection(db: Database, o: UseOptions): Promise<ConnectionState | undefined> {
  const { rows } = await db.query<StateRow>(
    `UPDATE oauth_tokens t
        SET last_used_at = CASE WHEN :recordUse::boolean THEN now() ELSE t.last_used_at END,
            refresh_lease_owner = CASE WHEN ${CLAIMABLE} THEN :owner ELSE t.refresh_lease_owner END,
            refresh_lease_expires_at = CASE WHEN ${CLAIMABLE} THEN now() + make_interval(secs => :leaseSeconds)
                                            ELSE t.refresh_lease_expires_at END
      WHERE t.user_id = :userId AND t.region = :region
     RETURNING ${STATE_COLUMNS}`,
    {
      userId: sqlUuid(o.userId),
      region: o.region,
      owner: sqlUuid(o.owner),
      minRemainingSeconds: o.minRemainingSeconds,
      leaseSeconds: o.leaseSeconds,
      recordUse: o.recordUse,
    },
  );
  return rows.length ? toState(rows[0]) : undefined;
}

/** Reads the connection (no write): what a request waiting for another's refresh polls. */
export async function readConnection(
  db: Database,
  o: Pick<UseOptions, 'userId' | 'region' | 'owner' | 'minRemainingSeconds'>,
): Promise<ConnectionState | undefined> {
  const { rows } = await db.query<StateRow>(
    `SELECT ${STATE_COLUMNS}
       FROM oauth_tokens t
      WHERE t.user_id = :userId AND t.region = :region`,
    {
      userId: sqlUuid(o.userId),
      region: o.region,
      owner: sqlUuid(o.owner),
      minRemainingSeconds: o.minRemainingSeconds,
    },
  );
  return rows.length ? toState(rows[0]) : undefined;
}

function toState(r: StateRow): ConnectionState {
  const state = {
    id: r.id,
    userId: r.user_id,
    region: r.region,
    storedAccessToken: r.access_token,
    expiresAt: r.expires_at instanceof Date ? r.expires_at : new Date(r.expires_at),
    fresh: r.fresh,
    remainingSeconds: Number(r.remaining_seconds),
    refreshEnabled: r.proactive_refresh_enabled,
    lease: r.lease,
    retryInSeconds: r.retry_in_seconds === null ? null : Number(r.retry_in_seconds),
  };
  if (r.lease !== 'mine' || r.refresh_token === null) return state;
  return {
    ...state,
    claimed: {
      id: r.id,
      userId: r.user_id,
      storedRefreshToken: r.refresh_token,
      region: r.region,
      refreshFailureCount: Number(r.refresh_failure_count),
      refreshRefusalCount: Number(r.refresh_refusal_count),
    },
  };
}
