import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv2020, { ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import type { ApiResult } from '../../lambda/shared/http';

/**
 * docs/openapi.yaml as a response checker: every response a test receives is checked against
 * the operation's documented response for its status (or `default`): content type, required
 * headers, and the body against the JSON Schema (2020-12, as OpenAPI 3.1 uses it).
 */
interface Document {
  paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
  components: Record<string, Record<string, unknown>>;
}

export const OPENAPI_PATH = join(__dirname, '..', '..', 'docs', 'openapi.yaml');
const doc = parse(readFileSync(OPENAPI_PATH, 'utf8')) as Document;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
const validators = new Map<string, ValidateFunction>();

// Concrete paths before templated ones, as OpenAPI matches them (/v1/connections/sessions
// before /v1/connections/{region}).
const templates = Object.keys(doc.paths)
  .map((template) => ({
    template,
    pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
    parameters: (template.match(/\{/g) ?? []).length,
  }))
  .sort((a, b) => a.parameters - b.parameters);

function resolve<T>(value: T): T {
  const ref = (value as { $ref?: string }).$ref;
  if (!ref) return value;
  const [, , section, name] = ref.split('/');
  return doc.components[section][name] as T;
}

/** Throws when `result` is not what the document says `method path` answers with its status. */
export function checkResponse(method: string, path: string, result: ApiResult): void {
  const template = templates.find((t) => t.pattern.test(path))?.template;
  const operation = template ? doc.paths[template][method.toLowerCase()] : undefined;
  const status = String(result.statusCode);
  // Outside the document: only "no such path" (404) and "no such method" (405) problems.
  const undocumented = { responses: { [template ? '405' : '404']: { $ref: '#/components/responses/Problem' } } };
  const response = resolve(
    ((operation ?? undocumented).responses[status] ?? (operation ?? undocumented).responses.default) as {
      $ref?: string;
      content?: Record<string, { schema: unknown }>;
      headers?: Record<string, { required?: boolean }>;
    },
  );
  if (!response) throw new Error(`${method} ${template ?? path}: status ${status} is not documented`);
  for (const [name, spec] of Object.entries(response.headers ?? {})) {
    const h = resolve(spec);
    if (h.required && result.headers[name.toLowerCase()] === undefined)
      throw new Error(`${method} ${template} ${status}: header ${name} missing`);
  }
  if (!response.content) {
    if (result.body !== '') throw new Error(`${method} ${template} ${status}: documented without a body`);
    return;
  }
  const type = (result.headers['content-type'] ?? '').split(';')[0];
  const media = response.content[type];
  if (!media) throw new Error(`${method} ${template} ${status}: content type ${type} is not documented`);
  const key = `${method} ${template} ${status} ${type}`;
  let validate = validators.get(key);
  if (!validate) {
    validate = ajv.compile({ ...(media.schema as object), components: doc.components });
    validators.set(key, validate);
  }
  const body: unknown = JSON.parse(result.body);
  if (!validate(body))
    throw new Error(
      `${key}: body does not match the schema: ${ajv.errorsText(validate.errors)}\n${result.body.slice(0, 500)}`,
    );
}

/** The handler with every response checked against the document. */
export function checked(handle: (event: import('../../lambda/shared/http').ApiRequestEvent) => Promise<ApiResult>) {
  return async (event: import('../../lambda/shared/http').ApiRequestEvent): Promise<ApiResult> => {
    const result = await handle(event);
    checkResponse(event.requestContext.http.method, event.rawPath, result);
    return result;
  };
}
