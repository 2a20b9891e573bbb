import { measureEventPublisher, renderEventPublisherMarkdown } from '../../bench/events';

// bench/events.ts at tiny sizes (the code `npm run bench` runs): every figure comes from the
// run's own counts. No assertion on speed.

test('the event publisher bench publishes every event it prepared and reports its calls', async () => {
  const rows = await measureEventPublisher({ connections: 12, eventsPerConnection: 3 });
  expect(rows.map((r) => [r.connections, r.events])).toEqual([
    [12, 12],
    [4, 12],
  ]);
  for (const r of rows) {
    expect(r.putEventsCalls).toBeGreaterThanOrEqual(Math.ceil(r.events / 10));
    expect(r.dataApiCallsPerEvent).toBeCloseTo(r.dataApiCalls / r.events);
    expect(r.eventsPerSecond).toBeCloseTo(r.events / r.seconds);
  }
  expect(renderEventPublisherMarkdown(rows)).toContain('| 4 | 12 |');
}, 120_000);
