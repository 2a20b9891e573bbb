import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AccountsPlatformStack } from '../../../lib/accounts-platform-stack';
import { resolveEnvironment, stackNameOf } from '../../../lib/config';
import { cdkJsonContext } from './cdk-json';

export { cdkJsonContext };

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

/** Builds one environment's stack the way bin/app.ts does. */
export function buildStack(env: string, options: BuildOptions = {}): { app: App; stack: AccountsPlatformStack } {
  const context = cdkJsonContext();
  const environments = options.environments ?? context.environments;
  const app = new App({
    outdir: options.outdir,
    context: {
      ...context,
      environments,
      // An empty list means "bundle no stack": NodejsFunction then stages no code.
      ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }),
    },
  });
  const config = resolveEnvironment(env, environments);
  const stack = new AccountsPlatformStack(app, stackNameOf(config.name), { config });
  return { app, stack };
}

const templates = new Map<string, Template>();
/** The (unbundled) template of an environment, built once per test file. */
export function templateOf(env: string): Template {
  let template = templates.get(env);
  if (!template) {
    template = Template.fromStack(buildStack(env).stack);
    templates.set(env, template);
  }
  return template;
}

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown>; DependsOn?: string[] }>;
export function resourcesOf(template: Template, type?: string): Resources {
  const all = template.toJSON().Resources as Resources;
  return Object.fromEntries(Object.entries(all).filter(([, r]) => !type || r.Type === type));
}

/** The single resource of a type, with its logical ID. */
export function onlyResource(template: Template, type: string): { id: string; resource: Resources[string] } {
  const entries = Object.entries(resourcesOf(template, type));
  if (entries.length !== 1) throw new Error(`expected exactly one ${type}, found ${entries.length}`);
  return { id: entries[0][0], resource: entries[0][1] };
}
