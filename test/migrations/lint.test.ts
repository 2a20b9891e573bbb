import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const LINT = resolve(__dirname, '..', '..', 'scripts', 'lint-migrations.js');
const MIGRATIONS = resolve(__dirname, '..', '..', 'migrations');

async function lint(...extras: { name: string; body: string }[]) {
  const dir = mkdtempSync(join(tmpdir(), 'lint-'));
  try {
    cpSync(MIGRATIONS, dir, { recursive: true });
    for (const extra of extras) writeFileSync(join(dir, extra.name), extra.body);
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

const BAD_SQL = {
  name: '9999_bad.sql',
  body: "-- Up Migration\nSET LOCAL lock_timeout = '1s';\nSET LOCAL statement_timeout = '5s';\nCREATE INDEX idx_users_email2 ON users (email);\n",
};
const BAD_JS = {
  name: '9999_bad.js',
  body: "exports.up = (pgm) => { pgm.sql(\"SET LOCAL lock_timeout = '1s'; SET LOCAL statement_timeout = '5s'; ALTER TABLE users ADD CONSTRAINT c CHECK (email <> '');\"); };\n",
};

test.each([
  ['a blocking index build in SQL', BAD_SQL.name, BAD_SQL.body, /require-concurrent-index-creation/],
  ['a validated constraint added in a JS migration', BAD_JS.name, BAD_JS.body, /constraint-missing-not-valid/],
])('an unsafe migration fails the lint: %s', async (_label, name, body, rule) => {
  const result = await lint({ name, body });
  expect(result.code).not.toBe(0);
  expect(result.output).toMatch(rule);
});

test('every finding of every file is reported: an SQL finding does not hide the JS ones', async () => {
  const result = await lint(BAD_SQL, BAD_JS);
  expect(result.code).not.toBe(0);
  expect(result.output).toMatch(/require-concurrent-index-creation[\s\S]*?\/9999_bad\.sql:4/);
  expect(result.output).toMatch(/constraint-missing-not-valid[\s\S]*?\/9999_bad\.js\.up\.sql:2/);
  expect(result.output).not.toMatch(/migration files clean/);
});

test('a JS migration that cannot be recorded fails the lint without hiding the other files’ findings', async () => {
  const broken = { name: '9998_broken.js', body: "exports.up = () => { throw new Error('cannot build'); };\n" };
  const result = await lint(broken, BAD_SQL, BAD_JS);
  expect(result.code).not.toBe(0);
  expect(result.output).toContain('9998_broken.js: could not be recorded: cannot build');
  expect(result.output).toMatch(/require-concurrent-index-creation/);
  expect(result.output).toMatch(/constraint-missing-not-valid/);
});
