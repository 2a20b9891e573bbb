import * as z from './validation';
import { TokenKeyError, TokenKeyRing } from './token-crypto';

/**
 * The jobs' configuration, read from the environment in one place and validated at start-up.
 * A Lambda with a missing or malformed variable fails its first invocation with one
 * {@link ConfigError} naming every problem, instead of failing later half-way through a batch.
 */

/** Environment variable names the CDK stack sets on the job Lambdas and the handlers read. */
export const JOB_ENV = {
  environment: 'APP_ENVIRONMENT',
  clusterArn: 'DB_CLUSTER_ARN',
  databaseSecretArn: 'DB_SECRET_ARN',
  databaseName: 'DB_NAME',
  lwaClientSecretArn: 'LWA_CLIENT_SECRET_ARN',
  tokenKeySecretArn: 'TOKEN_ENCRYPTION_KEY_SECRET_ARN',
  /** Requests per second per region to the Login with Amazon token endpoint, all invocations together. Optional. */
  lwaRequestsPerSecond: 'LWA_REQUESTS_PER_SECOND',
  /** Requests per second per region to the Ads API, all invocations together. Optional. */
  adsRequestsPerSecond: 'ADS_REQUESTS_PER_SECOND',
  /**
   * Optional, token refresh only: proactive refresh covers connections used within this many
   * seconds (unset: every connection). Also read by `npm run job`.
   */
  proactiveRefreshUsedWithinSeconds: 'PROACTIVE_REFRESH_USED_WITHIN_SECONDS',
  /**
   * Optional, token refresh (and its dispatcher) only: tokens expiring within this many seconds
   * are due. The stack derives it from the token refresh's schedule in cdk.json (window.ts);
   * unset, the default for the 5-minute schedule.
   */
  proactiveRefreshWindowSeconds: 'PROACTIVE_REFRESH_WINDOW_SECONDS',
} as const;

/** The variables of `JOB_ENV` a job may run without. */
const OPTIONAL_JOB_ENV: readonly string[] = [
  JOB_ENV.proactiveRefreshUsedWithinSeconds,
  JOB_ENV.proactiveRefreshWindowSeconds,
  JOB_ENV.lwaRequestsPerSecond,
  JOB_ENV.adsRequestsPerSecond,
];

/**
 * Environment variables of `npm run job` and `npm start` (local runs on node-postgres, no
 * Secrets Manager): read by `readLocalJobConfig` below.
 */
export const LOCAL_JOB_ENV = {
  databaseUrl: 'DATABASE_URL',
  lwaTokenUrl: 'LWA_TOKEN_URL',
  adsApiUrl: 'ADS_API_URL',
  lwaClientId: 'LWA_CLIENT_ID',
  lwaClientSecret: 'LWA_CLIENT_SECRET',
  tokenEncryptionKey: 'TOKEN_ENCRYPTION_KEY',
  lwaRequestsPerSecond: JOB_ENV.lwaRequestsPerSecond,
  adsRequestsPerSecond: JOB_ENV.adsRequestsPerSecond,
} as const;

/** The environment is incomplete or malformed. Lists every variable at fault; never values. */
export class ConfigError extends Error {
  constructor(
    /** Variables that are unset or empty. */
    readonly missing: readonly string[],
    /** Variables that are set but malformed, with the reason. */
    readonly invalid: readonly string[],
  ) {
    const parts = [];
    if (missing.length) parts.push(`missing ${missing.join(', ')}`);
    if (invalid.length) parts.push(`invalid ${invalid.join('; ')}`);
    super(`Job configuration: ${parts.join('; ')}`);
    this.name = 'ConfigError';
  }
}

/** Configuration of the job Lambdas in AWS (set by the CDK stack, names in `JOB_ENV`). */
export interface JobConfig {
  /** `dev`, `staging` or `prod`. */
  readonly environment: string;
  /** The Aurora cluster ARN (Data API resource). */
  readonly clusterArn: string;
  /** The jobs' login's secret (Data API `secretArn`). */
  readonly databaseSecretArn: string;
  readonly databaseName: string;
  /** Secret with `{"clientId","clientSecret"}` of the Login with Amazon client. */
  readonly lwaClientSecretArn: string;
  /** Secret whose string is the base64 token encryption key. */
  readonly tokenKeySecretArn: string;
  /** Amazon's rate limits (the shared request budgets' ceilings); absent ones take the defaults. */
  readonly amazonLimits: AmazonLimits;
  /** Proactive refresh covers connections used within this many seconds. @default - every connection */
  readonly proactiveRefreshUsedWithinSeconds?: number;
  /** Tokens expiring within this many seconds are due (the stack's, from the schedule). @default - the core's */
  readonly proactiveRefreshWindowSeconds?: number;
}

/** Requests per second per region, all invocations together (the shared budgets' ceilings). */
export interface AmazonLimits {
  readonly lwa?: number;
  readonly ads?: number;
}

/** A positive number of requests per second, at most 10,000. */
const requestsPerSecond = z
  .string()
  .check(
    z.refine((v) => /^\d+(\.\d+)?$/.test(v) && Number(v) > 0 && Number(v) <= 10_000, 'not a rate between 0 and 10000'),
  );

function amazonLimits(values: Record<string, string | undefined>): AmazonLimits {
  const lwa = values[JOB_ENV.lwaRequestsPerSecond];
  const ads = values[JOB_ENV.adsRequestsPerSecond];
  return {
    ...(lwa === undefined ? {} : { lwa: Number(lwa) }),
    ...(ads === undefined ? {} : { ads: Number(ads) }),
  };
}

const arn = (service: string) =>
  z.string().check(z.regex(new RegExp(`^arn:aws[a-z-]*:${service}:[a-z0-9-]+:\\d{12}:`), `not a ${service} ARN`));

/** A whole number of seconds, at least one, that PostgreSQL's `int` holds (as the variable's text). */
const seconds = z
  .string()
  .check(
    z.refine(
      (v) => /^[1-9][0-9]*$/.test(v) && Number(v) <= 2_147_483_647,
      'not a whole number of seconds from 1 to 2147483647',
    ),
  );

const jobSchema = z.object({
  [JOB_ENV.environment]: z.enum(['dev', 'staging', 'prod']),
  [JOB_ENV.clusterArn]: arn('rds'),
  [JOB_ENV.databaseSecretArn]: arn('secretsmanager'),
  [JOB_ENV.databaseName]: z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_$]*$/, 'not a database name')),
  [JOB_ENV.lwaClientSecretArn]: arn('secretsmanager'),
  [JOB_ENV.tokenKeySecretArn]: arn('secretsmanager'),
  [JOB_ENV.lwaRequestsPerSecond]: z.optional(requestsPerSecond),
  [JOB_ENV.adsRequestsPerSecond]: z.optional(requestsPerSecond),
  [JOB_ENV.proactiveRefreshUsedWithinSeconds]: z.optional(seconds),
  [JOB_ENV.proactiveRefreshWindowSeconds]: z.optional(seconds),
});

function optionalSeconds(value: string | undefined): number | undefined {
  return value === undefined ? undefined : Number(value);
}

/** Reads and validates the Lambda configuration from `env`. Pure: use {@link jobConfig} in handlers. */
export function readJobConfig(env: Readonly<Record<string, string | undefined>> = process.env): JobConfig {
  const values = validate(
    jobSchema,
    env,
    Object.values(JOB_ENV).filter((name) => !OPTIONAL_JOB_ENV.includes(name)),
  );
  return {
    environment: values[JOB_ENV.environment],
    clusterArn: values[JOB_ENV.clusterArn],
    databaseSecretArn: values[JOB_ENV.databaseSecretArn],
    databaseName: values[JOB_ENV.databaseName],
    lwaClientSecretArn: values[JOB_ENV.lwaClientSecretArn],
    tokenKeySecretArn: values[JOB_ENV.tokenKeySecretArn],
    amazonLimits: amazonLimits(values),
    proactiveRefreshUsedWithinSeconds: optionalSeconds(values[JOB_ENV.proactiveRefreshUsedWithinSeconds]),
    proactiveRefreshWindowSeconds: optionalSeconds(values[JOB_ENV.proactiveRefreshWindowSeconds]),
  };
}

/** What the token re-encryption reads (it calls no Amazon API): the database and the token key. */
export type ReencryptionConfig = Pick<
  JobConfig,
  'environment' | 'clusterArn' | 'databaseSecretArn' | 'databaseName' | 'tokenKeySecretArn'
>;

const REENCRYPTION_ENV = [
  JOB_ENV.environment,
  JOB_ENV.clusterArn,
  JOB_ENV.databaseSecretArn,
  JOB_ENV.databaseName,
  JOB_ENV.tokenKeySecretArn,
] as const;

/** Reads and validates the token re-encryption's configuration from `env`. */
export function readReencryptionConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): ReencryptionConfig {
  const schema = z.object({
    [JOB_ENV.environment]: jobSchema.shape[JOB_ENV.environment],
    [JOB_ENV.clusterArn]: jobSchema.shape[JOB_ENV.clusterArn],
    [JOB_ENV.databaseSecretArn]: jobSchema.shape[JOB_ENV.databaseSecretArn],
    [JOB_ENV.databaseName]: jobSchema.shape[JOB_ENV.databaseName],
    [JOB_ENV.tokenKeySecretArn]: jobSchema.shape[JOB_ENV.tokenKeySecretArn],
  });
  const values = validate(schema, env, REENCRYPTION_ENV);
  return {
    environment: values[JOB_ENV.environment],
    clusterArn: values[JOB_ENV.clusterArn],
    databaseSecretArn: values[JOB_ENV.databaseSecretArn],
    databaseName: values[JOB_ENV.databaseName],
    tokenKeySecretArn: values[JOB_ENV.tokenKeySecretArn],
  };
}

let cachedJobConfig: JobConfig | undefined;

/** The Lambda configuration from `process.env`, read once per container. */
export function jobConfig(): JobConfig {
  cachedJobConfig ??= readJobConfig(process.env);
  return cachedJobConfig;
}

/** Configuration of `npm run job` / `npm start`: node-postgres and credentials from the environment. */
export interface LocalJobConfig {
  readonly databaseUrl: string;
  /** Token endpoint override (may contain `{region}`). @default - Amazon's regional hosts */
  readonly lwaTokenUrl: string | undefined;
  /** Ads API base URL override (may contain `{region}`). @default - Amazon's regional hosts */
  readonly adsApiUrl: string | undefined;
  readonly lwaClientId: string;
  readonly lwaClientSecret: string;
  /** The token key ring: TOKEN_ENCRYPTION_KEY holds the ring's JSON or one base64 key (docs/token-encryption.md). */
  readonly tokenKeys: TokenKeyRing;
  /** Amazon's rate limits (the shared request budgets' ceilings); absent ones take the defaults. */
  readonly amazonLimits: AmazonLimits;
  /** `PROACTIVE_REFRESH_USED_WITHIN_SECONDS`, as in AWS. @default - every connection */
  readonly proactiveRefreshUsedWithinSeconds?: number;
}

const url = z.string().check(z.url('not a URL'));
const localSchema = z.object({
  [LOCAL_JOB_ENV.databaseUrl]: z.string().check(z.regex(/^postgres(ql)?:\/\//, 'not a postgres:// URL')),
  [LOCAL_JOB_ENV.lwaTokenUrl]: z.optional(url),
  [LOCAL_JOB_ENV.adsApiUrl]: z.optional(url),
  [LOCAL_JOB_ENV.lwaClientId]: z.string(),
  [LOCAL_JOB_ENV.lwaClientSecret]: z.string(),
  [LOCAL_JOB_ENV.tokenEncryptionKey]: z.string(),
  [LOCAL_JOB_ENV.lwaRequestsPerSecond]: z.optional(requestsPerSecond),
  [LOCAL_JOB_ENV.adsRequestsPerSecond]: z.optional(requestsPerSecond),
  [JOB_ENV.proactiveRefreshUsedWithinSeconds]: z.optional(seconds),
});

/** Reads and validates the local-run configuration from `env`. */
export function readLocalJobConfig(env: Readonly<Record<string, string | undefined>> = process.env): LocalJobConfig {
  const required = [
    LOCAL_JOB_ENV.databaseUrl,
    LOCAL_JOB_ENV.lwaClientId,
    LOCAL_JOB_ENV.lwaClientSecret,
    LOCAL_JOB_ENV.tokenEncryptionKey,
  ];
  const values = validate(localSchema, env, required, (v) => keyRingProblems(v[LOCAL_JOB_ENV.tokenEncryptionKey]));
  return {
    databaseUrl: values[LOCAL_JOB_ENV.databaseUrl],
    lwaTokenUrl: values[LOCAL_JOB_ENV.lwaTokenUrl],
    adsApiUrl: values[LOCAL_JOB_ENV.adsApiUrl],
    lwaClientId: values[LOCAL_JOB_ENV.lwaClientId],
    lwaClientSecret: values[LOCAL_JOB_ENV.lwaClientSecret],
    tokenKeys: TokenKeyRing.parse(values[LOCAL_JOB_ENV.tokenEncryptionKey]),
    amazonLimits: amazonLimits(values),
    proactiveRefreshUsedWithinSeconds: optionalSeconds(values[JOB_ENV.proactiveRefreshUsedWithinSeconds]),
  };
}

/** `npm run job -- reencrypt-tokens`: the database and the key ring, nothing of Amazon. */
export interface LocalReencryptionConfig {
  readonly databaseUrl: string;
  readonly tokenKeys: TokenKeyRing;
}

/** Reads and validates DATABASE_URL and TOKEN_ENCRYPTION_KEY (the ring's JSON or one base64 key). */
export function readLocalReencryptionConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): LocalReencryptionConfig {
  const schema = z.object({
    [LOCAL_JOB_ENV.databaseUrl]: localSchema.shape[LOCAL_JOB_ENV.databaseUrl],
    [LOCAL_JOB_ENV.tokenEncryptionKey]: localSchema.shape[LOCAL_JOB_ENV.tokenEncryptionKey],
  });
  const values = validate(schema, env, [LOCAL_JOB_ENV.databaseUrl, LOCAL_JOB_ENV.tokenEncryptionKey], (v) =>
    keyRingProblems(v[LOCAL_JOB_ENV.tokenEncryptionKey]),
  );
  return {
    databaseUrl: values[LOCAL_JOB_ENV.databaseUrl],
    tokenKeys: TokenKeyRing.parse(values[LOCAL_JOB_ENV.tokenEncryptionKey]),
  };
}

function keyRingProblems(text: string | undefined): string[] {
  if (text === undefined) return [];
  try {
    TokenKeyRing.parse(text);
    return [];
  } catch (error) {
    return [`${LOCAL_JOB_ENV.tokenEncryptionKey}: ${error instanceof TokenKeyError ? error.message : 'unreadable'}`];
  }
}

/**
 * Validates the named variables (empty counts as unset), collecting every problem before
 * failing. Issue messages name the variable and the rule, never the value.
 */
function validate<S extends z.ZodMiniObject>(
  schema: S,
  env: Readonly<Record<string, string | undefined>>,
  required: readonly string[],
  extraChecks?: (values: Record<string, string | undefined>) => string[],
): z.infer<S> {
  const picked: Record<string, string | undefined> = {};
  for (const name of Object.keys(schema.shape)) {
    const value = env[name]?.trim();
    picked[name] = value === '' ? undefined : value;
  }
  const missing = required.filter((name) => picked[name] === undefined);
  const result = schema.safeParse(picked);
  const invalid = result.success
    ? []
    : result.error.issues
        .filter((i) => !missing.includes(String(i.path[0])))
        .map((i) => `${String(i.path[0])}: ${i.message}`);
  if (extraChecks) invalid.push(...extraChecks(picked));
  if (missing.length || invalid.length || !result.success) throw new ConfigError(missing, invalid);
  return result.data;
}
