import { CfnOutput, Duration, RemovalPolicy, Stack, type StackProps, Tags, Validations } from 'aws-cdk-lib';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { AccountsApi } from './accounts-api';
import { addApiMonitoring } from './api-monitoring';
import { ApplicationSecrets } from './application-secrets';
import { proactiveRefreshUsedWithinSeconds, type EnvironmentConfig } from './config';
import { Database } from './database';
import { ConnectionEvents } from './connection-events';
import { addEventsMonitoring } from './events-monitoring';
import { ClusterDeletionProtection } from './deletion-protection';
import { Monitoring } from './monitoring';
import { Network } from './network';
import { ScheduledJobs } from './scheduled-jobs';
import { SchemaMigration } from './schema-migration';
import { TokenKeys } from './token-keys';

export interface AccountsPlatformStackProps extends StackProps {
  /** The environment this stack deploys (validated by resolveEnvironment). */
  readonly config: EnvironmentConfig;
}

const REMOVAL_POLICIES = {
  destroy: RemovalPolicy.DESTROY,
  snapshot: RemovalPolicy.SNAPSHOT,
  retain: RemovalPolicy.RETAIN,
} as const;

/**
 * One environment of the Amazon accounts platform: network, Aurora PostgreSQL with its secrets,
 * the schema migration run on deploy, the two scheduled jobs (created after the migration), and
 * the dashboard with its alarms.
 */
export class AccountsPlatformStack extends Stack {
  readonly database: Database;
  readonly migration: SchemaMigration;
  readonly jobs: ScheduledJobs;
  readonly monitoring: Monitoring;
  readonly api: AccountsApi;
  /** Connection events: the bus and the outbox's publisher (docs/events.md). */
  readonly events: ConnectionEvents;
  /** The token keys' on-demand function: re-encryption, usage per key, key removal (docs/token-encryption.md). */
  readonly tokenKeys: TokenKeys;
  /** Where the environment keeps its data: the cluster's deletion protection, turned on last. */
  readonly deletionProtection?: ClusterDeletionProtection;

  constructor(scope: Construct, id: string, props: AccountsPlatformStackProps) {
    // A stack whose database refuses deletion refuses it too.
    super(scope, id, { terminationProtection: props.config.database.deletionProtection, ...props });
    const { config } = props;
    Tags.of(this).add('app', 'amazon-accounts');
    Tags.of(this).add('environment', config.name);

    const destroy = config.database.removalPolicy === 'destroy';
    const clusterRemoval = REMOVAL_POLICIES[config.database.removalPolicy];
    // Secrets and logs cannot be snapshotted: keep them unless the environment is disposable
    // (RetainExceptOnCreate: a failed first create still deletes them, leaving nothing behind).
    const dependentRemoval = destroy ? RemovalPolicy.DESTROY : RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE;
    const logRetention = config.logRetentionDays as logs.RetentionDays;

    const network = new Network(this, 'Network', { logRetention, removalPolicy: dependentRemoval });
    const secrets = new ApplicationSecrets(this, 'Secrets', {
      environmentName: config.name,
      removalPolicy: dependentRemoval,
    });
    const passwordRotation = Duration.days(config.database.passwordRotationDays);

    this.database = new Database(this, 'Database', {
      vpc: network.vpc,
      subnets: network.isolatedSubnets,
      secretsManagerEndpoint: network.secretsManagerEndpoint,
      minCapacityAcu: config.database.minCapacityAcu,
      maxCapacityAcu: config.database.maxCapacityAcu,
      autoPause:
        config.database.autoPauseMinutes === undefined ? undefined : Duration.minutes(config.database.autoPauseMinutes),
      backupRetention: Duration.days(config.database.backupRetentionDays),
      // Created unprotected; protection comes last (below), so a failed first create rolls back.
      deletionProtection: false,
      removalPolicy: clusterRemoval,
      dependentRemovalPolicy: dependentRemoval,
      logRetention,
      passwordRotation,
    });

    this.migration = new SchemaMigration(this, 'SchemaMigration', {
      cluster: this.database.cluster,
      databaseName: this.database.databaseName,
      masterSecret: this.database.masterSecret,
      workerSecret: this.database.workerSecret,
      apiSecret: this.database.apiSecret,
      vpc: network.vpc,
      subnets: network.isolatedSubnets,
      secretsManagerEndpoint: network.secretsManagerEndpoint,
      logRetention,
      logRemovalPolicy: dependentRemoval,
    });
    // The three rotations start only after the migration: the jobs' and API's users exist only then, and the
    // master password must not change before the writer is up or under the running migration
    // (a schedule rotates as soon as it is created). Only the rotation applications (and through
    // them the schedules) wait: their security group must not, since the cluster's ingress
    // rule for it comes before the migration.
    const masterRotation = this.database.addMasterRotation({
      vpc: network.vpc,
      subnets: network.isolatedSubnets,
      passwordRotation,
    });
    masterRotation.node.defaultChild!.node.addDependency(this.migration.resource);
    const workerRotation = this.database.addWorkerRotation({
      vpc: network.vpc,
      subnets: network.isolatedSubnets,
      passwordRotation,
    });
    workerRotation.node.defaultChild!.node.addDependency(this.migration.resource);
    const apiRotation = this.database.addApiRotation({
      vpc: network.vpc,
      subnets: network.isolatedSubnets,
      passwordRotation,
    });
    apiRotation.node.defaultChild!.node.addDependency(this.migration.resource);

    this.jobs = new ScheduledJobs(this, 'Jobs', {
      environmentName: config.name,
      database: this.database,
      lwaClientSecret: secrets.lwaClient,
      tokenEncryptionKeySecret: secrets.tokenEncryptionKey,
      tokenRefreshSchedule: config.schedules.tokenRefresh,
      accountSyncSchedule: config.schedules.accountSync,
      schedulesEnabled: config.schedules.enabled,
      amazonLimits: config.amazonLimits,
      proactiveRefreshUsedWithinSeconds: proactiveRefreshUsedWithinSeconds(config),
      fanOut: config.jobs?.fanOut,
      after: this.migration.resource,
      logRetention,
      logRemovalPolicy: dependentRemoval,
    });

    this.events = new ConnectionEvents(this, 'Events', {
      environmentName: config.name,
      database: this.database,
      eventBusName: config.events?.eventBusName,
      schedule: config.events?.schedule,
      scheduleEnabled: config.schedules.enabled,
      retentionDays: config.events?.retentionDays,
      after: this.migration.resource,
      logRetention,
      logRemovalPolicy: dependentRemoval,
    });

    this.tokenKeys = new TokenKeys(this, 'TokenKeys', {
      environmentName: config.name,
      database: this.database,
      tokenEncryptionKeySecret: secrets.tokenEncryptionKey,
      after: this.migration.resource,
      logRetention,
      logRemovalPolicy: dependentRemoval,
    });

    this.api = new AccountsApi(this, 'Api', {
      environmentName: config.name,
      config: config.api,
      database: this.database,
      lwaClientSecret: secrets.lwaClient,
      tokenEncryptionKeySecret: secrets.tokenEncryptionKey,
      accountSyncFunction: this.jobs.accountSync.function,
      amazonLimits: config.amazonLimits,
      after: this.migration.resource,
      logRetention,
      logRemovalPolicy: dependentRemoval,
    });

    this.monitoring = new Monitoring(this, 'Monitoring', {
      environmentName: config.name,
      cluster: this.database.cluster,
      tokenRefresh: this.jobs.tokenRefresh,
      accountSync: this.jobs.accountSync,
      migrationHandler: this.migration.handler,
      notify: config.alarms.notify,
      alarmEmail: config.alarms.email,
    });

    // The accounts API's row and alarms, apart from the jobs' (lib/api-monitoring.ts).
    addApiMonitoring(this.monitoring, { api: this.api });
    // The event publisher's row and alarms (lib/events-monitoring.ts).
    addEventsMonitoring(this.monitoring, { environmentName: config.name, events: this.events });

    if (config.database.deletionProtection) {
      // The stack's last step: after the migration, the rotations, the jobs, the API and the
      // alarms. Until it runs the cluster can be deleted, so a first create that fails anywhere
      // rolls back to nothing instead of ending in ROLLBACK_FAILED on a protected cluster.
      this.deletionProtection = new ClusterDeletionProtection(this, 'ClusterDeletionProtection', {
        cluster: this.database.cluster,
        logRetention,
        logRemovalPolicy: dependentRemoval,
      });
      for (const child of this.node.children)
        if (child !== this.deletionProtection) this.deletionProtection.resource.node.addDependency(child);
    }

    // What operators need after a deploy (README, "Deploying to AWS"): the secrets to fill in, where to look.
    new CfnOutput(this, 'LwaClientSecretArn', {
      value: secrets.lwaClient.secretArn,
      description: 'Fill in: {"clientId","clientSecret"} of the Login with Amazon app',
    });
    new CfnOutput(this, 'TokenEncryptionKeySecretArn', {
      value: secrets.tokenEncryptionKey.secretArn,
      description: "Fill in: the token key ring's JSON, or base64 of one 32-byte key (the web app's keys)",
    });
    new CfnOutput(this, 'TokenKeysFunctionName', {
      value: this.tokenKeys.function.functionName,
      description: 'Invoke on demand: token re-encryption ({}), usage per key, key removal (docs/operating.md)',
    });
    new CfnOutput(this, 'ClusterArn', { value: this.database.cluster.clusterArn });
    new CfnOutput(this, 'WorkerSecretArn', {
      value: this.database.workerSecret.secretArn,
      description: "The jobs' database user (Data API)",
    });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.monitoring.alarmTopic.topicArn });
    new CfnOutput(this, 'AlarmDeliveryCheckAlarmName', {
      value: this.monitoring.deliveryCheckAlarm.alarmName,
      description: '`npm run verify` sets it to prove CloudWatch reaches the alarm topic (filtered out for e-mail)',
    });
    // What `npm run verify` checks a deploy against.
    new CfnOutput(this, 'DatabaseName', { value: this.database.databaseName });
    new CfnOutput(this, 'LatestMigration', {
      value: this.migration.latestMigration,
      description: 'The last migration this deploy brought',
    });
    new CfnOutput(this, 'TokenRefreshFunctionName', { value: this.jobs.tokenRefresh.function.functionName });
    new CfnOutput(this, 'AccountSyncFunctionName', { value: this.jobs.accountSync.function.functionName });
    new CfnOutput(this, 'EventBusName', {
      value: this.events.bus.eventBusName,
      description: 'Connection events (docs/events.md): subscribe with rules on this bus',
    });
    new CfnOutput(this, 'DashboardName', { value: `AmazonAccounts-${config.name}` });
    new CfnOutput(this, 'ApiUrl', {
      value: this.api.url,
      description: 'The accounts API (HTTP API, $default stage): the web app calls <ApiUrl>v1/…',
    });
    new CfnOutput(this, 'TokenRoutePolicyArn', {
      value: this.api.tokenRoutePolicy.managedPolicyArn,
      description: "Attach to the product's roles: execute-api:Invoke on POST <ApiUrl>internal/v1/access-tokens",
    });
    new CfnOutput(this, 'ApiSecretArn', {
      value: this.database.apiSecret.secretArn,
      description: "The accounts API's database user (Data API), member of authenticated",
    });

    Validations.of(this).acknowledge(
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
        reason:
          "Lambda's own managed policy for writing its logs; every other permission is scoped to this stack's resources.",
      },
      {
        id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]',
        reason: "Lambda's own managed policy for its network interfaces in the VPC (migration and rotation Lambdas).",
      },
    );
    // aws-cdk-lib's LogRetention function (it sets the retention of the PostgreSQL log group RDS
    // creates): a singleton at stack level whose id ends in a fixed hash.
    for (const logRetention of this.node.children.filter((c) => c.node.id.startsWith('LogRetention'))) {
      Validations.of(logRetention).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::*]',
        reason:
          'aws-cdk-lib LogRetention function: sets the retention of log groups that RDS creates at runtime, whose ARNs are not known in advance.',
      });
    }
  }
}
