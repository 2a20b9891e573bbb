import { LambdaClient } from '@aws-sdk/client-lambda';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { Logger } from '@aws-lambda-powertools/logger';
import type { Context } from 'aws-lambda';
import { LwaClient } from '../shared/amazon';
import { budgetLimiters } from '../shared/amazon/api-share';
import { LOCAL_API_ENV, readApiConfig } from '../shared/api-env';
import { LOCAL_JOB_ENV } from '../shared/config';
import { createDataApiClient, DataApiDatabase } from '../shared/db';
import { lwaCredentialsFromSecret, SecretsCache, tokenCipherFromSecret } from '../shared/secrets';
import { createAccountsApi } from './core';
import { ApiRequestEvent, ApiResult, problemResult, problems } from '../shared/http';
import { createTokenVerifier } from './jwt';
import { AccountsStore } from './store';
import { lambdaSyncStarter } from './sync-starter';

/**
 * The accounts API Lambda behind an API Gateway HTTP API (payload format 2.0). Built once per
 * container: configuration validated, the Data API as the `accounts_api` login, the JWT
 * verifier with its JWKS cache, the LWA client (on the shared rate budget) and token key
 * through the secrets cache, the account-sync invoker. A container that cannot be built answers 500 (problem+json) and tries
 * again on the next request.
 */
export const SERVICE_NAME = 'accounts-api';

const logger = new Logger({ serviceName: SERVICE_NAME });
let api: Promise<(event: ApiRequestEvent) => Promise<ApiResult>> | undefined;

// eslint-disable-next-line @typescript-eslint/require-await -- async so that a configuration error rejects instead of throwing
async function build(): Promise<(event: ApiRequestEvent) => Promise<ApiResult>> {
  const config = readApiConfig(process.env);
  logger.appendPersistentKeys({ environment: config.environment });
  const cache = new SecretsCache(new SecretsManagerClient({}));
  const tokenUrl = process.env[LOCAL_JOB_ENV.lwaTokenUrl]?.trim() || undefined;
  const db = new DataApiDatabase({
    client: createDataApiClient(),
    resourceArn: config.clusterArn,
    secretArn: config.databaseSecretArn,
    database: config.databaseName,
  });
  // The authorization-code exchange draws from the shared LWA budget in the database, as every
  // job invocation does (the login's privilege on it: migration 0018), within the API's share
  // of it (api-share.ts, migration 0020): the scheduled jobs always keep the rest.
  const limiters = budgetLimiters(db, config.amazonLimits, { interactive: true });
  return createAccountsApi({
    store: new AccountsStore({ db }),
    verifier: createTokenVerifier({
      issuer: config.jwtIssuer,
      audience: config.jwtAudience,
      jwksUrl: config.jwksUrl,
    }),
    lwa: new LwaClient({ credentials: lwaCredentialsFromSecret(cache, config.lwaClientSecretArn), tokenUrl, limiters }),
    cipher: tokenCipherFromSecret(cache, config.tokenKeySecretArn),
    syncs: lambdaSyncStarter(new LambdaClient({}), config.accountSyncFunctionName),
    settings: {
      connectRedirectUris: config.connectRedirectUris,
      // Only a local test of this handler points the consent page elsewhere (as LWA_TOKEN_URL).
      consentUrl: process.env[LOCAL_API_ENV.lwaAuthorizeUrl]?.trim() || undefined,
    },
    logger: {
      info: (message, attributes) => logger.info(message, attributes ?? {}),
      warn: (message, attributes) => logger.warn(message, attributes ?? {}),
      error: (message, attributes) => logger.error(message, attributes ?? {}),
    },
  });
}

/**
 * Added to every answer in AWS: the API is served over HTTPS only (API Gateway), so browsers
 * are told to use nothing else for a year (RFC 6797). Not locally: `npm run api` is plain http.
 */
export const AWS_RESPONSE_HEADERS: Readonly<Record<string, string>> = {
  'strict-transport-security': 'max-age=31536000; includeSubDomains',
};

export async function handler(event: ApiRequestEvent, context?: Partial<Context>): Promise<ApiResult> {
  if (context) logger.addContext(context as Context);
  if (!api) {
    api = build();
    api.catch(() => (api = undefined));
  }
  let result: ApiResult;
  try {
    const handle = await api;
    result = await handle(event);
  } catch (error) {
    api = undefined;
    logger.error('accounts-api container failed', { error: (error as Error).name, message: (error as Error).message });
    result = problemResult(problems.internal(), event.requestContext?.requestId);
  }
  return { ...result, headers: { ...result.headers, ...AWS_RESPONSE_HEADERS } };
}
