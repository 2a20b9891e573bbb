import { ConfigError, JOB_ENV, JobConfig, LOCAL_JOB_ENV, readJobConfig } from './config';
import * as z from './validation';

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

/** Configuration of the accounts API Lambda (names in `API_ENV`). */
export interface ApiConfig extends JobConfig {
  readonly jwtIssuer: string;
  /** One or more accepted audiences. */
  readonly jwtAudience: readonly string[];
  readonly jwksUrl: string | undefined;
  readonly accountSyncFunctionName: string;
}

const apiOnlySchema = z.object({
  [API_ENV.jwtIssuer]: z.string().check(z.minLength(1)),
  [API_ENV.jwtAudience]: z.string().check(z.regex(/^[^,\s]+(,[^,\s]+)*$/, 'not a comma-separated list of audiences')),
  [API_ENV.jwksUrl]: z.optional(z.string().check(z.url('not a URL'), z.regex(/^https:\/\//, 'not an https URL'))),
  [API_ENV.accountSyncFunctionName]: z.string().check(z.regex(/^[A-Za-z0-9_:.-]{1,140}$/, 'not a function name')),
});

/**
 * Reads and validates the API Lambda's configuration: the jobs' variables (database, LWA
 * client and token key secrets) plus sign-in and the account-sync function. Every problem is
 * reported at once in one {@link ConfigError}, naming variables, never values.
 */
export function readApiConfig(env: Readonly<Record<string, string | undefined>> = process.env): ApiConfig {
  let job: JobConfig | undefined;
  const missing: string[] = [];
  const invalid: string[] = [];
  try {
    job = readJobConfig(env);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    missing.push(...error.missing);
    invalid.push(...error.invalid);
  }
  const picked: Record<string, string | undefined> = {};
  for (const name of Object.keys(apiOnlySchema.shape)) {
    const value = env[name]?.trim();
    picked[name] = value === '' ? undefined : value;
  }
  const required = [API_ENV.jwtIssuer, API_ENV.jwtAudience, API_ENV.accountSyncFunctionName];
  missing.push(...required.filter((name) => picked[name] === undefined));
  const parsed = apiOnlySchema.safeParse(picked);
  if (!parsed.success)
    invalid.push(
      ...parsed.error.issues
        .filter((i) => !missing.includes(String(i.path[0])))
        .map((i) => `${String(i.path[0])}: ${i.message}`),
    );
  if (!job || !parsed.success || missing.length || invalid.length) throw new ConfigError(missing, invalid);
  const values = parsed.data;
  return {
    ...job,
    jwtIssuer: values[API_ENV.jwtIssuer],
    jwtAudience: values[API_ENV.jwtAudience].split(','),
    jwksUrl: values[API_ENV.jwksUrl],
    accountSyncFunctionName: values[API_ENV.accountSyncFunctionName],
  };
}
