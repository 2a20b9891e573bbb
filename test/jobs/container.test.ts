import { handler as sync } from '../../lambda/account-sync/handler';
import { handler as refresh } from '../../lambda/token-refresh/handler';
import { DATA_API_REQUEST_RESERVE_MS, jobContainer, runJobInvocation } from '../../lambda/shared/jobs/container';
import { DatabaseUnavailableError } from '../../lambda/shared/db';
import { JobWorld, seedUsers, useJobHandlerEnvironment, useJobWorld } from '../support/jobs';

// The jobs' Lambda container (lambda/shared/jobs/container.ts) and both handlers as AWS runs
// them, on the Data API path.

let world: JobWorld;
useJobWorld((w) => (world = w));

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
