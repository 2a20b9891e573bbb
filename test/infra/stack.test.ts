import { Match, Template } from 'aws-cdk-lib/assertions';
import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { fingerprintMigrations } from '../../lambda/migrate/migrations-hash';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';
import { JOB_ENV } from '../../lambda/shared/config';
import { DISPATCH_METRICS, METRIC_NAMES, METRICS_NAMESPACE } from '../../lambda/shared/jobs/metrics';
import { API_ENV } from '../../lambda/shared/api-env';
import { API_OUTPUT, REQUIRED_OUTPUTS, topicPolicyAllowsCloudWatch } from '../../scripts/verify/checks';
import { deliveryCheckAlarmName } from '../../lib/monitoring';
import { accessLogFields, API_ROUTES, API_THROTTLED_METRIC, INTERNAL_TOKEN_ROUTE } from '../../lib/accounts-api';
import { resolveEnvironment } from '../../lib/config';
import { FAN_OUT_BATCH_SIZE, FAN_OUT_MAX_RECEIVE_COUNT } from '../../lib/scheduled-jobs';
import { DISPATCHER_ENV } from '../../lambda/dispatcher/config';
import { DISPATCH_MARK_SECONDS, FAN_OUT_QUEUE_URL_ENV } from '../../lambda/shared/jobs/fan-out';
import { buildStack, cdkJsonContext, onlyResource, resourcesOf, templateOf } from './support/stack';

const ENVIRONMENTS = ['dev', 'staging', 'prod'] as const;

/** Logical IDs of the stateful resources: renaming one would replace it (and lose its data). */
const STATEFUL_LOGICAL_IDS = {
  'AWS::RDS::DBCluster': 'DatabaseCluster5B53A178',
  'AWS::RDS::DBInstance': 'DatabaseClusterWriterD43085C6',
  masterSecret: 'DatabaseMasterSecretC5C2A01F',
  /** The master secret with host and port attached: what rotation and the migration read. */
  masterSecretAttachment: 'DatabaseMasterSecretAttachment67754D68',
  /** The jobs' and the API's secrets with host, port and engine attached: what their rotations read. */
  workerSecretAttachment: 'DatabaseWorkerSecretAttachment',
  apiSecretAttachment: 'DatabaseApiSecretAttachment',
  workerSecret: 'DatabaseWorkerSecretFF17536B',
  apiSecret: 'DatabaseApiSecretAD850E10',
  lwaSecret: 'SecretsLwaClient81E48E60',
  tokenKeySecret: 'SecretsTokenEncryptionKey16D2D7BA',
};

function functionByDescription(template: Template, prefix: string): { id: string; properties: Record<string, any> } {
  const matches = Object.entries(resourcesOf(template, 'AWS::Lambda::Function')).filter(([, r]) =>
    `${r.Properties?.Description as string | undefined}`.startsWith(prefix),
  );
  expect(matches).toHaveLength(1);
  return { id: matches[0][0], properties: matches[0][1].Properties as Record<string, any> };
}
const tokenRefresh = (t: Template) => functionByDescription(t, 'Refreshes Login with Amazon');
const accountSync = (t: Template) => functionByDescription(t, "Syncs users' Amazon");
const migrationHandler = (t: Template) => functionByDescription(t, 'Applies node-pg-migrate');
const DISPATCHER_PREFIX = 'Dispatches due ids to the queue of: ';
const tokenRefreshDispatcher = (t: Template) =>
  functionByDescription(t, `${DISPATCHER_PREFIX}Refreshes Login with Amazon`);
const accountSyncDispatcher = (t: Template) => functionByDescription(t, `${DISPATCHER_PREFIX}Syncs users' Amazon`);
/** The environments whose cdk.json turns fan-out on, with its maximum concurrency. */
const fanOutOf = (env: string) => resolveEnvironment(env, cdkJsonContext().environments).jobs?.fanOut;
const apiHandler = (t: Template) => functionByDescription(t, 'Accounts API:');

/** The functions of a template that carry an environment variable, with its value. */
function functionsCarrying(t: Template, variable: string): string[][] {
  return Object.entries(resourcesOf(t, 'AWS::Lambda::Function'))
    .filter(([, fn]) => JSON.stringify(fn.Properties?.Environment ?? {}).includes(variable))
    .map(([id, fn]) => [id, (fn.Properties as Record<string, any>).Environment.Variables[variable] as string]);
}

/** Every statement of the policies attached to a function's role. */
function statementsOf(template: Template, fn: { properties: Record<string, any> }): Array<Record<string, any>> {
  const role = fn.properties.Role['Fn::GetAtt'][0];
  return Object.values(resourcesOf(template, 'AWS::IAM::Policy'))
    .filter((p) => (p.Properties?.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: role })))
    .flatMap((p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement);
}

describe.each(ENVIRONMENTS)('%s template', (env) => {
  const template = () => templateOf(env);

  test('stateful resources keep their logical IDs', () => {
    const ids = Object.keys(resourcesOf(template()));
    expect(onlyResource(template(), 'AWS::RDS::DBCluster').id).toBe(STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster']);
    expect(onlyResource(template(), 'AWS::RDS::DBInstance').id).toBe(STATEFUL_LOGICAL_IDS['AWS::RDS::DBInstance']);
    expect(ids).toEqual(
      expect.arrayContaining([
        STATEFUL_LOGICAL_IDS.masterSecret,
        STATEFUL_LOGICAL_IDS.workerSecret,
        STATEFUL_LOGICAL_IDS.apiSecret,
        STATEFUL_LOGICAL_IDS.lwaSecret,
        STATEFUL_LOGICAL_IDS.tokenKeySecret,
      ]),
    );
  });

  test('Aurora PostgreSQL 17 Serverless v2: Data API on, encrypted, logs exported, in isolated subnets', () => {
    template().hasResourceProperties('AWS::RDS::DBCluster', {
      Engine: 'aurora-postgresql',
      EngineVersion: Match.stringLikeRegexp('^17\\.'),
      EnableHttpEndpoint: true,
      StorageEncrypted: true,
      EnableCloudwatchLogsExports: ['postgresql'],
      DatabaseName: 'accounts',
    });
    template().hasResourceProperties('AWS::RDS::DBClusterParameterGroup', {
      Parameters: {
        'rds.force_ssl': '1',
        // Slow statements are logged; their bind parameters (tokens, profile data) are not.
        log_min_duration_statement: '1000',
        log_parameter_max_length: '0',
        log_parameter_max_length_on_error: '0',
      },
    });
    template().hasResourceProperties('AWS::RDS::DBInstance', {
      DBInstanceClass: 'db.serverless',
      PubliclyAccessible: false,
    });
    template().resourceCountIs('AWS::EC2::NatGateway', 0);
    template().resourceCountIs('AWS::EC2::InternetGateway', 0);
    template().hasResourceProperties('AWS::EC2::VPCEndpoint', {
      ServiceName: Match.objectLike({
        'Fn::Join': ['', ['com.amazonaws.', { Ref: 'AWS::Region' }, '.secretsmanager']],
      }),
      PrivateDnsEnabled: true,
    });
  });

  test('only the migration and the rotation Lambdas may reach the Secrets Manager endpoint and the database', () => {
    const endpointSg = Object.keys(resourcesOf(template(), 'AWS::EC2::SecurityGroup')).find((id) =>
      id.startsWith('NetworkVpcSecretsManagerSecurityGroup'),
    );
    const clusterSg = Object.keys(resourcesOf(template(), 'AWS::EC2::SecurityGroup')).find((id) =>
      id.startsWith('DatabaseClusterSecurityGroup'),
    );
    const sourcesInto = (sg: string | undefined) =>
      Object.values(resourcesOf(template(), 'AWS::EC2::SecurityGroupIngress'))
        .filter((r) => JSON.stringify(r.Properties?.GroupId) === JSON.stringify({ 'Fn::GetAtt': [sg, 'GroupId'] }))
        .map((r) =>
          (r.Properties?.SourceSecurityGroupId as { 'Fn::GetAtt': string[] })['Fn::GetAtt'][0].replace(
            /[0-9A-F]{8}$/,
            '',
          ),
        )
        .sort();
    expect(sourcesInto(endpointSg)).toEqual([
      'DatabaseRotationSecurityGroup',
      'SchemaMigrationHandlerFunctionSecurityGroup',
    ]);
    expect(sourcesInto(clusterSg)).toEqual([
      'DatabaseRotationSecurityGroup',
      'SchemaMigrationHandlerFunctionSecurityGroup',
    ]);
    expect(
      resourcesOf(template(), 'AWS::EC2::SecurityGroup')[endpointSg!].Properties?.SecurityGroupIngress,
    ).toBeUndefined();
  });

  test('the master, the jobs\u2019 and the API\u2019s secrets rotate every 30 days, each through its attachment to the cluster', () => {
    const schedules = Object.values(resourcesOf(template(), 'AWS::SecretsManager::RotationSchedule'));
    expect(schedules).toHaveLength(3);
    for (const schedule of schedules)
      expect(schedule.Properties?.RotationRules).toEqual({ ScheduleExpression: 'rate(30 days)' });
    // The attachment (AWS::SecretsManager::SecretTargetAttachment) adds host, port and engine,
    // which the rotation function connects with: a schedule on the bare secret could rotate first.
    const attachments = resourcesOf(template(), 'AWS::SecretsManager::SecretTargetAttachment');
    const attachmentOf = (secret: string) => {
      const found = Object.entries(attachments).filter(
        ([, a]) => JSON.stringify(a.Properties?.SecretId) === JSON.stringify({ Ref: secret }),
      );
      expect(found).toHaveLength(1);
      expect(found[0][1].Properties?.TargetType).toBe('AWS::RDS::DBCluster');
      return found[0][0];
    };
    // The schedules keep the logical ids they had on the bare secrets: one resource each, updated
    // in place, never a second schedule created beside the first and the first then deleted.
    expect(Object.keys(resourcesOf(template(), 'AWS::SecretsManager::RotationSchedule')).sort()).toEqual([
      'DatabaseApiSecretRotationScheduleE646FAB3',
      'DatabaseMasterSecretAttachmentRotationSchedule8ADE63F4',
      'DatabaseWorkerSecretRotationScheduleCA63A5F0',
    ]);
    const worker = attachmentOf(STATEFUL_LOGICAL_IDS.workerSecret);
    const api = attachmentOf(STATEFUL_LOGICAL_IDS.apiSecret);
    expect(worker.startsWith(STATEFUL_LOGICAL_IDS.workerSecretAttachment)).toBe(true);
    expect(api.startsWith(STATEFUL_LOGICAL_IDS.apiSecretAttachment)).toBe(true);
    expect(
      schedules.map((s) => s.Properties?.SecretId).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
    ).toEqual(
      [{ Ref: api }, { Ref: STATEFUL_LOGICAL_IDS.masterSecretAttachment }, { Ref: worker }].sort((a, b) =>
        JSON.stringify(a).localeCompare(JSON.stringify(b)),
      ),
    );
  });

  test('every function runs on Node.js 24 and the app\u2019s own ones on ARM64', () => {
    for (const fn of Object.values(resourcesOf(template(), 'AWS::Lambda::Function'))) {
      expect(fn.Properties?.Runtime).toBe('nodejs24.x');
    }
    for (const fn of [
      tokenRefresh(template()),
      accountSync(template()),
      migrationHandler(template()),
      apiHandler(template()),
    ]) {
      expect(fn.properties.Architectures).toEqual(['arm64']);
    }
  });

  test('the jobs run outside the VPC on the environment\u2019s schedules (directly, or through their dispatcher with fan-out), with retries and a dead-letter queue', () => {
    const fanOut = fanOutOf(env) !== undefined;
    // `fn` is what the schedule invokes: the job function, or its dispatcher with fan-out.
    for (const [fn, schedule] of [
      [fanOut ? tokenRefreshDispatcher(template()) : tokenRefresh(template()), 'rate(5 minutes)'],
      [fanOut ? accountSyncDispatcher(template()) : accountSync(template()), 'rate(10 minutes)'],
    ] as const) {
      expect(fn.properties.VpcConfig).toBeUndefined();
      // A failed run goes to the queue as an on-failure destination record (it carries the
      // error); a function dead-letter queue would keep only the event.
      expect(fn.properties.DeadLetterConfig).toBeUndefined();
      const invokeConfig = Object.values(resourcesOf(template(), 'AWS::Lambda::EventInvokeConfig')).find(
        (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: fn.id }),
      );
      const onFailure = (invokeConfig?.Properties?.DestinationConfig as any)?.OnFailure?.Destination;
      const queue = onFailure['Fn::GetAtt'][0];
      expect(onFailure).toEqual({ 'Fn::GetAtt': [queue, 'Arn'] });
      expect(resourcesOf(template(), 'AWS::SQS::Queue')[queue]).toBeDefined();
      // The queue's depth is alarmed (a failed run or an undelivered event raises it).
      const depthAlarms = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm')).filter((a) => {
        const text = JSON.stringify(a.Properties);
        return (
          text.includes(JSON.stringify({ 'Fn::GetAtt': [queue, 'QueueName'] })) &&
          text.includes('"ApproximateNumberOfMessagesVisible"')
        );
      });
      expect(depthAlarms).toHaveLength(1);
      template().hasResourceProperties('AWS::Events::Rule', {
        ScheduleExpression: schedule,
        // Dev's schedules are off (cdk.json): its cluster pauses when nobody calls it.
        State: env === 'dev' ? 'DISABLED' : 'ENABLED',
        Targets: [
          {
            Arn: { 'Fn::GetAtt': [fn.id, 'Arn'] },
            Id: Match.anyValue(),
            RetryPolicy: { MaximumRetryAttempts: 3, MaximumEventAgeInSeconds: 3600 },
            DeadLetterConfig: { Arn: { 'Fn::GetAtt': [queue, 'Arn'] } },
          },
        ],
      });
      template().hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
        FunctionName: { Ref: fn.id },
        MaximumRetryAttempts: 0,
        MaximumEventAgeInSeconds: 3600,
      });
    }
  });

  test('the jobs may send to their own failure queue only (and, with fan-out, consume their own queue)', () => {
    for (const fn of [tokenRefresh(template()), accountSync(template())]) {
      const role = fn.properties.Role['Fn::GetAtt'][0];
      const sqsStatements = Object.values(resourcesOf(template(), 'AWS::IAM::Policy'))
        .filter((p) =>
          (p.Properties?.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: role })),
        )
        .flatMap((p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement)
        .filter((s) => [s.Action].flat().some((a: string) => a.startsWith('sqs:')));
      const invokeConfig = Object.values(resourcesOf(template(), 'AWS::Lambda::EventInvokeConfig')).find(
        (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: fn.id }),
      );
      const queue = (invokeConfig?.Properties?.DestinationConfig as any).OnFailure.Destination;
      const mapping = Object.values(resourcesOf(template(), 'AWS::Lambda::EventSourceMapping')).find(
        (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: fn.id }),
      );
      expect(mapping !== undefined).toBe(fanOutOf(env) !== undefined);
      const workQueue = mapping?.Properties?.EventSourceArn;
      expect(sqsStatements.length).toBeGreaterThan(0);
      for (const statement of sqsStatements) {
        const resources = [statement.Resource].flat().map((r) => JSON.stringify(r));
        const actions = [statement.Action].flat() as string[];
        // Only its failure queue and (with fan-out) its own queue.
        for (const resource of resources)
          expect([JSON.stringify(queue), ...(workQueue ? [JSON.stringify(workQueue)] : [])]).toContain(resource);
        for (const action of actions) expect(action).not.toMatch(/^sqs:(Purge|\*)/);
        // The failure queue: sending only.
        if (resources.includes(JSON.stringify(queue)))
          for (const action of actions) expect(action).toMatch(/^sqs:(SendMessage|GetQueue)/);
      }
      // Sending to its failure queue (on-failure records); with fan-out, consuming its own queue
      // and sending back the messages it had no time to start.
      const allowed = (resource: unknown) =>
        sqsStatements
          .filter((s) => [s.Resource].flat().some((r) => JSON.stringify(r) === JSON.stringify(resource)))
          .flatMap((s) => [s.Action].flat());
      expect(allowed(queue)).toContain('sqs:SendMessage');
      if (workQueue)
        expect(allowed(workQueue)).toEqual(
          expect.arrayContaining(['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:SendMessage']),
        );
    }
  });

  test('the jobs get the environment variables the handlers read', () => {
    for (const [fn, service] of [
      [tokenRefresh(template()), 'token-refresh'],
      [accountSync(template()), 'account-sync'],
    ] as const) {
      expect(fn.properties.Environment.Variables).toEqual({
        [JOB_ENV.environment]: env,
        [JOB_ENV.clusterArn]: expect.anything(),
        [JOB_ENV.databaseSecretArn]: { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
        [JOB_ENV.databaseName]: 'accounts',
        [JOB_ENV.lwaClientSecretArn]: { Ref: STATEFUL_LOGICAL_IDS.lwaSecret },
        [JOB_ENV.tokenKeySecretArn]: { Ref: STATEFUL_LOGICAL_IDS.tokenKeySecret },
        [JOB_ENV.lwaRequestsPerSecond]: '10',
        [JOB_ENV.adsRequestsPerSecond]: '5',
        POWERTOOLS_SERVICE_NAME: service,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        NODE_OPTIONS: '--enable-source-maps',
        // With fan-out, its own queue (unstarted messages are sent back to it).
        ...(fanOutOf(env)
          ? {
              [FAN_OUT_QUEUE_URL_ENV]: {
                Ref: expect.stringMatching(
                  new RegExp(`^Jobs${service === 'token-refresh' ? 'TokenRefresh' : 'AccountSync'}Queue`),
                ),
              },
            }
          : {}),
        // The token refresh's used-within window, where cdk.json sets one (staging, prod: 1 h).
        ...(service === 'token-refresh' && env !== 'dev'
          ? { [JOB_ENV.proactiveRefreshUsedWithinSeconds]: '3600' }
          : {}),
        // The token refresh's window, from its schedule (rate(5 minutes): 11 minutes).
        ...(service === 'token-refresh' ? { [JOB_ENV.proactiveRefreshWindowSeconds]: '660' } : {}),
      });
      expect(JSON.stringify(fn.properties.Environment.Variables[JOB_ENV.clusterArn])).toContain(
        STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'],
      );
    }
  });

  test('the jobs may use the Data API on this cluster and read only their three secrets', () => {
    for (const fn of [tokenRefresh(template()), accountSync(template())]) {
      const role = fn.properties.Role['Fn::GetAtt'][0];
      const statements = Object.values(resourcesOf(template(), 'AWS::IAM::Policy'))
        .filter((p) =>
          (p.Properties?.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: role })),
        )
        .flatMap((p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement);
      const dataApi = statements.filter((s) => [s.Action].flat().some((a: string) => a.startsWith('rds-data:')));
      expect(dataApi).toHaveLength(1);
      expect(dataApi[0].Resource).toEqual(
        expect.objectContaining({
          'Fn::Join': expect.arrayContaining([
            expect.arrayContaining([{ Ref: STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'] }]),
          ]),
        }),
      );
      const secretReads = statements.filter((s) => [s.Action].flat().includes('secretsmanager:GetSecretValue'));
      expect(secretReads.flatMap((s) => [s.Resource].flat())).toEqual(
        expect.arrayContaining([
          { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
          { Ref: STATEFUL_LOGICAL_IDS.lwaSecret },
          { Ref: STATEFUL_LOGICAL_IDS.tokenKeySecret },
        ]),
      );
      expect(secretReads.flatMap((s) => [s.Resource].flat())).toHaveLength(3);
    }
  });

  test('no rds-data or Secrets Manager permission anywhere is granted on `*`', () => {
    const statements = Object.values(resourcesOf(template(), 'AWS::IAM::Policy')).flatMap(
      (p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement,
    );
    const sensitive = statements.filter((s) =>
      [s.Action].flat().some((a: string) => /^(rds-data|secretsmanager):/.test(a)),
    );
    expect(sensitive.length).toBeGreaterThan(0);
    for (const statement of sensitive) expect([statement.Resource].flat()).not.toContain('*');
  });

  test('the migration runs in the VPC after the cluster, with the master secret, and the jobs only after it', () => {
    const { id, resource } = onlyResource(template(), 'Custom::SchemaMigration');
    const fingerprint = fingerprintMigrations(DEFAULT_MIGRATIONS_DIR);
    expect(resource.Properties).toMatchObject({
      MigrationsHash: fingerprint.hash,
      LatestMigration: fingerprint.latest,
      // A stack deployed before the API gets the API's login on the deploy that brings it.
      ApiSecretArn: { Ref: STATEFUL_LOGICAL_IDS.apiSecret },
    });
    expect(resource.DependsOn).toEqual(
      expect.arrayContaining([
        STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'],
        STATEFUL_LOGICAL_IDS['AWS::RDS::DBInstance'],
      ]),
    );
    for (const fn of [tokenRefresh(template()), accountSync(template()), apiHandler(template())]) {
      expect(resourcesOf(template())[fn.id].DependsOn).toContain(id);
    }
    const handler = migrationHandler(template());
    expect(handler.properties.VpcConfig.SubnetIds).toHaveLength(2);
    expect(handler.properties.Timeout).toBe(14 * 60);
    expect(handler.properties.Environment.Variables).toMatchObject({
      MASTER_SECRET_ARN: { Ref: STATEFUL_LOGICAL_IDS.masterSecretAttachment },
      WORKER_SECRET_ARN: { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
      API_SECRET_ARN: { Ref: STATEFUL_LOGICAL_IDS.apiSecret },
      DB_NAME: 'accounts',
      DB_TLS: 'verify-full',
      // The RDS CA bundle shipped with the function (node-function.test.ts finds it there).
      DB_CA_FILE: '/var/task/rds-ca-bundle.pem',
    });
    expect(handler.properties.Environment.Variables.NODE_EXTRA_CA_CERTS).toBeUndefined();
  });

  test('the writer\u2019s certificate is pinned to a CA the migration\u2019s bundle holds', () => {
    const { resource } = onlyResource(template(), 'AWS::RDS::DBInstance');
    expect(resource.Properties?.CACertificateIdentifier).toBe('rds-ca-rsa2048-g1');
  });

  test('passwords are stored as SCRAM, the only kind the Data API can log in with', () => {
    const { resource } = onlyResource(template(), 'AWS::RDS::DBClusterParameterGroup');
    expect(resource.Properties?.Parameters).toMatchObject({
      password_encryption: 'scram-sha-256',
      'rds.force_ssl': '1',
    });
  });

  test('outputs name the secrets operators fill in', () => {
    const outputs = template().toJSON().Outputs;
    expect(outputs.LwaClientSecretArn.Value).toEqual({ Ref: STATEFUL_LOGICAL_IDS.lwaSecret });
    expect(outputs.TokenEncryptionKeySecretArn.Value).toEqual({ Ref: STATEFUL_LOGICAL_IDS.tokenKeySecret });
    expect(outputs.DashboardName.Value).toBe(`AmazonAccounts-${env}`);
    expect(Object.keys(outputs)).toEqual(expect.arrayContaining(['ClusterArn', 'WorkerSecretArn', 'AlarmTopicArn']));
  });

  test('outputs carry what `npm run verify` checks the deploy against', () => {
    const outputs = template().toJSON().Outputs;
    expect(Object.keys(outputs)).toEqual(expect.arrayContaining([...REQUIRED_OUTPUTS]));
    expect(outputs.LatestMigration.Value).toBe(fingerprintMigrations(DEFAULT_MIGRATIONS_DIR).latest);
    expect(outputs.DatabaseName.Value).toBe('accounts');
    expect(outputs.TokenRefreshFunctionName.Value).toEqual({ Ref: tokenRefresh(template()).id });
    expect(outputs.AccountSyncFunctionName.Value).toEqual({ Ref: accountSync(template()).id });
    // The API's URL, under the name verify looks for.
    expect(Object.keys(outputs).filter((key) => API_OUTPUT.test(key))).toEqual(['ApiUrl']);
  });

  test('the secrets operators fill in hold no value in the template', () => {
    for (const id of [STATEFUL_LOGICAL_IDS.lwaSecret, STATEFUL_LOGICAL_IDS.tokenKeySecret]) {
      const properties = template().toJSON().Resources[id].Properties;
      expect(properties.SecretString).toBeUndefined();
      expect(properties.GenerateSecretString).toBeDefined();
    }
  });

  test('both passwords are first rotated after the migration: the jobs\u2019 user exists, the master password stays put under it', () => {
    const { id } = onlyResource(template(), 'Custom::SchemaMigration');
    const applications = Object.entries(resourcesOf(template(), 'AWS::Serverless::Application'));
    expect(applications.map(([logicalId]) => logicalId.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual([
      'DatabaseApiRotation',
      'DatabaseMasterRotation',
      'DatabaseWorkerRotation',
    ]);
    for (const [, application] of applications) expect(application.DependsOn).toContain(id);
    // Each schedule starts its first rotation at once, so it must come after its application.
    const schedules = Object.values(resourcesOf(template(), 'AWS::SecretsManager::RotationSchedule'));
    const rotationFunctions = schedules.map(
      (schedule) => (schedule.Properties?.RotationLambdaARN as { 'Fn::GetAtt': string[] })['Fn::GetAtt'][0],
    );
    expect(rotationFunctions.sort()).toEqual(applications.map(([logicalId]) => logicalId).sort());
    const masterSchedule = schedules.find(
      (schedule) =>
        JSON.stringify(schedule.Properties?.SecretId) ===
        JSON.stringify({ Ref: STATEFUL_LOGICAL_IDS.masterSecretAttachment }),
    );
    expect(masterSchedule).toBeDefined();
  });

  test('the rotation functions call Secrets Manager by its regional name (private DNS), not an endpoint-specific URL', () => {
    const endpointId = Object.keys(resourcesOf(template(), 'AWS::EC2::VPCEndpoint')).find((logicalId) =>
      logicalId.startsWith('NetworkVpcSecretsManager'),
    );
    expect(endpointId).toBeDefined();
    for (const application of Object.values(resourcesOf(template(), 'AWS::Serverless::Application'))) {
      const parameters = application.Properties?.Parameters as Record<string, unknown>;
      expect(JSON.stringify(parameters)).not.toContain(endpointId!);
      expect(parameters.endpoint).toEqual({
        'Fn::Join': ['', ['https://secretsmanager.', { Ref: 'AWS::Region' }, '.', { Ref: 'AWS::URLSuffix' }]],
      });
    }
  });

  test('one dashboard with each Lambda, the jobs\u2019 metrics and Aurora', () => {
    const { resource } = onlyResource(template(), 'AWS::CloudWatch::Dashboard');
    expect(resource.Properties?.DashboardName).toBe(`AmazonAccounts-${env}`);
    const body = JSON.stringify(resource.Properties?.DashboardBody);
    for (const name of Object.values(METRIC_NAMES).filter((n) => n !== METRIC_NAMES.batchDurationMs))
      expect(body).toContain(name);
    for (const name of [
      'Invocations',
      'Errors',
      'Duration',
      'Throttles',
      'ServerlessDatabaseCapacity',
      'DatabaseConnections',
      'CPUUtilization',
    ]) {
      expect(body).toContain(name);
    }
    expect(body).toContain(`\\"environment\\",\\"${env}\\"`);
  });

  test('alarms: job errors, refresh failure rate, dead-letter queues, migration failure, the API — all to the topic', () => {
    const alarms = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm'));
    expect(alarms.map((a) => a.Properties?.AlarmName).sort()).toEqual(
      [
        `AmazonAccounts-${env}-account-sync-dlq-Queue-Message-Count-Max-Critical`,
        // Not an incident: `npm run verify` sets it (below).
        deliveryCheckAlarmName(env),
        `AmazonAccounts-${env}-account-sync-lambda-Fault-Count-Critical`,
        `AmazonAccounts-${env}-accounts-api-Fault-Rate-Critical`,
        `AmazonAccounts-${env}-accounts-api-Latency-P95-Critical`,
        `AmazonAccounts-${env}-accounts-api-gateway-throttled-Critical`,
        `AmazonAccounts-${env}-accounts-api-lambda-Throttled-Count-Critical`,
        `AmazonAccounts-${env}-schema-migration-Fault-Count-Critical`,
        `AmazonAccounts-${env}-token-refresh-dlq-Queue-Message-Count-Max-Critical`,
        `AmazonAccounts-${env}-token-refresh-lambda-Fault-Count-Critical`,
        `AmazonAccounts-${env}-token-refresh-refresh-failure-rate-Critical`,
        `AmazonAccounts-${env}-token-route-lambda-Fault-Count-Critical`,
        `AmazonAccounts-${env}-token-route-lambda-Throttled-Count-Critical`,
        // The event publisher (lib/events-monitoring.ts): errors, its dead-letter queue, events stuck in the outbox.
        `AmazonAccounts-${env}-event-publisher-Fault-Count-Critical`,
        `AmazonAccounts-${env}-event-publisher-dlq-Queue-Message-Count-Max-Critical`,
        `AmazonAccounts-${env}-event-publisher-backlog-oldest-unpublished-Critical`,
        // With fan-out: each dispatcher's errors and the age of each queue's oldest message.
        ...(fanOutOf(env)
          ? [
              `AmazonAccounts-${env}-account-sync-dispatcher-lambda-Fault-Count-Critical`,
              `AmazonAccounts-${env}-account-sync-queue-Queue-Message-Age-Max-Critical`,
              `AmazonAccounts-${env}-token-refresh-dispatcher-lambda-Fault-Count-Critical`,
              `AmazonAccounts-${env}-token-refresh-queue-Queue-Message-Age-Max-Critical`,
            ]
          : []),
      ].sort(),
    );
    const topic = onlyResource(template(), 'AWS::SNS::Topic').id;
    for (const alarm of alarms) {
      expect(alarm.Properties?.AlarmActions).toEqual([{ Ref: topic }]);
      expect(alarm.Properties?.ActionsEnabled).toBe(env !== 'dev');
    }
    const rate = alarms.find((a) => String(a.Properties?.AlarmName).endsWith('refresh-failure-rate-Critical'));
    expect(rate?.Properties).toMatchObject({ Threshold: 20, ComparisonOperator: 'GreaterThanThreshold' });
    const expression = JSON.stringify(rate?.Properties?.Metrics);
    expect(expression).toContain(METRIC_NAMES.refreshFailures);
    expect(expression).toContain(METRIC_NAMES.tokensRefreshed);
    expect(expression).toContain('{"Name":"service","Value":"token-refresh"}');
    expect(expression).toContain(`{"Name":"environment","Value":"${env}"}`);
  });

  test('the alarm topic\u2019s policy lets this account\u2019s CloudWatch alarms publish, beside the TLS-only rule', () => {
    const topic = onlyResource(template(), 'AWS::SNS::Topic').id;
    const { resource } = onlyResource(template(), 'AWS::SNS::TopicPolicy');
    expect(resource.Properties?.Topics).toEqual([{ Ref: topic }]);
    const statements = (resource.Properties?.PolicyDocument as { Statement: Array<Record<string, unknown>> }).Statement;
    // The policy replaces SNS's default one: without an Allow, CloudWatch could not publish.
    expect(statements).toEqual([
      {
        Sid: 'AllowPublishThroughSSLOnly',
        Effect: 'Deny',
        Principal: '*',
        Action: 'sns:Publish',
        Resource: { Ref: topic },
        Condition: { Bool: { 'aws:SecureTransport': 'false' } },
      },
      {
        Sid: 'AllowCloudWatchAlarmsOfThisAccount',
        Effect: 'Allow',
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: 'sns:Publish',
        Resource: { Ref: topic },
        // Only this account's alarms in this region (the confused-deputy guard).
        Condition: {
          ArnLike: {
            'aws:SourceArn': {
              'Fn::Join': [
                '',
                [
                  'arn:',
                  { Ref: 'AWS::Partition' },
                  ':cloudwatch:',
                  { Ref: 'AWS::Region' },
                  ':',
                  { Ref: 'AWS::AccountId' },
                  ':alarm:*',
                ],
              ],
            },
          },
          StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
        },
      },
    ]);
    // What `npm run verify` looks for in the deployed policy.
    expect(topicPolicyAllowsCloudWatch(JSON.stringify(resource.Properties?.PolicyDocument))).toBe(true);
  });

  test('the delivery-check alarm: on a metric nothing publishes, to the topic, actions on where alarms notify; the e-mail subscription filters it out', () => {
    const topic = onlyResource(template(), 'AWS::SNS::Topic').id;
    const alarm = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm')).find(
      (a) => a.Properties?.AlarmName === deliveryCheckAlarmName(env),
    );
    expect(alarm?.Properties).toMatchObject({
      AlarmActions: [{ Ref: topic }],
      ActionsEnabled: env !== 'dev',
      Namespace: METRICS_NAMESPACE,
      MetricName: 'AlarmDeliveryCheck',
      TreatMissingData: 'notBreaching',
    });
    expect(alarm?.Properties?.OKActions).toBeUndefined();
    for (const subscription of Object.values(resourcesOf(template(), 'AWS::SNS::Subscription'))) {
      expect(subscription.Properties).toMatchObject({
        FilterPolicyScope: 'MessageBody',
        FilterPolicy: { AlarmName: [{ 'anything-but': [deliveryCheckAlarmName(env)] }] },
      });
    }
    expect(template().toJSON().Outputs.AlarmDeliveryCheckAlarmName.Value).toEqual({
      Ref: Object.entries(resourcesOf(template(), 'AWS::CloudWatch::Alarm')).find(
        ([, a]) => a.Properties?.AlarmName === deliveryCheckAlarmName(env),
      )![0],
    });
  });

  test('cdk-nag AWS Solutions checks find nothing unacknowledged, and every acknowledgement has a reason', () => {
    const { app } = buildStack(env);
    app.synth();
    const report = new AwsSolutionsChecks(app).validateScope(app);
    expect(
      report.violations.map((v) => `${v.ruleName} ${v.violatingResources.map((r) => r.constructPath).join(', ')}`),
    ).toEqual([]);
    const acknowledged = acknowledgementsIn(app);
    expect(acknowledged.length).toBeGreaterThan(0);
    for (const { id, reason } of acknowledged)
      expect({ id, reasonLength: reason.length > 30 }).toEqual({ id, reasonLength: true });
    const ours = acknowledged.filter((a) => a.id.includes('AwsSolutions-'));
    expect([...new Set(ours.map((a) => a.id.replace(/<[A-Za-z0-9]+\.Arn>/, '<Arn>')))].sort()).toMatchSnapshot();
  });
});

describe.each(ENVIRONMENTS)('%s accounts API', (env) => {
  const template = () => templateOf(env);
  const config = () => resolveEnvironment(env, cdkJsonContext().environments).api;
  const httpApi = () => onlyResource(template(), 'AWS::ApiGatewayV2::Api');
  const stage = () => onlyResource(template(), 'AWS::ApiGatewayV2::Stage').resource.Properties as Record<string, any>;

  test('exactly the listed routes, each to the one Lambda integration (payload 2.0), no other route and no authorizer', () => {
    // The internal token route (IAM, its own function) has its own tests (test/infra/accounts-api.test.ts).
    const routes = Object.values(resourcesOf(template(), 'AWS::ApiGatewayV2::Route'))
      .map((r) => r.Properties as Record<string, any>)
      .filter((r) => r.RouteKey !== INTERNAL_TOKEN_ROUTE);
    expect(routes.map((r) => r.RouteKey).sort()).toEqual([...API_ROUTES].sort());
    const [integrationId, integration] = Object.entries(resourcesOf(template(), 'AWS::ApiGatewayV2::Integration')).find(
      ([, i]) =>
        JSON.stringify(i.Properties?.IntegrationUri) ===
        JSON.stringify({ 'Fn::GetAtt': [apiHandler(template()).id, 'Arn'] }),
    )!;
    expect(integration.Properties).toEqual({
      ApiId: { Ref: httpApi().id },
      IntegrationType: 'AWS_PROXY',
      IntegrationUri: { 'Fn::GetAtt': [apiHandler(template()).id, 'Arn'] },
      PayloadFormatVersion: '2.0',
    });
    for (const route of routes) {
      expect(route).toEqual({
        ApiId: { Ref: httpApi().id },
        RouteKey: route.RouteKey,
        // The Lambda verifies the JWT itself (ES256); API Gateway authorizes nothing.
        AuthorizationType: 'NONE',
        Target: { 'Fn::Join': ['', ['integrations/', { Ref: integrationId }]] },
      });
    }
    template().resourceCountIs('AWS::ApiGatewayV2::Authorizer', 0);
    template().resourceCountIs('AWS::ApiGatewayV2::Stage', 1);
  });

  test('API Gateway may invoke the function through those routes\u2019 paths only', () => {
    const permissions = Object.values(resourcesOf(template(), 'AWS::Lambda::Permission')).filter(
      (p) =>
        JSON.stringify(p.Properties?.FunctionName) ===
        JSON.stringify({ 'Fn::GetAtt': [apiHandler(template()).id, 'Arn'] }),
    );
    expect(permissions).toHaveLength(API_ROUTES.length);
    const scopes = permissions.map((p) => {
      expect(p.Properties?.Principal).toBe('apigateway.amazonaws.com');
      expect(p.Properties?.Action).toBe('lambda:InvokeFunction');
      const parts = (p.Properties?.SourceArn as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
      expect(parts).toContainEqual({ Ref: httpApi().id });
      // …/<apiId>/*/*/<path>: any stage and method (CDK's scoping), this path only.
      return String(parts.at(-1));
    });
    expect(scopes.sort()).toEqual(API_ROUTES.map((r) => `/*/*${r.split(' ')[1]}`).sort());
  });

  test('the stage throttles every route at the environment\u2019s rate and burst', () => {
    expect(stage()).toMatchObject({
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: {
        ThrottlingRateLimit: config().throttle.rateLimit,
        ThrottlingBurstLimit: config().throttle.burstLimit,
      },
    });
    expect(stage().RouteSettings).toBeUndefined();
  });

  test('access logs: one JSON object per request, in a log group with the environment\u2019s retention, never the Authorization header', () => {
    const settings = stage().AccessLogSettings as { DestinationArn: any; Format: string };
    const logGroup = settings.DestinationArn['Fn::GetAtt'][0];
    expect(resourcesOf(template(), 'AWS::Logs::LogGroup')[logGroup].Properties?.RetentionInDays).toBe(
      resolveEnvironment(env, cdkJsonContext().environments).logRetentionDays,
    );
    const fields = JSON.parse(settings.Format) as Record<string, string>;
    expect(fields).toEqual(accessLogFields(env));
    expect(fields).toMatchObject({
      requestId: '$context.requestId',
      routeKey: '$context.routeKey',
      status: '$context.status',
      responseLatency: '$context.responseLatency',
      integrationError: '$context.integrationErrorMessage',
      environment: env,
    });
    // No header, no query string, nothing of a token.
    expect(settings.Format).not.toMatch(/authorization|\$request\.|header|querystring|authorizer|jwt/i);
  });

  test('CORS: the environment\u2019s origins, the Authorization and Content-Type headers, the methods the routes use', () => {
    const methods = [...new Set(API_ROUTES.map((r) => r.split(' ')[0]))];
    expect(httpApi().resource.Properties?.CorsConfiguration).toEqual({
      AllowOrigins: config().corsAllowedOrigins,
      AllowHeaders: ['authorization', 'content-type'],
      AllowMethods: [...methods, 'OPTIONS'],
      ExposeHeaders: ['retry-after'],
      AllowCredentials: false,
      MaxAge: 3600,
    });
  });

  test('the function: Node.js 24 on ARM64, outside the VPC, synchronous (no destination), below the integration timeout', () => {
    const fn = apiHandler(template()).properties;
    expect(fn).toMatchObject({ Runtime: 'nodejs24.x', Architectures: ['arm64'] });
    expect(fn.VpcConfig).toBeUndefined();
    expect(fn.Timeout).toBeLessThan(29);
    const invokeConfigs = Object.values(resourcesOf(template(), 'AWS::Lambda::EventInvokeConfig')).filter(
      (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: apiHandler(template()).id }),
    );
    expect(invokeConfigs).toEqual([]);
  });

  test('the function gets the API\u2019s environment variables: its own database login, the sign-in settings, the sync function', () => {
    expect(apiHandler(template()).properties.Environment.Variables).toEqual({
      [API_ENV.environment]: env,
      [API_ENV.clusterArn]: expect.objectContaining({
        'Fn::Join': expect.arrayContaining([
          expect.arrayContaining([{ Ref: STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'] }]),
        ]),
      }),
      [API_ENV.databaseSecretArn]: { Ref: STATEFUL_LOGICAL_IDS.apiSecret },
      [API_ENV.databaseName]: 'accounts',
      [API_ENV.lwaClientSecretArn]: { Ref: STATEFUL_LOGICAL_IDS.lwaSecret },
      [API_ENV.tokenKeySecretArn]: { Ref: STATEFUL_LOGICAL_IDS.tokenKeySecret },
      [API_ENV.lwaRequestsPerSecond]: String(
        resolveEnvironment(env, cdkJsonContext().environments).amazonLimits.lwaRequestsPerSecond,
      ),
      [API_ENV.jwtIssuer]: config().jwtIssuer,
      [API_ENV.jwtAudience]: [config().jwtAudience].flat().join(','),
      ...(config().jwksUrl ? { [API_ENV.jwksUrl]: config().jwksUrl } : {}),
      [API_ENV.accountSyncFunctionName]: { Ref: accountSync(template()).id },
      [API_ENV.connectRedirectUris]: config().connectRedirectUris.join(','),
      POWERTOOLS_SERVICE_NAME: 'accounts-api',
      NODE_OPTIONS: '--enable-source-maps',
    });
  });

  test('least privilege: the Data API on this cluster, exactly three secrets, and invoking exactly the account-sync function', () => {
    const fn = apiHandler(template());
    const statements = statementsOf(template(), fn).map((s) => ({
      ...s,
      Action: [s.Action].flat().sort(),
      Resource: [s.Resource].flat(),
    }));
    expect(statements).toEqual([
      {
        Effect: 'Allow',
        Action: [
          'rds-data:BatchExecuteStatement',
          'rds-data:BeginTransaction',
          'rds-data:CommitTransaction',
          'rds-data:ExecuteStatement',
          'rds-data:RollbackTransaction',
        ],
        Resource: [
          {
            'Fn::Join': [
              '',
              [
                'arn:',
                { Ref: 'AWS::Partition' },
                ':rds:',
                { Ref: 'AWS::Region' },
                ':',
                { Ref: 'AWS::AccountId' },
                ':cluster:',
                { Ref: STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'] },
              ],
            ],
          },
        ],
      },
      {
        Effect: 'Allow',
        Action: ['secretsmanager:DescribeSecret', 'secretsmanager:GetSecretValue'],
        Resource: [
          { Ref: STATEFUL_LOGICAL_IDS.apiSecret },
          { Ref: STATEFUL_LOGICAL_IDS.lwaSecret },
          { Ref: STATEFUL_LOGICAL_IDS.tokenKeySecret },
        ],
      },
      {
        Effect: 'Allow',
        Action: ['lambda:InvokeFunction'],
        Resource: [{ 'Fn::GetAtt': [accountSync(template()).id, 'Arn'] }],
      },
    ]);
    // Logs through Lambda's own managed policy, nothing else attached.
    const role = resourcesOf(template(), 'AWS::IAM::Role')[fn.properties.Role['Fn::GetAtt'][0]];
    expect(JSON.stringify(role.Properties?.ManagedPolicyArns)).toBe(
      JSON.stringify([
        {
          'Fn::Join': [
            '',
            ['arn:', { Ref: 'AWS::Partition' }, ':iam::aws:policy/service-role/AWSLambdaBasicExecutionRole'],
          ],
        },
      ]),
    );
    expect(role.Properties?.Policies).toBeUndefined();
  });

  test('the API\u2019s database login has its own generated secret, attached to the cluster', () => {
    const secret = template().toJSON().Resources[STATEFUL_LOGICAL_IDS.apiSecret];
    expect(secret.Type).toBe('AWS::SecretsManager::Secret');
    expect(secret.Properties.GenerateSecretString).toMatchObject({
      SecretStringTemplate: JSON.stringify({ username: 'accounts_api', dbname: 'accounts' }),
      GenerateStringKey: 'password',
    });
    template().hasResourceProperties('AWS::SecretsManager::SecretTargetAttachment', {
      SecretId: { Ref: STATEFUL_LOGICAL_IDS.apiSecret },
      TargetType: 'AWS::RDS::DBCluster',
    });
  });

  test('alarms: 5xx rate, p95 latency, the function\u2019s throttles and API Gateway\u2019s throttling, counted from the access logs', () => {
    const alarms = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm')).map(
      (a) => a.Properties as Record<string, any>,
    );
    const named = (suffix: string) =>
      alarms.find((a) => a.AlarmName === `AmazonAccounts-${env}-accounts-api-${suffix}`)!;
    const apiDimensions = [
      { Name: 'ApiId', Value: { Ref: httpApi().id } },
      { Name: 'Stage', Value: '$default' },
    ];

    const faults = named('Fault-Rate-Critical');
    expect(faults).toMatchObject({ Threshold: 0.05, ComparisonOperator: 'GreaterThanThreshold' });
    const faultMetric = faults.Metrics.find((m: any) => m.MetricStat?.Stat === 'Average').MetricStat;
    expect(faultMetric.Metric).toEqual({ Namespace: 'AWS/ApiGateway', MetricName: '5xx', Dimensions: apiDimensions });
    // Evaluated only with more than 10 requests in the period.
    expect(faults.Metrics.find((m: any) => m.ReturnData !== false).Expression).toBe('IF(sampleCount > 10, metric)');

    const latency = named('Latency-P95-Critical');
    expect(latency).toMatchObject({ Threshold: 2000, DatapointsToAlarm: 3, EvaluationPeriods: 3 });
    expect(latency.Metrics[0].MetricStat).toMatchObject({
      Stat: 'p95',
      Metric: { Namespace: 'AWS/ApiGateway', MetricName: 'Latency', Dimensions: apiDimensions },
    });

    expect(named('lambda-Throttled-Count-Critical').Metrics[0].MetricStat.Metric).toEqual({
      Namespace: 'AWS/Lambda',
      MetricName: 'Throttles',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: apiHandler(template()).id } }],
    });

    // API Gateway's own 429s: the metric filter on the access logs and the alarm read the same metric.
    const { resource: filter } = onlyResource(template(), 'AWS::Logs::MetricFilter');
    expect(filter.Properties?.FilterPattern).toBe('{ ($.status = "429") && ($.integrationStatus = "-") }');
    expect(filter.Properties?.LogGroupName).toEqual({
      Ref: stage().AccessLogSettings.DestinationArn['Fn::GetAtt'][0],
    });
    const transformation = (filter.Properties?.MetricTransformations as any[])[0];
    expect(transformation).toMatchObject({ MetricNamespace: METRICS_NAMESPACE, MetricName: API_THROTTLED_METRIC });
    const throttled = named('gateway-throttled-Critical');
    expect(throttled).toMatchObject({ DatapointsToAlarm: 2, EvaluationPeriods: 3, TreatMissingData: 'notBreaching' });
    const metric = throttled.Metrics[0].MetricStat.Metric;
    expect(metric).toMatchObject({ Namespace: METRICS_NAMESPACE, MetricName: API_THROTTLED_METRIC });
    // The log's constant fields give exactly the alarm's dimensions.
    const logged = accessLogFields(env);
    expect(
      Object.fromEntries(
        (transformation.Dimensions as Array<{ Key: string; Value: string }>).map((d) => [
          d.Key,
          logged[d.Value.replace('$.', '')],
        ]),
      ),
    ).toEqual(
      Object.fromEntries((metric.Dimensions as Array<{ Name: string; Value: string }>).map((d) => [d.Name, d.Value])),
    );
  });

  test('the dashboard has the API\u2019s row: requests, 4xx, 5xx, p50/p95 latency, the function\u2019s errors and throttles', () => {
    const body = JSON.stringify(
      onlyResource(template(), 'AWS::CloudWatch::Dashboard').resource.Properties?.DashboardBody,
    );
    for (const text of ['Accounts API', '4xx', '5xx', 'Latency', 'P50', 'P95', API_THROTTLED_METRIC, 'Throttles'])
      expect(body).toContain(text);
  });

  test('outputs: the API\u2019s URL and its database login\u2019s secret', () => {
    const outputs = template().toJSON().Outputs;
    expect(outputs.ApiUrl.Value).toEqual({
      'Fn::Join': [
        '',
        [
          'https://',
          { Ref: httpApi().id },
          '.execute-api.',
          { Ref: 'AWS::Region' },
          '.',
          { Ref: 'AWS::URLSuffix' },
          '/',
        ],
      ],
    });
    expect(outputs.ApiSecretArn.Value).toEqual({ Ref: STATEFUL_LOGICAL_IDS.apiSecret });
  });
});

function acknowledgementsIn(root: IConstruct): Array<{ path: string; id: string; reason: string }> {
  return root.node
    .findAll()
    .flatMap((c) =>
      c.node.metadata
        .filter((m) => m.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
        .flatMap((m) =>
          Object.entries(m.data as Record<string, string>).map(([id, reason]) => ({ path: c.node.path, id, reason })),
        ),
    );
}

describe.each(ENVIRONMENTS.filter((env) => fanOutOf(env) !== undefined))('%s fan-out', (env) => {
  const template = () => templateOf(env);
  const jobs = () =>
    [
      { fn: tokenRefresh(template()), dispatcher: tokenRefreshDispatcher(template()), job: 'token-refresh' },
      { fn: accountSync(template()), dispatcher: accountSyncDispatcher(template()), job: 'account-sync' },
    ] as const;
  const mappingOf = (fn: { id: string }) => {
    const found = Object.values(resourcesOf(template(), 'AWS::Lambda::EventSourceMapping')).filter(
      (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: fn.id }),
    );
    expect(found).toHaveLength(1);
    return found[0].Properties as Record<string, any>;
  };
  const failureQueueOf = (fn: { id: string }) => {
    const invokeConfig = Object.values(resourcesOf(template(), 'AWS::Lambda::EventInvokeConfig')).find(
      (r) => JSON.stringify(r.Properties?.FunctionName) === JSON.stringify({ Ref: fn.id }),
    );
    return (invokeConfig?.Properties?.DestinationConfig as any).OnFailure.Destination['Fn::GetAtt'][0] as string;
  };

  test('each job function consumes its own queue: cdk.json\u2019s maximum concurrency, failures reported per message, redrive to the job\u2019s dead-letter queue', () => {
    for (const { fn } of jobs()) {
      const mapping = mappingOf(fn);
      expect(mapping).toMatchObject({
        BatchSize: FAN_OUT_BATCH_SIZE,
        ScalingConfig: { MaximumConcurrency: fanOutOf(env)!.maxConcurrency },
        FunctionResponseTypes: ['ReportBatchItemFailures'],
      });
      const queueId = mapping.EventSourceArn['Fn::GetAtt'][0] as string;
      const queue = resourcesOf(template(), 'AWS::SQS::Queue')[queueId].Properties as Record<string, any>;
      expect(queue.RedrivePolicy).toEqual({
        deadLetterTargetArn: { 'Fn::GetAtt': [failureQueueOf(fn), 'Arn'] },
        maxReceiveCount: FAN_OUT_MAX_RECEIVE_COUNT,
      });
      // AWS's Lambda guidance for an SQS event source: a maxReceiveCount of at least 5.
      expect(queue.RedrivePolicy.maxReceiveCount).toBeGreaterThanOrEqual(5);
      // AWS's advice for an event source mapping: six times the function's timeout.
      expect(queue.VisibilityTimeout).toBe(6 * (fn.properties.Timeout as number));
      expect(queue.SqsManagedSseEnabled).toBe(true);
    }
  });

  test('each dispatcher: outside the VPC, the database and its queue in its variables, sending to its job\u2019s queue only, failures to the dead-letter queue', () => {
    for (const { fn, dispatcher, job } of jobs()) {
      const queueId = mappingOf(fn).EventSourceArn['Fn::GetAtt'][0] as string;
      expect(dispatcher.properties.VpcConfig).toBeUndefined();
      expect(dispatcher.properties.Environment.Variables).toMatchObject({
        [JOB_ENV.environment]: env,
        [JOB_ENV.databaseSecretArn]: { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
        [DISPATCHER_ENV.job]: job,
        [DISPATCHER_ENV.queueUrl]: { Ref: queueId },
        [DISPATCHER_ENV.requestsPerSecond]: job === 'token-refresh' ? '10' : '5',
        POWERTOOLS_SERVICE_NAME: `${job}-dispatcher`,
      });
      // No secret but the database login's: it never sees a token it could use.
      expect(JSON.stringify(dispatcher.properties.Environment.Variables)).not.toContain(STATEFUL_LOGICAL_IDS.lwaSecret);
      const sqsStatements = statementsOf(template(), dispatcher).filter((st) =>
        [st.Action].flat().some((a: string) => a.startsWith('sqs:')),
      );
      // Its own queue, and the dead-letter queue its failed invocations go to: nothing else.
      const sentTo = sqsStatements
        .filter((st) => [st.Action].flat().includes('sqs:SendMessage'))
        .flatMap((st) => [st.Resource].flat().map((r) => JSON.stringify(r)));
      expect([...new Set(sentTo)].sort()).toEqual(
        [queueId, failureQueueOf(fn)].map((id) => JSON.stringify({ 'Fn::GetAtt': [id, 'Arn'] })).sort(),
      );
      for (const st of sqsStatements)
        for (const action of [st.Action].flat()) expect(action).not.toMatch(/^sqs:(Receive|Delete|Purge|\*)/);
      expect(failureQueueOf(dispatcher)).toBe(failureQueueOf(fn));
    }
  });

  test('the dashboard graphs each queue\u2019s depth and age and the ids each dispatcher sent; the age alarm is at the dispatch mark', () => {
    const body = JSON.stringify(
      onlyResource(template(), 'AWS::CloudWatch::Dashboard').resource.Properties?.DashboardBody,
    );
    for (const name of [
      'ApproximateNumberOfMessagesVisible',
      'ApproximateAgeOfOldestMessage',
      DISPATCH_METRICS.dispatched,
      DISPATCH_METRICS.notSent,
      '\\"service\\",\\"token-refresh-dispatcher\\"',
      '\\"service\\",\\"account-sync-dispatcher\\"',
    ])
      expect(body).toContain(name);
    const alarms = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm'));
    for (const job of ['token-refresh', 'account-sync'] as const) {
      const age = alarms.find(
        (a) => a.Properties?.AlarmName === `AmazonAccounts-${env}-${job}-queue-Queue-Message-Age-Max-Critical`,
      );
      expect(age?.Properties?.Threshold).toBe(DISPATCH_MARK_SECONDS[job]);
      expect(JSON.stringify(age?.Properties)).toContain('ApproximateAgeOfOldestMessage');
    }
  });
});

test('dev does not fan out: no dispatcher, no event source mapping; the schedules invoke the job functions', () => {
  expect(fanOutOf('dev')).toBeUndefined();
  expect(Object.keys(resourcesOf(templateOf('dev'), 'AWS::Lambda::EventSourceMapping'))).toEqual([]);
  const descriptions = Object.values(resourcesOf(templateOf('dev'), 'AWS::Lambda::Function')).map((r) =>
    String(r.Properties?.Description),
  );
  expect(descriptions.filter((d) => d.startsWith(DISPATCHER_PREFIX))).toEqual([]);
});

describe('per-environment settings', () => {
  test('dev\u2019s schedules are off by default, so nothing wakes its paused cluster; staging\u2019s and prod\u2019s run', () => {
    const states = (env: string) =>
      Object.values(resourcesOf(templateOf(env), 'AWS::Events::Rule'))
        .filter((r) => r.Properties?.ScheduleExpression !== undefined)
        .map((r) => r.Properties?.State);
    // The two jobs' and the event publisher's.
    expect(states('dev')).toEqual(['DISABLED', 'DISABLED', 'DISABLED']);
    expect(states('staging')).toEqual(['ENABLED', 'ENABLED', 'ENABLED']);
    expect(states('prod')).toEqual(['ENABLED', 'ENABLED', 'ENABLED']);
    // Turned on in cdk.json, dev's schedules run like the others'.
    const dev = structuredClone((cdkJsonContext().environments as Record<string, any>).dev);
    dev.schedules.enabled = true;
    const enabled = Template.fromStack(buildStack('dev', { environments: { dev } }).stack);
    expect(
      Object.values(resourcesOf(enabled, 'AWS::Events::Rule'))
        .filter((r) => r.Properties?.ScheduleExpression !== undefined)
        .map((r) => r.Properties?.State),
    ).toEqual(['ENABLED', 'ENABLED', 'ENABLED']);
  });

  test('dev pauses at 0 ACU and is destroyed cleanly', () => {
    const t = templateOf('dev');
    t.hasResourceProperties('AWS::RDS::DBCluster', {
      ServerlessV2ScalingConfiguration: { MinCapacity: 0, MaxCapacity: 2, SecondsUntilAutoPause: 600 },
      DeletionProtection: false,
      BackupRetentionPeriod: 1,
    });
    t.hasResource('AWS::RDS::DBCluster', { DeletionPolicy: 'Delete', UpdateReplacePolicy: 'Delete' });
    for (const id of [
      STATEFUL_LOGICAL_IDS.masterSecret,
      STATEFUL_LOGICAL_IDS.workerSecret,
      STATEFUL_LOGICAL_IDS.apiSecret,
      STATEFUL_LOGICAL_IDS.lwaSecret,
    ]) {
      expect(t.toJSON().Resources[id].DeletionPolicy).toBe('Delete');
    }
  });

  test.each(['staging', 'prod'])(
    '%s keeps its data: deletion protection, snapshot on removal, backups of at least 7 days',
    (env) => {
      const t = templateOf(env);
      t.hasResourceProperties('AWS::RDS::DBCluster', {
        BackupRetentionPeriod: Match.anyValue(),
        ServerlessV2ScalingConfiguration: Match.objectLike({ MinCapacity: 0.5 }),
      });
      const cluster = onlyResource(t, 'AWS::RDS::DBCluster').resource as Record<string, any>;
      expect(cluster.Properties.BackupRetentionPeriod).toBeGreaterThanOrEqual(7);
      expect(cluster.Properties.ServerlessV2ScalingConfiguration.SecondsUntilAutoPause).toBeUndefined();
      expect(cluster).toMatchObject({ DeletionPolicy: 'Snapshot', UpdateReplacePolicy: 'Snapshot' });
      for (const id of [
        STATEFUL_LOGICAL_IDS.masterSecret,
        STATEFUL_LOGICAL_IDS.workerSecret,
        STATEFUL_LOGICAL_IDS.apiSecret,
        STATEFUL_LOGICAL_IDS.lwaSecret,
        STATEFUL_LOGICAL_IDS.tokenKeySecret,
      ]) {
        // Kept on update and delete, but not by the create that made them: a failed first
        // create leaves nothing behind.
        expect(t.toJSON().Resources[id].DeletionPolicy).toBe('RetainExceptOnCreate');
      }
    },
  );

  test.each(['staging', 'prod'])(
    '%s: the cluster is created unprotected and deletion protection is turned on as the stack\u2019s last step, after the migration',
    (env) => {
      const t = templateOf(env);
      const cluster = onlyResource(t, 'AWS::RDS::DBCluster');
      // No DeletionProtection property at all: CloudFormation's cluster update handler sends the
      // template's value with every update, so `false` would switch it off again.
      expect(cluster.resource.Properties).not.toHaveProperty('DeletionProtection');
      const { id, resource } = onlyResource(t, 'Custom::ClusterDeletionProtection');
      const properties = resource.Properties as Record<string, any>;
      // rds:ModifyDBCluster DeletionProtection=true on this cluster, on create and on update
      // (a replaced cluster); nothing on delete, so deleting the stack cannot delete the data.
      for (const phase of ['Create', 'Update'])
        expect(JSON.stringify(properties[phase])).toBe(
          JSON.stringify({
            'Fn::Join': [
              '',
              [
                '{"service":"RDS","action":"modifyDBCluster","parameters":{"DBClusterIdentifier":"',
                { Ref: cluster.id },
                '","DeletionProtection":true,"ApplyImmediately":true},"physicalResourceId":{"id":"',
                { Ref: cluster.id },
                '-deletion-protection"},"outputPaths":["DBCluster.DeletionProtection"]}',
              ],
            ],
          }),
        );
      expect(properties.Delete).toBeUndefined();
      // After the migration, and after every other resource of the stack (its own log group aside):
      // until it runs, a failed create rolls back to nothing.
      const dependsOn = resource.DependsOn ?? [];
      expect(dependsOn).toContain(onlyResource(t, 'Custom::SchemaMigration').id);
      expect(dependsOn).toContain(apiHandler(t).id);
      const others = Object.keys(resourcesOf(t)).filter(
        (other) => other !== id && !other.startsWith('ClusterDeletionProtectionLogs'),
      );
      expect(others.filter((other) => !dependsOn.includes(other))).toEqual([]);
      // Its function may modify this cluster only.
      const policy = Object.entries(resourcesOf(t, 'AWS::IAM::Policy')).find(([policyId]) =>
        policyId.startsWith('ClusterDeletionProtectionCustomResourcePolicy'),
      )![1];
      expect((policy.Properties?.PolicyDocument as any).Statement).toEqual([
        {
          Action: 'rds:ModifyDBCluster',
          Effect: 'Allow',
          Resource: {
            'Fn::Join': [
              '',
              [
                'arn:',
                { Ref: 'AWS::Partition' },
                ':rds:',
                { Ref: 'AWS::Region' },
                ':',
                { Ref: 'AWS::AccountId' },
                ':cluster:',
                { Ref: cluster.id },
              ],
            ],
          },
        },
      ]);
    },
  );

  test('dev: no deletion protection, none turned on later', () => {
    expect(onlyResource(templateOf('dev'), 'AWS::RDS::DBCluster').resource.Properties?.DeletionProtection).toBe(false);
    templateOf('dev').resourceCountIs('Custom::ClusterDeletionProtection', 0);
  });

  test('prod alarms e-mail the configured address; dev has no subscription', () => {
    templateOf('prod').hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'alerts@example.com',
    });
    templateOf('dev').resourceCountIs('AWS::SNS::Subscription', 0);
  });

  test('jobs.proactiveRefreshUsedWithinHours reaches the token refresh function (and its dispatcher) only, in seconds; absent, no function has it', () => {
    const carrying = (t: Template) => functionsCarrying(t, JOB_ENV.proactiveRefreshUsedWithinSeconds);
    const dev = structuredClone((cdkJsonContext().environments as Record<string, any>).dev);
    dev.jobs = { proactiveRefreshUsedWithinHours: 24 };
    const configured = Template.fromStack(buildStack('dev', { environments: { dev } }).stack);
    expect(carrying(configured)).toEqual([[tokenRefresh(configured).id, '86400']]);
    expect(carrying(templateOf('dev'))).toEqual([]);
    // Staging and prod set one hour; with fan-out the dispatcher selects on the same window.
    for (const env of ['staging', 'prod'])
      expect(carrying(templateOf(env)).sort()).toEqual(
        [
          [tokenRefresh(templateOf(env)).id, '3600'],
          [tokenRefreshDispatcher(templateOf(env)).id, '3600'],
        ].sort(),
      );
  });

  test('the token refresh window reaches the token refresh function (and its dispatcher) only, derived from cdk.json’s schedules.tokenRefresh', () => {
    const carrying = (t: Template) => functionsCarrying(t, JOB_ENV.proactiveRefreshWindowSeconds);
    for (const env of ENVIRONMENTS) {
      // Every environment's schedule is rate(5 minutes): 5 + 5 (the route's threshold) + 1 minutes.
      expect(resolveEnvironment(env, cdkJsonContext().environments).schedules.tokenRefresh).toBe('rate(5 minutes)');
      const t = templateOf(env);
      const expected = [[tokenRefresh(t).id, '660']];
      if (fanOutOf(env) !== undefined) expected.push([tokenRefreshDispatcher(t).id, '660']);
      expect(carrying(t).sort()).toEqual(expected.sort());
    }
    // Another schedule, another window: a 10-minute schedule renews tokens up to 16 minutes ahead.
    const dev = structuredClone((cdkJsonContext().environments as Record<string, any>).dev);
    dev.schedules.tokenRefresh = 'rate(10 minutes)';
    const slower = Template.fromStack(buildStack('dev', { environments: { dev } }).stack);
    expect(carrying(slower)).toEqual([[tokenRefresh(slower).id, '960']]);
  });

  test('stacks whose database refuses deletion have termination protection', () => {
    expect(ENVIRONMENTS.map((env) => buildStack(env).stack.terminationProtection)).toEqual([false, true, true]);
  });

  test('stacks are named per environment, so several share one account', () => {
    expect(ENVIRONMENTS.map((env) => buildStack(env).stack.stackName)).toEqual([
      'AmazonAccounts-dev',
      'AmazonAccounts-staging',
      'AmazonAccounts-prod',
    ]);
  });
});

/**
 * What a reviewer should see change: every resource's properties, policies, schedules and alarm
 * thresholds. Masked: asset hashes and keys, the migrations' fingerprint (asserted above), the
 * dashboard's rendering (asserted above) and versions chosen by libraries.
 */
function reviewable(template: Template): unknown {
  const json = template.toJSON();
  const mask = (value: unknown, key = ''): unknown => {
    if (key === 'S3Key' || key === 'S3Bucket') return '[ASSET]';
    if (key === 'MigrationsHash' || key === 'LatestMigration') return `[${key}]`;
    if (key === 'DashboardBody') return '[DASHBOARD]';
    if (key === 'SemanticVersion') return '[VERSION]';
    if (typeof value === 'string') return value.replace(/[a-f0-9]{64}/g, '[HASH]');
    if (Array.isArray(value)) return value.map((v) => mask(v));
    if (value && typeof value === 'object')
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mask(v, k)]));
    return value;
  };
  const { Resources, Mappings } = json;
  const resources = Object.fromEntries(
    Object.entries(Resources as Record<string, { Type: string }>).filter(([, r]) => r.Type !== 'AWS::CDK::Metadata'),
  );
  return mask({ Resources: resources, Mappings: Object.keys(Mappings ?? {}) });
}

test.each(ENVIRONMENTS)('%s template snapshot', (env) => {
  expect(reviewable(templateOf(env))).toMatchSnapshot();
});
