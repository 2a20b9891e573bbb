/**
 * `npm run verify -- -c env=<name> [--no-rotation]`: after `cdk deploy`, checks that the
 * environment works (scripts/verify/checks.ts) with the caller's AWS credentials and region
 * (the environment's own region when cdk.json names one). Exit code 1 when a check failed.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CloudFormationClient } from '@aws-sdk/client-cloudformation';
import { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { LambdaClient } from '@aws-sdk/client-lambda';
import { RDSDataClient } from '@aws-sdk/client-rds-data';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { SNSClient } from '@aws-sdk/client-sns';
import { EnvironmentConfigError, resolveEnvironment, stackNameOf } from '../lib/config';
import { formatChecklist, verifyDeploy } from './verify/checks';

export interface VerifyArgs {
  readonly env: string | undefined;
  readonly rotate: boolean;
}

/** `-c env=dev`, `--context env=dev` (as cdk takes it), `--env dev`; `--no-rotation`. */
export function parseVerifyArgs(argv: readonly string[]): VerifyArgs {
  let env: string | undefined;
  let rotate = true;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if ((arg === '-c' || arg === '--context') && argv[i + 1]?.startsWith('env=')) env = argv[++i].slice('env='.length);
    else if (arg.startsWith('--context=env=')) env = arg.slice('--context=env='.length);
    else if (arg === '--env') env = argv[++i];
    else if (arg.startsWith('--env=')) env = arg.slice('--env='.length);
    else if (arg === '--no-rotation') rotate = false;
  }
  return { env, rotate };
}

async function main(): Promise<number> {
  const args = parseVerifyArgs(process.argv.slice(2));
  const context = (JSON.parse(readFileSync(join(__dirname, '..', 'cdk.json'), 'utf8')) as { context: unknown })
    .context as Record<string, unknown>;
  let config;
  try {
    config = resolveEnvironment(args.env, context.environments);
  } catch (error) {
    if (!(error instanceof EnvironmentConfigError)) throw error;
    console.error(error.message);
    return 2;
  }
  const region = config.region;
  const clients = {
    cloudFormation: new CloudFormationClient({ region }),
    lambda: new LambdaClient({ region }),
    rdsData: new RDSDataClient({ region }),
    secretsManager: new SecretsManagerClient({ region }),
    cloudWatch: new CloudWatchClient({ region }),
    sns: new SNSClient({ region }),
  };
  const stackName = stackNameOf(config.name);
  process.stdout.write(`Checking ${stackName}${args.rotate ? ' (the rotation check takes a minute or two)' : ''} …\n`);
  const results = await verifyDeploy(clients, {
    stackName,
    rotate: args.rotate,
    onResult: (r) =>
      process.stdout.write(`  ${r.status === 'pass' ? 'ok  ' : r.status === 'skip' ? 'skip' : 'FAIL'} ${r.name}\n`),
  });
  process.stdout.write(`\n${formatChecklist(stackName, results)}\n`);
  return results.some((r) => r.status === 'fail') ? 1 : 0;
}

if (require.main === module) {
  main().then(
    (code) => (process.exitCode = code),
    (error) => {
      console.error(error instanceof Error ? error.message : error);
      process.exitCode = 1;
    },
  );
}
