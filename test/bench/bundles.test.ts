/**
 * The bundle section of `npm run bench` (bench/bundles.ts) on small stand-in bundles: each
 * load is a real require in a fresh process, and the figures reach the table and the targets.
 * The real bundles' sizes are checked in test/infra/node-function.test.ts. No assertion on
 * speed: tests check behaviour, never wall-clock time.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BundleFigures, loadTimesMs, median } from '../../bench/bundles';
import { buildReport, renderMarkdown } from '../../bench/report';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'bench-bundles-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test('each measurement requires the bundle in a fresh process, with external packages found in node_modules', () => {
  const marker = join(dir, 'loaded.txt');
  const bundle = join(dir, 'index.js');
  // Outside the repository, `pg` resolves only through the NODE_PATH the bench sets (like the
  // AWS SDK the job bundles leave to the Lambda runtime).
  writeFileSync(
    bundle,
    `require('pg'); require('node:fs').appendFileSync(${JSON.stringify(marker)}, process.pid + '\\n');\n`,
  );

  const times = loadTimesMs(bundle, 3);

  expect(times).toHaveLength(3);
  for (const t of times) expect(Number.isFinite(t) && t > 0).toBe(true);
  const pids = readFileSync(marker, 'utf8').trim().split('\n');
  expect(new Set(pids).size).toBe(3);
});

test('a bundle that throws while loading fails the measurement', () => {
  const bundle = join(dir, 'broken.js');
  writeFileSync(bundle, "throw new Error('broken at load');\n");
  expect(() => loadTimesMs(bundle, 1)).toThrow(/broken at load/);
});

test('median of odd and even counts', () => {
  expect(median([5, 1, 3])).toBe(3);
  expect(median([4, 1, 3, 2])).toBe(2.5);
});

test('the figures are printed in their own table and checked against each bundle\u2019s limit', () => {
  const bundles: BundleFigures[] = [
    {
      name: 'token-refresh',
      bytes: 97_000,
      mapBytes: 138_000,
      maxBytes: 300_000,
      loadMs: [50, 40, 60, 45, 55],
      medianLoadMs: 50,
    },
    {
      name: 'migration',
      bytes: 1_200_000,
      mapBytes: 1_500_000,
      maxBytes: 1_000_000,
      loadMs: [200, 210, 190, 205, 195],
      medianLoadMs: 200,
    },
  ];
  const report = buildReport({
    measuredAt: '2030-01-01T00:00:00.000Z',
    machine: { cpus: 2, node: '24.0.0', loadAverageBefore: [0, 0, 0], loadAverageAfter: [0, 0, 0] },
    latencyMs: 100,
    runs: [],
    migration: null,
    bundles,
    totalSeconds: 1,
  });

  expect(report.targets).toEqual([
    { name: 'token-refresh Lambda bundle: index.js, minified', measured: '97 KB', target: '≤ 300 KB', met: true },
    { name: 'migration Lambda bundle: index.js, minified', measured: '1,200 KB', target: '≤ 1,000 KB', met: false },
  ]);
  const text = renderMarkdown(report);
  expect(text).toContain('| token-refresh | 97 KB | 138 KB | 300 KB | yes | 50 ms (50, 40, 60, 45, 55) |');
  expect(text).toContain('| migration | 1,200 KB | 1,500 KB | 1,000 KB | **NO** | 200 ms (200, 210, 190, 205, 195) |');
  expect(text).toContain('| migration Lambda bundle: index.js, minified | 1,200 KB | ≤ 1,000 KB | **NOT MET** |');
});
