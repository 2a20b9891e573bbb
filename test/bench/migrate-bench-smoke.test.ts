/**
 * `npm run bench:migrate`'s code works: `runMigrateBench` on a few thousand rows (the same code
 * the 1,000,000-row run uses) applies every migration in one run of the runner, with the eager
 * autovacuum it is meant to run against, and its report carries what it measured. No assertion
 * on speed or stalls: tests check behaviour, never wall-clock time.
 */
import { readdirSync } from 'node:fs';
import { formatMigrateBench, runMigrateBench, type MigrateBenchResult } from '../../bench/migrate-bench';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';

const ROWS = 3000;
/** Every migration after the baseline (the benchmark applies 0001, seeds, then the rest). */
const AFTER_BASELINE = readdirSync(DEFAULT_MIGRATIONS_DIR, { withFileTypes: true })
  .filter((d) => d.isFile())
  .map((d) => d.name.replace(/\.(sql|js)$/, ''))
  .sort()
  .slice(1);

let result: MigrateBenchResult;
beforeAll(async () => {
  result = await runMigrateBench(ROWS, () => undefined);
}, 300_000);

test('applies every migration in one run of the runner, with autovacuum waking each second', () => {
  expect(result.rows).toBe(ROWS);
  expect(result.attempts).toBe(1);
  expect(result.steps.map((s) => s.name)).toEqual(AFTER_BASELINE);
  expect(result.autovacuumNaptime).toBe('1s');
  expect(result.autovacuumRuns).toBeGreaterThanOrEqual(0);
  for (const table of ['users', 'oauth_tokens', 'user_accounts'] as const)
    expect(result.writes[table]).toBeGreaterThan(0);
});

test('the report names the autovacuum settings, the attempts and the target', () => {
  const text = formatMigrateBench(result);
  expect(text).toContain(`Migrations on ${ROWS.toLocaleString('en-US')} rows per table`);
  expect(text).toContain('autovacuum (naptime 1s, 1 % scale factors)');
  expect(text).toContain('runner attempts: 1');
  expect(text).toMatch(/target \(every migration applies in one run of the runner, no write stall above 1 s\): /);
  for (const name of AFTER_BASELINE) expect(text).toContain(`| ${name} |`);
});
