/**
 * The Lambda bundles in `npm run bench`: each function's index.js as `cdk synth` builds it
 * (the prod stack, synthesized with esbuild bundling into a temporary folder), its size against
 * its limit, and its cold-start module load time: `require('<bundle>/index.js')` in a fresh
 * `node --enable-source-maps` process (as the Lambda's NODE_OPTIONS), timed inside that process
 * around the require, median of 5. The job bundles leave the AWS SDK to the Lambda runtime; here
 * it comes from the repository's node_modules (NODE_PATH), so its load time is counted too.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { synthesizeBundles, type LambdaBundleName } from './lambda-bundles';

export interface BundleFigures {
  readonly name: LambdaBundleName;
  readonly bytes: number;
  readonly mapBytes: number;
  readonly maxBytes: number;
  /** Each run's load time, in the order measured. */
  readonly loadMs: readonly number[];
  readonly medianLoadMs: number;
}

const NODE_MODULES = resolve(__dirname, '..', 'node_modules');

/** Milliseconds `require(file)` takes in a fresh Node.js process, `runs` times. */
export function loadTimesMs(file: string, runs: number): number[] {
  const script = `const t = process.hrtime.bigint(); require(${JSON.stringify(file)}); process.stdout.write(String(Number(process.hrtime.bigint() - t) / 1e6));`;
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const out = execFileSync(process.execPath, ['--enable-source-maps', '-e', script], {
      cwd: tmpdir(),
      env: { PATH: process.env.PATH, NODE_PATH: NODE_MODULES, AWS_REGION: 'eu-west-1' },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    times.push(Number(out));
  }
  return times;
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Synthesizes the `env` stack's bundles and measures each; the folder is removed afterwards. */
export function measureBundles(
  options: { env?: string; runs?: number; progress?: (line: string) => void } = {},
): BundleFigures[] {
  const runs = options.runs ?? 5;
  const work = mkdtempSync(join(tmpdir(), 'bench-bundles-'));
  try {
    options.progress?.(`Synthesizing the ${options.env ?? 'prod'} stack with bundling…`);
    const { bundles } = synthesizeBundles(options.env ?? 'prod', join(work, 'cdk.out'));
    return bundles.map((b) => {
      options.progress?.(`  ${b.name}: ${b.bytes} bytes; loading it ${runs} times…`);
      const loadMs = loadTimesMs(join(b.dir, 'index.js'), runs);
      return {
        name: b.name,
        bytes: b.bytes,
        mapBytes: b.mapBytes,
        maxBytes: b.maxBytes,
        loadMs,
        medianLoadMs: median(loadMs),
      };
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

const kb = (bytes: number) => `${(bytes / 1000).toLocaleString('en-US', { maximumFractionDigits: 0 })} KB`;

/** The bundles' section of the bench table (markdown). */
export function renderBundles(figures: readonly BundleFigures[]): string[] {
  const lines = [
    `| Lambda bundle | index.js (minified) | index.js.map | Limit | Within limit | Module load, median of ${figures[0]?.loadMs.length ?? 0} (each run) |`,
    '|---|---:|---:|---:|---|---:|',
  ];
  for (const f of figures) {
    lines.push(
      `| ${f.name} | ${kb(f.bytes)} | ${kb(f.mapBytes)} | ${kb(f.maxBytes)} | ${f.bytes <= f.maxBytes ? 'yes' : '**NO**'} | ${f.medianLoadMs.toFixed(0)} ms (${f.loadMs.map((v) => v.toFixed(0)).join(', ')}) |`,
    );
  }
  lines.push(
    'Module load: `require()` of index.js in a fresh `node --enable-source-maps` process, timed around the require (Node.js start-up not included); the job bundles load the AWS SDK from node_modules as the Lambda runtime provides it.',
  );
  return lines;
}
