import { JOB_ENV, LOCAL_JOB_ENV } from './config';

/**
 * Environment variable names of the accounts API Lambda (set by the CDK stack, read by the
 * API's handler) and of `npm run api` locally. The database, Login with Amazon and token key
 * variables are the jobs' names: the API's values differ only in the database secret, which is
 * the `accounts_api` login's own.
 */
export const API_ENV = {
  ...JOB_ENV,
  /** Expected `iss` of the product's identity provider (per environment in `cdk.json`). */
  jwtIssuer: 'API_JWT_ISSUER',
  /** Expected `aud` (one value, or a comma-separated list). */
  jwtAudience: 'API_JWT_AUDIENCE',
  /** JWKS URL when it is not `<issuer>/.well-known/jwks.json`. Optional. */
  jwksUrl: 'API_JWKS_URL',
  /** Name of the account-sync function a manual sync invokes asynchronously. */
  accountSyncFunctionName: 'ACCOUNT_SYNC_FUNCTION_NAME',
} as const;

/** `npm run api` (node-postgres, no Secrets Manager): the jobs' local names plus the port. */
export const LOCAL_API_ENV = {
  ...LOCAL_JOB_ENV,
  port: 'PORT',
  jwtIssuer: API_ENV.jwtIssuer,
  jwtAudience: API_ENV.jwtAudience,
  jwksUrl: API_ENV.jwksUrl,
} as const;
