import { measureReencryption, renderReencryptionMarkdown, windowMaxima, writeStats } from '../../bench/reencrypt';

// bench/reencrypt.ts at a tiny size (the code `npm run bench` and `npm run bench:reencrypt`
// run): every row is re-encrypted and read back, and every figure comes from the run's own
// counts. No assertion on speed or stalls.

test('the re-encryption bench rewrites every row it seeded and reports its calls and writes', async () => {
  const r = await measureReencryption({ rows: 600, path: 'data-api' });
  expect(r).toMatchObject({ path: 'data-api', rows: 600, batches: 3 });
  // Two calls per batch, the claim that found nothing, the count after the pass and at the end.
  expect(r.dataApiCalls).toBe(3 * 2 + 3);
  expect(r.dataApiCallsPer1000Rows).toBeCloseTo((r.dataApiCalls / 600) * 1000);
  expect(r.rowsPerSecond).toBeCloseTo(600 / r.seconds);
  expect(r.verified).toBeGreaterThan(0);
  expect(r.writes).toBeGreaterThan(0);
  // The write figures are the two windows' own: the run's writes, and the writer's alone before it.
  expect(r.during.count).toBe(r.writes);
  expect(r.during.max).toBe(r.maxWriteStallMs);
  expect(r.alone.count).toBeGreaterThan(0);
  expect(r.alone.max).toBe(r.baselineMaxWriteMs);
  expect(r.baselineSeconds).toBe(5);
  expect(r.windowMaxWriteMs.every((x) => x <= r.maxWriteStallMs)).toBe(true);
  expect(renderReencryptionMarkdown(r)).toContain('| Data API | 600 |');
}, 180_000);

test('write latencies: nearest-rank percentiles, and the longest write per window of the run', () => {
  const ms = Array.from({ length: 1000 }, (_, i) => i + 1); // 1 … 1000 ms
  expect(writeStats(ms)).toEqual({ count: 1000, p50: 500, p99: 990, p999: 999, max: 1000, over100ms: 900, over1s: 0 });
  expect(writeStats([])).toMatchObject({ count: 0, max: 0 });
  const writes = [
    { at: 1000, ms: 5 },
    { at: 1500, ms: 40 },
    { at: 2100, ms: 7 },
    { at: 3900, ms: 90 }, // in the last, partial window: not counted
  ];
  expect(windowMaxima(writes, 1000, 3950, 1000)).toEqual([40, 7]);
});
