/**
 * The internal token route's names, shared by the function (core.ts, handler.ts), the stack
 * (lib/accounts-api.ts) and `npm run api` without pulling either side's dependencies in.
 */
export const TOKEN_ROUTE = 'POST /internal/v1/access-tokens';
export const TOKEN_ROUTE_PATH = '/internal/v1/access-tokens';
/** The `service` of the function's logs and metrics. */
export const TOKEN_ROUTE_SERVICE = 'token-route';
