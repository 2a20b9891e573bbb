import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const LINT = resolve(__dirname, '..', '..', 'scripts', 'lint-migrations.js');
const MIGRATIONS = resolve(__dirname, '..', '..', 'migrations');

async function lint(extra?: { name: string; body: string }) {
  const dir = mkdtempSync(join(tmpdir(), 'lint-'));
  try {
    cpSync(MIGRATIONS, dir, { recursive: true });
    if (extra) writeFileSync(join(dir, extra.name), extra.body);
    return await run(process.execPath, [LINT], { env: { ...process.env, MIGRATIONS_DIR: dir } }).then(
      (r) => ({ code: 0, output: r.stdout + r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, output: e.stdout + e.stderr }),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('the repository’s migrations pass squawk', async () => {
  const result = await lint();
  expect(result.output).toMatch(/migration files clean/);
  expect(result.code).toBe(0);
});

test.each([
  [
    'a blocking index build in SQL',
    '9999_bad.sql',
    "-- Up Migration\nSET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = '5s';\nCREATE INDEX idx_users_email2 ON users (email);\n",
    /require-concurrent-index-creation/,
  ],
  [
    'a validated constraint added in a JS migration',
    '9999_bad.js',
    "exports.up = (pgm) => { pgm.sql(\"SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '5s'; ALTER TABLE users ADD CONSTRAINT c CHECK (email <> '');\"); };\n",
    /constraint-missing-not-valid/,
  ],
])('an unsafe migration fails the lint: %s', async (_label, name, body, rule) => {
  const result = await lint({ name, body });
  expect(result.code).not.toBe(0);
  expect(result.output).toMatch(rule);
});
