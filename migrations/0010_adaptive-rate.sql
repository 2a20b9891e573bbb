-- Up Migration
--
-- Adaptive throttling across invocations. The jobs' limiter cuts an Amazon endpoint's allowed
-- request rate on every 429 and raises it slowly with calls that succeed; the rate it ended
-- at is kept on the endpoint-wide row of rate_limit_tracking (user_id NULL) so that the next
-- invocation, often in a new Lambda container, starts at that pace instead of at full speed.
-- NULL means "at the configured ceiling" (and is what every existing row holds).
--
-- Locks: ADD COLUMN of a nullable column without a default is a catalogue change (ACCESS
-- EXCLUSIVE held for milliseconds, no rewrite, no scan), behind lock_timeout like 0003. No
-- CHECK constraint: validating one would scan the table under that lock (the job never writes
-- a rate of 0 or below: the limiter keeps at least 1 % of the ceiling).
-- accounts_worker reads and writes the new column through 0011's per-column grants.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

ALTER TABLE rate_limit_tracking ADD COLUMN IF NOT EXISTS allowed_rate_per_second numeric;

-- Down Migration

SET LOCAL lock_timeout = '500ms';

ALTER TABLE rate_limit_tracking DROP COLUMN IF EXISTS allowed_rate_per_second;
