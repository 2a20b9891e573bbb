import { performance } from 'node:perf_hooks';
import { runEventPublisher, type BusEntry, type EventBus } from '../lambda/event-publisher/core';
import { DataApiDatabase } from '../lambda/shared/db';
import { MetricTotals, silentLogger } from '../lambda/shared/jobs/runtime';
import { seedUsers, startLocalWorld } from '../local/world';

/** One publisher run over a prepared outbox. */
export interface EventPublisherRow {
  readonly connections: number;
  readonly events: number;
  readonly seconds: number;
  readonly eventsPerSecond: number;
  readonly putEventsCalls: number;
  /** Data API calls of the run (claims, marks, prune, backlog), retries included. */
  readonly dataApiCalls: number;
  readonly dataApiCallsPerEvent: number;
}

/**
 * `npm run bench`'s event publisher figures: `connections` connections with `eventsPerConnection`
 * events each in the outbox (connected, then refresh turned off and on by turns: real trigger
 * rows), drained by the real publisher core on the Data API path (DataApiDatabase → the SDK →
 * the emulator → PostgreSQL 17, as the jobs' login) to a bus that accepts every entry at once,
 * so that the figure is the publisher's and the database's, not EventBridge's.
 */
export async function measureEventPublisher(
  options: { connections?: number; eventsPerConnection?: number; progress?: (line: string) => void } = {},
): Promise<EventPublisherRow[]> {
  const connections = options.connections ?? 500;
  const perConnection = Math.max(1, options.eventsPerConnection ?? 3);
  const world = await startLocalWorld();
  try {
    const rows: EventPublisherRow[] = [];
    for (const [label, n, k] of [
      ['one event per connection', connections, 1],
      [`${perConnection} events per connection`, Math.max(1, Math.round(connections / perConnection)), perConnection],
    ] as const) {
      await world.reset();
      const users = await seedUsers(world, { count: n, expiresInSeconds: 7200, profilesPerUser: 0 });
      for (let i = 1; i < k; i++) {
        await world.admin.query(
          `UPDATE oauth_tokens SET proactive_refresh_enabled = NOT proactive_refresh_enabled
            WHERE user_id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid)`,
          { ids: { sqlType: 'json', value: JSON.stringify(users.map((u) => u.userId)) } },
        );
      }
      const db = new DataApiDatabase({ client: world.emulator.createClient(), ...world.emulator.target });
      let accepted = 0;
      const bus: EventBus = {
        putEvents: (entries: readonly BusEntry[]) => {
          accepted += entries.length;
          return Promise.resolve({ failed: [] });
        },
      };
      const started = performance.now();
      const summary = await runEventPublisher({
        db,
        bus,
        logger: silentLogger,
        metrics: new MetricTotals(),
        remainingTimeMs: () => 600_000,
      });
      const seconds = (performance.now() - started) / 1000;
      await db.close();
      if (summary.published !== n * k || accepted !== n * k)
        throw new Error(`expected ${n * k} events published, got ${summary.published} (${accepted} accepted)`);
      const row: EventPublisherRow = {
        connections: n,
        events: summary.published,
        seconds,
        eventsPerSecond: summary.published / seconds,
        putEventsCalls: summary.putEventsCalls,
        dataApiCalls: summary.dataApiCalls,
        dataApiCallsPerEvent: summary.dataApiCalls / summary.published,
      };
      options.progress?.(
        `  ${label}: ${row.events} events in ${seconds.toFixed(1)} s = ${row.eventsPerSecond.toFixed(0)}/s, ${row.putEventsCalls} PutEvents calls, ${row.dataApiCalls} Data API calls (${row.dataApiCallsPerEvent.toFixed(2)} per event)`,
      );
      rows.push(row);
    }
    return rows;
  } finally {
    await world.close();
  }
}

export function renderEventPublisherMarkdown(rows: readonly EventPublisherRow[]): string {
  return [
    '### Event publisher (outbox → PutEvents, Data API path)',
    '',
    '| connections | events | seconds | events/s | PutEvents calls | Data API calls | Data API calls per event |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.connections} | ${r.events} | ${r.seconds.toFixed(1)} | ${r.eventsPerSecond.toFixed(0)} | ${r.putEventsCalls} | ${r.dataApiCalls} | ${r.dataApiCallsPerEvent.toFixed(2)} |`,
    ),
  ].join('\n');
}
