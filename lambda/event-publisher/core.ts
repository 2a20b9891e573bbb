import { randomUUID } from 'node:crypto';
import { backoffDelayMs, sleep } from '../shared/backoff';
import type { Database } from '../shared/db/port';
import { addCounts, describeError, JobRuntime, nextRetryAt } from '../shared/jobs/runtime';
import { DETAIL_TYPES, EVENT_SOURCE, EVENT_VERSION, MAX_ACCOUNT_IDS_PER_KIND } from './catalogue';
import {
  type BusEntry,
  type EventBus,
  EVENT_PUBLISHER_METRICS,
  EVENT_PUBLISHER_SERVICE,
  EVENT_PUBLISHER_TIMING,
} from './contract';
import { ClaimedEvent, claimEvents, markPublished, outboxBacklog, pruneEvents, releaseFailed } from './store';

export { EVENT_PUBLISHER_METRICS, EVENT_PUBLISHER_SERVICE, EVENT_PUBLISHER_TIMING };
export type { BusEntry, EventBus };

/** PutEvents takes at most 10 entries per request (EventBridge quota). */
export const MAX_ENTRIES_PER_PUT = 10;
/** …and at most 256 KiB of entries per request (EventBridge's entry size calculation). */
export const MAX_PUT_BYTES = 256 * 1024;

export interface EventPublisherSettings {
  /** Connections per claim (one event each). @default 100 */
  readonly claimLimit: number;
  /** Published events are deleted after this many seconds. @default 7 days */
  readonly retentionSeconds: number;
  /** Rows deleted per run at most. @default 5000 */
  readonly pruneLimit: number;
  /** PutEvents attempts per entry in one run (the failed entries only are sent again). @default 3 */
  readonly maxAttempts: number;
  /** Time kept back from the deadline: no claim starts within it. @default 15 s */
  readonly reserveMs: number;
  readonly leaseSeconds: number;
  /** Backoff between a run's attempts (ms), and of an entry given back (s). */
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  readonly releaseBaseSeconds: number;
  readonly releaseMaxSeconds: number;
}

export const EVENT_PUBLISHER_DEFAULTS: EventPublisherSettings = {
  claimLimit: 100,
  retentionSeconds: 7 * 24 * 3600,
  pruneLimit: 5000,
  maxAttempts: 3,
  reserveMs: 15_000,
  leaseSeconds: EVENT_PUBLISHER_TIMING.leaseSeconds,
  retryBaseMs: 200,
  retryMaxMs: 2_000,
  releaseBaseSeconds: 30,
  releaseMaxSeconds: 900,
};

export interface EventPublisherDeps extends JobRuntime {
  readonly db: Database;
  readonly bus: EventBus;
  readonly settings?: Partial<EventPublisherSettings>;
  /** Called with each entry the bus accepted (`npm start`'s summary). @default - nothing */
  readonly onPublished?: (event: PublishedEvent) => void;
}

/** An event as it went on the bus. */
export interface PublishedEvent {
  readonly source: string;
  readonly detailType: string;
  readonly detail: Record<string, unknown>;
}

export interface EventPublisherSummary {
  readonly published: number;
  /** Entries the bus refused in every attempt of this run: given back, retried by a later run. */
  readonly notPublished: number;
  readonly putEventsCalls: number;
  readonly pruned: number;
  /** Unpublished events left, and the oldest one's age (s). */
  readonly unpublished: number;
  readonly oldestUnpublishedAgeSeconds: number;
  /** The run stopped claiming because its deadline was near. */
  readonly stoppedForDeadline: boolean;
  readonly dataApiCalls: number;
}

/** The `detail` of an outbox row (docs/events.md): the envelope, then the event's own fields. */
export function eventDetail(e: ClaimedEvent): Record<string, unknown> {
  const envelope = {
    eventId: e.eventId,
    version: EVENT_VERSION,
    occurredAt: e.occurredAt.toISOString(),
    userId: e.userId,
    connectionId: e.connectionId,
    region: e.region,
  };
  if (e.detailType !== DETAIL_TYPES.accountsChanged) return { ...envelope, ...e.data };
  let truncated = false;
  const list = (key: string) => {
    const ids = Array.isArray(e.data[key]) ? (e.data[key] as string[]) : [];
    if (ids.length > MAX_ACCOUNT_IDS_PER_KIND) truncated = true;
    return { count: ids.length, accountIds: ids.slice(0, MAX_ACCOUNT_IDS_PER_KIND) };
  };
  const added = list('added');
  const gone = list('gone');
  const back = list('back');
  return { ...envelope, added, gone, back, truncated };
}

export function busEntry(e: ClaimedEvent): BusEntry {
  return {
    Source: EVENT_SOURCE,
    DetailType: e.detailType,
    Detail: JSON.stringify(eventDetail(e)),
    Time: e.occurredAt,
    Resources: [],
  };
}

/** EventBridge's size of an entry: Time 14 bytes, plus Source, DetailType, Detail and Resources in UTF-8. */
export function entrySize(entry: BusEntry): number {
  return (
    14 +
    Buffer.byteLength(entry.Source) +
    Buffer.byteLength(entry.DetailType) +
    Buffer.byteLength(entry.Detail) +
    entry.Resources.reduce((n, r) => n + Buffer.byteLength(r), 0)
  );
}

/** Splits entries into PutEvents requests: at most 10 and 256 KiB each, in order. */
export function putBatches<T extends { entry: BusEntry }>(items: readonly T[]): T[][] {
  const batches: T[][] = [];
  let current: T[] = [];
  let bytes = 0;
  for (const item of items) {
    const size = entrySize(item.entry);
    if (current.length > 0 && (current.length === MAX_ENTRIES_PER_PUT || bytes + size > MAX_PUT_BYTES)) {
      batches.push(current);
      current = [];
      bytes = 0;
    }
    current.push(item);
    bytes += size;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

/**
 * One run of the event publisher: drains the outbox (migration 0023) to the bus.
 *
 * - At least once: a row is marked published only after the bus accepted it; a run that dies
 *   between PutEvents and the mark leaves the row leased, and after the lease a later run puts
 *   it again with the same `eventId` (consumers deduplicate on it).
 * - Partial failures: the entries PutEvents refused (its FailedEntryCount) are sent again on
 *   their own, with backoff, up to `maxAttempts` in the run; still refused, they are given back
 *   with a retry time (backoff by their attempts) and counted in `EventsNotPublished`.
 * - Order per connection: a claim takes each connection's oldest unpublished event only, so
 *   a connection's later event waits until its earlier one is published.
 * - Deadline: no claim starts within `reserveMs` of the invocation's end; waits between
 *   attempts never outlast it; leases outlive the function's timeout.
 * - Published rows older than the retention are deleted (at most `pruneLimit` per run).
 */
export async function runEventPublisher(deps: EventPublisherDeps): Promise<EventPublisherSummary> {
  const s: EventPublisherSettings = { ...EVENT_PUBLISHER_DEFAULTS, ...deps.settings };
  const owner = randomUUID();
  const now = deps.now ?? (() => new Date());
  const random = deps.random ?? Math.random;
  const before = deps.db.callCounts().total;
  let published = 0;
  let notPublished = 0;
  let putEventsCalls = 0;
  let stoppedForDeadline = false;

  for (;;) {
    if (deps.remainingTimeMs() < s.reserveMs) {
      stoppedForDeadline = true;
      break;
    }
    const claimed = await claimEvents(deps.db, { owner, leaseSeconds: s.leaseSeconds, limit: s.claimLimit });
    if (claimed.length === 0) break;
    const items = claimed.map((event) => ({ event, entry: busEntry(event) }));
    const accepted: ClaimedEvent[] = [];
    const refused: Array<{ event: ClaimedEvent; error: string }> = [];
    for (const batch of putBatches(items)) {
      let pending = batch;
      for (let attempt = 1; pending.length > 0; attempt++) {
        let failed: Array<{ item: (typeof pending)[number]; error: string }>;
        try {
          putEventsCalls++;
          const result = await deps.bus.putEvents(pending.map((p) => p.entry));
          const byIndex = new Map(result.failed.map((f) => [f.index, f.errorCode]));
          for (const [i, p] of pending.entries()) if (!byIndex.has(i)) accepted.push(p.event);
          failed = [...byIndex].map(([i, code]) => ({ item: pending[i], error: `PutEvents: ${code}` }));
        } catch (error) {
          failed = pending.map((item) => ({ item, error: describeError(error) }));
        }
        pending = failed.map((f) => f.item);
        if (pending.length === 0) break;
        const delay = backoffDelayMs(attempt, { baseDelayMs: s.retryBaseMs, maxDelayMs: s.retryMaxMs, random });
        if (attempt >= s.maxAttempts || deps.remainingTimeMs() - s.reserveMs / 2 < delay) {
          refused.push(...failed.map((f) => ({ event: f.item.event, error: f.error })));
          break;
        }
        deps.logger.warn('PutEvents refused entries; sending them again alone', {
          entries: pending.length,
          attempt,
          errors: [...new Set(failed.map((f) => f.error))],
        });
        await sleep(delay);
      }
    }
    await markPublished(
      deps.db,
      accepted.map((e) => e.id),
    );
    published += accepted.length;
    for (const e of accepted) {
      deps.onPublished?.({ source: EVENT_SOURCE, detailType: e.detailType, detail: eventDetail(e) });
    }
    if (refused.length > 0) {
      notPublished += refused.length;
      deps.logger.error('Events not published in this run; given back for a later one', {
        events: refused.map((r) => ({ eventId: r.event.eventId, attempts: r.event.attempts, error: r.error })),
      });
      await releaseFailed(
        deps.db,
        owner,
        refused.map((r) => ({
          id: r.event.id,
          error: r.error,
          nextAttemptAt: nextRetryAt(now(), r.event.attempts, {
            baseSeconds: s.releaseBaseSeconds,
            maxSeconds: s.releaseMaxSeconds,
            random,
          }),
        })),
      );
    }
  }

  const pruned =
    deps.remainingTimeMs() < s.reserveMs / 2 ? 0 : await pruneEvents(deps.db, s.retentionSeconds, s.pruneLimit);
  const backlog = await outboxBacklog(deps.db);
  const dataApiCalls = deps.db.callCounts().total - before;
  addCounts(deps.metrics, {
    [EVENT_PUBLISHER_METRICS.published]: published,
    [EVENT_PUBLISHER_METRICS.failed]: notPublished,
    [EVENT_PUBLISHER_METRICS.putEventsCalls]: putEventsCalls,
    [EVENT_PUBLISHER_METRICS.pruned]: pruned,
    [EVENT_PUBLISHER_METRICS.dataApiCalls]: dataApiCalls,
  });
  deps.metrics.addMetric(EVENT_PUBLISHER_METRICS.oldestUnpublishedAgeSeconds, 'Count', backlog.oldestAgeSeconds);
  const summary: EventPublisherSummary = {
    published,
    notPublished,
    putEventsCalls,
    pruned,
    unpublished: backlog.unpublished,
    oldestUnpublishedAgeSeconds: backlog.oldestAgeSeconds,
    stoppedForDeadline,
    dataApiCalls,
  };
  deps.logger.info('Event publisher run finished', { ...summary });
  return summary;
}
