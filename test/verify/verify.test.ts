import { CloudFormationClient, DescribeStacksCommand, type Output } from '@aws-sdk/client-cloudformation';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { ExecuteStatementCommand, RDSDataClient } from '@aws-sdk/client-rds-data';
import { DescribeSecretCommand, RotateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { parseVerifyArgs } from '../../scripts/verify';
import {
  formatChecklist,
  REQUIRED_OUTPUTS,
  verifyDeploy,
  type CheckResult,
  type VerifyClients,
} from '../../scripts/verify/checks';
import { fingerprintMigrations } from '../../lambda/migrate/migrations-hash';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';

// `npm run verify` against mocked AWS clients: every call it makes, with what, and what it
// reports when each part of a deploy works or does not.

const cloudFormation = mockClient(CloudFormationClient);
const lambda = mockClient(LambdaClient);
const rdsData = mockClient(RDSDataClient);
const secretsManager = mockClient(SecretsManagerClient);

const STACK = 'AmazonAccounts-dev';
const LATEST = fingerprintMigrations(DEFAULT_MIGRATIONS_DIR).latest;
const OUTPUTS = {
  ClusterArn: 'arn:aws:rds:eu-west-1:123456789012:cluster:amazonaccounts-dev-cluster',
  WorkerSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:worker-AbCdEf',
  DatabaseName: 'accounts',
  LatestMigration: LATEST,
  TokenRefreshFunctionName: 'AmazonAccounts-dev-TokenRefresh',
  AccountSyncFunctionName: 'AmazonAccounts-dev-AccountSync',
  LwaClientSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-AbCdEf',
};
const NEW_VERSION = 'b1c2d3e4-0000-4000-8000-000000000001';

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const outputsOf = (o: Record<string, string>): Output[] =>
  Object.entries(o).map(([OutputKey, OutputValue]) => ({ OutputKey, OutputValue }));

/** A deploy that works: every mock answers as AWS would. */
function healthyDeploy(outputs: Record<string, string> = OUTPUTS) {
  cloudFormation.on(DescribeStacksCommand).resolves({
    Stacks: [
      { StackName: STACK, StackStatus: 'UPDATE_COMPLETE', CreationTime: new Date(), Outputs: outputsOf(outputs) },
    ],
  });
  rdsData
    .on(ExecuteStatementCommand, { sql: 'SELECT max(name) AS latest FROM pgmigrations' })
    .resolves({ formattedRecords: JSON.stringify([{ latest: LATEST }]) });
  rdsData
    .on(ExecuteStatementCommand, { sql: 'SELECT current_user AS login' })
    .resolves({ formattedRecords: JSON.stringify([{ login: 'accounts_jobs' }]) });
  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.TokenRefreshFunctionName }).resolves({
    StatusCode: 200,
    Payload: encode({
      job: 'token-refresh',
      dryRun: true,
      due: 12,
      pausedByRateLimit: 0,
      pausedRegions: [],
    }) as never,
  });
  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.AccountSyncFunctionName }).resolves({
    StatusCode: 200,
    Payload: encode({
      job: 'account-sync',
      dryRun: true,
      due: 40,
      waitingForTokenRefresh: 2,
      accountsToFlagForReauth: 1,
    }) as never,
  });
  secretsManager.on(RotateSecretCommand).resolves({ ARN: OUTPUTS.WorkerSecretArn, VersionId: NEW_VERSION });
  secretsManager
    .on(DescribeSecretCommand)
    .resolvesOnce({ VersionIdsToStages: { old: ['AWSCURRENT'], [NEW_VERSION]: ['AWSPENDING'] } })
    .resolvesOnce({ VersionIdsToStages: { old: ['AWSCURRENT'], [NEW_VERSION]: ['AWSPENDING'] } })
    .resolves({ VersionIdsToStages: { old: ['AWSPREVIOUS'], [NEW_VERSION]: ['AWSCURRENT'] } });
}

let clock: number;
let sleeps: number[];
let fetchCalls: string[];
function clients(fetchStatus?: number | Error): VerifyClients {
  return {
    cloudFormation: new CloudFormationClient({ region: 'eu-west-1' }),
    lambda: new LambdaClient({ region: 'eu-west-1' }),
    rdsData: new RDSDataClient({ region: 'eu-west-1' }),
    secretsManager: new SecretsManagerClient({ region: 'eu-west-1' }),
    now: () => clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
    },
    fetch: (async (url: string) => {
      fetchCalls.push(String(url));
      if (fetchStatus instanceof Error) throw fetchStatus;
      return new Response('{}', { status: fetchStatus ?? 200 });
    }) as typeof fetch,
  };
}

beforeEach(() => {
  for (const mock of [cloudFormation, lambda, rdsData, secretsManager]) mock.reset();
  clock = 0;
  sleeps = [];
  fetchCalls = [];
});

const byName = (results: CheckResult[]) => Object.fromEntries(results.map((r) => [r.name, r]));

test('a working deploy: every check passes, the API check is skipped without an API output', async () => {
  healthyDeploy();
  const seen: string[] = [];

  const results = await verifyDeploy(clients(), { stackName: STACK, pollMs: 5000, onResult: (r) => seen.push(r.name) });

  expect(results.map((r) => [r.name, r.status])).toEqual([
    ['stack', 'pass'],
    ['schema version', 'pass'],
    ['token-refresh', 'pass'],
    ['account-sync', 'pass'],
    ['API sign-in', 'skip'],
    ['password rotation', 'pass'],
  ]);
  expect(seen).toEqual(results.map((r) => r.name));
  const r = byName(results);
  expect(r['schema version'].detail).toContain(LATEST);
  expect(r['token-refresh'].detail).toBe('dry run: 12 tokens due now');
  expect(r['account-sync'].detail).toBe(
    'dry run: 40 users due now, 2 waiting for a token refresh, 1 accounts to flag for re-authorisation',
  );
  expect(r['API sign-in'].detail).toBe('skipped: no API output in this stack');
  expect(r['password rotation'].detail).toContain(NEW_VERSION);
  expect(r['password rotation'].detail).toContain('as accounts_jobs');
  expect(fetchCalls).toEqual([]);

  // The calls, with what they carry.
  expect(cloudFormation.commandCalls(DescribeStacksCommand).map((c) => c.args[0].input)).toEqual([
    { StackName: STACK },
  ]);
  for (const call of rdsData.commandCalls(ExecuteStatementCommand)) {
    expect(call.args[0].input).toMatchObject({
      resourceArn: OUTPUTS.ClusterArn,
      secretArn: OUTPUTS.WorkerSecretArn,
      database: 'accounts',
      formatRecordsAs: 'JSON',
    });
  }
  expect(rdsData.commandCalls(ExecuteStatementCommand).map((c) => c.args[0].input.sql)).toEqual([
    'SELECT max(name) AS latest FROM pgmigrations',
    'SELECT current_user AS login',
  ]);
  const invocations = lambda.commandCalls(InvokeCommand).map((c) => c.args[0].input);
  expect(
    invocations.map((i) => [
      i.FunctionName,
      i.InvocationType,
      JSON.parse(new TextDecoder().decode(i.Payload as Uint8Array)),
    ]),
  ).toEqual([
    [OUTPUTS.TokenRefreshFunctionName, 'RequestResponse', { dryRun: true }],
    [OUTPUTS.AccountSyncFunctionName, 'RequestResponse', { dryRun: true }],
  ]);
  expect(secretsManager.commandCalls(RotateSecretCommand).map((c) => c.args[0].input)).toEqual([
    { SecretId: OUTPUTS.WorkerSecretArn },
  ]);
  expect(secretsManager.commandCalls(DescribeSecretCommand)).toHaveLength(3);
  expect(sleeps).toEqual([5000, 5000]);
  // The login with the new password comes after the rotation finished.
  const lastDescribe = secretsManager.commandCalls(DescribeSecretCommand).at(-1)!;
  const login = rdsData.commandCalls(ExecuteStatementCommand).at(-1)!;
  expect(login.calledAfter(lastDescribe as never)).toBe(true);
});

test('with an API output, GET <url>/v1/accounts without a token must answer 401', async () => {
  healthyDeploy({ ...OUTPUTS, ApiUrl: 'https://abc123.execute-api.eu-west-1.amazonaws.com/' });
  const ok = byName(await verifyDeploy(clients(401), { stackName: STACK, rotate: false }));
  expect(ok['API sign-in']).toMatchObject({
    status: 'pass',
    detail: 'GET https://abc123.execute-api.eu-west-1.amazonaws.com/v1/accounts without a token → 401',
  });
  expect(fetchCalls).toEqual(['https://abc123.execute-api.eu-west-1.amazonaws.com/v1/accounts']);
  // An API that lets an anonymous request through is a failure, not a pass.
  const open = byName(await verifyDeploy(clients(200), { stackName: STACK, rotate: false }));
  expect(open['API sign-in']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('→ 200 (expected 401)'),
  });

  const down = byName(await verifyDeploy(clients(503), { stackName: STACK, rotate: false }));
  expect(down['API sign-in']).toMatchObject({ status: 'fail', detail: expect.stringContaining('→ 503') });
  const unreachable = byName(
    await verifyDeploy(clients(new TypeError('fetch failed')), { stackName: STACK, rotate: false }),
  );
  expect(unreachable['API sign-in']).toMatchObject({ status: 'fail', detail: expect.stringContaining('fetch failed') });
});

test('--no-rotation skips the rotation and starts none', async () => {
  healthyDeploy();
  const results = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));
  expect(results['password rotation']).toMatchObject({ status: 'skip' });
  expect(secretsManager.commandCalls(RotateSecretCommand)).toHaveLength(0);
});

test('a stack that does not exist stops the check at once, with what to do', async () => {
  cloudFormation
    .on(DescribeStacksCommand)
    .rejects(Object.assign(new Error(`Stack with id ${STACK} does not exist`), { name: 'ValidationError' }));
  const results = await verifyDeploy(clients(), { stackName: STACK });
  expect(results).toEqual([
    {
      name: 'stack',
      status: 'fail',
      detail: expect.stringContaining('does not exist'),
      hint: expect.stringContaining('cdk deploy'),
    },
  ]);
  expect(lambda.calls()).toHaveLength(0);
  expect(rdsData.calls()).toHaveLength(0);
  expect(secretsManager.calls()).toHaveLength(0);
});

test('a rolled-back stack, or one without the outputs, fails the stack check', async () => {
  cloudFormation.on(DescribeStacksCommand).resolves({
    Stacks: [
      {
        StackName: STACK,
        StackStatus: 'UPDATE_ROLLBACK_COMPLETE',
        CreationTime: new Date(),
        Outputs: outputsOf(OUTPUTS),
      },
    ],
  });
  expect(await verifyDeploy(clients(), { stackName: STACK })).toEqual([
    expect.objectContaining({
      status: 'fail',
      detail: `${STACK} is UPDATE_ROLLBACK_COMPLETE`,
      hint: expect.stringContaining('Events'),
    }),
  ]);

  const { TokenRefreshFunctionName: _dropped, ...partial } = OUTPUTS;
  cloudFormation.on(DescribeStacksCommand).resolves({
    Stacks: [
      { StackName: STACK, StackStatus: 'CREATE_COMPLETE', CreationTime: new Date(), Outputs: outputsOf(partial) },
    ],
  });
  const [result] = await verifyDeploy(clients(), { stackName: STACK });
  expect(result).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('outputs missing: TokenRefreshFunctionName'),
  });
  expect(REQUIRED_OUTPUTS).toContain('TokenRefreshFunctionName');
});

test('a cluster resuming from 0 ACU is waited for; a schema behind the deploy fails with where to look', async () => {
  healthyDeploy();
  const resuming = Object.assign(new Error('The database is resuming'), { name: 'DatabaseResumingException' });
  rdsData
    .on(ExecuteStatementCommand, { sql: 'SELECT max(name) AS latest FROM pgmigrations' })
    .rejectsOnce(resuming)
    .rejectsOnce(resuming)
    .resolves({ formattedRecords: JSON.stringify([{ latest: '0007_job-leases-and-reconnect' }]) });

  const results = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));

  expect(sleeps).toEqual([1000, 2000]);
  expect(results['schema version']).toMatchObject({
    status: 'fail',
    detail: `the database is at 0007_job-leases-and-reconnect, the deploy brought ${LATEST}`,
    hint: expect.stringContaining('SchemaMigration'),
  });
});

test('a Data API login that fails is reported with its message', async () => {
  healthyDeploy();
  rdsData.on(ExecuteStatementCommand).rejects(
    Object.assign(new Error('password authentication failed for user "accounts_jobs"'), {
      name: 'BadRequestException',
    }),
  );
  const results = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));
  expect(results['schema version']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('password authentication failed'),
    hint: expect.stringContaining('WorkerSecretArn'),
  });
});

test('a job whose dry run fails says so, and points at the secrets to fill in when those are the cause', async () => {
  healthyDeploy();
  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.TokenRefreshFunctionName }).resolves({
    StatusCode: 200,
    FunctionError: 'Unhandled',
    Payload: encode({
      errorType: 'Error',
      errorMessage: 'Secret LWA_CLIENT_SECRET_ARN is not valid JSON with clientId and clientSecret',
    }) as never,
  });
  lambda
    .on(InvokeCommand, { FunctionName: OUTPUTS.AccountSyncFunctionName })
    .resolves({ StatusCode: 200, Payload: encode({ job: 'account-sync', usersSynced: 3 }) as never });

  const results = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));

  expect(results['token-refresh']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('not valid JSON'),
    hint: expect.stringContaining('LwaClientSecretArn'),
  });
  expect(results['token-refresh'].hint).toContain(`/aws/lambda/${OUTPUTS.TokenRefreshFunctionName}`);
  // A function that ran for real instead of a dry run is old code.
  expect(results['account-sync']).toMatchObject({ status: 'fail', hint: expect.stringContaining('predates dry runs') });
});

test('a rotation that does not finish in time fails with its stages and the rotation logs to read', async () => {
  healthyDeploy();
  secretsManager
    .on(DescribeSecretCommand)
    .resolves({ VersionIdsToStages: { old: ['AWSCURRENT'], [NEW_VERSION]: ['AWSPENDING'] } });

  const results = byName(
    await verifyDeploy(clients(), { stackName: STACK, rotationTimeoutMs: 60_000, pollMs: 10_000 }),
  );

  expect(results['password rotation']).toMatchObject({
    status: 'fail',
    detail: `the rotation (version ${NEW_VERSION}) did not finish within 60 s; its stages: AWSPENDING`,
    hint: expect.stringContaining('DatabaseWorkerRotation'),
  });
  expect(sleeps).toEqual([10_000, 10_000, 10_000, 10_000, 10_000, 10_000]);
  expect(rdsData.commandCalls(ExecuteStatementCommand, { sql: 'SELECT current_user AS login' })).toHaveLength(0);
});

test('a rotation that cannot start, or whose new password does not log in, fails', async () => {
  healthyDeploy();
  secretsManager.on(RotateSecretCommand).rejects(
    Object.assign(new Error("A previous rotation isn't complete. That rotation will be reattempted."), {
      name: 'InvalidRequestException',
    }),
  );
  const blocked = byName(await verifyDeploy(clients(), { stackName: STACK }));
  expect(blocked['password rotation']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining("previous rotation isn't complete"),
    hint: expect.stringContaining('AWSPENDING'),
  });

  healthyDeploy();
  rdsData
    .on(ExecuteStatementCommand, { sql: 'SELECT current_user AS login' })
    .rejects(Object.assign(new Error('password authentication failed'), { name: 'BadRequestException' }));
  const refused = byName(await verifyDeploy(clients(), { stackName: STACK }));
  expect(refused['password rotation']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('cannot log in with the new password'),
  });
});

test('the checklist: one line per check, the hint under each failure, and a verdict', () => {
  const text = formatChecklist(STACK, [
    { name: 'stack', status: 'pass', detail: `${STACK} is UPDATE_COMPLETE, 10 outputs` },
    { name: 'API sign-in', status: 'skip', detail: 'skipped: no API output in this stack' },
    { name: 'token-refresh', status: 'fail', detail: 'dry run failed: boom', hint: 'Look at the logs.' },
  ]);
  expect(text.split('\n')).toEqual([
    `Deploy check of ${STACK}`,
    `  ✓ stack          ${STACK} is UPDATE_COMPLETE, 10 outputs`,
    '  – API sign-in    skipped: no API output in this stack',
    '  ✗ token-refresh  dry run failed: boom',
    '                   → Look at the logs.',
    '1 of 3 checks failed, 1 skipped: see the → lines.',
  ]);
  expect(
    formatChecklist(STACK, [{ name: 'stack', status: 'pass', detail: 'ok' }])
      .split('\n')
      .at(-1),
  ).toBe('All 1 checks passed.');
});

test('arguments: the environment as cdk takes it, and --no-rotation', () => {
  expect(parseVerifyArgs(['-c', 'env=dev'])).toEqual({ env: 'dev', rotate: true });
  expect(parseVerifyArgs(['--context', 'env=prod', '--no-rotation'])).toEqual({ env: 'prod', rotate: false });
  expect(parseVerifyArgs(['--env=staging'])).toEqual({ env: 'staging', rotate: true });
  expect(parseVerifyArgs([])).toEqual({ env: undefined, rotate: true });
});
