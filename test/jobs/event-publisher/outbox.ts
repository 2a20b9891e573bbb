import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { EVENT_SCHEMAS, type DetailType } from '../../../lambda/event-publisher/catalogue';
import { eventDetail } from '../../../lambda/event-publisher/core';
import type { ClaimedEvent } from '../../../lambda/event-publisher/store';
import type { Database } from '../../../lambda/shared/db';

/** The outbox rows of one user (or all), in their order, as the publisher would put them. */
export async function outboxEvents(admin: Database, userId?: string): Promise<ClaimedEvent[]> {
  const { rows } = await admin.query<{
    id: string;
    event_id: string;
    detail_type: DetailType;
    user_id: string;
    region: ClaimedEvent['region'];
    connection_id: string;
    data: Record<string, unknown>;
    occurred_at: Date;
    attempts: number;
  }>(
    `SELECT id::text AS id, event_id, detail_type, user_id, region, connection_id, data, occurred_at, attempts
       FROM event_outbox WHERE :userId::uuid IS NULL OR user_id = :userId::uuid ORDER BY event_outbox.id`,
    { userId: userId ?? null },
  );
  return rows.map((r) => ({
    id: r.id,
    eventId: r.event_id,
    detailType: r.detail_type,
    userId: r.user_id,
    region: r.region,
    connectionId: r.connection_id,
    data: r.data,
    occurredAt: r.occurred_at,
    attempts: r.attempts,
  }));
}

const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true });
addFormats(ajv);
const validators = new Map(Object.entries(EVENT_SCHEMAS).map(([type, schema]) => [type, ajv.compile(schema)]));

/** The schema's errors for this detail (none: valid). */
export function schemaErrors(detailType: string, detail: unknown): string[] {
  const validate = validators.get(detailType);
  if (!validate) return [`no schema for ${detailType}`];
  return validate(detail) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath} ${e.message}`);
}

/** Each event's detail-type and detail (as published), checked against its schema. */
export function validDetails(
  events: readonly ClaimedEvent[],
): Array<{ type: string; detail: Record<string, unknown> }> {
  return events.map((e) => {
    const detail = eventDetail(e);
    expect({ type: e.detailType, errors: schemaErrors(e.detailType, detail) }).toEqual({
      type: e.detailType,
      errors: [],
    });
    return { type: e.detailType, detail };
  });
}
