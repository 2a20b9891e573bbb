import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from 'aws-cdk-lib/assertions';
import { buildStack } from '../bin/environment-stack';

/** The stack's Lambda bundles (named by their folder in lambda/), recognised by their function's description. */
export const LAMBDA_BUNDLES = [
  { name: 'token-refresh', description: 'Refreshes Login with Amazon', maxBytes: 300_000 },
  { name: 'account-sync', description: "Syncs users' Amazon", maxBytes: 300_000 },
  { name: 'migration', description: 'Applies node-pg-migrate', maxBytes: 1_000_000 },
  { name: 'accounts-api', description: 'Accounts API:', maxBytes: 300_000 },
  { name: 'token-route', description: "Internal route: a user's fresh", maxBytes: 300_000 },
  { name: 'event-publisher', description: 'Publishes connection events from the outbox', maxBytes: 300_000 },
  { name: 'token-reencrypt', description: 'Token keys, on demand', maxBytes: 300_000 },
  // One bundle for both jobs' dispatchers, in environments with the fan-out (not dev).
  {
    name: 'dispatcher',
    description: 'Dispatches due ids to the queue of: Refreshes',
    maxBytes: 300_000,
    onlyWithFanOut: true,
  },
] as const;
export type LambdaBundleName = (typeof LAMBDA_BUNDLES)[number]['name'];

export interface LambdaBundle {
  readonly name: LambdaBundleName;
  /** The asset folder CloudFormation deploys (index.js, index.js.map, …). */
  readonly dir: string;
  /** Size of index.js. */
  readonly bytes: number;
  /** Size of index.js.map (0 when there is none). */
  readonly mapBytes: number;
  /** The size it must not exceed. */
  readonly maxBytes: number;
}

/**
 * Synthesizes one environment's stack with esbuild bundling (as `cdk synth` does) into
 * `outdir`, and finds each function's asset folder from its Code.S3Key (the asset hash).
 */
export function synthesizeBundles(env: string, outdir: string): { template: Template; bundles: LambdaBundle[] } {
  const { app, stack } = buildStack(env, { bundle: true, outdir });
  app.synth();
  const template = Template.fromStack(stack);
  const functions = Object.values(template.findResources('AWS::Lambda::Function')) as Array<{
    Properties: { Description?: string; Code: { S3Key: string } };
  }>;
  const bundles = LAMBDA_BUNDLES.flatMap((entry) => {
    const { name, description, maxBytes } = entry;
    const matches = functions.filter((r) => (r.Properties.Description ?? '').startsWith(description));
    if (matches.length === 0 && 'onlyWithFanOut' in entry) return [];
    if (matches.length !== 1)
      throw new Error(`expected one function described "${description}…", found ${matches.length}`);
    const key = matches[0].Properties.Code.S3Key;
    const dir = join(outdir, `asset.${key.replace(/\.zip$/, '')}`);
    const map = join(dir, 'index.js.map');
    return [
      {
        name,
        dir,
        bytes: statSync(join(dir, 'index.js')).size,
        mapBytes: existsSync(map) ? statSync(map).size : 0,
        maxBytes,
      },
    ];
  });
  return { template, bundles };
}
