import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import {
  CONTRACT_MODULES,
  CROSS_FUNCTION_IMPORTS,
  importCycles,
  importProblems,
  LOCAL_CONTRACTS,
  ruleViolations,
} from '../../scripts/check-imports';

// `npm run lint` runs scripts/check-imports.ts: the import rules docs/architecture.md states.
// These tests plant imports that break each rule, and a cycle, and expect them reported.

const ROOT = join(__dirname, '..', '..');

test('the repository keeps every import rule and has no cycle', () => {
  expect(importProblems().problems).toEqual([]);
});

test('a planted import that breaks a rule, and a planted cycle, fail the check (files on disk)', () => {
  const root = mkdtempSync(join(tmpdir(), 'imports-'));
  const write = (file: string, text: string) => {
    mkdirSync(dirname(join(root, file)), { recursive: true });
    writeFileSync(join(root, file), text);
  };
  try {
    write('lambda/account-sync/core.ts', 'export const x = 1;\n');
    write('lambda/shared/a.ts', "import { b } from './b';\nexport const a = b;\n");
    write('lambda/shared/b.ts', "import type { a } from './a';\nexport const b = 1 as unknown as typeof a;\n");
    write('lib/monitoring.ts', "import { x } from '../lambda/account-sync/core';\nexport const y = x;\n");
    expect(importProblems(root).problems).toEqual([
      'lib/monitoring.ts imports lambda/account-sync/core.ts: lib/ and bin/ import only the contract modules of lambda/ (scripts/check-imports.ts)',
      'import cycle: lambda/shared/a.ts -> lambda/shared/b.ts -> lambda/shared/a.ts',
    ]);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test.each([
  ['lambda/shared/db/port.ts', 'local/world.ts', 'lambda/ imports only npm packages and lambda/'],
  ['scripts/start.ts', 'test/support/schema.ts', 'nothing outside test/ imports test/'],
  ['bin/app.ts', 'lambda/account-sync/core.ts', 'lib/ and bin/ import only the contract modules'],
  ['local/world.ts', 'lambda/token-refresh/core.ts', 'local/ imports only the production contracts'],
  ['local/world.ts', 'scripts/start.ts', 'local/ is imported by scripts/ and bench/'],
  ['lambda/shared/jobs/runtime.ts', 'lambda/token-refresh/core.ts', 'lambda/shared/ never imports a function folder'],
  [
    'lambda/accounts-api/core.ts',
    'lambda/token-refresh/store/claims.ts',
    'a function folder imports another only where',
  ],
  // The token route and the accounts API share their HTTP helpers through lambda/shared/http.ts.
  ['lambda/token-route/core.ts', 'lambda/accounts-api/core.ts', 'a function folder imports another only where'],
])('%s importing %s is refused', (from, to, rule) => {
  const problems = ruleViolations([{ from, to }]);
  expect(problems).toHaveLength(1);
  expect(problems[0]).toContain(rule);
});

test('lambda/ importing test/ breaks two rules', () => {
  expect(ruleViolations([{ from: 'lambda/account-sync/core.ts', to: 'test/support/schema.ts' }])).toEqual([
    expect.stringContaining('nothing outside test/ imports test/'),
    expect.stringContaining('lambda/ imports only npm packages and lambda/'),
  ]);
});

test('imports the rules allow are not reported', () => {
  expect(
    ruleViolations([
      { from: 'lib/monitoring.ts', to: 'lambda/shared/jobs/metrics.ts' },
      { from: 'lambda/dispatcher/core.ts', to: 'lambda/token-refresh/store/dispatch-marks.ts' },
      { from: 'lambda/token-refresh/core.ts', to: 'lambda/shared/backoff.ts' },
      { from: 'lambda/token-route/core.ts', to: 'lambda/shared/http.ts' },
      { from: 'local/world.ts', to: 'lambda/migrate/run-migrations.ts' },
      { from: 'test/support/jobs.ts', to: 'test/support/schema.ts' },
      { from: 'scripts/start.ts', to: 'local/world.ts' },
    ]),
  ).toEqual([]);
});

test('a cycle is reported once, and a self-import counts; test/ and scripts/ are not in scope', () => {
  expect(
    importCycles([
      { from: 'lambda/a.ts', to: 'lambda/b.ts' },
      { from: 'lambda/b.ts', to: 'lambda/c.ts' },
      { from: 'lambda/c.ts', to: 'lambda/a.ts' },
      { from: 'lib/x.ts', to: 'lib/x.ts' },
      { from: 'test/a.ts', to: 'test/b.ts' },
      { from: 'test/b.ts', to: 'test/a.ts' },
    ]),
  ).toEqual(['lambda/a.ts -> lambda/b.ts -> lambda/c.ts -> lambda/a.ts', 'lib/x.ts -> lib/x.ts']);
});

test('docs/architecture.md names every contract module, local contract and cross-function exception', () => {
  const doc = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
  for (const module of [...Object.keys(CONTRACT_MODULES), ...Object.keys(LOCAL_CONTRACTS)])
    expect(doc).toContain(`\`${module}\``);
  for (const pair of Object.keys(CROSS_FUNCTION_IMPORTS)) {
    const [from, to] = pair.split(' -> ');
    expect(doc).toContain(`\`${from}/\` → \`${to}/\``);
  }
});
