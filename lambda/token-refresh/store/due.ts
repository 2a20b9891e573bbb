// The SQL predicates that say which tokens are due for a proactive refresh: one definition
// shared by the claims (claims.ts) and the fan-out dispatcher's marks (dispatch-marks.ts), and
// the window they are given.
import { proactiveRefreshWindowSeconds, TOKEN_REFRESH_SCHEDULE_SECONDS } from '../window';

/**
 * Tokens expiring within this many seconds are due: the `:windowSeconds` of
 * {@link REFRESH_ON_AND_EXPIRING_IN_WINDOW} by default, in the job's claims and the fan-out
 * dispatcher's marks.
 */
export const TOKEN_REFRESH_WINDOW_SECONDS = proactiveRefreshWindowSeconds(TOKEN_REFRESH_SCHEDULE_SECONDS);

/**
 * When a token is due for proactive refresh, besides its lease (in the order the claim has
 * always had them): the one definition both claims (the next due ones, given ids) and the
 * fan-out dispatcher share.
 */
export const REFRESH_ON_AND_EXPIRING_IN_WINDOW = `proactive_refresh_enabled = TRUE
          AND expires_at < now() + make_interval(secs => :windowSeconds)`;

/**
 * Not waiting for a retry (`next_refresh_attempt_at`), its region not paused by a Retry-After,
 * and used within `:usedWithinSeconds` when that is set.
 */
export const NOT_BACKING_OFF_NOT_PAUSED_RECENTLY_USED = `(next_refresh_attempt_at IS NULL OR next_refresh_attempt_at <= now())
          AND NOT (region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))
          -- NULL (never recorded) counts as used: 'infinity'. Written so, the window is an
          -- index condition of idx_oauth_tokens_refresh_due_used (0017), not a row filter.
          AND (:usedWithinSeconds::int IS NULL
               OR coalesce(last_used_at, 'infinity') >= now() - make_interval(secs => :usedWithinSeconds::int))`;

/** Not leased, or the lease expired (a run that died). */
export const REFRESH_LEASE_FREE = `(refresh_lease_expires_at IS NULL OR refresh_lease_expires_at < now())`;

/** A claim of given ids: free as above, or marked by the dispatch that sent them; and only those ids. */
export const GIVEN_ID_WITH_LEASE_FREE_OR_DISPATCH_MARKED = `(refresh_lease_expires_at IS NULL OR refresh_lease_expires_at < now()
               OR refresh_lease_owner = :dispatchId)
          AND id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`;
