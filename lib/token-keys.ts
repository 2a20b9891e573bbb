import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct, IDependable } from 'constructs';
import { JOB_ENV } from '../lambda/shared/config';
import { METRICS_NAMESPACE, SERVICE_NAMES } from '../lambda/shared/jobs/metrics';
import { REENCRYPTION_TIMEOUT_SECONDS } from '../lambda/shared/jobs/timing';
import type { Database } from './database';
import { NodeFunction } from './node-function';

export interface TokenKeysProps {
  /** The environment's name (APP_ENVIRONMENT, the `environment` metric dimension). */
  readonly environmentName: string;
  /** The cluster (Data API) and the jobs' database user (the function runs as it). */
  readonly database: Database;
  /** The token key ring's secret (docs/token-encryption.md). */
  readonly tokenEncryptionKeySecret: secretsmanager.ISecret;
  /** The function is created only after this (the schema migration) succeeded. */
  readonly after: IDependable;
  readonly logRetention: logs.RetentionDays;
  readonly logRemovalPolicy: RemovalPolicy;
}

/**
 * The token keys' function (lambda/token-reencrypt/handler.ts), run on demand only (no
 * schedule, no trigger): re-encrypts what is not under the ring's current key (`{}`), reports
 * the stored values per key (`{"action": "usage"}`), removes a key no row uses
 * (`{"action": "remove-key", "keyId": …}`). docs/operating.md's rotation runbook invokes it.
 *
 * It holds: the Data API as the jobs' database user; read of the token key secret; and
 * `secretsmanager:PutSecretValue` on that secret alone (remove-key stores the ring without the
 * key, after its check). No Amazon credentials, no network path but AWS APIs.
 */
export class TokenKeys extends Construct {
  readonly function: lambda.IFunction;

  constructor(scope: Construct, id: string, props: TokenKeysProps) {
    super(scope, id);
    const fn = new NodeFunction(this, 'Handler', {
      entry: 'lambda/token-reencrypt/handler.ts',
      description: 'Token keys, on demand: re-encrypt under the current key, usage per key, remove an unused key',
      // A run stops before its deadline (it keeps a reserve) and is resumed by invoking it again.
      timeout: Duration.seconds(REENCRYPTION_TIMEOUT_SECONDS),
      memorySizeMb: 512,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      environment: {
        [JOB_ENV.environment]: props.environmentName,
        [JOB_ENV.clusterArn]: props.database.cluster.clusterArn,
        [JOB_ENV.databaseSecretArn]: props.database.workerSecret.secretArn,
        [JOB_ENV.databaseName]: props.database.databaseName,
        [JOB_ENV.tokenKeySecretArn]: props.tokenEncryptionKeySecret.secretArn,
        POWERTOOLS_SERVICE_NAME: SERVICE_NAMES.tokenReencrypt,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      },
    }).function;
    props.database.grantDataApiAccessAsWorker(fn);
    props.tokenEncryptionKeySecret.grantRead(fn);
    fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['secretsmanager:PutSecretValue'],
        resources: [props.tokenEncryptionKeySecret.secretArn],
      }),
    );
    fn.node.addDependency(props.after);
    this.function = fn;
  }
}
