#!/usr/bin/env node
// Lints every migration with squawk (npm `squawk-cli`) for operations that lock or rewrite big
// tables. SQL migrations are linted as they are. JS migrations (the ones that must run outside
// a transaction) are run against a recording stand-in for node-pg-migrate's builder, and the
// exact SQL they would send is linted; `pgm.db.query` answers "no rows" there.
//
// Rules switched off, and why (squawk.toml cannot carry reasons):
//   prefer-robust-stmts      - SQL migrations run inside a transaction, where a half-applied
//                              statement cannot persist; the non-transactional JS ones use
//                              IF [NOT] EXISTS throughout (the runner retries them).
//   prefer-text-field        - the spec fixes VARCHAR(50)/VARCHAR(255) columns; varchar(n)
//                              limits cost nothing on new or empty columns.
//   prefer-bigint-over-int   - counters (failure and retry counts, per-window request counts)
//                              are bounded far below 2^31 by CHECK and by design.
//   prefer-identity          - no serial/identity keys are declared; ids are uuids.
//   ban-drop-column          - only down migrations drop columns, and only ones their own up
//                              added; dropping is what "down" means.
//   ban-drop-table           - same, for tables.
const { spawnSync } = require('node:child_process');
const { mkdtempSync, readdirSync, writeFileSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join, resolve } = require('node:path');

const EXCLUDED = [
  'prefer-robust-stmts',
  'prefer-text-field',
  'prefer-bigint-over-int',
  'prefer-identity',
  'ban-drop-column',
  'ban-drop-table',
];

// MIGRATIONS_DIR: lint another folder (the tests use it to prove an unsafe migration fails).
const dir = resolve(process.env.MIGRATIONS_DIR || join(__dirname, '..', 'migrations'));
const out = mkdtempSync(join(tmpdir(), 'squawk-'));

async function recordJsMigration(file) {
  const migration = require(join(dir, file));
  const files = [];
  for (const direction of ['up', 'down']) {
    if (typeof migration[direction] !== 'function') continue;
    const statements = [];
    let transactional = true;
    const pgm = {
      sql: (text) => statements.push(text.trim().endsWith(';') ? text.trim() : `${text.trim()};`),
      noTransaction: () => {
        transactional = false;
      },
      db: { query: async () => ({ rows: [] }), select: async () => [] },
    };
    await migration[direction](pgm);
    const body = transactional ? ['BEGIN;', ...statements, 'COMMIT;'] : statements;
    const target = join(out, `${file}.${direction}.sql`);
    writeFileSync(target, `${body.join('\n')}\n`);
    files.push(target);
  }
  return files;
}

async function main() {
  const targets = [];
  const failures = [];
  for (const file of readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => d.name)
    .sort()) {
    if (file.endsWith('.sql')) targets.push(join(dir, file));
    else if (file.endsWith('.js')) {
      // A JS migration that cannot be recorded is a finding too; the other files are still linted.
      try {
        targets.push(...(await recordJsMigration(file)));
      } catch (error) {
        console.error(`${file}: could not be recorded: ${error instanceof Error ? error.message : String(error)}`);
        failures.push(file);
      }
    }
  }
  const squawk = require.resolve('squawk-cli/js/bin/squawk', { paths: [__dirname] });
  // Each group is linted whatever the other's result: every finding of every file is printed.
  const groups = [
    { name: 'SQL migrations', flags: ['--assume-in-transaction'], files: targets.filter((t) => !t.includes('.js.')) },
    { name: 'JS migrations', flags: [], files: targets.filter((t) => t.includes('.js.')) },
  ];
  try {
    for (const group of groups) {
      if (group.files.length === 0) continue;
      const result = spawnSync(
        process.execPath,
        [
          squawk,
          '--pg-version',
          '17',
          ...group.flags,
          ...EXCLUDED.flatMap((rule) => ['--exclude', rule]),
          ...group.files,
        ],
        { stdio: 'inherit' },
      );
      if (result.error) throw result.error;
      if (result.status !== 0) failures.push(group.name);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  if (failures.length > 0) {
    console.error(`squawk: findings in ${failures.join(', ')} (${targets.length} migration files linted)`);
    process.exitCode = 1;
  } else {
    console.log(`squawk: ${targets.length} migration files clean`);
  }
}

main().catch((error) => {
  console.error(error.message);
  process.exit(1);
});
