#!/usr/bin/env node
// The CDK app: `cdk synth|deploy -c env=<name>` builds exactly that environment's stack from
// its entry in cdk.json's `context.environments`, and checks it with cdk-nag (AWS Solutions).
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { AccountsPlatformStack } from '../lib/accounts-platform-stack';
import { EnvironmentConfigError, resolveEnvironment, stackNameOf } from '../lib/config';

const app = new App();
const config = (() => {
  try {
    return resolveEnvironment(app.node.tryGetContext('env'), app.node.tryGetContext('environments'));
  } catch (error) {
    if (!(error instanceof EnvironmentConfigError)) throw error;
    // A usage error: the message says what to type; a stack trace would only hide it.
    console.error(error.message);
    process.exit(1);
  }
})();
new AccountsPlatformStack(app, stackNameOf(config.name), {
  config,
  description: `Amazon accounts platform (${config.name}): Aurora PostgreSQL, schema migrations, token refresh and account sync jobs, accounts API`,
  env: config.account ? { account: config.account, region: config.region } : undefined,
});
Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
