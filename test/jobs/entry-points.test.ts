import { execFile } from 'node:child_process';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { handler as sync } from '../../lambda/account-sync/handler';
import { handler as refresh } from '../../lambda/token-refresh/handler';
import { DATA_API_REQUEST_RESERVE_MS, jobContainer, runJobInvocation } from '../../lambda/shared/jobs/container';
import { DatabaseUnavailableError } from '../../lambda/shared/db';
import { DatabaseRateBudgetStore, SharedRateBudget } from '../../lambda/shared/amazon/rate-budget';
import { JobWorld, seedUsers, useJobHandlerEnvironment, useJobWorld } from './fixture';

const run = promisify(execFile);
const ROOT = resolve(__dirname, '..', '..');

let world: JobWorld;
useJobWorld((w) => (world = w));

function localEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: world.url,
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    ADS_API_URL: world.amazon.adsBaseUrl,
    LWA_CLIENT_ID: world.amazon.clientId,
    LWA_CLIENT_SECRET: world.amazon.clientSecret,
    TOKEN_ENCRYPTION_KEY: world.keyBase64,
  };
}

describe('npm run job', () => {
  test.each(['token-refresh', 'account-sync'] as const)(
    '%s runs the real core once and prints one JSON summary line last',
    async (job) => {
      const users = await seedUsers(world, { count: 5 });
      const { stdout, stderr } = await run('npm', ['run', '--silent', 'job', '--', job], {
        cwd: ROOT,
        env: localEnv(),
      });
      const last = stdout.trim().split('\n').at(-1)!;
      const summary = JSON.parse(last);
      expect(summary.job).toBe(job);
      if (job === 'token-refresh') expect(summary.refreshed).toBe(5);
      else expect(summary).toMatchObject({ connectionsSynced: 5, accountsSynced: 10 });
      for (const u of users) expect(stdout + stderr).not.toContain(u.refreshToken);
    },
  );

  test('draws from the shared budget in the database: with another process taking the same budget, together they stay under LWA_REQUESTS_PER_SECOND', async () => {
    await seedUsers(world, { count: 12, regions: () => ['NA'] });
    const start = Date.now();
    const job = run('npm', ['run', '--silent', 'job', '--', 'token-refresh'], {
      cwd: ROOT,
      env: { ...localEnv(), LWA_REQUESTS_PER_SECOND: '6' },
    });
    // Another process on the same database sends 12 requests of its own through the same budget.
    const budget = new DatabaseRateBudgetStore(world.admin);
    const other = new SharedRateBudget(budget, { endpoint: 'lwa', region: 'NA' }, { ceiling: 6 });
    for (let i = 0; i < 12; i += 1) {
      await other.take();
      await fetch(world.amazon.lwaTokenUrl.replace('{region}', 'NA'), { method: 'POST' }).then((r) => r.text());
    }
    const { stdout } = await job;
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({ refreshed: 12 });
    // Amazon saw both processes' requests, 24 in all.
    expect(world.amazon.counters.arrivals('lwa', 'NA').filter((t) => t >= start)).toHaveLength(24);
    // Each request used its own slot of the one schedule in the database: slots start no
    // earlier than `start`, never overlap and are at least 1/6 s apart, so the schedule has
    // moved at least 24 slots past `start` (the test's 12 alone move it about half as far).
    // The budget's record, not arrival times: a busy test process timestamps the requests it
    // receives late and in bunches.
    const { rows } = await world.admin.query<{ ceiling_per_second: number; scheduled_ms: number }>(
      `SELECT ceiling_per_second, extract(epoch FROM next_slot_at) * 1000 - :start::float8 AS scheduled_ms
         FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'NA'`,
      { start },
    );
    expect(rows).toEqual([{ ceiling_per_second: 6, scheduled_ms: expect.any(Number) }]);
    expect(Number(rows[0].scheduled_ms)).toBeGreaterThanOrEqual((24 * 1000) / 6 - 1);
  });

  test('--time-limit plays the Lambda deadline: with less time than the reserve nothing is claimed', async () => {
    await seedUsers(world, { count: 5 });
    const { stdout } = await run('npm', ['run', '--silent', 'job', '--', 'token-refresh', '--time-limit', '20'], {
      cwd: ROOT,
      env: localEnv(),
    });
    // 20 s left is less than the 30 s the run keeps in reserve: it stops before claiming.
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({ claimed: 0, refreshed: 0 });
    const leased = await world.admin.query(`SELECT id FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL`);
    expect(leased.rows).toHaveLength(0);
  });

  test('names every missing variable and exits non-zero', async () => {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const error = await run('npm', ['run', '--silent', 'job', '--', 'token-refresh'], { cwd: ROOT, env }).catch(
      (e) => e,
    );
    expect(error.code).toBe(1);
    expect(error.stderr).toMatch(/missing DATABASE_URL, LWA_CLIENT_ID, LWA_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY/);
  });
});

describe('Lambda handlers on the Data API path', () => {
  let stdout: string[];

  useJobHandlerEnvironment(
    () => world,
    // What Lambda sets on a container started for an invocation (Powertools' cold-start check).
    () => ({ AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand' }),
  );
  beforeEach(() => {
    stdout = [];
    // Powertools writes log lines and EMF metrics to stdout, warnings and errors to stderr.
    for (const stream of [process.stdout, process.stderr]) {
      jest.spyOn(stream, 'write').mockImplementation((chunk: string | Uint8Array) => {
        stdout.push(String(chunk));
        return true;
      });
    }
    jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void stdout.push(args.map(String).join(' ')));
    jest
      .spyOn(console, 'info')
      .mockImplementation((...args: unknown[]) => void stdout.push(args.map(String).join(' ')));
    jest
      .spyOn(console, 'warn')
      .mockImplementation((...args: unknown[]) => void stdout.push(args.map(String).join(' ')));
    jest
      .spyOn(console, 'error')
      .mockImplementation((...args: unknown[]) => void stdout.push(args.map(String).join(' ')));
  });

  const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'req-1' };

  test('the handlers’ Data API client leaves retries to the adapter: requests received equal calls counted', async () => {
    const { db } = await jobContainer('token-refresh');
    const counted = db.callCounts().total;
    const received = world.emulator.calls.total;
    world.emulator.injectFault({ errorType: 'ServiceUnavailableError', statusCode: 503 });
    try {
      await expect(db.query('SELECT 1')).rejects.toThrow(DatabaseUnavailableError);
    } finally {
      world.emulator.injectFault(undefined);
    }
    const calls = db.callCounts().total - counted;
    expect(calls).toBe(8); // the adapter's attempts
    expect(world.emulator.calls.total - received).toBe(calls);
  });

  test('inside an invocation the adapter retries only while the invocation has time: near the timeout it fails at once', async () => {
    const received = world.emulator.calls.total;
    world.emulator.injectFault({ errorType: 'ServiceUnavailableError', statusCode: 503 });
    let error: unknown;
    try {
      // Less time left than one request may take: no retry fits.
      const nearTimeout = { getRemainingTimeInMillis: () => DATA_API_REQUEST_RESERVE_MS - 500, awsRequestId: 'req-2' };
      error = await runJobInvocation('deadline-probe', nearTimeout, ({ db }) => db.query('SELECT 1')).catch(
        (e: unknown) => e,
      );
    } finally {
      world.emulator.injectFault(undefined);
    }
    expect(error).toBeInstanceOf(DatabaseUnavailableError);
    expect(error).toMatchObject({ attempts: 1 });
    expect((error as Error).message).toMatch(/not retried: the next attempt .* would outlast the time left/);
    expect(world.emulator.calls.total - received).toBe(1);
  });

  test('both handlers run their job, publish EMF metrics with service and environment, and log no secret', async () => {
    const users = await seedUsers(world, { count: 12, legacyPlaintext: (i) => i % 3 === 0 });
    world.amazon.revoke(users[1].userId);
    const refreshed = await refresh({}, context);
    expect(refreshed).toMatchObject({ refreshed: 11, reauthRequired: 1 });
    const synced = await sync({ source: 'aws.events' }, context);
    expect(synced).toMatchObject({ connectionsSynced: 11 });

    const output = stdout.join('\n');
    const emf = stdout
      .flatMap((line) => line.split('\n'))
      .filter((l) => l.includes('"_aws"'))
      .map((l) => JSON.parse(l));
    const refreshMetrics = emf.find((m) => m.service === 'token-refresh' && 'TokensRefreshed' in m);
    expect(refreshMetrics).toMatchObject({ TokensRefreshed: 11, ReauthorisationsNeeded: 1, environment: 'dev' });
    expect(refreshMetrics._aws.CloudWatchMetrics[0]).toMatchObject({
      Namespace: 'AmazonAccounts',
      Dimensions: [expect.arrayContaining(['service', 'environment'])],
    });
    expect(emf.find((m) => m.service === 'account-sync' && 'AccountsSynced' in m)).toMatchObject({
      AccountsSynced: 22,
    });
    expect(output).toMatch(/Token refresh run finished/);
    // Powertools' cold-start metric, once per container, and the Lambda context on every log line.
    const coldStarts = emf.filter((m) => 'ColdStart' in m);
    expect(coldStarts.map((m) => m.service).sort()).toEqual(['account-sync', 'token-refresh']);
    const finished = stdout.find((l) => l.includes('Token refresh run finished'))!;
    expect(JSON.parse(finished)).toMatchObject({ function_request_id: 'req-1', service: 'token-refresh' });
    expect(output).toMatch(/"level":"WARN","message":"Token refresh failed"/);
    for (const u of users)
      for (const secret of [u.accessToken, u.refreshToken, ...world.amazon.accessTokens(u.userId)])
        expect(output).not.toContain(secret);
    expect(output).not.toContain(world.amazon.clientSecret);
    expect(output).not.toContain(world.keyBase64);
  });
});
