/**
 * `npm run test:mutation [-- <group>...] [-- <stryker options>]`: StrykerJS over the modules
 * where a bug costs most, one Stryker run per group (docs/mutation.md).
 *
 *   npm run test:mutation                      # every group, one after the other
 *   npm run test:mutation -- crypto db-values  # these groups only
 *   npm run test:mutation -- on-event --force  # options after the groups go to `stryker run`
 *
 * Each group mutates its modules and runs only the jest files that test them (a group's score
 * is what those files detect; other files could only kill more). One PostgreSQL server is
 * started for the whole run and named in TEST_SHARED_POSTGRES_URL: the tests' startPostgres()
 * then creates a fresh database on it instead of starting a server per test file, which is
 * most of what a mutant cost (local/postgres/embedded-postgres.ts).
 *
 * Incremental: each group keeps its results in scripts/mutation-results/<group>.json
 * (committed), so a run only tests the mutants whose code or tests changed since; `--force`
 * tests them all again. The exit code is Stryker's last non-zero one: below 85 % detected in a
 * group (`thresholds.break`) fails the run, after every group has run.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { SHARED_POSTGRES_ENV, startPostgres } from '../local/postgres/embedded-postgres';

const ROOT = resolve(__dirname, '..');

/** Where each group's incremental results are kept (committed), relative to ROOT. */
export const RESULTS_DIR = 'scripts/mutation-results';

interface Group {
  readonly mutate: readonly string[];
  /** jest testMatch globs (relative to the repository) of the files that test the modules. */
  readonly tests: readonly string[];
  /**
   * Stryker's `timeoutMS` for the group (added to its estimate from the dry run) when the
   * configuration's 60 s is more than the group's tests need: each mutant that hangs waits it out.
   */
  readonly timeoutMS?: number;
}

/** The job test files that run the token refresh (its core, store or handler). */
const TOKEN_REFRESH_TESTS = [
  'test/jobs/token-refresh/*.test.ts',
  'test/jobs/token-refresh/store/*.test.ts',
  'test/jobs/throttling.test.ts',
  'test/jobs/write-back.test.ts',
  'test/jobs/shared-budget.test.ts',
  'test/jobs/deadlines.test.ts',
  'test/jobs/dry-run.test.ts',
  'test/jobs/container.test.ts',
  'test/scripts/job.test.ts',
  'test/jobs/regions.test.ts',
  'test/jobs/dispatcher/*.test.ts', // the claims of given ids
];

/** The job test files that run the account sync (its core, store or handler). */
const ACCOUNT_SYNC_TESTS = [
  'test/jobs/account-sync/*.test.ts',
  'test/jobs/account-sync/store/*.test.ts',
  'test/jobs/deadlines.test.ts',
  'test/jobs/dry-run.test.ts',
  'test/jobs/container.test.ts',
  'test/scripts/job.test.ts',
  'test/jobs/regions.test.ts',
  'test/jobs/dispatcher/*.test.ts', // the claims of given ids
];

/**
 * The accounts API's test files (each starts the API's local world). Not the isolation harness
 * (3,000 requests, minutes per mutant): it could only add kills.
 */
const API_TESTS = [
  'test/api/accounts-api/connections.test.ts',
  'test/api/accounts-api/connect-*.test.ts',
  'test/api/accounts-api/requests.test.ts',
  'test/api/accounts-api/input-validation.test.ts',
  'test/api/accounts-api/rate-budget.test.ts',
  'test/api/accounts-api/handler.test.ts',
  'test/api/accounts-api/store.test.ts',
];

/**
 * jest's `roots` in every group's run: the directories whose modules jest follows from a test
 * file to the mutated ones when it finds a group's tests (Stryker's `enableFindRelatedTests`, in
 * the dry run too). jest.config.js's roots are test/ only, and Stryker adds the mutated modules'
 * own directories, so a test that reaches a module through a module elsewhere (a job's core or
 * handler, the dispatcher, the container, the local world) would not be found and the dry run
 * would leave it out: without these, the split job stores (lambda/account-sync/store/) were
 * reached by 5 of their group's 19 test files, and lambda/token-refresh/store/ by 6 of 22.
 */
export const RELATED_ROOTS = ['test', 'lambda', 'local', 'scripts'];

/** The rate budget's test files: its TypeScript, its SQL functions, the jobs and the API on it. */
const RATE_BUDGET_TESTS = [
  'test/runtime/rate-budget.test.ts',
  'test/migrations/shared-rate-budget.test.ts',
  'test/jobs/shared-budget.test.ts',
  'test/api/accounts-api/rate-budget.test.ts',
];

/** Stryker's timeoutMS for the job groups (see below). */
const JOB_TIMEOUT_MS = 20_000;

export const GROUPS: Record<string, Group> = {
  crypto: {
    mutate: ['lambda/shared/token-crypto.ts'],
    tests: ['test/runtime/token-crypto.test.ts', 'test/runtime/config.test.ts', 'test/runtime/secrets.test.ts'],
  },
  'db-values': {
    mutate: [
      'lambda/shared/db/named-parameters.ts',
      'lambda/shared/db/data-api-values.ts',
      'lambda/shared/db/parameter-types.ts',
    ],
    // The unit tests: the PostgreSQL contract tests (db/port, db/data-api-database) run
    // the same values through a database at several seconds per mutant, and could only add kills.
    tests: ['test/runtime/db/named-parameters.test.ts', 'test/runtime/db/data-api-values.test.ts'],
  },
  // The tests on small migrations of their own; the ones that apply the repository's
  // migrations (lifecycle, schema, the custom resource's full lifecycle) take a minute per
  // mutant here, and could only add kills.
  'on-event': {
    mutate: ['lambda/migrate/on-event.ts'],
    tests: ['test/migrations/on-event/decisions.test.ts'],
  },
  'run-migrations': {
    mutate: ['lambda/migrate/run-migrations.ts'],
    tests: ['test/migrations/run-migrations.test.ts'],
    // The deadline tests give the run 1.5 s; a mutant that removes a cap leaves a
    // pg_sleep(600) or an advisory-lock wait running, which only the timeout ends.
    timeoutMS: 20_000,
  },
  // Its own tests, each call inside a test: the custom resource's tests also make the logins in
  // beforeAll hooks, which makes three quarters of the mutants static (each would run all 28
  // of that file's tests, two minutes here); they could only add kills.
  'worker-login': {
    mutate: ['lambda/migrate/worker-login.ts'],
    tests: ['test/migrations/worker-login.test.ts'],
  },
  // The job stores and cores, one group per module with the test files that call it (through
  // the core, the handler or directly), so that each group finishes and keeps its results.
  // The jobs run against a deadline in every test (a few seconds), so a mutant that takes a
  // deadline or a cap away hangs until the timeout: 20 s on top of Stryker's estimate is ample.
  'token-refresh-core': {
    mutate: ['lambda/token-refresh/core.ts'],
    tests: TOKEN_REFRESH_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'token-refresh-store': {
    mutate: [
      'lambda/token-refresh/store/due.ts',
      'lambda/token-refresh/store/claims.ts',
      'lambda/token-refresh/store/dispatch-marks.ts',
      'lambda/token-refresh/store/write-back.ts',
    ],
    tests: [...TOKEN_REFRESH_TESTS, 'test/jobs/claim-cost.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'account-sync-core': {
    mutate: [
      'lambda/account-sync/core.ts',
      'lambda/account-sync/run-context.ts',
      'lambda/account-sync/access-token.ts',
      'lambda/account-sync/profiles.ts',
      'lambda/account-sync/preview.ts',
    ],
    tests: ACCOUNT_SYNC_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'account-sync-store': {
    mutate: [
      'lambda/account-sync/store/due.ts',
      'lambda/account-sync/store/claims.ts',
      'lambda/account-sync/store/dispatch-marks.ts',
      'lambda/account-sync/store/write-back.ts',
    ],
    tests: [...ACCOUNT_SYNC_TESTS, 'test/jobs/claim-cost.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  // Issue 26: the code added since the first runs. The API's and the token route's tests each
  // start a local world (PostgreSQL, the Data API emulator, the fake Amazon) per file.
  // One group per seam, each small enough to finish in an hour at concurrency 1 and keep its
  // results: every mutant runs the API test files that cover it, and each file starts a world.
  'accounts-api': {
    mutate: ['lambda/accounts-api/core.ts'],
    tests: API_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'accounts-api-store': {
    mutate: ['lambda/accounts-api/store.ts', 'lambda/accounts-api/cursor.ts'],
    tests: API_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'accounts-api-http': {
    mutate: ['lambda/shared/http.ts', 'lambda/accounts-api/jwt.ts'],
    tests: API_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'token-route': {
    mutate: [
      'lambda/token-route/core.ts',
      'lambda/token-refresh/on-demand.ts',
      'lambda/token-refresh/store/on-demand.ts',
      'lambda/token-route/route.ts',
    ],
    tests: [
      'test/api/token-route/*.test.ts',
      'test/scripts/api/token-route.test.ts',
      'test/infra/accounts-api.test.ts',
    ],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  dispatcher: {
    mutate: [
      'lambda/dispatcher/config.ts',
      'lambda/dispatcher/core.ts',
      'lambda/dispatcher/handler.ts',
      'lambda/dispatcher/selections.ts',
      'lambda/dispatcher/sqs-sender.ts',
    ],
    tests: ['test/jobs/dispatcher/*.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'fan-out': {
    mutate: ['lambda/shared/jobs/fan-out.ts'],
    tests: ['test/runtime/jobs/fan-out.test.ts', 'test/jobs/dispatcher/*.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'rate-limiter': {
    mutate: ['lambda/shared/amazon/rate-limiter.ts'],
    tests: [
      'test/runtime/limits-and-backoff.test.ts',
      'test/runtime/amazon/*.test.ts',
      'test/runtime/rate-budget.test.ts',
    ],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'rate-budget': {
    mutate: ['lambda/shared/amazon/rate-budget.ts'],
    tests: RATE_BUDGET_TESTS,
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'rate-budget-store': {
    mutate: ['lambda/shared/amazon/rate-budget-store.ts'],
    // And the store's own tests on both database paths: its statements (store), the database's
    // bounds (clamps), the queue of refused callers and the release (queue). Not the folder's
    // load-sensitive drawers and throttle-wave files.
    tests: [
      ...RATE_BUDGET_TESTS,
      'test/runtime/rate-budget/store.test.ts',
      'test/runtime/rate-budget/clamps.test.ts',
      'test/runtime/rate-budget/queue.test.ts',
    ],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  authentication: {
    mutate: ['lambda/shared/db/authentication.ts'],
    tests: ['test/runtime/db/authentication/*.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'refresh-outcome': {
    mutate: ['lambda/token-refresh/outcome.ts'],
    tests: ['test/jobs/token-refresh/outcome.test.ts', 'test/jobs/token-refresh/core.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
  'api-share': {
    mutate: ['lambda/shared/amazon/api-share.ts'],
    tests: ['test/api/accounts-api/connect-limits.test.ts'],
    timeoutMS: JOB_TIMEOUT_MS,
  },
};

function parseArgs(argv: string[]): { groups: string[]; strykerArgs: string[] } {
  const groups: string[] = [];
  let i = 0;
  for (; i < argv.length && !argv[i].startsWith('-'); i += 1) {
    if (!(argv[i] in GROUPS)) throw new Error(`unknown group "${argv[i]}" (groups: ${Object.keys(GROUPS).join(', ')})`);
    groups.push(argv[i]);
  }
  return { groups: groups.length ? groups : Object.keys(GROUPS), strykerArgs: argv.slice(i) };
}

/** stryker.config.json with the group's modules, tests, reports and incremental file. */
function writeGroupConfig(name: string, group: Group): string {
  const base = JSON.parse(readFileSync(join(ROOT, 'stryker.config.json'), 'utf8')) as Record<string, unknown>;
  const jest = base.jest as Record<string, unknown>;
  const config = {
    ...base,
    $schema: undefined,
    mutate: group.mutate,
    // One jest process: test files that share the PostgreSQL server run one after the other.
    concurrency: 1,
    ...(group.timeoutMS === undefined ? {} : { timeoutMS: group.timeoutMS }),
    jest: {
      ...jest,
      config: {
        testMatch: group.tests.map((glob) => `<rootDir>/${glob}`),
        roots: RELATED_ROOTS.map((dir) => `<rootDir>/${dir}`),
      },
    },
    incrementalFile: `${RESULTS_DIR}/${name}.json`,
    htmlReporter: { fileName: `reports/mutation/${name}.html` },
    jsonReporter: { fileName: `reports/mutation/${name}.json` },
  };
  const dir = join(ROOT, 'reports', 'mutation');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${name}.config.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

function stryker(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(join(ROOT, 'node_modules', '.bin', 'stryker'), ['run', ...args], {
      cwd: ROOT,
      env,
      stdio: 'inherit',
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolvePromise(code ?? (signal ? 1 : 0)));
  });
}

async function main(): Promise<number> {
  const { groups, strykerArgs } = parseArgs(process.argv.slice(2));
  const pg = await startPostgres({ authMethod: 'scram-sha-256' });
  const stop = () => void pg.stop().finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  let exitCode = 0;
  try {
    for (const name of groups) {
      const started = Date.now();
      process.stdout.write(`\n== mutation group ${name}: ${GROUPS[name].mutate.join(', ')}\n`);
      const code = await stryker([writeGroupConfig(name, GROUPS[name]), '--incremental', ...strykerArgs], {
        ...process.env,
        [SHARED_POSTGRES_ENV]: pg.url(),
      });
      const seconds = Math.round((Date.now() - started) / 1000);
      process.stdout.write(`== mutation group ${name}: exit code ${code}, ${seconds} s\n`);
      if (code !== 0) exitCode = code;
    }
  } finally {
    await pg.stop();
  }
  return exitCode;
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
