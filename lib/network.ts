import { RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface NetworkProps {
  /** Retention of the VPC flow log (rejected traffic). */
  readonly logRetention: logs.RetentionDays;
  /** What happens to the flow log group when it leaves the stack. */
  readonly removalPolicy: RemovalPolicy;
  /**
   * Availability zones to use.
   * @default - two zones of the stack's region (looked up once and kept in cdk.context.json
   *   for an environment with an account and region; `Fn::GetAZs` otherwise)
   */
  readonly availabilityZones?: string[];
}

/**
 * A VPC with isolated subnets only: the database and the migration Lambda live here and need
 * no internet, so there is no NAT gateway. The migration Lambda reaches Secrets Manager through
 * an interface endpoint; the jobs stay outside and use the Data API.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  readonly isolatedSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PRIVATE_ISOLATED };
  /** Secrets Manager interface endpoint (for the migration Lambda and the rotation Lambdas). */
  readonly secretsManagerEndpoint: ec2.InterfaceVpcEndpoint;

  constructor(scope: Construct, id: string, props: NetworkProps) {
    super(scope, id);
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ...(props.availabilityZones ? { availabilityZones: props.availabilityZones } : { maxAzs: 2 }),
      natGateways: 0,
      subnetConfiguration: [{ name: 'isolated', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 }],
      restrictDefaultSecurityGroup: true,
      flowLogs: {
        rejected: {
          trafficType: ec2.FlowLogTrafficType.REJECT,
          destination: ec2.FlowLogDestination.toCloudWatchLogs(
            new logs.LogGroup(this, 'FlowLogs', { retention: props.logRetention, removalPolicy: props.removalPolicy }),
          ),
        },
      },
    });
    this.secretsManagerEndpoint = this.vpc.addInterfaceEndpoint('SecretsManager', {
      service: ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
      subnets: this.isolatedSubnets,
      privateDnsEnabled: true,
      // Only what is explicitly allowed (migration and rotation Lambdas) may connect.
      open: false,
    });
  }
}
