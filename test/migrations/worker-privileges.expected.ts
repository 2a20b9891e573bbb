/**
 * Every privilege the jobs' role `accounts_worker` holds, and the statement that needs it.
 * Granted by migration 0011 (per column; 0006's table-wide grants are gone, and nothing on
 * `users`), 0014 (the region columns of 0012), 0016 and 0021. The test next to this file fails when the role holds anything not listed here,
 * when a listed privilege is missing, and when no statement of the jobs needs one of them (it
 * revokes each in turn and replays every statement the jobs ran).
 *
 * Statements, by the store function that runs them:
 *   claimDueTokens, saveResults         lambda/token-refresh/store/ (claims.ts, write-back.ts)
 *   claimConnections, saveOutcomes, flagAccountsNeedingReauth   lambda/account-sync/store/ (claims.ts, write-back.ts)
 *   recordRateLimitUsage, readEndpointPauses              lambda/shared/amazon/usage-store.ts
 *   DatabaseRateBudgetStore.reserve(Many), .throttled, .release  lambda/shared/amazon/rate-budget-store.ts (0015, 0022)
 *   claimEvents, markPublished, releaseFailed, pruneEvents, outboxBacklog   lambda/event-publisher/store.ts (0023)
 *   useConnection, readConnection (+ saveResults)          lambda/token-refresh/store/on-demand.ts (the token
 *                                                          route's and the account sync's token on demand; no
 *                                                          privilege of its own: it uses the ones listed)
 *
 * SELECT is needed for every column a statement reads (WHERE, SET expressions, ON CONFLICT,
 * RETURNING, joins), UPDATE and INSERT for every column it assigns.
 */
export const EXPECTED_WORKER_PRIVILEGES: readonly string[] = [
  'USAGE ON SCHEMA public', // every statement (the tables are in public; needed where PUBLIC has no USAGE)

  // oauth_tokens: read
  'SELECT (id) ON oauth_tokens', // claimDueTokens, claimConnections: the claimed rows; saveResults: row match
  'SELECT (user_id) ON oauth_tokens', // claimConnections (due users), saveOutcomes (row match), flagAccountsNeedingReauth
  'SELECT (access_token) ON oauth_tokens', // claimConnections returns it; saveResults keeps it on failure
  'SELECT (refresh_token) ON oauth_tokens', // claimDueTokens returns it; saveResults: md5 guard
  'SELECT (expires_at) ON oauth_tokens', // claimDueTokens (due, order), claimConnections (still valid)
  'SELECT (region) ON oauth_tokens', // claimDueTokens (paused regions), both claims return it
  'SELECT (proactive_refresh_enabled) ON oauth_tokens', // both claims; saveResults; flagAccountsNeedingReauth
  'SELECT (refresh_failure_count) ON oauth_tokens', // claimDueTokens returns it; saveResults increments it
  'SELECT (refresh_refusal_count) ON oauth_tokens', // claimDueTokens returns it; saveResults increments it (0021)
  'SELECT (connection_generation) ON oauth_tokens', // claimConnections returns it; saveOutcomes writes only for it (0021)
  'SELECT (next_refresh_attempt_at) ON oauth_tokens', // claimDueTokens (backoff); saveResults (kept when released)
  'SELECT (refresh_lease_owner) ON oauth_tokens', // saveResults: only the lease owner writes
  'SELECT (refresh_lease_expires_at) ON oauth_tokens', // claimDueTokens: free or expired lease
  'SELECT (sync_lease_owner) ON oauth_tokens', // saveOutcomes: only the lease owner writes
  'SELECT (sync_lease_expires_at) ON oauth_tokens', // claimConnections: free or expired lease
  'SELECT (sync_next_attempt_at) ON oauth_tokens', // claimConnections (due users); saveOutcomes (kept when released)
  'SELECT (sync_retry_count) ON oauth_tokens', // claimConnections returns it; saveOutcomes increments it
  'SELECT (sync_last_error) ON oauth_tokens', // saveOutcomes (kept when released)

  // oauth_tokens: write
  'UPDATE (access_token) ON oauth_tokens', // saveResults: the new access token
  'UPDATE (refresh_token) ON oauth_tokens', // saveResults: Amazon's rotated (or re-encrypted) refresh token
  'UPDATE (expires_at) ON oauth_tokens', // saveResults
  'UPDATE (refresh_failure_count) ON oauth_tokens', // saveResults
  'UPDATE (refresh_refusal_count) ON oauth_tokens', // saveResults: Amazon's definite refusals in a row (0021)
  'UPDATE (last_refresh_error) ON oauth_tokens', // saveResults
  'UPDATE (proactive_refresh_enabled) ON oauth_tokens', // saveResults: refresh off (invalid_grant, too many failures)
  'UPDATE (next_refresh_attempt_at) ON oauth_tokens', // saveResults: backoff
  'UPDATE (last_refreshed_at) ON oauth_tokens', // saveResults
  'UPDATE (refresh_lease_owner) ON oauth_tokens', // claimDueTokens, useConnection take the lease, saveResults releases it
  'UPDATE (refresh_lease_expires_at) ON oauth_tokens', // same
  'UPDATE (updated_at) ON oauth_tokens', // saveResults
  'UPDATE (sync_lease_owner) ON oauth_tokens', // claimConnections takes the lease, saveOutcomes releases it
  'UPDATE (sync_lease_expires_at) ON oauth_tokens', // same
  'UPDATE (sync_next_attempt_at) ON oauth_tokens', // saveOutcomes: the user's own schedule
  'UPDATE (sync_retry_count) ON oauth_tokens', // saveOutcomes
  'UPDATE (sync_last_error) ON oauth_tokens', // saveOutcomes

  // user_accounts
  'SELECT (id) ON user_accounts', // claimConnections: the history row's account
  'SELECT (user_id) ON user_accounts', // claimConnections, saveOutcomes, flagAccountsNeedingReauth: the user's accounts
  'SELECT (amazon_account_id) ON user_accounts', // saveOutcomes: upsert key, accounts Amazon no longer returns
  'SELECT (status) ON user_accounts', // saveOutcomes: upsert keeps or reactivates the status
  'SELECT (metadata) ON user_accounts', // saveOutcomes: metadata merged into what is there
  'SELECT (sync_status) ON user_accounts', // claimConnections, saveOutcomes, flagAccountsNeedingReauth: reauth_required stays
  'SELECT (sync_retry_count) ON user_accounts', // claimConnections returns the highest; saveOutcomes increments it
  'SELECT (next_sync_at) ON user_accounts', // claimConnections: due accounts
  'SELECT (region) ON user_accounts', // claimConnections, saveOutcomes, saveResults, flagAccountsNeedingReauth: the connection's accounts
  'INSERT (user_id) ON user_accounts', // saveOutcomes: a new profile
  'INSERT (amazon_account_id) ON user_accounts', // saveOutcomes
  'INSERT (status) ON user_accounts', // saveOutcomes
  'INSERT (metadata) ON user_accounts', // saveOutcomes
  'INSERT (sync_status) ON user_accounts', // saveOutcomes
  'INSERT (sync_error_message) ON user_accounts', // saveOutcomes
  'INSERT (sync_retry_count) ON user_accounts', // saveOutcomes
  'INSERT (next_sync_at) ON user_accounts', // saveOutcomes
  'INSERT (updated_at) ON user_accounts', // saveOutcomes
  'INSERT (region) ON user_accounts', // saveOutcomes: a new profile belongs to the synced region
  'UPDATE (status) ON user_accounts', // saveOutcomes: active again, or inactive when Amazon drops it
  'UPDATE (metadata) ON user_accounts', // saveOutcomes
  'UPDATE (sync_status) ON user_accounts', // claimConnections (in_progress), saveOutcomes, flagAccountsNeedingReauth
  'UPDATE (sync_error_message) ON user_accounts', // saveOutcomes, flagAccountsNeedingReauth
  'UPDATE (sync_retry_count) ON user_accounts', // saveOutcomes
  'UPDATE (next_sync_at) ON user_accounts', // saveOutcomes
  'UPDATE (updated_at) ON user_accounts', // claimConnections, saveOutcomes, flagAccountsNeedingReauth
  'UPDATE (region) ON user_accounts', // saveOutcomes: a known profile takes the region that lists it

  // account_sync_history
  'SELECT (id) ON account_sync_history', // claimConnections returns it; saveOutcomes closes that row
  'SELECT (sync_status) ON account_sync_history', // claimConnections closes rows a dead run left 'started'
  'SELECT (started_at) ON account_sync_history', // saveOutcomes: completed_at is never before it
  'SELECT (metadata) ON account_sync_history', // claimConnections: RETURNING metadata->>'userId'
  'SELECT (region) ON account_sync_history', // claimConnections: abandoned rows of the connection; RETURNING region
  'INSERT (user_account_id) ON account_sync_history', // claimConnections opens one row per connection
  'INSERT (sync_type) ON account_sync_history', // claimConnections
  'INSERT (sync_status) ON account_sync_history', // claimConnections
  'INSERT (metadata) ON account_sync_history', // claimConnections
  'INSERT (region) ON account_sync_history', // claimConnections: which connection the row is for
  'UPDATE (sync_status) ON account_sync_history', // saveOutcomes closes it
  'UPDATE (completed_at) ON account_sync_history', // saveOutcomes
  'UPDATE (accounts_synced) ON account_sync_history', // saveOutcomes
  'UPDATE (accounts_failed) ON account_sync_history', // saveOutcomes
  'UPDATE (error_details) ON account_sync_history', // saveOutcomes

  // rate_limit_tracking
  'SELECT (user_id) ON rate_limit_tracking', // recordRateLimitUsage (upsert key), readEndpointPauses
  'SELECT (endpoint) ON rate_limit_tracking', // same
  'SELECT (request_count) ON rate_limit_tracking', // recordRateLimitUsage adds to it
  'SELECT (limit_hit_count) ON rate_limit_tracking', // recordRateLimitUsage adds to it
  'SELECT (last_limit_hit) ON rate_limit_tracking', // recordRateLimitUsage, readEndpointPauses
  'SELECT (retry_after_seconds) ON rate_limit_tracking', // recordRateLimitUsage, readEndpointPauses
  'SELECT (window_start) ON rate_limit_tracking', // recordRateLimitUsage: counters restart per window
  'SELECT (allowed_rate_per_second) ON rate_limit_tracking', // readEndpointStates: the adaptive rate carried over
  'INSERT (user_id) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (endpoint) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (request_count) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (limit_hit_count) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (last_limit_hit) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (retry_after_seconds) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (window_start) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (updated_at) ON rate_limit_tracking', // recordRateLimitUsage
  'INSERT (allowed_rate_per_second) ON rate_limit_tracking', // recordRateLimitUsage: the rate a run ended at
  'UPDATE (request_count) ON rate_limit_tracking', // recordRateLimitUsage
  'UPDATE (allowed_rate_per_second) ON rate_limit_tracking', // recordRateLimitUsage: the rate a run ended at
  'UPDATE (limit_hit_count) ON rate_limit_tracking', // recordRateLimitUsage
  'UPDATE (last_limit_hit) ON rate_limit_tracking', // recordRateLimitUsage
  'UPDATE (retry_after_seconds) ON rate_limit_tracking', // recordRateLimitUsage
  'UPDATE (window_start) ON rate_limit_tracking', // recordRateLimitUsage
  'UPDATE (updated_at) ON rate_limit_tracking', // recordRateLimitUsage

  // amazon_rate_budget (0015): the shared request budgets, through the two functions
  'EXECUTE ON FUNCTION reserve_amazon_requests(text,text,double precision,integer,double precision,double precision,double precision,double precision,double precision,timestamp with time zone)', // DatabaseRateBudgetStore.reserve
  'EXECUTE ON FUNCTION amazon_requests_throttled(text,text,double precision,timestamp with time zone,double precision,double precision,double precision,double precision,timestamp with time zone,boolean)', // DatabaseRateBudgetStore.throttled (0022: the slot's grant time, recorded at once)
  'EXECUTE ON FUNCTION release_amazon_requests(text,text,timestamp with time zone,timestamp with time zone)', // DatabaseRateBudgetStore.release (0022): a run's unused slots back
  'EXECUTE ON FUNCTION amazon_rate_now(amazon_rate_budget,double precision,double precision,timestamp with time zone)', // both: the rate grown back since the last cut
  'SELECT (endpoint) ON amazon_rate_budget', // both: the budget's row, locked (SELECT * … FOR UPDATE)
  'SELECT (region) ON amazon_rate_budget', // same
  'SELECT (ceiling_per_second) ON amazon_rate_budget', // same
  'SELECT (rate_per_second) ON amazon_rate_budget', // same; the rate now
  'SELECT (rate_at) ON amazon_rate_budget', // same; the rate now
  'SELECT (next_slot_at) ON amazon_rate_budget', // same; the first free slot
  'SELECT (paused_until) ON amazon_rate_budget', // same; no slot in a pause
  'SELECT (last_cut_at) ON amazon_rate_budget', // same; throttled: one cut per wave of 429s
  'SELECT (throttled_count) ON amazon_rate_budget', // same; throttled adds to it
  'SELECT (updated_at) ON amazon_rate_budget', // same (the whole row is read)
  'INSERT (endpoint) ON amazon_rate_budget', // both: the row on first use
  'INSERT (region) ON amazon_rate_budget', // same
  'INSERT (ceiling_per_second) ON amazon_rate_budget', // same
  'INSERT (rate_per_second) ON amazon_rate_budget', // same
  'INSERT (rate_at) ON amazon_rate_budget', // same
  'INSERT (next_slot_at) ON amazon_rate_budget', // same
  'UPDATE (ceiling_per_second) ON amazon_rate_budget', // both: the configured ceiling, as last passed
  'UPDATE (rate_per_second) ON amazon_rate_budget', // both
  'UPDATE (rate_at) ON amazon_rate_budget', // both
  'UPDATE (next_slot_at) ON amazon_rate_budget', // reserve: past the slots handed out; throttled: past the pause
  'UPDATE (updated_at) ON amazon_rate_budget', // both
  'UPDATE (paused_until) ON amazon_rate_budget', // throttled
  'UPDATE (last_cut_at) ON amazon_rate_budget', // throttled
  'UPDATE (throttled_count) ON amazon_rate_budget', // throttled
  'SELECT (queue_until) ON amazon_rate_budget', // 0022: the whole row is read; reserve: the queue of refused callers
  'SELECT (last_grant_from) ON amazon_rate_budget', // 0022: the whole row is read; release: only the batch granted last
  'UPDATE (queue_until) ON amazon_rate_budget', // 0022: reserve (a refused caller's place), throttled (the queue cleared)
  'UPDATE (last_grant_from) ON amazon_rate_budget', // 0022: reserve, where the batch granted last starts
  // oauth_tokens.last_used_at, granted by 0016 (refresh what is used)
  'SELECT (last_used_at) ON oauth_tokens', // claimDueTokens, countDueTokens: used within the window (NULL counts as used)
  'UPDATE (last_used_at) ON oauth_tokens', // useConnection: the on-demand route's use (the account sync takes its token without recording a use)

  // event_outbox (0023): the event publisher
  'SELECT (id) ON event_outbox', // claimEvents (order, heads), markPublished, releaseFailed, pruneEvents: row match
  'SELECT (event_id) ON event_outbox', // claimEvents returns it (the idempotency id)
  'SELECT (detail_type) ON event_outbox', // claimEvents returns it
  'SELECT (user_id) ON event_outbox', // claimEvents: one event per connection; returns it
  'SELECT (region) ON event_outbox', // same
  'SELECT (connection_id) ON event_outbox', // claimEvents returns it
  'SELECT (data) ON event_outbox', // claimEvents returns it
  'SELECT (occurred_at) ON event_outbox', // claimEvents returns it; outboxBacklog: the oldest's age
  'SELECT (attempts) ON event_outbox', // claimEvents adds one and returns it
  'SELECT (lease_owner) ON event_outbox', // releaseFailed: only the lease owner gives events back
  'SELECT (lease_expires_at) ON event_outbox', // claimEvents: free or expired lease
  'SELECT (next_attempt_at) ON event_outbox', // claimEvents: retry time reached
  'SELECT (published_at) ON event_outbox', // claimEvents, markPublished, releaseFailed, pruneEvents, outboxBacklog
  'UPDATE (attempts) ON event_outbox', // claimEvents
  'UPDATE (lease_owner) ON event_outbox', // claimEvents takes the lease; markPublished, releaseFailed clear it
  'UPDATE (lease_expires_at) ON event_outbox', // same
  'UPDATE (next_attempt_at) ON event_outbox', // releaseFailed: backoff; markPublished clears it
  'UPDATE (last_error) ON event_outbox', // releaseFailed; markPublished clears it
  'UPDATE (published_at) ON event_outbox', // markPublished
  'DELETE ON event_outbox', // pruneEvents: published rows past the retention
];
