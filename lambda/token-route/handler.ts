import type { ApiRequestEvent, ApiResult } from '../shared/http';
import { runJobInvocation, type JobInvocationContext } from '../shared/jobs/container';
import { createTokenRoute } from './core';
import { TOKEN_ROUTE_SERVICE } from './route';

/**
 * `POST /internal/v1/access-tokens` behind the HTTP API's IAM authorisation (see core.ts). Its
 * container is the jobs' (lambda/shared/jobs/container.ts): the Data API as the jobs' login,
 * the LWA client drawing from the shared rate budget's interactive lane (and, when the lane is
 * taken, from the API's share of the jobs' schedule: lambda/shared/amazon/api-share.ts), the
 * token key through the secrets cache.
 * The core answers every request itself (problem+json on failure); only a container that
 * cannot be built fails the invocation (API Gateway's 500, counted by the function's error
 * alarm).
 */
export async function handler(event: ApiRequestEvent, context: JobInvocationContext): Promise<ApiResult> {
  return runJobInvocation(
    TOKEN_ROUTE_SERVICE,
    context,
    (c, runtime) => createTokenRoute({ db: c.db, lwa: c.lwa, cipher: c.cipher, logger: runtime.logger })(event),
    {},
    // Someone waits for the answer: its refresh draws from the interactive lane (api-share.ts).
    { interactive: true },
  );
}
