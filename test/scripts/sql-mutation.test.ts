import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';
import { applyEdit, readEdits, SqlEdit, table } from '../../scripts/sql-mutation';

// The SQL mutation harness's edits (scripts/sql-mutations.json) must still apply to today's
// migrations and name test files that exist: an edit whose text a later change removed would
// stop the run before it starts, and one whose tests were moved would measure nothing.

const ROOT = join(__dirname, '..', '..');
const edits = readEdits();

test('the edits have unique ids and cover the API, budget, privilege and lifecycle migrations', () => {
  expect(new Set(edits.map((e) => e.id)).size).toBe(edits.length);
  expect(edits.length).toBeGreaterThanOrEqual(25);
  const files = new Set(edits.map((e) => e.file));
  for (const migration of ['0013', '0015', '0018', '0019', '0020', '0021'])
    expect([...files].some((f) => f.startsWith(`${migration}_`))).toBe(true);
});

test.each(edits.map((e) => [e.id, e] as const))('%s applies to its migration and names existing tests', (_id, edit) => {
  const text = readFileSync(join(DEFAULT_MIGRATIONS_DIR, edit.file), 'utf8');
  const edited = applyEdit(text, edit);
  expect(edited).not.toBe(text);
  expect(edit.description.length).toBeGreaterThan(0);
  expect(edit.tests.length).toBeGreaterThan(0);
  for (const file of edit.tests) expect([file, existsSync(join(ROOT, file))]).toEqual([file, true]);
});

/** The Up section of a migration (what applying it runs). */
const up = (file: string) => readFileSync(join(DEFAULT_MIGRATIONS_DIR, file), 'utf8').split('-- Down Migration')[0];

test.each(edits.map((e) => [e.id, e] as const))(
  '%s edits the definition in force: no later migration redefines its function',
  (_id, edit) => {
    const text = up(edit.file);
    let at = -1;
    for (let n = 0; n < (edit.occurrence ?? 1); n += 1) at = text.indexOf(edit.search, at + 1);
    expect(at).toBeGreaterThanOrEqual(0);
    // A grant is not part of a function's definition: a later CREATE OR REPLACE keeps it.
    if (/^\s*(GRANT|REVOKE)\b/.test(edit.search)) return;
    const functions = [...text.slice(0, at).matchAll(/CREATE (?:OR REPLACE )?FUNCTION ([\w.]+)\(/g)];
    if (functions.length === 0) return; // not in a function (a grant, a policy)
    const name = functions[functions.length - 1][1];
    const later = readdirSync(DEFAULT_MIGRATIONS_DIR)
      .filter((f) => /^\d{4}_.*\.(sql|js)$/.test(f) && f > edit.file)
      .filter((f) => new RegExp(`CREATE (OR REPLACE )?FUNCTION ${name.replace('.', '\\.')}\\(`).test(up(f)));
    expect([name, later]).toEqual([name, []]);
  },
);

test('an edit whose text is missing, or found twice without saying which, is refused', () => {
  const edit = (search: string, occurrence?: number): SqlEdit => ({
    id: 'x',
    file: 'f.sql',
    search,
    replace: 'Z',
    description: 'd',
    tests: [],
    ...(occurrence === undefined ? {} : { occurrence }),
  });
  expect(() => applyEdit('abc', edit('q'))).toThrow(/not in/);
  expect(() => applyEdit('a b a', edit('a'))).toThrow(/occurs 2 times/);
  expect(applyEdit('a b a', edit('a', 2))).toBe('a b Z');
  expect(applyEdit('a b a', edit('a', 1))).toBe('Z b a');
  expect(() => applyEdit('a b a', edit('a', 3))).toThrow(/occurrence 3/);
});

test('the report names each edit with its verdict', () => {
  const [first, second] = edits;
  const report = table([
    { edit: first, killed: true, by: ['some test'], seconds: 1 },
    { edit: second, killed: false, by: [], seconds: 1 },
  ]);
  expect(report).toContain('1 of 2 edits killed (50.0 %)');
  expect(report).toContain(`| \`${first.id}\` | \`${first.file}\` | ${first.description} | killed | some test |`);
  expect(report).toContain(`| \`${second.id}\` | \`${second.file}\` | ${second.description} | **survived** |  |`);
});
