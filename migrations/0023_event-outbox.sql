-- Up Migration
--
-- Connection health events through a transactional outbox (docs/events.md).
--
-- 1. event_outbox: one row per event, written by triggers in the statement that makes the
-- change it reports, so a rolled-back change leaves no event and a committed one is never
-- lost. The event publisher (lambda/event-publisher) drains it to the environment's EventBridge
-- bus, at least once, and deletes published rows after their retention period. `id` (an
-- identity) is the order: a connection's rows are written while its oauth_tokens row is
-- locked, so for one connection the id order is the commit order. `event_id` is the event's
-- idempotency id (the same on every retry). `tx_id` lets the accounts trigger merge the
-- changes of one transaction into one event per connection.
--
-- 2. Triggers, each comparing the old row with the new one and writing only a real transition
-- (a second failure while refresh is already off writes nothing):
--   oauth_tokens AFTER INSERT          Connection Connected
--   oauth_tokens AFTER DELETE          Connection Disconnected
--   oauth_tokens AFTER UPDATE when proactive_refresh_enabled or sync_retry_count changes:
--     true -> false with a new refresh failure   Connection Reauthorization Required (reason)
--     true -> false without one                  Connection Refresh Turned Off
--     false -> true                              Connection Recovered
--     sync_retry_count reaching 3 (from below)   Connection Sync Failing
--     sync_retry_count back below 3 (from 3+)    Connection Sync Recovered
--   user_accounts AFTER INSERT / AFTER UPDATE (per statement, transition tables): accounts
--     added (inserted), gone (status to 'inactive'), back ('inactive' to 'active'), merged per
--     transaction and connection into one Connection Accounts Changed; nothing while the
--     region has no connection (a disconnect reports itself).
-- Payloads are ids, region, reason codes, counts and timestamps: never a token, an e-mail or
-- an error's free text (a reason code is the error's leading `[a-z_]+:` only).
--
-- 3. connection_health: per user and region, the last health event (all but accounts changed)
-- and since when; GET /v1/connections shows it (api.connection_json, redefined here with
-- `health`). Deleted with the connection.
--
-- Privileges. Both tables have Row Level Security on and forced. Their rows are written only
-- by the trigger functions: SECURITY DEFINER, search_path pinned, executable by their owner
-- only (as 0021's trigger function); a policy per table lets the tables' owner (whom the
-- functions run as) through, and nobody else. Nothing is granted to PUBLIC, anon or
-- authenticated (Supabase's default grants on new tables and the identity's sequence are
-- revoked). accounts_worker (the publisher runs as the jobs' login) may read the outbox,
-- set the publishing columns and delete (pruning), per column as in 0011; listed in
-- test/migrations/worker-privileges.expected.ts. accounts_api_caller may read its own
-- connection_health rows (policy: user_id = auth.uid()).
--
-- Locks: new tables, indexes, functions and policies take no lock on existing data.
-- CREATE TRIGGER takes SHARE ROW EXCLUSIVE on oauth_tokens and on user_accounts (blocks
-- writers for a catalogue change, behind lock_timeout; SHARE UPDATE EXCLUSIVE first, waited
-- for up to 20 s, gets an autovacuum out of the way as in 0021). CREATE OR REPLACE FUNCTION
-- and GRANT change catalogue rows only. No row is rewritten or scanned.
-- Idempotent: IF NOT EXISTS, CREATE OR REPLACE (keeping owner and grants), DROP … IF EXISTS
-- before CREATE for triggers and policies, REVOKE and GRANT.

SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

CREATE TABLE IF NOT EXISTS public.event_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  event_id uuid NOT NULL DEFAULT gen_random_uuid() CONSTRAINT event_outbox_event_id_key UNIQUE,
  detail_type text NOT NULL CONSTRAINT event_outbox_detail_type_check CHECK (detail_type IN (
    'Connection Connected', 'Connection Reauthorization Required', 'Connection Recovered',
    'Connection Disconnected', 'Connection Sync Failing', 'Connection Sync Recovered',
    'Connection Accounts Changed', 'Connection Refresh Turned Off')),
  user_id uuid NOT NULL,
  region text NOT NULL CONSTRAINT event_outbox_region_check CHECK (region IN ('NA', 'EU', 'FE')),
  connection_id uuid NOT NULL,
  -- The event's own fields (docs/events.md), besides the envelope the columns carry.
  data jsonb NOT NULL DEFAULT '{}'::jsonb,
  occurred_at timestamptz NOT NULL DEFAULT now(),
  tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
  attempts integer NOT NULL DEFAULT 0 CONSTRAINT event_outbox_attempts_check CHECK (attempts >= 0),
  lease_owner uuid,
  lease_expires_at timestamptz,
  next_attempt_at timestamptz,
  last_error text,
  published_at timestamptz
);

COMMENT ON TABLE public.event_outbox IS
  'Connection events not yet published (and published ones until pruned): written by triggers in the transaction of the change, drained to EventBridge by lambda/event-publisher.';

-- The publisher's claim: each connection's oldest unpublished event.
CREATE INDEX IF NOT EXISTS idx_event_outbox_unpublished ON public.event_outbox (user_id, region, id)
  WHERE published_at IS NULL;
-- Pruning: published rows by age.
CREATE INDEX IF NOT EXISTS idx_event_outbox_published_at ON public.event_outbox (published_at)
  WHERE published_at IS NOT NULL;
-- One accounts-changed event per transaction and connection.
CREATE UNIQUE INDEX IF NOT EXISTS idx_event_outbox_accounts_changed_tx ON public.event_outbox (tx_id, user_id, region)
  WHERE detail_type = 'Connection Accounts Changed';

CREATE TABLE IF NOT EXISTS public.connection_health (
  user_id uuid NOT NULL,
  region text NOT NULL CONSTRAINT connection_health_region_check CHECK (region IN ('NA', 'EU', 'FE')),
  connection_id uuid NOT NULL,
  last_event text NOT NULL,
  last_event_id uuid NOT NULL,
  since timestamptz NOT NULL,
  CONSTRAINT connection_health_pkey PRIMARY KEY (user_id, region)
);

COMMENT ON TABLE public.connection_health IS
  'Per connection (user and region): its last health event and since when; GET /v1/connections shows it.';

ALTER TABLE public.event_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.event_outbox FORCE ROW LEVEL SECURITY;
ALTER TABLE public.connection_health ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.connection_health FORCE ROW LEVEL SECURITY;

DO $$
DECLARE
  from_roles text := 'PUBLIC, authenticated' || CASE WHEN to_regrole('anon') IS NULL THEN '' ELSE ', anon' END;
BEGIN
  EXECUTE format('REVOKE ALL ON TABLE public.event_outbox, public.connection_health FROM %s', from_roles);
  EXECUTE format('REVOKE ALL ON SEQUENCE public.event_outbox_id_seq FROM %s', from_roles);
END
$$;

-- The tables' owner (the trigger functions run as it): every row.
DROP POLICY IF EXISTS event_outbox_owner ON public.event_outbox;
CREATE POLICY event_outbox_owner ON public.event_outbox
  FOR ALL
  USING (pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'public.event_outbox'::regclass), 'MEMBER'))
  WITH CHECK (pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'public.event_outbox'::regclass), 'MEMBER'));
DROP POLICY IF EXISTS connection_health_owner ON public.connection_health;
CREATE POLICY connection_health_owner ON public.connection_health
  FOR ALL
  USING (pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'public.connection_health'::regclass), 'MEMBER'))
  WITH CHECK (pg_has_role(current_user, (SELECT c.relowner FROM pg_class c WHERE c.oid = 'public.connection_health'::regclass), 'MEMBER'));

-- The publisher (the jobs' role): reads, leases, marks published, prunes.
DROP POLICY IF EXISTS event_outbox_publisher ON public.event_outbox;
CREATE POLICY event_outbox_publisher ON public.event_outbox
  FOR ALL TO accounts_worker
  USING (true)
  WITH CHECK (true);
GRANT SELECT (id, event_id, detail_type, user_id, region, connection_id, data, occurred_at, attempts,
              lease_owner, lease_expires_at, next_attempt_at, published_at),
      UPDATE (attempts, lease_owner, lease_expires_at, next_attempt_at, last_error, published_at),
      DELETE
   ON public.event_outbox TO accounts_worker;

-- The accounts API: its caller's own connections' health.
DROP POLICY IF EXISTS connection_health_owner_read ON public.connection_health;
CREATE POLICY connection_health_owner_read ON public.connection_health
  FOR SELECT TO accounts_api_caller
  USING (user_id = auth.uid());
GRANT SELECT ON public.connection_health TO accounts_api_caller;

-- Writes one event, and the connection's health unless it is an accounts change.
CREATE OR REPLACE FUNCTION public.event_outbox_write(
  p_detail_type text, p_user_id uuid, p_region text, p_connection_id uuid, p_data jsonb
) RETURNS void
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
DECLARE
  written uuid;
BEGIN
  INSERT INTO event_outbox (detail_type, user_id, region, connection_id, data)
  VALUES (p_detail_type, p_user_id, p_region, p_connection_id, p_data)
  RETURNING event_id INTO written;
  IF p_detail_type = 'Connection Disconnected' THEN
    DELETE FROM connection_health h WHERE h.user_id = p_user_id AND h.region = p_region;
  ELSE
    INSERT INTO connection_health AS h (user_id, region, connection_id, last_event, last_event_id, since)
    VALUES (p_user_id, p_region, p_connection_id, p_detail_type, written, now())
    ON CONFLICT ON CONSTRAINT connection_health_pkey DO UPDATE
      SET connection_id = EXCLUDED.connection_id, last_event = EXCLUDED.last_event,
          last_event_id = EXCLUDED.last_event_id, since = EXCLUDED.since;
  END IF;
END
$$;

-- An error's reason code: its leading `[a-z_]+:`, never its free text.
CREATE OR REPLACE FUNCTION public.event_error_code(message text) RETURNS text
  LANGUAGE sql
  IMMUTABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT substring(message FROM '^([a-z_]{1,64}):');
$$;

CREATE OR REPLACE FUNCTION public.oauth_tokens_events() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
DECLARE
  -- Failed syncs in a row (the sync's backoff exponent) that make a connection's sync "failing".
  failing_after constant integer := 3;
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM event_outbox_write('Connection Connected', NEW.user_id, NEW.region, NEW.id,
                               jsonb_build_object('refreshEnabled', NEW.proactive_refresh_enabled));
    RETURN NULL;
  ELSIF TG_OP = 'DELETE' THEN
    PERFORM event_outbox_write('Connection Disconnected', OLD.user_id, OLD.region, OLD.id, '{}'::jsonb);
    RETURN NULL;
  END IF;
  IF OLD.proactive_refresh_enabled AND NOT NEW.proactive_refresh_enabled THEN
    IF NEW.last_refresh_error IS NOT NULL AND (NEW.refresh_refusal_count > OLD.refresh_refusal_count
        OR NEW.refresh_failure_count > OLD.refresh_failure_count
        OR NEW.last_refresh_error IS DISTINCT FROM OLD.last_refresh_error) THEN
      PERFORM event_outbox_write('Connection Reauthorization Required', NEW.user_id, NEW.region, NEW.id,
        jsonb_build_object(
          'reason', CASE WHEN NEW.last_refresh_error LIKE 'invalid_grant:%' THEN 'revoked'
                         WHEN NEW.last_refresh_error LIKE 'Stored refresh token is unreadable%' THEN 'unreadable_token'
                         ELSE 'refused' END,
          'errorCode', event_error_code(NEW.last_refresh_error),
          'refusals', NEW.refresh_refusal_count));
    ELSE
      PERFORM event_outbox_write('Connection Refresh Turned Off', NEW.user_id, NEW.region, NEW.id,
                                 jsonb_build_object('reason', 'turned_off'));
    END IF;
  ELSIF NOT OLD.proactive_refresh_enabled AND NEW.proactive_refresh_enabled THEN
    PERFORM event_outbox_write('Connection Recovered', NEW.user_id, NEW.region, NEW.id,
      jsonb_build_object('reason', CASE WHEN NEW.refresh_token IS DISTINCT FROM OLD.refresh_token
                                        THEN 'reconnected' ELSE 'turned_on' END));
  END IF;
  IF OLD.sync_retry_count < failing_after AND NEW.sync_retry_count >= failing_after THEN
    PERFORM event_outbox_write('Connection Sync Failing', NEW.user_id, NEW.region, NEW.id,
      jsonb_build_object('consecutiveFailures', NEW.sync_retry_count, 'threshold', failing_after,
                         'errorCode', event_error_code(NEW.sync_last_error)));
  ELSIF OLD.sync_retry_count >= failing_after AND NEW.sync_retry_count < failing_after THEN
    PERFORM event_outbox_write('Connection Sync Recovered', NEW.user_id, NEW.region, NEW.id,
      jsonb_build_object('previousFailures', OLD.sync_retry_count,
                         'reason', CASE WHEN NEW.connection_generation <> OLD.connection_generation
                                          OR NEW.refresh_token IS DISTINCT FROM OLD.refresh_token
                                        THEN 'reconnected' ELSE 'synced' END));
  END IF;
  RETURN NULL;
END
$$;

-- Per statement: the accounts added, gone and back, per connection, merged into the
-- transaction's one accounts-changed event of that connection.
CREATE OR REPLACE FUNCTION public.user_accounts_events() RETURNS trigger
  LANGUAGE plpgsql
  SECURITY DEFINER
  SET search_path = public, pg_temp
AS $$
DECLARE
  changes jsonb;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT jsonb_agg(jsonb_build_object('user_id', c.user_id, 'region', c.region, 'added', c.ids,
                                        'gone', '[]'::jsonb, 'back', '[]'::jsonb))
      INTO changes
      FROM (SELECT n.user_id, n.region, jsonb_agg(n.id ORDER BY n.id) AS ids
              FROM new_rows n GROUP BY n.user_id, n.region) c;
  ELSE
    SELECT jsonb_agg(jsonb_build_object('user_id', c.user_id, 'region', c.region, 'added', '[]'::jsonb,
                                        'gone', c.gone, 'back', c.back))
      INTO changes
      FROM (SELECT n.user_id, n.region,
                   coalesce(jsonb_agg(n.id ORDER BY n.id) FILTER (WHERE n.status = 'inactive'), '[]'::jsonb) AS gone,
                   coalesce(jsonb_agg(n.id ORDER BY n.id) FILTER (WHERE n.status = 'active'), '[]'::jsonb) AS back
              FROM old_rows o JOIN new_rows n ON n.id = o.id
             WHERE (o.status <> 'inactive' AND n.status = 'inactive') OR (o.status = 'inactive' AND n.status = 'active')
             GROUP BY n.user_id, n.region) c;
  END IF;
  IF changes IS NULL THEN
    RETURN NULL;
  END IF;
  INSERT INTO event_outbox AS e (detail_type, user_id, region, connection_id, data)
  SELECT 'Connection Accounts Changed', c.user_id, c.region, t.id,
         jsonb_build_object('added', c.added, 'gone', c.gone, 'back', c.back)
    FROM jsonb_to_recordset(changes) AS c(user_id uuid, region text, added jsonb, gone jsonb, back jsonb)
    JOIN oauth_tokens t ON t.user_id = c.user_id AND t.region = c.region
  ON CONFLICT (tx_id, user_id, region) WHERE detail_type = 'Connection Accounts Changed' DO UPDATE
    SET data = jsonb_build_object(
      'added', (SELECT coalesce(jsonb_agg(DISTINCT x), '[]'::jsonb) FROM jsonb_array_elements((e.data -> 'added') || (EXCLUDED.data -> 'added')) x),
      'gone', (SELECT coalesce(jsonb_agg(DISTINCT x), '[]'::jsonb) FROM jsonb_array_elements((e.data -> 'gone') || (EXCLUDED.data -> 'gone')) x),
      'back', (SELECT coalesce(jsonb_agg(DISTINCT x), '[]'::jsonb) FROM jsonb_array_elements((e.data -> 'back') || (EXCLUDED.data -> 'back')) x));
  RETURN NULL;
END
$$;

DO $$
DECLARE
  fn regprocedure;
  grantee regrole;
BEGIN
  -- Executable by their owner only: nobody calls them but the triggers (Supabase grants
  -- EXECUTE on new functions to its roles).
  FOREACH fn IN ARRAY ARRAY[
    'public.event_outbox_write(text, uuid, text, uuid, jsonb)'::regprocedure,
    'public.event_error_code(text)'::regprocedure,
    'public.oauth_tokens_events()'::regprocedure,
    'public.user_accounts_events()'::regprocedure]
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    FOR grantee IN
      SELECT DISTINCT acl.grantee::regrole
        FROM pg_proc p, aclexplode(p.proacl) acl
       WHERE p.oid = fn AND acl.grantee <> 0 AND acl.grantee <> p.proowner
    LOOP
      EXECUTE format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
  END LOOP;
END
$$;

DROP TRIGGER IF EXISTS oauth_tokens_events_insert ON public.oauth_tokens;
CREATE TRIGGER oauth_tokens_events_insert
  AFTER INSERT ON public.oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION public.oauth_tokens_events();
DROP TRIGGER IF EXISTS oauth_tokens_events_delete ON public.oauth_tokens;
CREATE TRIGGER oauth_tokens_events_delete
  AFTER DELETE ON public.oauth_tokens
  FOR EACH ROW EXECUTE FUNCTION public.oauth_tokens_events();
DROP TRIGGER IF EXISTS oauth_tokens_events_update ON public.oauth_tokens;
CREATE TRIGGER oauth_tokens_events_update
  AFTER UPDATE ON public.oauth_tokens
  FOR EACH ROW
  WHEN (OLD.proactive_refresh_enabled IS DISTINCT FROM NEW.proactive_refresh_enabled
        OR OLD.sync_retry_count IS DISTINCT FROM NEW.sync_retry_count)
  EXECUTE FUNCTION public.oauth_tokens_events();

DROP TRIGGER IF EXISTS user_accounts_events_insert ON public.user_accounts;
CREATE TRIGGER user_accounts_events_insert
  AFTER INSERT ON public.user_accounts
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.user_accounts_events();
DROP TRIGGER IF EXISTS user_accounts_events_update ON public.user_accounts;
CREATE TRIGGER user_accounts_events_update
  AFTER UPDATE ON public.user_accounts
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION public.user_accounts_events();

-- 0013's function, with the connection's health (0023) added.
CREATE OR REPLACE FUNCTION api.connection_json(connection_id uuid) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
    'region', t.region,
    'status', CASE WHEN NOT t.proactive_refresh_enabled THEN 'reauth_required'
                   WHEN t.refresh_failure_count > 0 THEN 'refresh_failing'
                   ELSE 'connected' END,
    'expiresAt', t.expires_at,
    'lastRefreshedAt', t.last_refreshed_at,
    'lastError', t.last_refresh_error,
    'connectedAt', t.created_at,
    'accounts', (
      SELECT jsonb_build_object(
        'total', count(*),
        'pending', count(*) FILTER (WHERE ua.sync_status = 'pending'),
        'inProgress', count(*) FILTER (WHERE ua.sync_status = 'in_progress'),
        'completed', count(*) FILTER (WHERE ua.sync_status = 'completed'),
        'failed', count(*) FILTER (WHERE ua.sync_status = 'failed'),
        'reauthRequired', count(*) FILTER (WHERE ua.sync_status = 'reauth_required'))
        FROM public.user_accounts ua
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region),
    'lastSync', (
      SELECT jsonb_build_object('syncType', h.sync_type, 'syncStatus', h.sync_status,
                                'startedAt', h.started_at, 'completedAt', h.completed_at,
                                'accountsSynced', h.accounts_synced, 'accountsFailed', h.accounts_failed)
        FROM public.account_sync_history h
        JOIN public.user_accounts ua ON ua.id = h.user_account_id
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region
       ORDER BY h.started_at DESC, h.id DESC
       LIMIT 1),
    'health', (
      SELECT jsonb_build_object('lastEvent', ch.last_event, 'lastEventId', ch.last_event_id, 'since', ch.since)
        FROM public.connection_health ch
       WHERE /* own rows */ ch.user_id = auth.uid() AND ch.region = t.region))
    FROM public.oauth_tokens t
   WHERE t.id = connection_id
     AND /* own rows */ t.user_id = auth.uid();
$$;

-- Down Migration
--
-- The triggers, functions and tables, and 0013's api.connection_json.
SET LOCAL statement_timeout = '30s';
SET LOCAL lock_timeout = '20s';
LOCK TABLE public.oauth_tokens, public.user_accounts IN SHARE UPDATE EXCLUSIVE MODE;
SET LOCAL lock_timeout = '500ms';

DROP TRIGGER IF EXISTS oauth_tokens_events_insert ON public.oauth_tokens;
DROP TRIGGER IF EXISTS oauth_tokens_events_delete ON public.oauth_tokens;
DROP TRIGGER IF EXISTS oauth_tokens_events_update ON public.oauth_tokens;
DROP TRIGGER IF EXISTS user_accounts_events_insert ON public.user_accounts;
DROP TRIGGER IF EXISTS user_accounts_events_update ON public.user_accounts;
DROP FUNCTION IF EXISTS public.oauth_tokens_events();
DROP FUNCTION IF EXISTS public.user_accounts_events();
DROP FUNCTION IF EXISTS public.event_outbox_write(text, uuid, text, uuid, jsonb);
DROP FUNCTION IF EXISTS public.event_error_code(text);

CREATE OR REPLACE FUNCTION api.connection_json(connection_id uuid) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, pg_temp
AS $$
  SELECT jsonb_build_object(
    'region', t.region,
    'status', CASE WHEN NOT t.proactive_refresh_enabled THEN 'reauth_required'
                   WHEN t.refresh_failure_count > 0 THEN 'refresh_failing'
                   ELSE 'connected' END,
    'expiresAt', t.expires_at,
    'lastRefreshedAt', t.last_refreshed_at,
    'lastError', t.last_refresh_error,
    'connectedAt', t.created_at,
    'accounts', (
      SELECT jsonb_build_object(
        'total', count(*),
        'pending', count(*) FILTER (WHERE ua.sync_status = 'pending'),
        'inProgress', count(*) FILTER (WHERE ua.sync_status = 'in_progress'),
        'completed', count(*) FILTER (WHERE ua.sync_status = 'completed'),
        'failed', count(*) FILTER (WHERE ua.sync_status = 'failed'),
        'reauthRequired', count(*) FILTER (WHERE ua.sync_status = 'reauth_required'))
        FROM public.user_accounts ua
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region),
    'lastSync', (
      SELECT jsonb_build_object('syncType', h.sync_type, 'syncStatus', h.sync_status,
                                'startedAt', h.started_at, 'completedAt', h.completed_at,
                                'accountsSynced', h.accounts_synced, 'accountsFailed', h.accounts_failed)
        FROM public.account_sync_history h
        JOIN public.user_accounts ua ON ua.id = h.user_account_id
       WHERE /* own rows */ ua.user_id = auth.uid() AND ua.region = t.region
       ORDER BY h.started_at DESC, h.id DESC
       LIMIT 1))
    FROM public.oauth_tokens t
   WHERE t.id = connection_id
     AND /* own rows */ t.user_id = auth.uid();
$$;

DROP TABLE IF EXISTS public.connection_health;
DROP TABLE IF EXISTS public.event_outbox;
