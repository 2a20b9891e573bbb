/**
 * `npm run test:mutation:sql [-- <edit id>...] [--tests=<file>,...] [--list]`: mutation testing of
 * the SQL in the migrations, which Stryker cannot mutate (docs/mutation.md, "SQL mutation harness").
 * `--tests=` runs the given test files for every edit instead of each edit's own (to show that
 * one new test file kills the edits it is written for).
 *
 * Each edit of scripts/sql-mutations.json is a plausible bug in one migration (a dropped
 * condition, a flipped comparison, a missing bound…): its file, a text that occurs exactly once
 * in it, what replaces it, and the test files that should catch it. One edit at a time, the
 * migrations directory is copied to a scratch directory, the edit applied there, and the edit's
 * test files run with jest against it (LOCAL_MIGRATIONS_DIR: every local world applies that
 * directory instead of the repository's). A failing run kills the edit; a passing one lets it
 * survive. First the tests run once on the unedited migrations: they must pass there, or no
 * edit's verdict would mean anything.
 *
 * One PostgreSQL server serves the whole run (TEST_SHARED_POSTGRES_URL, as in scripts/mutation.ts).
 * Prints a table of every edit, killed or survived, and writes it to reports/sql-mutation.md;
 * exits 1 when an edit survived or the baseline failed.
 */
import { spawn } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { LOCAL_MIGRATIONS_DIR_ENV } from '../local/world';
import { SHARED_POSTGRES_ENV, startPostgres } from '../local/postgres/embedded-postgres';
import { DEFAULT_MIGRATIONS_DIR } from '../lambda/migrate/run-migrations';

const ROOT = resolve(__dirname, '..');
export const EDITS_FILE = join(ROOT, 'scripts', 'sql-mutations.json');

export interface SqlEdit {
  /** Short unique name. */
  readonly id: string;
  /** The migration file, relative to migrations/. */
  readonly file: string;
  /** Text that occurs exactly once in the file (or at least `occurrence` times). */
  readonly search: string;
  /** Which occurrence to edit (1: the first), when the text occurs more than once (an Up and a Down section). */
  readonly occurrence?: number;
  readonly replace: string;
  /** The bug the edit plants, in words. */
  readonly description: string;
  /** The jest test files (relative to the repository) that should fail with it. */
  readonly tests: readonly string[];
}

export function readEdits(file = EDITS_FILE): SqlEdit[] {
  return (JSON.parse(readFileSync(file, 'utf8')) as { edits: SqlEdit[] }).edits;
}

/** The migration's text with the edit applied; throws unless the search text is found where the edit says. */
export function applyEdit(text: string, edit: SqlEdit): string {
  const at: number[] = [];
  for (let i = text.indexOf(edit.search); i >= 0; i = text.indexOf(edit.search, i + 1)) at.push(i);
  if (at.length === 0) throw new Error(`${edit.id}: the search text is not in ${edit.file}`);
  if (edit.occurrence === undefined && at.length > 1)
    throw new Error(`${edit.id}: the search text occurs ${at.length} times in ${edit.file} (say which: occurrence)`);
  const start = at[(edit.occurrence ?? 1) - 1];
  if (start === undefined) throw new Error(`${edit.id}: occurrence ${edit.occurrence} is not in ${edit.file}`);
  if (edit.search === edit.replace) throw new Error(`${edit.id}: the replacement is the search text`);
  return text.slice(0, start) + edit.replace + text.slice(start + edit.search.length);
}

/** A scratch copy of the migrations with `edit` applied (none: unedited). */
function scratchMigrations(edit: SqlEdit | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), 'sql-mutation-'));
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  if (edit) {
    const path = join(dir, edit.file);
    writeFileSync(path, applyEdit(readFileSync(path, 'utf8'), edit));
  }
  return dir;
}

function jest(tests: readonly string[], env: NodeJS.ProcessEnv): Promise<{ code: number; output: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(join(ROOT, 'node_modules', '.bin', 'jest'), ['--runInBand', '--ci', '--verbose', ...tests], {
      cwd: ROOT,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolvePromise({ code: code ?? (signal ? 1 : 0), output }));
  });
}

/** The names of the tests jest reported failed (✕ lines), for the table. */
function failedTests(output: string): string[] {
  return [...output.matchAll(/^\s*✕ (.+?)(?: \(\d+ m?s\))?$/gm)].map((m) => m[1]);
}

interface Verdict {
  readonly edit: SqlEdit;
  readonly killed: boolean;
  readonly by: string[];
  readonly seconds: number;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function table(verdicts: readonly Verdict[]): string {
  const killed = verdicts.filter((v) => v.killed).length;
  const lines = [
    `SQL mutation score: ${killed} of ${verdicts.length} edits killed (${((100 * killed) / Math.max(1, verdicts.length)).toFixed(1)} %)`,
    '',
    '| Edit | Migration | Bug planted | Verdict | Failing tests (first) |',
    '| ---- | --------- | ----------- | ------- | --------------------- |',
    ...verdicts.map(
      (v) =>
        `| \`${v.edit.id}\` | \`${v.edit.file}\` | ${cell(v.edit.description)} | ${v.killed ? 'killed' : '**survived**'} | ${cell(v.by[0] ?? (v.killed ? '(the run failed)' : ''))} |`,
    ),
  ];
  return lines.join('\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const all = readEdits();
  const ids = new Set(all.map((e) => e.id));
  if (ids.size !== all.length) throw new Error('edit ids must be unique');
  if (args.includes('--list')) {
    for (const e of all) process.stdout.write(`${e.id}\t${e.file}\t${e.description}\n`);
    return 0;
  }
  const testsArg = args.find((a) => a.startsWith('--tests='));
  const chosen = args.filter((a) => !a.startsWith('--'));
  for (const a of chosen) if (!ids.has(a)) throw new Error(`unknown edit "${a}"`);
  const edits = (chosen.length ? all.filter((e) => chosen.includes(e.id)) : all).map((e) =>
    testsArg ? { ...e, tests: testsArg.slice('--tests='.length).split(',') } : e,
  );
  // Every edit must apply to today's migrations before anything runs.
  for (const e of edits) applyEdit(readFileSync(join(DEFAULT_MIGRATIONS_DIR, e.file), 'utf8'), e);

  const pg = await startPostgres();
  const stop = () => void pg.stop().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const env = (dir: string) => ({ ...process.env, [SHARED_POSTGRES_ENV]: pg.url(), [LOCAL_MIGRATIONS_DIR_ENV]: dir });
  const verdicts: Verdict[] = [];
  try {
    const allTests = [...new Set(edits.flatMap((e) => e.tests))];
    const baseDir = scratchMigrations(undefined);
    process.stdout.write(`baseline: ${allTests.join(' ')}\n`);
    const baseline = await jest(allTests, env(baseDir));
    rmSync(baseDir, { recursive: true, force: true });
    if (baseline.code !== 0) {
      process.stdout.write(`${baseline.output}\nThe tests fail on the unedited migrations: no verdict.\n`);
      return 1;
    }
    for (const edit of edits) {
      const started = Date.now();
      const dir = scratchMigrations(edit);
      try {
        const run = await jest(edit.tests, env(dir));
        const seconds = Math.round((Date.now() - started) / 1000);
        const verdict = { edit, killed: run.code !== 0, by: failedTests(run.output), seconds };
        verdicts.push(verdict);
        process.stdout.write(
          `${edit.id}: ${verdict.killed ? 'killed' : 'SURVIVED'} (${seconds} s)${verdict.by[0] ? ` by "${verdict.by[0]}"` : ''}\n`,
        );
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
  } finally {
    await pg.stop();
  }
  const report = table(verdicts);
  mkdirSync(join(ROOT, 'reports'), { recursive: true });
  writeFileSync(join(ROOT, 'reports', 'sql-mutation.md'), `${report}\n`);
  process.stdout.write(`\n${report}\n`);
  return verdicts.every((v) => v.killed) ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
