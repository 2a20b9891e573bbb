import { join, resolve } from 'node:path';
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as destinations from 'aws-cdk-lib/aws-lambda-destinations';
import * as nodejs from 'aws-cdk-lib/aws-lambda-nodejs';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';

/** The repository root: entries, lock file and migrations are found from here. */
export const PROJECT_ROOT = resolve(__dirname, '..');

/** The newest Node.js runtime the installed aws-cdk-lib offers. */
export const NODE_RUNTIME = lambda.Runtime.NODEJS_24_X;

export interface NodeFunctionProps {
  /** Handler file, relative to the repository root (it exports `handler`). */
  readonly entry: string;
  readonly description: string;
  readonly timeout: Duration;
  /** @default 512 */
  readonly memorySizeMb?: number;
  readonly environment?: Record<string, string>;
  readonly logRetention: logs.RetentionDays;
  /** What happens to the log group when it leaves the stack. */
  readonly logRemovalPolicy: RemovalPolicy;
  /** @default - not in a VPC */
  readonly vpc?: ec2.IVpc;
  /** @default - the VPC's private subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** @default - no extra bundling steps */
  readonly commandHooks?: nodejs.ICommandHooks;
  /**
   * Bundle the AWS SDK too (instead of using the runtime's copy), so the code runs with the
   * versions it was tested with.
   * @default false
   */
  readonly bundleAwsSdk?: boolean;
  /**
   * For asynchronously invoked functions (schedules): failed invocations go to this queue as
   * Lambda's on-failure destination (the record carries the event and the error: type, message)
   * and are not retried by Lambda (the next scheduled run is the retry).
   * @default - Lambda's default: two retries, then dropped
   */
  readonly onFailureQueue?: sqs.IQueue;
  /**
   * Imports replaced at bundling time: module name → file relative to the repository root
   * (esbuild's `alias`), for dependencies of dependencies the function never uses.
   * @default - none
   */
  readonly aliases?: Record<string, string>;
}

/**
 * Every function of the app is built the same way: newest Node.js runtime, ARM64, bundled
 * locally by esbuild (never Docker), minified, with source maps in a separate `index.js.map`
 * (`--enable-source-maps` maps stack traces back to the TypeScript), JSON logs in a log group
 * with retention.
 */
export class NodeFunction extends Construct {
  readonly function: nodejs.NodejsFunction;
  readonly logGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: NodeFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetention,
      removalPolicy: props.logRemovalPolicy,
    });
    this.function = new nodejs.NodejsFunction(this, 'Function', {
      entry: join(PROJECT_ROOT, props.entry),
      handler: 'handler',
      projectRoot: PROJECT_ROOT,
      depsLockFilePath: join(PROJECT_ROOT, 'package-lock.json'),
      description: props.description,
      runtime: NODE_RUNTIME,
      architecture: lambda.Architecture.ARM_64,
      memorySize: props.memorySizeMb ?? 512,
      timeout: props.timeout,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      environment: { NODE_OPTIONS: '--enable-source-maps', ...props.environment },
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets,
      ...(props.vpc ? { allowAllOutbound: false } : {}),
      ...(props.onFailureQueue
        ? {
            onFailure: new destinations.SqsDestination(props.onFailureQueue),
            retryAttempts: 0,
            maxEventAge: Duration.hours(1),
          }
        : {}),
      bundling: {
        forceDockerBundling: false,
        format: nodejs.OutputFormat.CJS,
        target: 'node24',
        sourceMap: true,
        sourcesContent: false,
        // A smaller index.js loads faster on a cold start; stack traces go through the source map.
        minify: true,
        // pg's optional native binding is never used.
        externalModules: props.bundleAwsSdk ? ['pg-native'] : ['@aws-sdk/*', 'pg-native'],
        bundleAwsSDK: props.bundleAwsSdk ?? false,
        commandHooks: props.commandHooks,
        ...(props.aliases
          ? { esbuildArgs: { '--alias': Object.entries(props.aliases).map(([name, file]) => `${name}=./${file}`) } }
          : {}),
        logLevel: nodejs.LogLevel.WARNING,
      },
    });
  }
}
