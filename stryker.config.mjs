// Mutation testing (`npm run test:mutation`, StrykerJS): plants small bugs in the modules where
// a bug costs most and runs the jest tests that cover each one. A mutant that no test fails on
// "survives"; the clear-text report lists every survivor, the HTML one goes to reports/mutation/.
// Too slow for `npm test` (each covering test file starts its own PostgreSQL): it runs weekly in
// .github/workflows/mutation.yml. Results and verdicts on the survivors: docs/mutation.md.
//
// A subset: `npm run test:mutation -- --mutate lambda/shared/token-crypto.ts`.

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  packageManager: 'npm',
  testRunner: 'jest',
  jest: {
    projectType: 'custom',
    configFile: 'jest.config.js',
    // Dry run only the test files that import the mutated modules (directly or not).
    enableFindRelatedTests: true,
  },
  // Each mutant runs only the tests that executed its code in the dry run.
  coverageAnalysis: 'perTest',
  // Mutants that do not compile are discarded before any test runs.
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  // Two cores: two jest processes, each running its tests in band.
  concurrency: 2,
  // Integration tests start PostgreSQL; a slow start is not an infinite loop.
  timeoutMS: 60_000,
  mutate: [
    // The job stores and cores.
    'lambda/token-refresh/core.ts',
    'lambda/token-refresh/store.ts',
    'lambda/account-sync/core.ts',
    'lambda/account-sync/store.ts',
    // Token crypto.
    'lambda/shared/token-crypto.ts',
    // Named parameters and Data API values.
    'lambda/shared/db/named-parameters.ts',
    'lambda/shared/db/data-api-values.ts',
    'lambda/shared/db/parameter-types.ts',
    // The migration custom resource.
    'lambda/migrate/on-event.ts',
    'lambda/migrate/run-migrations.ts',
    'lambda/migrate/worker-login.ts',
  ],
  ignorePatterns: ['cdk.out', '.local', 'coverage', 'reports', 'bench/results', '.stryker-tmp'],
  reporters: ['clear-text', 'html', 'progress'],
  clearTextReporter: { logTests: false, reportScoreTable: true, reportMutants: true },
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  // The target is 85 % killed: below it the run fails (after writing both reports).
  thresholds: { high: 90, low: 85, break: 85 },
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
