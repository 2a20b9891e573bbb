import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

/** Characters kept out of generated passwords: they need quoting in URLs and shells. */
/**
 * The CA of the writer's certificate. The migration Lambda trusts only the RDS roots it ships
 * (scripts/rds-ca-bundle.js); the tests check this one's root is among them for every region.
 */
export const CLUSTER_CA_CERTIFICATE = rds.CaCertificate.RDS_CA_RSA2048_G1;

export const PASSWORD_EXCLUDED_CHARACTERS = ` %+~\`#$&*()|[]{}:;<>?!'/@"\\=,`;

export interface DatabaseProps {
  /** The VPC of the cluster and the rotation Lambdas. */
  readonly vpc: ec2.IVpc;
  /** Subnets of the cluster and of the rotation Lambdas. */
  readonly subnets: ec2.SubnetSelection;
  /**
   * Secrets Manager endpoint the rotation Lambdas reach (they have no internet). Private DNS is
   * on, so they call Secrets Manager's regional name and land on it; only its security group
   * rule is needed here.
   */
  readonly secretsManagerEndpoint: ec2.IInterfaceVpcEndpoint;
  /** Serverless v2 minimum capacity in ACUs (0 = pause when idle). */
  readonly minCapacityAcu: number;
  /** Serverless v2 maximum capacity in ACUs. */
  readonly maxCapacityAcu: number;
  /** Idle time before pausing when minCapacityAcu is 0. @default Duration.minutes(10) */
  readonly autoPause?: Duration;
  /** Automated backup retention. */
  readonly backupRetention: Duration;
  /** Whether the cluster refuses to be deleted. */
  readonly deletionProtection: boolean;
  /** The cluster's removal policy (SNAPSHOT, RETAIN or DESTROY). */
  readonly removalPolicy: RemovalPolicy;
  /** Removal policy of the secrets and log groups (RETAIN unless the cluster is destroyed). */
  readonly dependentRemovalPolicy: RemovalPolicy;
  /** Retention of the exported PostgreSQL log. */
  readonly logRetention: logs.RetentionDays;
  /** Days between password rotations (master, jobs' and API's logins). */
  readonly passwordRotation: Duration;
  /** @default 'accounts' */
  readonly databaseName?: string;
  /** Login user of the scheduled jobs (member of the role `accounts_worker`). @default 'accounts_jobs' */
  readonly workerUsername?: string;
  /** Login user of the accounts API (member of the role `authenticated`). @default 'accounts_api' */
  readonly apiUsername?: string;
}

/**
 * Aurora PostgreSQL 17 Serverless v2 in isolated subnets, with the Data API on, storage
 * encrypted, TLS enforced, PostgreSQL logs in CloudWatch, and three database secrets, each
 * attached to the cluster (host, port, engine added) and rotated: the generated master secret
 * (migrations only), the jobs' login and the accounts API's login (the Data API).
 */
export class Database extends Construct {
  readonly cluster: rds.DatabaseCluster;
  readonly databaseName: string;
  /** The master user's secret (rotated). Only the migration Lambda reads it. */
  readonly masterSecret: secretsmanager.ISecret;
  /** The jobs' least-privilege user; the Data API signs in with it. Created in the database by the migration. */
  readonly workerSecret: rds.DatabaseSecret;
  /**
   * The accounts API's login user (member of `authenticated`, subject to Row Level Security);
   * the API's Data API calls sign in with it. Created in the database by the migration.
   */
  readonly apiSecret: rds.DatabaseSecret;
  /**
   * The jobs' and the API's secrets as attached to the cluster (AWS::SecretsManager::SecretTargetAttachment,
   * which adds host, port and engine): what their rotation schedules reference, so a rotation
   * never starts before the secret carries what the rotation function connects with.
   */
  readonly workerSecretAttachment: secretsmanager.ISecret;
  readonly apiSecretAttachment: secretsmanager.ISecret;
  /** Security group of the three rotation Lambdas: may reach the cluster and the Secrets Manager endpoint. */
  readonly rotationSecurityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: DatabaseProps) {
    super(scope, id);
    this.databaseName = props.databaseName ?? 'accounts';
    const engine = rds.DatabaseClusterEngine.auroraPostgres({ version: rds.AuroraPostgresEngineVersion.VER_17_9 });
    const masterSecret = new rds.DatabaseSecret(this, 'MasterSecret', {
      username: 'postgres',
      dbname: this.databaseName,
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
    });
    masterSecret.applyRemovalPolicy(props.dependentRemovalPolicy);

    this.cluster = new rds.DatabaseCluster(this, 'Cluster', {
      engine,
      writer: rds.ClusterInstance.serverlessV2('Writer', {
        publiclyAccessible: false,
        autoMinorVersionUpgrade: true,
        // Pinned, so a change of AWS's default cannot surprise the migration's TLS check.
        caCertificate: CLUSTER_CA_CERTIFICATE,
      }),
      serverlessV2MinCapacity: props.minCapacityAcu,
      serverlessV2MaxCapacity: props.maxCapacityAcu,
      ...(props.minCapacityAcu === 0 ? { serverlessV2AutoPauseDuration: props.autoPause ?? Duration.minutes(10) } : {}),
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      credentials: rds.Credentials.fromSecret(masterSecret),
      defaultDatabaseName: this.databaseName,
      enableDataApi: true,
      storageEncrypted: true,
      parameterGroup: new rds.ParameterGroup(this, 'Parameters', {
        engine,
        description: 'TLS only; log statements slower than 1 s',
        parameters: {
          'rds.force_ssl': '1',
          // The Data API logs in with SCRAM only: rotated passwords must be stored that way (the
          // default since PostgreSQL 14, made explicit).
          password_encryption: 'scram-sha-256',
          log_min_duration_statement: '1000',
          // A slow statement is logged with its bind parameters, which carry encrypted tokens
          // and profile data: log none of them (0), on success or on error.
          log_parameter_max_length: '0',
          log_parameter_max_length_on_error: '0',
        },
      }),
      cloudwatchLogsExports: ['postgresql'],
      cloudwatchLogsRetention: props.logRetention,
      backup: { retention: props.backupRetention, preferredWindow: '02:00-03:00' },
      preferredMaintenanceWindow: 'Sun:03:30-Sun:04:30',
      deletionProtection: props.deletionProtection,
      removalPolicy: props.removalPolicy,
      copyTagsToSnapshot: true,
    });
    // The secret attached to the cluster (host, port added), which rotation and migrations read.
    this.masterSecret = this.cluster.secret!;

    this.rotationSecurityGroup = new ec2.SecurityGroup(this, 'RotationSecurityGroup', {
      vpc: props.vpc,
      description: 'Secrets Manager rotation Lambdas of the master and jobs database users',
    });
    props.secretsManagerEndpoint.connections.allowDefaultPortFrom(this.rotationSecurityGroup, 'Password rotation');

    this.workerSecret = new rds.DatabaseSecret(this, 'WorkerSecret', {
      username: props.workerUsername ?? 'accounts_jobs',
      dbname: this.databaseName,
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
    });
    this.workerSecret.applyRemovalPolicy(props.dependentRemovalPolicy);
    // host, port, engine: what the Data API and the rotation Lambda need besides the password.
    this.workerSecretAttachment = this.workerSecret.attach(this.cluster);

    this.apiSecret = new rds.DatabaseSecret(this, 'ApiSecret', {
      username: props.apiUsername ?? 'accounts_api',
      dbname: this.databaseName,
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
    });
    this.apiSecret.applyRemovalPolicy(props.dependentRemovalPolicy);
    this.apiSecretAttachment = this.apiSecret.attach(this.cluster);

    Validations.of(this.cluster).acknowledge(
      {
        id: 'AwsSolutions-RDS6',
        reason:
          'Password authentication from rotated Secrets Manager secrets: the Data API signs in with a secret, not IAM tokens.',
      },
      {
        id: 'AwsSolutions-RDS11',
        reason:
          'Only reachable from inside isolated subnets through security groups; a non-default port would add nothing.',
      },
    );
    if (!props.deletionProtection && props.removalPolicy === RemovalPolicy.DESTROY) {
      Validations.of(this.cluster).acknowledge({
        id: 'AwsSolutions-RDS10',
        reason:
          'This environment is meant to be destroyed cleanly (config: deletionProtection false); prod keeps it on.',
      });
    }
  }

  /**
   * Rotates the master password every `passwordRotation`. Called once the migration ran: a
   * rotation schedule rotates as soon as it exists, and the first rotation must neither come
   * before the writer accepts connections nor change the password under the migration.
   */
  addMasterRotation(props: Pick<DatabaseProps, 'subnets' | 'passwordRotation' | 'vpc'>): secretsmanager.SecretRotation {
    // What cluster.addRotationSingleUser builds, outside the cluster's construct: the migration
    // depends on the cluster and everything in it, so a rotation in there could not wait for it.
    return this.addRotation('MasterRotation', this.masterSecret, props);
  }

  /**
   * Rotates the jobs' password every `passwordRotation`. Called once the migration has created
   * the user, so the first rotation finds it.
   */
  addWorkerRotation(props: Pick<DatabaseProps, 'subnets' | 'passwordRotation' | 'vpc'>): secretsmanager.SecretRotation {
    return this.addRotation(
      'WorkerRotation',
      this.workerSecretAttachment,
      props,
      'DatabaseWorkerSecretRotationScheduleCA63A5F0',
    );
  }

  /**
   * Rotates the accounts API's password every `passwordRotation`. Called once the migration has
   * created the user, so the first rotation finds it.
   */
  addApiRotation(props: Pick<DatabaseProps, 'subnets' | 'passwordRotation' | 'vpc'>): secretsmanager.SecretRotation {
    return this.addRotation(
      'ApiRotation',
      this.apiSecretAttachment,
      props,
      'DatabaseApiSecretRotationScheduleE646FAB3',
    );
  }

  /**
   * A single-user PostgreSQL rotation of `secret` (an attachment: its schedule then depends on
   * the attachment, not only on the bare secret), in the VPC, through the rotation security group.
   */
  private addRotation(
    id: string,
    secret: secretsmanager.ISecret,
    props: Pick<DatabaseProps, 'subnets' | 'passwordRotation' | 'vpc'>,
    scheduleLogicalId?: string,
  ): secretsmanager.SecretRotation {
    const rotation = new secretsmanager.SecretRotation(this, id, {
      application: secretsmanager.SecretRotationApplication.POSTGRES_ROTATION_SINGLE_USER,
      secret,
      target: this.cluster,
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      // No `endpoint`: the rotation function then calls Secrets Manager's regional name, which
      // private DNS on the VPC's interface endpoint resolves to that endpoint.
      automaticallyAfter: props.passwordRotation,
      excludeCharacters: PASSWORD_EXCLUDED_CHARACTERS,
      securityGroup: this.rotationSecurityGroup,
    });
    if (scheduleLogicalId) {
      // The schedule now lives under the attachment, which would give it a new logical id: a
      // stack deployed with it on the bare secret would create a second schedule for the same
      // secret and then delete the first (cancelling the rotation). Its old id keeps it one
      // resource, whose SecretId resolves to the same ARN as before.
      const schedule = secret.node.tryFindChild('RotationSchedule')?.node.defaultChild;
      if (!(schedule instanceof secretsmanager.CfnRotationSchedule))
        throw new Error(`no rotation schedule under ${secret.node.path}`);
      schedule.overrideLogicalId(scheduleLogicalId);
    }
    return rotation;
  }

  /**
   * Data API access as the jobs' user: rds-data on this cluster only, and read access to the
   * jobs' secret only (never the master secret, unlike `grantDataApiAccess`).
   */
  grantDataApiAccessAsWorker(grantee: iam.IGrantable): void {
    this.grantDataApiAccessAs(grantee, this.workerSecret);
  }

  /**
   * Data API access as the accounts API's user: rds-data on this cluster only, and read access
   * to the API's secret only.
   */
  grantDataApiAccessAsApi(grantee: iam.IGrantable): void {
    this.grantDataApiAccessAs(grantee, this.apiSecret);
  }

  private grantDataApiAccessAs(grantee: iam.IGrantable, secret: secretsmanager.ISecret): void {
    iam.Grant.addToPrincipal({
      grantee,
      actions: [
        'rds-data:ExecuteStatement',
        'rds-data:BatchExecuteStatement',
        'rds-data:BeginTransaction',
        'rds-data:CommitTransaction',
        'rds-data:RollbackTransaction',
      ],
      resourceArns: [this.cluster.clusterArn],
    });
    secret.grantRead(grantee);
  }
}
