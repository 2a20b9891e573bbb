import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { App } from 'aws-cdk-lib';
import { AccountsPlatformStack } from '../lib/accounts-platform-stack';
import { resolveEnvironment, stackNameOf } from '../lib/config';

/** The repository root. */
export const ROOT = resolve(__dirname, '..');

/** cdk.json's context: the feature flags and the environments, exactly as `cdk synth` sees them. */
export function cdkJsonContext(): Record<string, unknown> {
  return (JSON.parse(readFileSync(join(ROOT, 'cdk.json'), 'utf8')) as { context: Record<string, unknown> }).context;
}

export interface BuildOptions {
  /**
   * Run esbuild for the Lambda assets. Off by default: template tests do not need the code,
   * and bundling three functions costs seconds per stack.
   */
  readonly bundle?: boolean;
  /** Cloud assembly folder. @default - a temporary folder chosen by the App */
  readonly outdir?: string;
  /** Replaces environments of cdk.json (to test other configurations). */
  readonly environments?: Record<string, unknown>;
}

/**
 * Builds one environment's stack from cdk.json the way `cdk synth -c env=<name>` does (bin/app.ts),
 * outside the CDK CLI: for the template tests and the bundle benchmark.
 */
export function buildStack(env: string, options: BuildOptions = {}): { app: App; stack: AccountsPlatformStack } {
  const context = cdkJsonContext();
  const environments = options.environments ?? context.environments;
  const app = new App({
    outdir: options.outdir,
    context: {
      ...context,
      environments,
      ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }),
    },
  });
  const config = resolveEnvironment(env, environments);
  const stack = new AccountsPlatformStack(app, stackNameOf(config.name), { config });
  return { app, stack };
}
