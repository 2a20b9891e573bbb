import { join } from 'node:path';
import { CustomResource, Duration, RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';
import { fingerprintMigrations } from '../lambda/migrate/migrations-hash';
import { CA_BUNDLE_FILE, LAMBDA_TASK_ROOT } from '../lambda/migrate/tls';
import { NodeFunction, PROJECT_ROOT } from './node-function';

export interface SchemaMigrationProps {
  /** The cluster to migrate; the custom resource waits for it and may connect to it. */
  readonly cluster: rds.IDatabaseCluster;
  /** Name of the database to migrate. */
  readonly databaseName: string;
  /** The master user's secret: the migrations run as the owner of the schema. */
  readonly masterSecret: secretsmanager.ISecret;
  /** The jobs' user, created or updated after the migrations. */
  readonly workerSecret: secretsmanager.ISecret;
  /** The accounts API's user, created or updated after the migrations (member of `authenticated`). */
  readonly apiSecret: secretsmanager.ISecret;
  /** The VPC the migration Lambda runs in. */
  readonly vpc: ec2.IVpc;
  /** Subnets of the migration Lambda (the cluster's isolated subnets). */
  readonly subnets: ec2.SubnetSelection;
  /** How the Lambda reaches Secrets Manager without internet. */
  readonly secretsManagerEndpoint: ec2.IInterfaceVpcEndpoint;
  /** Retention of the Lambda's and the provider's logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to those log groups when they leave the stack. */
  readonly logRemovalPolicy: RemovalPolicy;
  /** Folder of node-pg-migrate migrations, relative to the repository root. @default 'migrations' */
  readonly migrationsDir?: string;
  /**
   * The Lambda's time limit. The handler waits for the cluster for at most 5 minutes and keeps
   * 3 minutes for the migrations; the Provider framework answers CloudFormation (FAILED) if the
   * Lambda times out, so this must stay below the framework's 15 minutes.
   * @default Duration.minutes(14)
   */
  readonly timeout?: Duration;
}

/**
 * Runs node-pg-migrate on every deploy that changes `migrations/` (and on the first one).
 *
 * A Lambda in the VPC (pg over TLS verified against the RDS CAs it ships, master secret through
 * the Secrets Manager endpoint), bundled with node-pg-migrate and a copy of the migrations, behind the CDK Provider framework:
 * the framework's own Lambda, outside the VPC, answers CloudFormation's pre-signed S3 URL (the
 * isolated subnets cannot), and reports FAILED with the error's message when the migration
 * Lambda throws, crashes or times out, so CloudFormation never waits an hour for an answer.
 * The resource's properties carry the migrations' fingerprint, so unchanged migrations do not
 * invoke it.
 */
export class SchemaMigration extends Construct {
  readonly resource: CustomResource;
  readonly handler: lambda.IFunction;
  /** Name of the last migration this deployment brings. */
  readonly latestMigration: string;

  constructor(scope: Construct, id: string, props: SchemaMigrationProps) {
    super(scope, id);
    const migrationsDir = props.migrationsDir ?? 'migrations';
    const fingerprint = fingerprintMigrations(join(PROJECT_ROOT, migrationsDir));
    this.latestMigration = fingerprint.latest;

    const fn = new NodeFunction(this, 'Handler', {
      entry: 'lambda/migrate/handler.ts',
      description: 'Applies node-pg-migrate migrations on deploy (CloudFormation custom resource)',
      timeout: props.timeout ?? Duration.minutes(14),
      memorySizeMb: 512,
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      bundleAwsSdk: true,
      // node-pg-migrate's TypeScript/ESM loader: run-migrations.ts never uses it.
      aliases: { jiti: 'lambda/migrate/jiti-unavailable.ts' },
      environment: {
        MASTER_SECRET_ARN: props.masterSecret.secretArn,
        WORKER_SECRET_ARN: props.workerSecret.secretArn,
        API_SECRET_ARN: props.apiSecret.secretArn,
        DB_NAME: props.databaseName,
        DB_TLS: 'verify-full',
        // Amazon RDS's CAs, shipped with the function (see afterBundling), and nothing else.
        DB_CA_FILE: `${LAMBDA_TASK_ROOT}/${CA_BUNDLE_FILE}`,
      },
      commandHooks: {
        beforeBundling: () => [],
        beforeInstall: () => [],
        // node-pg-migrate reads migrations from disk: ship them next to index.js, with the RDS
        // CA certificates the connection verifies the cluster against.
        afterBundling: (inputDir: string, outputDir: string) => [
          `cp -R "${join(inputDir, migrationsDir)}" "${join(outputDir, 'migrations')}"`,
          `node "${join(inputDir, 'scripts', 'rds-ca-bundle.js')}" "${join(outputDir, CA_BUNDLE_FILE)}"`,
        ],
      },
    }).function;
    this.handler = fn;
    props.masterSecret.grantRead(fn);
    props.workerSecret.grantRead(fn);
    props.apiSecret.grantRead(fn);
    props.cluster.connections.allowDefaultPortFrom(fn, 'Schema migrations');
    props.secretsManagerEndpoint.connections.allowDefaultPortFrom(fn, 'Schema migrations read the database secrets');

    const provider = new cr.Provider(this, 'Provider', {
      onEventHandler: fn,
      logGroup: new logs.LogGroup(this, 'ProviderLogs', {
        retention: props.logRetention,
        removalPolicy: props.logRemovalPolicy,
      }),
    });

    this.resource = new CustomResource(this, 'Resource', {
      serviceToken: provider.serviceToken,
      resourceType: 'Custom::SchemaMigration',
      // ApiSecretArn: the deploy that brings the API's secret runs the resource once more, even
      // with no new migration, so the API's login exists before the API's function.
      properties: {
        MigrationsHash: fingerprint.hash,
        LatestMigration: fingerprint.latest,
        ApiSecretArn: props.apiSecret.secretArn,
      },
      // Backstop if even the Provider framework could not answer.
      serviceTimeout: Duration.minutes(20),
    });
    // The cluster must exist, with its writer, before the migrations run.
    this.resource.node.addDependency(props.cluster);

    const handlerLogicalId = Stack.of(this).getLogicalId(fn.node.defaultChild as lambda.CfnFunction);
    Validations.of(provider).acknowledge(
      {
        id: `AwsSolutions-IAM5[Resource::<${handlerLogicalId}.Arn>:*]`,
        reason: 'CDK Provider framework: invokes any version of the migration Lambda (`<arn>:*`), nothing else.',
      },
      { id: 'AwsSolutions-L1', reason: 'CDK Provider framework: its runtime is chosen by aws-cdk-lib.' },
    );
  }
}
