import { RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';

export interface ApplicationSecretsProps {
  /** The environment's name, for the secrets' descriptions. */
  readonly environmentName: string;
  /** What happens to the secrets when they leave the stack. */
  readonly removalPolicy: RemovalPolicy;
}

/**
 * The credentials operators fill in after the first deploy (the README's "Deploying to AWS" says how). The stack
 * never contains their values: CloudFormation creates each with a random placeholder, which the
 * jobs reject as invalid until an operator puts the real value.
 */
export class ApplicationSecrets extends Construct {
  /** Login with Amazon client: JSON `{"clientId": "...", "clientSecret": "..."}`. */
  readonly lwaClient: secretsmanager.Secret;
  /** The token key ring (docs/token-encryption.md): its JSON, or one base64 32-byte key, as the secret string. */
  readonly tokenEncryptionKey: secretsmanager.Secret;

  constructor(scope: Construct, id: string, props: ApplicationSecretsProps) {
    super(scope, id);
    this.lwaClient = new secretsmanager.Secret(this, 'LwaClient', {
      description: `[${props.environmentName}] Login with Amazon client: {"clientId","clientSecret"}. Fill in after the first deploy.`,
      generateSecretString: {
        secretStringTemplate: JSON.stringify({ clientId: 'REPLACE_ME' }),
        generateStringKey: 'clientSecret',
      },
      removalPolicy: props.removalPolicy,
    });
    this.tokenEncryptionKey = new secretsmanager.Secret(this, 'TokenEncryptionKey', {
      description: `[${props.environmentName}] AES-256-GCM key ring for OAuth tokens at rest: the ring's JSON or base64 of one 32-byte key, the same keys as the web app's (docs/token-encryption.md). Fill in after the first deploy.`,
      removalPolicy: props.removalPolicy,
    });
    for (const secret of [this.lwaClient, this.tokenEncryptionKey]) {
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason:
          'Not rotatable by Secrets Manager: the LWA client secret is issued by Amazon and the token key is shared with the web app; operators replace them together with their owners (README, "Deploying to AWS").',
      });
    }
  }
}
