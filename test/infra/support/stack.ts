import { Template } from 'aws-cdk-lib/assertions';
import { buildStack } from '../../../bin/environment-stack';

export { buildStack, cdkJsonContext } from '../../../bin/environment-stack';
export type { BuildOptions } from '../../../bin/environment-stack';

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
