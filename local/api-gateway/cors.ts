import type { IncomingMessage } from 'node:http';

/**
 * API Gateway's CORS, as the stack configures it (lib/accounts-api.ts `corsPreflight`), for
 * `npm run api`: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
 * from an allowed origin is answered 204 with the allowed methods and headers, never reaching
 * the API; any other answer to an allowed origin carries `Access-Control-Allow-Origin` and
 * exposes `Retry-After`. An origin not on the list gets no CORS headers, so its browser
 * refuses the answer. Bearer tokens, never cookies: no credentials.
 */
export const CORS = {
  allowHeaders: ['authorization', 'content-type'],
  allowMethods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
  exposeHeaders: ['retry-after'],
  maxAgeSeconds: 3600,
} as const;

/** Origins `npm run api` allows when CORS_ALLOWED_ORIGINS is unset: the example web app's. */
export const LOCAL_CORS_ALLOWED_ORIGINS: readonly string[] = ['http://localhost:3000', 'http://127.0.0.1:3000'];

/** A comma-separated list of origins (`scheme://host[:port]`, nothing more). Throws naming the first bad one. */
export function parseOrigins(text: string): string[] {
  const origins = text
    .split(',')
    .map((o) => o.trim())
    .filter((o) => o.length > 0);
  for (const origin of origins) {
    let parsed: URL | undefined;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = undefined;
    }
    if (!parsed || !['http:', 'https:'].includes(parsed.protocol) || parsed.origin !== origin)
      throw new Error(`not an origin (scheme://host[:port]): ${origin.slice(0, 80)}`);
  }
  return origins;
}

export type CorsDecision =
  /** A preflight: answer it with these headers (empty when the origin is not allowed). */
  | { readonly preflight: true; readonly headers: Record<string, string> }
  /** Any other request: add these headers to its answer. */
  | { readonly preflight: false; readonly headers: Record<string, string> };

export function cors(req: IncomingMessage, allowedOrigins: readonly string[]): CorsDecision {
  const origin = req.headers.origin;
  const allowed = origin !== undefined && allowedOrigins.includes(origin);
  const preflight = req.method === 'OPTIONS' && req.headers['access-control-request-method'] !== undefined;
  if (!allowed) return { preflight, headers: {} };
  if (preflight)
    return {
      preflight,
      headers: {
        'access-control-allow-origin': origin,
        'access-control-allow-methods': CORS.allowMethods.join(','),
        'access-control-allow-headers': CORS.allowHeaders.join(','),
        'access-control-max-age': String(CORS.maxAgeSeconds),
        vary: 'origin',
      },
    };
  return {
    preflight,
    headers: {
      'access-control-allow-origin': origin,
      'access-control-expose-headers': CORS.exposeHeaders.join(','),
      vary: 'origin',
    },
  };
}
