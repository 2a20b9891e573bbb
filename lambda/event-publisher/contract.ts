/**
 * The event publisher's contract (docs/events.md): the names and timings the stack
 * (lib/connection-events.ts, lib/events-monitoring.ts) and the function both use, and the shape
 * of a bus the local stand-in (local/events/file-bus.ts) implements. No code that runs.
 */
import { LEASE_MARGIN_SECONDS } from '../shared/jobs/timing';

/** The publisher's service name (log key, `service` metric dimension). */
export const EVENT_PUBLISHER_SERVICE = 'event-publisher';

/** The publisher's time limits: the function's timeout, and its lease (outliving it, as every job's). */
export const EVENT_PUBLISHER_TIMING = { timeoutSeconds: 60, leaseSeconds: 60 + LEASE_MARGIN_SECONDS } as const;

/** The publisher's metric names (service `event-publisher`): lib/monitoring.ts reads them. */
export const EVENT_PUBLISHER_METRICS = {
  published: 'EventsPublished',
  failed: 'EventsNotPublished',
  putEventsCalls: 'PutEventsCalls',
  pruned: 'EventsPruned',
  /** Age of the oldest event still unpublished when the run ended: the alarm's metric. */
  oldestUnpublishedAgeSeconds: 'OldestUnpublishedEventAgeSeconds',
  dataApiCalls: 'DataApiCalls',
} as const;

/** One PutEvents entry, as the SDK takes it. */
export interface BusEntry {
  readonly Source: string;
  readonly DetailType: string;
  readonly Detail: string;
  readonly Time: Date;
  readonly Resources: string[];
}

/** The bus the publisher puts entries on: EventBridge in AWS (bus.ts), a file locally. */
export interface EventBus {
  /**
   * One PutEvents request. Resolves with the entries the bus refused (by index in `entries`,
   * with EventBridge's ErrorCode); rejects when the whole request failed.
   */
  putEvents(entries: readonly BusEntry[]): Promise<{ failed: ReadonlyArray<{ index: number; errorCode: string }> }>;
}

/** Environment variables of the event publisher (besides the database ones of JOB_ENV). */
export const EVENT_PUBLISHER_ENV = {
  /** The name of the environment's EventBridge bus. */
  eventBusName: 'EVENT_BUS_NAME',
  /** Published events are deleted after this many days. Optional (7). */
  retentionDays: 'EVENT_RETENTION_DAYS',
} as const;
