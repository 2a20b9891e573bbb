// The SQL predicates that say which connections are due for a sync: one definition shared by
// the claims (claims.ts), the dispatch marks (dispatch-marks.ts) and the dry run's count, and
// the token validity they are given.

/**
 * Access tokens with this much or less left are taken on demand (refreshed once, single-flight):
 * the `:minTokenValiditySeconds` of the claims and the fan-out dispatcher's marks by default.
 * Lower than the token route's margin (ON_DEMAND_FRESH_SECONDS, 5 minutes: its callers keep the
 * token a while): the sync uses its token at once, for one call of seconds. A used connection's
 * token never gets this low (the proactive refresh renews it 5 to 11 minutes before it
 * expires); an idle one's has long expired when its sync comes.
 */
export const MIN_TOKEN_VALIDITY_SECONDS = 120;

/**
 * The connections due for a sync (user_id, region): one of the region's accounts is due, or the
 * connection's own retry time has passed (`:userId` null); or a user's connections on demand.
 * The one definition the claim and the fan-out dispatcher share.
 */
export const DUE_CONNECTIONS = `SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE :userId::uuid IS NULL AND ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t
        WHERE :userId::uuid IS NULL AND t.sync_next_attempt_at <= now()
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t WHERE t.user_id = :userId::uuid`;

/**
 * The same conditions among given connections only (a fan-out message's ids), without a scan of
 * every due row: {@link DUE_CONNECTIONS} restricted to `:ids`.
 */
export const DUE_GIVEN_CONNECTIONS = `SELECT ua.user_id, ua.region FROM user_accounts ua
        WHERE ua.next_sync_at <= now() AND ua.sync_status <> 'reauth_required'
          AND (ua.user_id, ua.region) IN (
            SELECT user_id, region FROM oauth_tokens WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid))
       UNION
       SELECT t.user_id, t.region FROM oauth_tokens t
        WHERE t.sync_next_attempt_at <= now() AND t.id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`;

/** A connection's sync lease is free: none, or expired (a run that died). */
export const SYNC_LEASE_FREE = `(t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now())`;

/** Free, or the mark of the dispatch that sent the given ids. */
export const SYNC_LEASE_FREE_OR_DISPATCH_MARKED = `(t.sync_lease_expires_at IS NULL OR t.sync_lease_expires_at < now() OR t.sync_lease_owner = :dispatchId)`;

/** A token row of a due connection, with proactive refresh on (both claims' candidates). */
export const REFRESH_ON_TOKEN_OF_DUE_CONNECTION = `(t.user_id, t.region) IN (SELECT user_id, region FROM due)
          AND t.proactive_refresh_enabled = TRUE`;

/**
 * The connection's access token can be had now: it has more than `:minTokenValiditySeconds`
 * left, or its refresh is not backing off after a failure (the sync then refreshes it on demand,
 * single-flight, see lambda/token-refresh/on-demand.ts). A connection whose token is about to
 * expire while its refresh backs off waits until the backoff ends.
 */
export const TOKEN_OBTAINABLE = `(t.expires_at > now() + make_interval(secs => :minTokenValiditySeconds)
          OR t.next_refresh_attempt_at IS NULL OR t.next_refresh_attempt_at <= now())`;

/** The connection's region is not paused by a Retry-After (`:pausedRegions`, a JSON array). */
export const REGION_NOT_PAUSED = `NOT (t.region = ANY (SELECT jsonb_array_elements_text(:pausedRegions::jsonb)))`;
