import type { AmazonRegion } from '../shared/amazon/regions';
import { Database, sqlJson, sqlUuid } from '../shared/db/port';
import type { DetailType } from './catalogue';

/** An outbox row (migration 0023) leased to this run for publishing. */
export interface ClaimedEvent {
  /** The outbox id (the order); as text, PostgreSQL's bigint. */
  readonly id: string;
  /** The idempotency id: the same on every attempt. */
  readonly eventId: string;
  readonly detailType: DetailType;
  readonly userId: string;
  readonly region: AmazonRegion;
  readonly connectionId: string;
  /** The event's own fields, as the trigger wrote them. */
  readonly data: Record<string, unknown>;
  readonly occurredAt: Date;
  /** Attempts so far, this one included. */
  readonly attempts: number;
}

interface ClaimedRow {
  id: string;
  event_id: string;
  detail_type: DetailType;
  user_id: string;
  region: AmazonRegion;
  connection_id: string;
  data: Record<string, unknown>;
  occurred_at: Date;
  attempts: number;
}

/**
 * Leases the oldest unpublished event of up to `limit` connections (user and region) whose
 * oldest unpublished event is free (never leased, or its lease expired: a run that died) and
 * due (no retry waiting). One event per connection per claim: a connection's later event is
 * claimed only once every earlier one is published, so each connection's events reach the bus
 * in their order. `FOR UPDATE SKIP LOCKED`: concurrent runs never claim the same row.
 */
export async function claimEvents(
  db: Database,
  o: { readonly owner: string; readonly leaseSeconds: number; readonly limit: number },
): Promise<ClaimedEvent[]> {
  const { rows } = await db.query<ClaimedRow>(
    `WITH heads AS (
       SELECT DISTINCT ON (user_id, region) id
         FROM event_outbox
        WHERE published_at IS NULL
        ORDER BY user_id, region, id
     ), picked AS (
       SELECT o.id FROM event_outbox o JOIN heads h ON h.id = o.id
        WHERE o.published_at IS NULL
          AND (o.lease_expires_at IS NULL OR o.lease_expires_at < now())
          AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
        ORDER BY o.id
        LIMIT :limit
        FOR UPDATE OF o SKIP LOCKED
     )
     UPDATE event_outbox o
        SET lease_owner = :owner, lease_expires_at = now() + make_interval(secs => :leaseSeconds),
            attempts = o.attempts + 1
       FROM picked
      WHERE o.id = picked.id
     RETURNING o.id::text AS id, o.event_id, o.detail_type, o.user_id, o.region, o.connection_id, o.data,
               o.occurred_at, o.attempts`,
    { owner: sqlUuid(o.owner), leaseSeconds: o.leaseSeconds, limit: o.limit },
  );
  return rows
    .map((r) => ({
      id: r.id,
      eventId: r.event_id,
      detailType: r.detail_type,
      userId: r.user_id,
      region: r.region,
      connectionId: r.connection_id,
      data: r.data,
      occurredAt: r.occurred_at,
      attempts: r.attempts,
    }))
    .sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1));
}

/** Marks events published (whoever holds their lease now: they are on the bus). */
export async function markPublished(db: Database, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return;
  await db.query(
    `UPDATE event_outbox
        SET published_at = now(), lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = NULL, last_error = NULL
      WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::bigint) AND published_at IS NULL`,
    { ids: sqlJson(ids) },
  );
}

/** Gives events back after PutEvents failed for them: retried from `nextAttemptAt`, by any run. */
export async function releaseFailed(
  db: Database,
  owner: string,
  failures: ReadonlyArray<{ readonly id: string; readonly error: string; readonly nextAttemptAt: Date }>,
): Promise<void> {
  if (failures.length === 0) return;
  await db.query(
    `UPDATE event_outbox o
        SET lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = f.next_attempt_at, last_error = f.error
       FROM jsonb_to_recordset(:failures::jsonb) AS f(id bigint, error text, next_attempt_at timestamptz)
      WHERE o.id = f.id AND o.lease_owner = :owner AND o.published_at IS NULL`,
    {
      owner: sqlUuid(owner),
      failures: sqlJson(failures.map((f) => ({ id: f.id, error: f.error, next_attempt_at: f.nextAttemptAt }))),
    },
  );
}

/** Deletes up to `limit` events published more than `retentionSeconds` ago; returns how many. */
export async function pruneEvents(db: Database, retentionSeconds: number, limit: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `WITH old AS (
       SELECT id FROM event_outbox
        WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => :retentionSeconds)
        ORDER BY published_at
        LIMIT :limit
     ), deleted AS (
       DELETE FROM event_outbox o USING old WHERE o.id = old.id RETURNING 1
     )
     SELECT count(*)::int AS n FROM deleted`,
    { retentionSeconds, limit },
  );
  return rows[0]?.n ?? 0;
}

/** Unpublished events, and the age in seconds of the oldest (0 when none). */
export async function outboxBacklog(db: Database): Promise<{ unpublished: number; oldestAgeSeconds: number }> {
  const { rows } = await db.query<{ unpublished: number; oldest: number }>(
    `SELECT count(*)::int AS unpublished,
            coalesce(extract(epoch FROM now() - min(occurred_at)), 0)::float8 AS oldest
       FROM event_outbox WHERE published_at IS NULL`,
  );
  return { unpublished: rows[0]?.unpublished ?? 0, oldestAgeSeconds: Math.max(0, Math.floor(rows[0]?.oldest ?? 0)) };
}
