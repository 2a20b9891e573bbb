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
  /** Redirect URIs a connect session may name, comma-separated (`api.connectRedirectUris`). */
  connectRedirectUris: 'CONNECT_REDIRECT_URIS',
} as const;

/** `npm run api` (node-postgres, no Secrets Manager): the jobs' local names plus the port. */
export const LOCAL_API_ENV = {
  ...LOCAL_JOB_ENV,
  port: 'PORT',
  jwtIssuer: API_ENV.jwtIssuer,
  jwtAudience: API_ENV.jwtAudience,
  jwksUrl: API_ENV.jwksUrl,
  /** Comma-separated; loopback URIs (`LOCAL_CONNECT_REDIRECT_URIS`) when unset. */
  connectRedirectUris: API_ENV.connectRedirectUris,
  /** Consent page with `{region}` (the fake Amazon's `${url}/{region}/ap/oa`); Amazon's when unset. */
  lwaAuthorizeUrl: 'LWA_AUTHORIZE_URL',
} as const;

/** What `npm run api` allows as connect redirect URIs when CONNECT_REDIRECT_URIS is unset. */
export const LOCAL_CONNECT_REDIRECT_URIS: readonly string[] = [
  'http://localhost:3000/amazon/callback',
  'http://127.0.0.1:3000/amazon/callback',
];

/**
 * A comma-separated list of redirect URIs: each an absolute https URL, or http on a loopback
 * host (localhost, 127.0.0.1, [::1]), without a fragment. Throws naming the first bad one.
 */
export function parseRedirectUris(text: string): string[] {
  const uris = text
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u.length > 0);
  for (const uri of uris) {
    let url: URL;
    try {
      url = new URL(uri);
    } catch {
      throw new Error(`not a URL: ${uri.slice(0, 80)}`);
    }
    const loopback = ['localhost', '127.0.0.1', '[::1]'].includes(url.hostname);
    if (!(url.protocol === 'https:' || (url.protocol === 'http:' && loopback)) || url.hash || uri.length > 2048)
      throw new Error(`not an https (or loopback http) URL without a fragment: ${uri.slice(0, 80)}`);
  }
  return uris;
}

/** Configuration of the accounts API Lambda (names in `API_ENV`). */
export interface ApiConfig extends JobConfig {
  readonly jwtIssuer: string;
  /** One or more accepted audiences. */
  readonly jwtAudience: readonly string[];
  readonly jwksUrl: string | undefined;
  readonly accountSyncFunctionName: string;
  /** Redirect URIs a connect session may name. */
  readonly connectRedirectUris: readonly string[];
}

const apiOnlySchema = z.object({
  [API_ENV.jwtIssuer]: z.string().check(z.minLength(1)),
  [API_ENV.jwtAudience]: z.string().check(z.regex(/^[^,\s]+(,[^,\s]+)*$/, 'not a comma-separated list of audiences')),
  [API_ENV.jwksUrl]: z.optional(z.string().check(z.url('not a URL'), z.regex(/^https:\/\//, 'not an https URL'))),
  [API_ENV.accountSyncFunctionName]: z.string().check(z.regex(/^[A-Za-z0-9_:.-]{1,140}$/, 'not a function name')),
  [API_ENV.connectRedirectUris]: z.optional(
    z.string().check(
      z.refine((text) => {
        try {
          parseRedirectUris(text);
          return true;
        } catch {
          return false;
        }
      }, 'not a comma-separated list of https redirect URIs'),
    ),
  ),
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
    connectRedirectUris: parseRedirectUris(values[API_ENV.connectRedirectUris] ?? ''),
  };
}
