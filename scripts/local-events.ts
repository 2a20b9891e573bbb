import { runEventPublisher, type EventPublisherSummary } from '../lambda/event-publisher/core';
import { PgDatabase, type Database } from '../lambda/shared/db';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { fileEventBus, LOCAL_EVENTS_FILE, type LocalEventLine } from '../local/events/file-bus';

export { LOCAL_EVENTS_FILE };
export type { LocalEventLine };

/** One run of the event publisher onto the local file bus: its summary and the events it put. */
export async function publishLocalEvents(
  db: Database,
  o: { readonly file?: string; readonly onEvent?: (line: LocalEventLine) => void } = {},
): Promise<{ summary: EventPublisherSummary; events: LocalEventLine[] }> {
  const events: LocalEventLine[] = [];
  const summary = await runEventPublisher({
    db,
    bus: fileEventBus(o.file ?? LOCAL_EVENTS_FILE, (line) => {
      events.push(line);
      o.onEvent?.(line);
    }),
    logger: silentLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => 60_000,
  });
  return { summary, events };
}

/** One event on one line: time, detail-type, region, user (shortened) and the event's own fields. */
export function eventLine(e: LocalEventLine): string {
  const d = e.detail;
  const skip = new Set(['eventId', 'version', 'occurredAt', 'userId', 'connectionId', 'region']);
  const fields = Object.entries(d)
    .filter(([k]) => !skip.has(k))
    .map(([k, v]) =>
      typeof v === 'object' && v !== null && 'count' in v
        ? `${k}=${String((v as { count: number }).count)}`
        : `${k}=${String(v)}`,
    )
    .join(' ');
  return `[${e.time.slice(11, 19)}] ${e['detail-type']}  ${String(d.region)}  user ${String(d.userId).slice(0, 8)}…  ${fields}`.trimEnd();
}

/** `npm start`'s summary of a run's events: counts per detail-type and the first few lines. */
export function eventsSummaryText(events: readonly LocalEventLine[], file = LOCAL_EVENTS_FILE, shown = 8): string {
  const counts = new Map<string, number>();
  for (const e of events) counts.set(e['detail-type'], (counts.get(e['detail-type']) ?? 0) + 1);
  const lines = [
    `Events published this run (${events.length}, appended to ${file}; docs/events.md)`,
    ...[...counts].sort((a, b) => b[1] - a[1]).map(([type, n]) => `  ${String(n).padStart(5)}  ${type}`),
    ...events.slice(0, shown).map((e) => `  ${eventLine(e)}`),
  ];
  if (events.length > shown) lines.push(`  … ${events.length - shown} more in ${file}`);
  return lines.join('\n');
}

/**
 * Publishes the outbox every `intervalMs` (as the schedule does in AWS) and prints each event
 * as it is put on the local bus; `stop()` ends the loop and closes its connection.
 */
export function watchLocalEvents(o: {
  readonly databaseUrl: string;
  readonly file?: string;
  readonly intervalMs: number;
  readonly print: (line: string) => void;
}): { stop(): Promise<void> } {
  const db = new PgDatabase({ connection: o.databaseUrl, maxConnections: 2 });
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      await publishLocalEvents(db, { file: o.file, onEvent: (e) => o.print(`event ${eventLine(e)}`) });
    } catch (error) {
      o.print(`event publisher failed: ${(error as Error).message}`);
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick(), o.intervalMs);
  void tick();
  return {
    async stop() {
      clearInterval(timer);
      await db.close();
    },
  };
}
