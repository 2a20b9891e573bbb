/**
 * PLACEHOLDER, only so that the stack on this branch can bundle the accounts API function: the
 * real handler comes from the API's own branch, which replaces this file on merge.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';

export function handler(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2> {
  return Promise.resolve({
    statusCode: 503,
    headers: { 'content-type': 'application/problem+json' },
    body: JSON.stringify({
      type: 'about:blank',
      title: 'Service Unavailable',
      status: 503,
      detail: 'not implemented in this branch',
      instance: event.rawPath,
    }),
  });
}
