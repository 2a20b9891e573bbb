import { measureReencryption, renderReencryptionMarkdown } from '../../bench/reencrypt';

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
  expect(renderReencryptionMarkdown(r)).toContain('| Data API | 600 |');
}, 180_000);
