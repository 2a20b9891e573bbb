-- Up Migration
--
-- The accounts-changed trigger (0023's `user_accounts_events`) in time linear in the rows a
-- statement updates. 0023 paired each updated account's old and new row with a join of the
-- statement's two transition tables. Transition tables carry no statistics, and a PL/pgSQL
-- query without parameters keeps the plan it was first given in the session, so the join ran
-- as a nested loop: every old row against every new one. A connection with 9,000 accounts took
-- 47 s in the trigger alone for one UPDATE of its accounts (the claim's `in_progress`, which
-- changes no status at all), and its sync 77 s (first) and 87 s (again) in all, against 0.4 s
-- for the same UPDATE without the trigger. Agencies' logins reach thousands of profiles.
-- (Measured on embedded PostgreSQL 17 with one connection seeded with 9,000 accounts by
-- local/world.ts's seedUsers and synced twice through the Data API emulator; with this body the
-- UPDATE takes 0.23 s and the two syncs 4.7 s and 4.8 s.)
--
-- Here the two tables are read once each, as one list grouped by account: no join, so no plan
-- can be quadratic. What the trigger writes is unchanged (the same accounts gone and back per
-- connection, merged into the transaction's one event per connection, as 0023 says); only the
-- way it finds them changed. An account's connection is its new row's (user_id, region), as in
-- 0023. The function keeps its owner, its privileges (none but its owner's) and its triggers:
-- CREATE OR REPLACE FUNCTION changes only its body.
--
-- Locks: CREATE OR REPLACE FUNCTION takes no lock on a table (a statement already running the
-- old body finishes with it). Idempotent: replacing the body with itself changes nothing.

SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

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
    -- Each updated account once: whether it was inactive before, and its status and
    -- connection after (an UPDATE statement puts each row once in each table).
    SELECT jsonb_agg(jsonb_build_object('user_id', c.user_id, 'region', c.region, 'added', '[]'::jsonb,
                                        'gone', c.gone, 'back', c.back))
      INTO changes
      FROM (SELECT a.user_id, a.region,
                   coalesce(jsonb_agg(a.id ORDER BY a.id) FILTER (WHERE a.status = 'inactive'), '[]'::jsonb) AS gone,
                   coalesce(jsonb_agg(a.id ORDER BY a.id) FILTER (WHERE a.status = 'active'), '[]'::jsonb) AS back
              FROM (SELECT r.id,
                           bool_or(r.old AND r.status = 'inactive') AS was_inactive,
                           (array_agg(r.status) FILTER (WHERE NOT r.old))[1] AS status,
                           (array_agg(r.user_id) FILTER (WHERE NOT r.old))[1] AS user_id,
                           (array_agg(r.region) FILTER (WHERE NOT r.old))[1] AS region
                      FROM (SELECT o.id, o.user_id, o.region, o.status, TRUE AS old FROM old_rows o
                            UNION ALL
                            SELECT n.id, n.user_id, n.region, n.status, FALSE AS old FROM new_rows n) r
                     GROUP BY r.id
                    HAVING count(*) FILTER (WHERE r.old) > 0 AND count(*) FILTER (WHERE NOT r.old) > 0) a
             WHERE (NOT a.was_inactive AND a.status = 'inactive') OR (a.was_inactive AND a.status = 'active')
             GROUP BY a.user_id, a.region) c;
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

-- Down Migration
--
-- Back to 0023's body (the join of the two transition tables).
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '30s';

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
