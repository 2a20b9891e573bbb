import { CloudFormationClient, DescribeStacksCommand, type Output } from '@aws-sdk/client-cloudformation';
import {
  CloudWatchClient,
  DescribeAlarmHistoryCommand,
  DescribeAlarmsCommand,
  GetMetricStatisticsCommand,
  SetAlarmStateCommand,
} from '@aws-sdk/client-cloudwatch';
import { GetTopicAttributesCommand, ListSubscriptionsByTopicCommand, SNSClient } from '@aws-sdk/client-sns';
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
const cloudWatch = mockClient(CloudWatchClient);
const sns = mockClient(SNSClient);

const STACK = 'AmazonAccounts-dev';
const LATEST = fingerprintMigrations(DEFAULT_MIGRATIONS_DIR).latest;
const OUTPUTS = {
  ClusterArn: 'arn:aws:rds:eu-west-1:123456789012:cluster:amazonaccounts-dev-cluster',
  WorkerSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:worker-AbCdEf',
  DatabaseName: 'accounts',
  LatestMigration: LATEST,
  TokenRefreshFunctionName: 'AmazonAccounts-dev-TokenRefresh',
  AccountSyncFunctionName: 'AmazonAccounts-dev-AccountSync',
  TokenKeysFunctionName: 'AmazonAccounts-dev-TokenKeys',
  LwaClientSecretArn: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:lwa-AbCdEf',
  AlarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:AmazonAccounts-dev-MonitoringAlarmTopic-AbCdEf',
  AlarmDeliveryCheckAlarmName: 'AmazonAccounts-dev-alarm-delivery-check',
};

/** The alarm topic's policy as the stack deploys it (lib/monitoring.ts): the TLS rule and CloudWatch's Allow. */
const TLS_ONLY = {
  Sid: 'AllowPublishThroughSSLOnly',
  Effect: 'Deny',
  Principal: '*',
  Action: 'sns:Publish',
  Resource: OUTPUTS.AlarmTopicArn,
  Condition: { Bool: { 'aws:SecureTransport': 'false' } },
};
const CLOUDWATCH_ALLOWED = {
  Sid: 'AllowCloudWatchAlarmsOfThisAccount',
  Effect: 'Allow',
  Principal: { Service: 'cloudwatch.amazonaws.com' },
  Action: 'sns:Publish',
  Resource: OUTPUTS.AlarmTopicArn,
  Condition: {
    ArnLike: { 'aws:SourceArn': 'arn:aws:cloudwatch:eu-west-1:123456789012:alarm:*' },
    StringEquals: { 'aws:SourceAccount': '123456789012' },
  },
};
const policy = (...statements: object[]) => JSON.stringify({ Version: '2012-10-17', Statement: statements });
/** When CloudWatch records the delivery-check alarm's change to ALARM (its clock, not ours). */
const ALARM_SET_AT = new Date('2026-12-07T02:00:00Z');
/** The alarm's action, recorded a moment after the change. */
const PUBLISHED = {
  AlarmName: OUTPUTS.AlarmDeliveryCheckAlarmName,
  HistoryItemType: 'Action' as const,
  Timestamp: new Date(ALARM_SET_AT.getTime() + 1500),
  HistorySummary: `Successfully executed action ${OUTPUTS.AlarmTopicArn}`,
  HistoryData: JSON.stringify({ actionState: 'Succeeded', notificationResource: OUTPUTS.AlarmTopicArn }),
};
/** The action is not yet recorded at the first look. */
function actionRecordedLate() {
  cloudWatch
    .on(DescribeAlarmHistoryCommand)
    .resolvesOnce({ AlarmHistoryItems: [] })
    .resolves({ AlarmHistoryItems: [PUBLISHED] });
}
const NEW_VERSION = 'b1c2d3e4-0000-4000-8000-000000000001';

const encode = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
const outputsOf = (o: Record<string, string>): Output[] =>
  Object.entries(o).map(([OutputKey, OutputValue]) => ({ OutputKey, OutputValue }));

/** The token keys' function's usage report (lambda/token-reencrypt/keys.ts) halfway through a rotation. */
const KEY_USAGE = {
  currentKeyId: '2027-01',
  byKey: { '2027-01': 1200, legacy: 800 },
  unknownKeys: {},
  v1: 0,
  plaintext: 0,
  connectionsToReencrypt: 400,
};

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
  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.TokenKeysFunctionName }).resolves({
    StatusCode: 200,
    Payload: encode(KEY_USAGE) as never,
  });
  cloudWatch.on(DescribeAlarmsCommand).resolves({
    MetricAlarms: [
      { AlarmName: OUTPUTS.AlarmDeliveryCheckAlarmName, ActionsEnabled: true, StateUpdatedTimestamp: ALARM_SET_AT },
    ],
  });
  cloudWatch.on(SetAlarmStateCommand).resolves({});
  cloudWatch.on(GetMetricStatisticsCommand).resolves({ Datapoints: [] });
  cloudWatch.on(DescribeAlarmHistoryCommand).resolves({ AlarmHistoryItems: [PUBLISHED] });
  sns.on(GetTopicAttributesCommand).resolves({ Attributes: { Policy: policy(TLS_ONLY, CLOUDWATCH_ALLOWED) } });
  sns.on(ListSubscriptionsByTopicCommand).resolves({
    Subscriptions: [
      {
        SubscriptionArn: `${OUTPUTS.AlarmTopicArn}:0b1c2d3e-0000-4000-8000-000000000001`,
        Protocol: 'email',
        Endpoint: 'alerts@example.com',
        TopicArn: OUTPUTS.AlarmTopicArn,
      },
    ],
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
    cloudWatch: new CloudWatchClient({ region: 'eu-west-1' }),
    sns: new SNSClient({ region: 'eu-west-1' }),
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
  for (const mock of [cloudFormation, lambda, rdsData, secretsManager, cloudWatch, sns]) mock.reset();
  clock = 0;
  sleeps = [];
  fetchCalls = [];
});

const byName = (results: CheckResult[]) => Object.fromEntries(results.map((r) => [r.name, r]));

test('a working deploy: every check passes, the API check is skipped without an API output', async () => {
  healthyDeploy();
  actionRecordedLate();
  const seen: string[] = [];

  const results = await verifyDeploy(clients(), { stackName: STACK, pollMs: 5000, onResult: (r) => seen.push(r.name) });

  expect(results.map((r) => [r.name, r.status])).toEqual([
    ['stack', 'pass'],
    ['schema version', 'pass'],
    ['token-refresh', 'pass'],
    ['account-sync', 'pass'],
    ['token keys', 'pass'],
    ['API sign-in', 'skip'],
    ['alarm delivery', 'pass'],
    ['password rotation', 'pass'],
  ]);
  expect(seen).toEqual(results.map((r) => r.name));
  const r = byName(results);
  expect(r['schema version'].detail).toContain(LATEST);
  expect(r['token-refresh'].detail).toBe('dry run: 12 tokens due now');
  expect(r['account-sync'].detail).toBe(
    'dry run: 40 users due now, 2 waiting for a token refresh, 1 accounts to flag for re-authorisation',
  );
  expect(r['token keys'].detail).toBe(
    'values per key: 2027-01 (current) 1200, legacy 800; enc:v1 0, plaintext 0; 400 connections to re-encrypt',
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
    [OUTPUTS.TokenKeysFunctionName, 'RequestResponse', { action: 'usage' }],
  ]);
  expect(secretsManager.commandCalls(RotateSecretCommand).map((c) => c.args[0].input)).toEqual([
    { SecretId: OUTPUTS.WorkerSecretArn },
  ]);
  expect(secretsManager.commandCalls(DescribeSecretCommand)).toHaveLength(3);
  // One look at the alarm's history, two at the rotation.
  expect(sleeps).toEqual([5000, 5000, 5000]);
  // The login with the new password comes after the rotation finished.
  const lastDescribe = secretsManager.commandCalls(DescribeSecretCommand).at(-1)!;
  const login = rdsData.commandCalls(ExecuteStatementCommand).at(-1)!;
  expect(login.calledAfter(lastDescribe as never)).toBe(true);
});

test('alarm delivery: the topic lets CloudWatch publish, a subscription is confirmed, and the delivery-check alarm set to ALARM is published — then set back to OK', async () => {
  healthyDeploy();
  actionRecordedLate();

  const result = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];

  expect(result).toEqual({
    name: 'alarm delivery',
    status: 'pass',
    detail: `CloudWatch published ${OUTPUTS.AlarmDeliveryCheckAlarmName} to the alarm topic (not e-mailed: filtered out); 1 confirmed subscription; no failed notification in 24 h`,
  });
  expect(sns.commandCalls(GetTopicAttributesCommand).map((c) => c.args[0].input)).toEqual([
    { TopicArn: OUTPUTS.AlarmTopicArn },
  ]);
  // Only the delivery-check alarm is touched: OK (so ALARM is a change, whose action runs), ALARM, OK again.
  expect(
    cloudWatch.commandCalls(SetAlarmStateCommand).map((c) => [c.args[0].input.AlarmName, c.args[0].input.StateValue]),
  ).toEqual([
    [OUTPUTS.AlarmDeliveryCheckAlarmName, 'OK'],
    [OUTPUTS.AlarmDeliveryCheckAlarmName, 'ALARM'],
    [OUTPUTS.AlarmDeliveryCheckAlarmName, 'OK'],
  ]);
  // Its actions since CloudWatch recorded the change, read until one is there.
  expect(cloudWatch.commandCalls(DescribeAlarmHistoryCommand).map((c) => c.args[0].input)).toEqual([
    { AlarmName: OUTPUTS.AlarmDeliveryCheckAlarmName, HistoryItemType: 'Action', StartDate: ALARM_SET_AT },
    { AlarmName: OUTPUTS.AlarmDeliveryCheckAlarmName, HistoryItemType: 'Action', StartDate: ALARM_SET_AT },
  ]);
  expect(cloudWatch.commandCalls(GetMetricStatisticsCommand)[0].args[0].input).toMatchObject({
    Namespace: 'AWS/SNS',
    MetricName: 'NumberOfNotificationsFailed',
    Dimensions: [{ Name: 'TopicName', Value: 'AmazonAccounts-dev-MonitoringAlarmTopic-AbCdEf' }],
    Statistics: ['Sum'],
  });
});

test('alarm delivery fails, before paging anything, on a topic policy without CloudWatch\u2019s Allow (the TLS rule alone)', async () => {
  healthyDeploy();
  sns.on(GetTopicAttributesCommand).resolves({ Attributes: { Policy: policy(TLS_ONLY) } });

  const result = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];

  expect(result).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('does not allow cloudwatch.amazonaws.com to publish'),
    hint: expect.stringContaining('lib/monitoring.ts'),
  });
  expect(cloudWatch.commandCalls(SetAlarmStateCommand)).toHaveLength(0);
  // A statement for another service, or for CloudWatch but another action, does not count.
  sns.on(GetTopicAttributesCommand).resolves({
    Attributes: {
      Policy: policy(
        TLS_ONLY,
        { ...CLOUDWATCH_ALLOWED, Principal: { Service: 'events.amazonaws.com' } },
        {
          ...CLOUDWATCH_ALLOWED,
          Action: 'sns:Subscribe',
        },
      ),
    },
  });
  const other = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];
  expect(other.status).toBe('fail');
});

test('alarm delivery fails while the e-mail subscription waits for its confirmation, and says how to confirm', async () => {
  healthyDeploy();
  sns.on(ListSubscriptionsByTopicCommand).resolves({
    Subscriptions: [{ SubscriptionArn: 'PendingConfirmation', Protocol: 'email', Endpoint: 'alerts@example.com' }],
  });

  const result = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];

  expect(result).toMatchObject({
    status: 'fail',
    detail: 'the alarm topic has no confirmed subscription (1 pending confirmation)',
    hint: expect.stringContaining('confirmation link'),
  });
  expect(cloudWatch.commandCalls(SetAlarmStateCommand)).toHaveLength(0);
});

test('alarm delivery fails when notifications failed delivery in the last day', async () => {
  healthyDeploy();
  cloudWatch.on(GetMetricStatisticsCommand).resolves({ Datapoints: [{ Sum: 3 }] });
  const result = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];
  expect(result).toMatchObject({
    status: 'fail',
    detail: '3 notifications of the alarm topic failed delivery in the last 24 h',
  });
});

test('alarm delivery fails when CloudWatch could not publish, or records no action in time; the alarm is set back to OK either way', async () => {
  healthyDeploy();
  cloudWatch.on(DescribeAlarmHistoryCommand).resolves({
    AlarmHistoryItems: [
      // An action of an earlier run does not count.
      {
        HistoryItemType: 'Action',
        Timestamp: new Date(ALARM_SET_AT.getTime() - 3600_000),
        HistorySummary: `Successfully executed action ${OUTPUTS.AlarmTopicArn}`,
        HistoryData: JSON.stringify({ actionState: 'Succeeded' }),
      },
      {
        HistoryItemType: 'Action',
        Timestamp: new Date(ALARM_SET_AT.getTime() + 1000),
        HistorySummary: `Failed to execute action ${OUTPUTS.AlarmTopicArn}. Received error: "CloudWatch Alarms is not authorized to perform: SNS:Publish"`,
        HistoryData: JSON.stringify({ actionState: 'Failed' }),
      },
    ],
  });
  const refused = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];
  expect(refused).toMatchObject({ status: 'fail', detail: expect.stringContaining('not authorized') });
  expect(cloudWatch.commandCalls(SetAlarmStateCommand).at(-1)!.args[0].input.StateValue).toBe('OK');

  healthyDeploy();
  cloudWatch.on(DescribeAlarmHistoryCommand).resolves({ AlarmHistoryItems: [] });
  sleeps = [];
  const silent = byName(
    await verifyDeploy(clients(), { stackName: STACK, rotate: false, alarmTimeoutMs: 30_000, pollMs: 10_000 }),
  )['alarm delivery'];
  expect(silent).toMatchObject({ status: 'fail', detail: expect.stringContaining('no action') });
  expect(sleeps).toEqual([10_000, 10_000, 10_000]);
  expect(cloudWatch.commandCalls(SetAlarmStateCommand).at(-1)!.args[0].input.StateValue).toBe('OK');
});

test('alarm delivery is skipped where alarm actions are off (dev), and touches no alarm', async () => {
  healthyDeploy();
  cloudWatch.on(DescribeAlarmsCommand).resolves({
    MetricAlarms: [{ AlarmName: OUTPUTS.AlarmDeliveryCheckAlarmName, ActionsEnabled: false }],
  });
  const result = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }))['alarm delivery'];
  expect(result).toMatchObject({ status: 'skip', detail: expect.stringContaining('alarms.notify') });
  expect(cloudWatch.commandCalls(SetAlarmStateCommand)).toHaveLength(0);
  expect(sns.calls()).toHaveLength(0);
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
    .resolves({ StatusCode: 200, Payload: encode({ job: 'account-sync', connectionsSynced: 3 }) as never });

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

test('token keys: values under a key the ring lacks fail the check; a failed report points at the key secret; a stack without the function skips it', async () => {
  healthyDeploy();
  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.TokenKeysFunctionName }).resolves({
    StatusCode: 200,
    Payload: encode({ ...KEY_USAGE, unknownKeys: { '2026-06': 3 } }) as never,
  });
  let r = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));
  expect(r['token keys']).toMatchObject({
    status: 'fail',
    detail: expect.stringContaining('values under keys not in the ring: 2026-06 3') as unknown,
    hint: expect.stringContaining('Put the missing keys back into the ring') as unknown,
  });

  lambda.on(InvokeCommand, { FunctionName: OUTPUTS.TokenKeysFunctionName }).resolves({
    StatusCode: 200,
    FunctionError: 'Unhandled',
    Payload: encode({ errorType: 'SecretError', errorMessage: 'Secret …: Token key ring is not JSON' }) as never,
  });
  r = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));
  expect(r['token keys']).toMatchObject({
    status: 'fail',
    detail: 'usage report failed: Secret …: Token key ring is not JSON',
    hint: expect.stringContaining('TokenEncryptionKeySecretArn') as unknown,
  });

  const { TokenKeysFunctionName: _dropped, ...older } = OUTPUTS;
  healthyDeploy(older);
  r = byName(await verifyDeploy(clients(), { stackName: STACK, rotate: false }));
  expect(r['token keys']).toEqual({
    name: 'token keys',
    status: 'skip',
    detail: 'skipped: no TokenKeysFunctionName output in this stack',
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
