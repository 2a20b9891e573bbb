/**
 * The event catalogue (docs/events.md): every event the platform publishes to its EventBridge
 * bus, with its stable `detail-type`, the `source` they share, the version of their `detail`
 * and a JSON Schema of that `detail`. Migration 0023's triggers write the events' rows; the
 * publisher (core.ts) turns a row into an entry. A change to a schema that breaks a consumer
 * is a new version.
 */

/** The `source` of every event. */
export const EVENT_SOURCE = 'amazon-accounts.connections';

/** `detail.version` of every event this code publishes. */
export const EVENT_VERSION = '1';

export const DETAIL_TYPES = {
  connected: 'Connection Connected',
  reauthorizationRequired: 'Connection Reauthorization Required',
  recovered: 'Connection Recovered',
  disconnected: 'Connection Disconnected',
  syncFailing: 'Connection Sync Failing',
  syncRecovered: 'Connection Sync Recovered',
  accountsChanged: 'Connection Accounts Changed',
  refreshTurnedOff: 'Connection Refresh Turned Off',
} as const;

export type DetailType = (typeof DETAIL_TYPES)[keyof typeof DETAIL_TYPES];

/** Most account ids one accounts-changed event lists per kind (the counts are always whole). */
export const MAX_ACCOUNT_IDS_PER_KIND = 200;

type JsonSchema = Record<string, unknown>;

const uuid = { type: 'string', format: 'uuid' } as const;
/** A reason code: an error's leading identifier, never its free text. */
const code = { type: ['string', 'null'], pattern: '^[a-z_]{1,64}$' } as const;

/** The envelope every `detail` carries. */
const ENVELOPE: Record<string, JsonSchema> = {
  eventId: { ...uuid, description: 'Idempotency id: the same on every delivery of this event.' },
  version: { const: EVENT_VERSION },
  occurredAt: { type: 'string', format: 'date-time', description: 'When the change was made (its transaction).' },
  userId: uuid,
  connectionId: uuid,
  region: { enum: ['NA', 'EU', 'FE'] },
};

function schema(detailType: DetailType, description: string, fields: Record<string, JsonSchema>): JsonSchema {
  return {
    $id: `https://amazon-accounts.example/events/${detailType.toLowerCase().replace(/ /g, '-')}/v${EVENT_VERSION}.json`,
    title: detailType,
    description,
    type: 'object',
    additionalProperties: false,
    required: [...Object.keys(ENVELOPE), ...Object.keys(fields)],
    properties: { ...ENVELOPE, ...fields },
  };
}

const accountIds = {
  type: 'object',
  additionalProperties: false,
  required: ['count', 'accountIds'],
  properties: {
    count: { type: 'integer', minimum: 0 },
    accountIds: { type: 'array', items: uuid, maxItems: MAX_ACCOUNT_IDS_PER_KIND, uniqueItems: true },
  },
} as const;

/** JSON Schema (draft-07) of each event's `detail`, by detail-type. */
export const EVENT_SCHEMAS: Readonly<Record<DetailType, JsonSchema>> = {
  [DETAIL_TYPES.connected]: schema(
    DETAIL_TYPES.connected,
    'A connection (user and region) was stored for the first time.',
    {
      refreshEnabled: { type: 'boolean' },
    },
  ),
  [DETAIL_TYPES.reauthorizationRequired]: schema(
    DETAIL_TYPES.reauthorizationRequired,
    'Login with Amazon refused the connection’s refresh: refresh is off until the user connects again.',
    {
      reason: { enum: ['revoked', 'unreadable_token', 'refused'] },
      errorCode: code,
      refusals: { type: 'integer', minimum: 0 },
    },
  ),
  [DETAIL_TYPES.recovered]: schema(DETAIL_TYPES.recovered, 'Refresh is on again (the user connected again).', {
    reason: { enum: ['reconnected', 'turned_on'] },
  }),
  [DETAIL_TYPES.disconnected]: schema(DETAIL_TYPES.disconnected, 'The connection was removed.', {}),
  [DETAIL_TYPES.syncFailing]: schema(
    DETAIL_TYPES.syncFailing,
    'The connection’s account sync failed this many times in a row (the backoff threshold).',
    {
      consecutiveFailures: { type: 'integer', minimum: 1 },
      threshold: { type: 'integer', minimum: 1 },
      errorCode: code,
    },
  ),
  [DETAIL_TYPES.syncRecovered]: schema(
    DETAIL_TYPES.syncRecovered,
    'The failing sync succeeded again, or the user reconnected.',
    {
      previousFailures: { type: 'integer', minimum: 1 },
      reason: { enum: ['synced', 'reconnected'] },
    },
  ),
  [DETAIL_TYPES.accountsChanged]: schema(
    DETAIL_TYPES.accountsChanged,
    'Accounts of the connection were added, went missing at Amazon, or came back (one event per transaction).',
    {
      added: accountIds,
      gone: accountIds,
      back: accountIds,
      truncated: { type: 'boolean', description: 'Some list holds fewer ids than its count.' },
    },
  ),
  [DETAIL_TYPES.refreshTurnedOff]: schema(
    DETAIL_TYPES.refreshTurnedOff,
    'Proactive refresh was turned off without a refusal from Amazon (by an operator or the web app).',
    { reason: { const: 'turned_off' } },
  ),
};
