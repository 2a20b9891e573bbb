/**
 * The HTTP layer of the accounts API and the token route: API Gateway HTTP API events (payload format 2.0) in,
 * results out, errors as `application/problem+json` (RFC 9457). Problems carry a type, a
 * title, the status and a short detail written here: never a token, SQL, a stack or a
 * database message.
 */

/** The part of an API Gateway HTTP API (payload 2.0) event the API reads. */
export interface ApiRequestEvent {
  readonly routeKey?: string;
  readonly rawPath: string;
  readonly rawQueryString?: string;
  readonly headers?: Readonly<Record<string, string | undefined>>;
  readonly queryStringParameters?: Readonly<Record<string, string | undefined>>;
  readonly pathParameters?: Readonly<Record<string, string | undefined>>;
  readonly body?: string;
  readonly isBase64Encoded?: boolean;
  readonly requestContext: {
    readonly requestId?: string;
    readonly http: { readonly method: string; readonly path?: string };
  };
}

/** The response API Gateway sends back (payload 2.0, explicit form). */
export interface ApiResult {
  readonly statusCode: number;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly isBase64Encoded?: false;
}

/** Largest request body accepted (bytes, after base64 decoding). */
export const MAX_BODY_BYTES = 64 * 1024;

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';
/** On every answer: no content sniffing (a JSON body is never taken for HTML or script). */
export const SECURITY_HEADERS: Readonly<Record<string, string>> = { 'x-content-type-options': 'nosniff' };
const PROBLEM_BASE = 'https://accounts-api.invalid/problems/';

/** A request the API refuses; rendered as problem+json by {@link problemResult}. */
export class ApiProblem extends Error {
  constructor(
    readonly status: number,
    /** Short kebab-case name, the last part of the problem type URI. */
    readonly kind: string,
    readonly title: string,
    readonly detail?: string,
    readonly extra: Readonly<Record<string, unknown>> = {},
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(detail ? `${title}: ${detail}` : title);
    this.name = 'ApiProblem';
  }
}

/** Retry-After of a request the database was too busy to serve (503 `database-busy`). */
export const DATABASE_BUSY_RETRY_AFTER_SECONDS = 2;

export const problems = {
  unauthorized: () =>
    new ApiProblem(
      401,
      'unauthorized',
      'Unauthorized',
      'A valid bearer token is required.',
      {},
      {
        'www-authenticate': 'Bearer',
      },
    ),
  badRequest: (detail: string, extra: Record<string, unknown> = {}) =>
    new ApiProblem(400, 'bad-request', 'Bad request', detail, extra),
  notFound: (detail = 'No such resource.') => new ApiProblem(404, 'not-found', 'Not found', detail),
  methodNotAllowed: () => new ApiProblem(405, 'method-not-allowed', 'Method not allowed'),
  conflict: (detail: string) => new ApiProblem(409, 'conflict', 'Conflict', detail),
  tooLarge: () =>
    new ApiProblem(
      413,
      'payload-too-large',
      'Payload too large',
      `Request bodies are limited to ${MAX_BODY_BYTES} bytes.`,
    ),
  unsupportedMediaType: () =>
    new ApiProblem(415, 'unsupported-media-type', 'Unsupported media type', 'Send the body as application/json.'),
  tooManyRequests: (
    retryAfterSeconds: number,
    detail = `A manual sync can be started once per minute; try again in ${retryAfterSeconds} s.`,
  ) =>
    new ApiProblem(
      429,
      'too-many-requests',
      'Too many requests',
      detail,
      { retryAfterSeconds },
      { 'retry-after': String(retryAfterSeconds) },
    ),
  forbidden: (detail: string) => new ApiProblem(403, 'forbidden', 'Forbidden', detail),
  invalidState: () =>
    new ApiProblem(
      400,
      'invalid-connect-state',
      'Bad request',
      'state is not an unused, unexpired connect session of yours for this region: start again with POST /v1/connections/sessions.',
    ),
  unavailable: (retryAfterSeconds: number, detail: string) =>
    new ApiProblem(
      503,
      'amazon-busy',
      'Service unavailable',
      detail,
      { retryAfterSeconds },
      { 'retry-after': String(retryAfterSeconds) },
    ),
  /** The database could not serve the request now (see isDatabaseBusy): the caller may try again shortly. */
  databaseBusy: (retryAfterSeconds: number = DATABASE_BUSY_RETRY_AFTER_SECONDS) =>
    new ApiProblem(
      503,
      'database-busy',
      'Service unavailable',
      'The database is busy or resuming; try again shortly.',
      { retryAfterSeconds },
      { 'retry-after': String(retryAfterSeconds) },
    ),
  badGateway: (detail: string) => new ApiProblem(502, 'amazon-unavailable', 'Bad gateway', detail),
  internal: () => new ApiProblem(500, 'internal', 'Internal server error', 'The request could not be completed.'),
};

export function problemResult(problem: ApiProblem, instance?: string): ApiResult {
  return {
    statusCode: problem.status,
    headers: {
      'content-type': PROBLEM_CONTENT_TYPE,
      'cache-control': 'no-store',
      ...SECURITY_HEADERS,
      ...problem.headers,
    },
    body: JSON.stringify({
      type: `${PROBLEM_BASE}${problem.kind}`,
      title: problem.title,
      status: problem.status,
      ...(problem.detail ? { detail: problem.detail } : {}),
      ...(instance ? { instance } : {}),
      ...problem.extra,
    }),
  };
}

export function jsonResult(statusCode: number, value: unknown, headers: Record<string, string> = {}): ApiResult {
  return {
    statusCode,
    headers: { 'content-type': 'application/json', 'cache-control': 'no-store', ...SECURITY_HEADERS, ...headers },
    body: JSON.stringify(value),
  };
}

export function emptyResult(statusCode: number): ApiResult {
  return { statusCode, headers: { 'cache-control': 'no-store', ...SECURITY_HEADERS }, body: '' };
}

/** A header by name, whatever its case (API Gateway lower-cases them; local servers may not). */
export function header(event: ApiRequestEvent, name: string): string | undefined {
  const headers = event.headers ?? {};
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers)) if (key.toLowerCase() === wanted) return value;
  return undefined;
}

/**
 * The JSON body of a POST: 415 unless `Content-Type` is `application/json` (parameters such as
 * `charset=utf-8` allowed), 413 over {@link MAX_BODY_BYTES}, 400 when it is not a JSON object.
 */
export function jsonBody(event: ApiRequestEvent): Record<string, unknown> {
  const type = (header(event, 'content-type') ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') throw problems.unsupportedMediaType();
  const raw = event.body ?? '';
  const bytes = event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
  if (bytes.length > MAX_BODY_BYTES) throw problems.tooLarge();
  let parsed: unknown;
  try {
    parsed = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw problems.badRequest('The body is not valid JSON.');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw problems.badRequest('The body must be a JSON object.');
  return parsed as Record<string, unknown>;
}

// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Query parameters: single values only (a repeated parameter is a 400), names limited to
 * `allowed` (an unknown one is a 400 too, so a typo never silently returns everything), values
 * without control characters (NUL included: PostgreSQL text cannot hold it).
 */
export function queryParameters(event: ApiRequestEvent, allowed: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  const search = new URLSearchParams(event.rawQueryString ?? '');
  for (const [name, value] of search) {
    if (!allowed.includes(name)) throw problems.badRequest(`Unknown query parameter "${limitText(name)}".`);
    if (CONTROL_CHARACTERS.test(value))
      throw problems.badRequest(`Query parameter "${name}" contains a control character.`);
    if (name in out) throw problems.badRequest(`Query parameter "${name}" is given more than once.`);
    out[name] = value;
  }
  return out;
}

/** Text from a request, cut for echoing back in a problem detail. */
export function limitText(text: string, max = 40): string {
  const cleaned = text.replace(/[^\x20-\x7e]/g, '?');
  return cleaned.length > max ? `${cleaned.slice(0, max)}…` : cleaned;
}
