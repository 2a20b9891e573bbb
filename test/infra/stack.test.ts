import { Match, Template } from 'aws-cdk-lib/assertions';
import { Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { fingerprintMigrations } from '../../lambda/migrate/migrations-hash';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';
import { JOB_ENV } from '../../lambda/shared/config';
import { METRIC_NAMES, METRICS_NAMESPACE } from '../../lambda/shared/jobs/metrics';
import { API_OUTPUT, REQUIRED_OUTPUTS } from '../../scripts/verify/checks';
import { buildStack, cdkJsonContext, onlyResource, resourcesOf, templateOf } from './support/stack';

const ENVIRONMENTS = ['dev', 'staging', 'prod'] as const;

/** Logical IDs of the stateful resources: renaming one would replace it (and lose its data). */
const STATEFUL_LOGICAL_IDS = {
  'AWS::RDS::DBCluster': 'DatabaseCluster5B53A178',
  'AWS::RDS::DBInstance': 'DatabaseClusterWriterD43085C6',
  masterSecret: 'DatabaseMasterSecretC5C2A01F',
  /** The master secret with host and port attached: what rotation and the migration read. */
  masterSecretAttachment: 'DatabaseMasterSecretAttachment67754D68',
  workerSecret: 'DatabaseWorkerSecretFF17536B',
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

  test('the master and the jobs\u2019 secrets rotate every 30 days', () => {
    const schedules = Object.values(resourcesOf(template(), 'AWS::SecretsManager::RotationSchedule'));
    expect(schedules).toHaveLength(2);
    for (const schedule of schedules)
      expect(schedule.Properties?.RotationRules).toEqual({ ScheduleExpression: 'rate(30 days)' });
    expect(schedules.map((s) => s.Properties?.SecretId)).toEqual(
      expect.arrayContaining([
        { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
        { Ref: STATEFUL_LOGICAL_IDS.masterSecretAttachment },
      ]),
    );
  });

  test('every function runs on Node.js 24 and the app\u2019s own ones on ARM64', () => {
    for (const fn of Object.values(resourcesOf(template(), 'AWS::Lambda::Function'))) {
      expect(fn.Properties?.Runtime).toBe('nodejs24.x');
    }
    for (const fn of [tokenRefresh(template()), accountSync(template()), migrationHandler(template())]) {
      expect(fn.properties.Architectures).toEqual(['arm64']);
    }
  });

  test('the jobs run outside the VPC on the environment\u2019s schedules, with retries and a dead-letter queue', () => {
    for (const [fn, schedule] of [
      [tokenRefresh(template()), 'rate(5 minutes)'],
      [accountSync(template()), 'rate(15 minutes)'],
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
        State: 'ENABLED',
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

  test('the jobs may send to their own failure queue only', () => {
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
      expect(sqsStatements.length).toBeGreaterThan(0);
      for (const statement of sqsStatements) {
        expect([statement.Resource].flat()).toEqual([queue]);
        for (const action of [statement.Action].flat()) expect(action).not.toMatch(/^sqs:(Receive|Delete|Purge|\*)/);
      }
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
        POWERTOOLS_SERVICE_NAME: service,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        NODE_OPTIONS: '--enable-source-maps',
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
    });
    expect(resource.DependsOn).toEqual(
      expect.arrayContaining([
        STATEFUL_LOGICAL_IDS['AWS::RDS::DBCluster'],
        STATEFUL_LOGICAL_IDS['AWS::RDS::DBInstance'],
      ]),
    );
    for (const fn of [tokenRefresh(template()), accountSync(template())]) {
      expect(resourcesOf(template())[fn.id].DependsOn).toContain(id);
    }
    const handler = migrationHandler(template());
    expect(handler.properties.VpcConfig.SubnetIds).toHaveLength(2);
    expect(handler.properties.Timeout).toBe(14 * 60);
    expect(handler.properties.Environment.Variables).toMatchObject({
      MASTER_SECRET_ARN: { Ref: STATEFUL_LOGICAL_IDS.masterSecretAttachment },
      WORKER_SECRET_ARN: { Ref: STATEFUL_LOGICAL_IDS.workerSecret },
      DB_NAME: 'accounts',
      DB_TLS: 'verify-full',
      // The RDS CA bundle shipped with the function (migration-bundle.test.ts finds it there).
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
    // No API yet: verify skips its health check.
    expect(Object.keys(outputs).filter((key) => API_OUTPUT.test(key))).toEqual([]);
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

  test('alarms: job errors, refresh failure rate, dead-letter queues, migration failure — all to the topic', () => {
    const alarms = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm'));
    expect(alarms.map((a) => a.Properties?.AlarmName).sort()).toEqual([
      `AmazonAccounts-${env}-account-sync-dlq-Queue-Message-Count-Max-Critical`,
      `AmazonAccounts-${env}-account-sync-lambda-Fault-Count-Critical`,
      `AmazonAccounts-${env}-schema-migration-Fault-Count-Critical`,
      `AmazonAccounts-${env}-token-refresh-dlq-Queue-Message-Count-Max-Critical`,
      `AmazonAccounts-${env}-token-refresh-lambda-Fault-Count-Critical`,
      `AmazonAccounts-${env}-token-refresh-refresh-failure-rate-Critical`,
    ]);
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

describe('per-environment settings', () => {
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
        DeletionProtection: true,
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
        STATEFUL_LOGICAL_IDS.lwaSecret,
        STATEFUL_LOGICAL_IDS.tokenKeySecret,
      ]) {
        expect(t.toJSON().Resources[id].DeletionPolicy).toBe('Retain');
      }
    },
  );

  test('prod alarms e-mail the configured address; dev has no subscription', () => {
    templateOf('prod').hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'alerts@example.com',
    });
    templateOf('dev').resourceCountIs('AWS::SNS::Subscription', 0);
  });

  test('jobs.proactiveRefreshUsedWithinHours reaches the token refresh function only, in seconds; absent, no function has it', () => {
    const variable = JOB_ENV.proactiveRefreshUsedWithinSeconds;
    /** The functions of a template that carry the variable, with its value. */
    const carrying = (t: Template) =>
      Object.entries(resourcesOf(t, 'AWS::Lambda::Function'))
        .filter(([, fn]) => JSON.stringify(fn.Properties?.Environment ?? {}).includes(variable))
        .map(([id, fn]) => [id, (fn.Properties as Record<string, any>).Environment.Variables[variable]]);
    const dev = structuredClone((cdkJsonContext().environments as Record<string, any>).dev);
    dev.jobs = { proactiveRefreshUsedWithinHours: 24 };
    const configured = Template.fromStack(buildStack('dev', { environments: { dev } }).stack);
    expect(carrying(configured)).toEqual([[tokenRefresh(configured).id, '86400']]);
    for (const env of ENVIRONMENTS) expect(carrying(templateOf(env))).toEqual([]);
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
