import { RemovalPolicy, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as cr from 'aws-cdk-lib/custom-resources';
import { Construct } from 'constructs';

export interface ClusterDeletionProtectionProps {
  /** The cluster to protect. Its own DeletionProtection property must be absent (see below). */
  readonly cluster: rds.DatabaseCluster;
  /** Retention of the custom resource function's log. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to that log group when it leaves the stack. */
  readonly logRemovalPolicy: RemovalPolicy;
}

/**
 * Turns on the cluster's deletion protection as the stack's last step (`rds:ModifyDBCluster
 * DeletionProtection=true`), so a first deploy that fails anywhere rolls back to nothing: until
 * this resource exists the cluster can be deleted, and CloudFormation creates it only after every
 * other resource of the stack (AccountsPlatformStack adds those dependencies).
 *
 * The cluster's template then carries no `DeletionProtection` at all, not `false`:
 * CloudFormation's AWS::RDS::DBCluster update handler sends the desired model's
 * `DeletionProtection` with every ModifyDBCluster it makes (aws-cloudformation-resource-providers-rds,
 * dbcluster Translator.modifyDbClusterRequest, not diffed against the previous value), so a
 * `false` would switch protection off on the next update of any other cluster property. Absent,
 * it is never sent, and the protection set here stays on across updates.
 *
 * onUpdate does the same, for a replaced cluster (new identifier). No onDelete: deleting the stack
 * leaves protection on, so the cluster's deletion fails, as it should for staging and prod
 * (turn it off by hand first: README, "Deploying to AWS").
 */
export class ClusterDeletionProtection extends Construct {
  readonly resource: cr.AwsCustomResource;

  constructor(scope: Construct, id: string, props: ClusterDeletionProtectionProps) {
    super(scope, id);
    const cfnCluster = props.cluster.node.defaultChild as rds.CfnDBCluster;
    cfnCluster.addPropertyDeletionOverride('DeletionProtection');

    const call: cr.AwsSdkCall = {
      service: 'RDS',
      action: 'modifyDBCluster',
      parameters: {
        DBClusterIdentifier: props.cluster.clusterIdentifier,
        DeletionProtection: true,
        ApplyImmediately: true,
      },
      physicalResourceId: cr.PhysicalResourceId.of(`${props.cluster.clusterIdentifier}-deletion-protection`),
      // The response describes the whole cluster (beyond a custom resource's 4 KB): keep one field.
      outputPaths: ['DBCluster.DeletionProtection'],
    };
    this.resource = new cr.AwsCustomResource(this, 'Resource', {
      resourceType: 'Custom::ClusterDeletionProtection',
      onCreate: call,
      onUpdate: call,
      policy: cr.AwsCustomResourcePolicy.fromStatements([
        new iam.PolicyStatement({ actions: ['rds:ModifyDBCluster'], resources: [props.cluster.clusterArn] }),
      ]),
      installLatestAwsSdk: false,
      logGroup: new logs.LogGroup(this, 'Logs', {
        retention: props.logRetention,
        removalPolicy: props.logRemovalPolicy,
      }),
    });

    Validations.of(props.cluster).acknowledge({
      id: 'AwsSolutions-RDS10',
      reason:
        "Deletion protection is turned on by the ClusterDeletionProtection custom resource as the stack's last step, so a failed first deploy can still roll back.",
    });
    const provider = Stack.of(this).node.tryFindChild('AWS679f53fac002430cb0da5b7982bd2287');
    if (provider)
      Validations.of(provider).acknowledge({
        id: 'AwsSolutions-L1',
        reason: 'aws-cdk-lib AwsCustomResource: its runtime is chosen by aws-cdk-lib.',
      });
  }
}
