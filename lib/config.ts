import { z } from 'zod';

/**
 * One deployment environment, as written under `context.environments.<name>` in cdk.json.
 * Only bin/ reads context; everything in lib/ takes this typed value.
 */
export interface EnvironmentConfig {
  /** The environment's name (`dev`, `staging`, `prod`): part of the stack and resource names. */
  readonly name: string;
  /** AWS account to deploy to. @default - the account of the CLI's credentials */
  readonly account?: string;
  /** AWS region to deploy to. @default - the region of the CLI's profile */
  readonly region?: string;
  /** Aurora capacity, protection, backups and password rotation. */
  readonly database: DatabaseConfig;
  /** The scheduled jobs' EventBridge expressions. */
  readonly schedules: ScheduleConfig;
  /** Who hears about alarms. */
  readonly alarms: AlarmConfig;
  /** Retention of every log group of the environment (Lambda, PostgreSQL, VPC flow logs), in days. */
  readonly logRetentionDays: number;
  /** The accounts API: who signs its callers in, which web origins may call it, how fast. */
  readonly api: ApiDeployConfig;
  /**
   * Amazon's request rates for this environment, per region, all invocations together (the
   * shared budgets of migration 0015).
   */
  readonly amazonLimits: AmazonLimitsConfig;
  /** How the scheduled jobs work. @default - every default of JobsConfig */
  readonly jobs?: JobsConfig;
  /** Connection events (docs/events.md): the bus and the publisher. @default - every default of EventsConfig */
  readonly events?: EventsConfig;
}

export interface EventsConfig {
  /**
   * An existing EventBridge bus to publish to, by name (one the product already owns).
   * @default - the stack creates `amazon-accounts-<environment>-events`
   */
  readonly eventBusName?: string;
  /** The publisher's EventBridge schedule expression. @default rate(1 minute) */
  readonly schedule?: string;
  /** Days a published event stays in the outbox before it is deleted. @default 7 */
  readonly retentionDays?: number;
}

export interface JobsConfig {
  /**
   * Proactive token refresh covers only connections whose access token was used (or wanted:
   * by the account sync, the product's token route) within this many hours; idle connections
   * are refreshed once something wants their token again. At least 1 (an access token lives
   * an hour). @default - every connection, used or not
   */
  readonly proactiveRefreshUsedWithinHours?: number;
  /**
   * Fan-out (docs/architecture.md): each job's schedule invokes a dispatcher that sends the due
   * ids to the job's SQS queue, which the job function consumes with at most this many
   * invocations at once. Absent, the schedule invokes the job function directly (one
   * invocation per tick, which covers a few tens of thousands of connections).
   * @default - no fan-out
   */
  readonly fanOut?: FanOutConfig;
}

export interface FanOutConfig {
  /**
   * Most concurrent invocations of each job function consuming its queue (the event source
   * mapping's maximum concurrency, 2-1000). Amazon's rate stays the shared budget's whatever
   * this is; more invocations than the budget keeps busy only wait.
   */
  readonly maxConcurrency: number;
}

export interface AmazonLimitsConfig {
  /** Login with Amazon token endpoint, requests per second per region. */
  readonly lwaRequestsPerSecond: number;
  /** Ads API, requests per second per region. */
  readonly adsRequestsPerSecond: number;
}

/** The `api` section of an environment in cdk.json (what the stack builds; the function's own configuration is lambda/shared/api-env.ts's ApiConfig). */
export interface ApiDeployConfig {
  /**
   * Expected `iss` of the product's identity provider's JWTs, an https URL; for Supabase
   * `https://<project-ref>.supabase.co/auth/v1`.
   */
  readonly jwtIssuer: string;
  /** Expected `aud`: one value or several (Supabase: `authenticated`). */
  readonly jwtAudience: string | readonly string[];
  /** The issuer's JWKS, an https URL. @default - `<jwtIssuer>/.well-known/jwks.json` */
  readonly jwksUrl?: string;
  /** Web origins (`https://app.example.com`, no path) whose browsers may call the API (CORS). */
  readonly corsAllowedOrigins: readonly string[];
  /**
   * Redirect URIs a connect session may name (exact match): where Login with Amazon sends the
   * user back with the code. https, or http on localhost for a local development server; each
   * must also be one of the LWA security profile's allowed return URLs.
   */
  readonly connectRedirectUris: readonly string[];
  /** API Gateway's throttling of every route of the stage. */
  readonly throttle: ApiThrottleConfig;
}

export interface ApiThrottleConfig {
  /** Steady-state requests per second. */
  readonly rateLimit: number;
  /** Requests accepted at once above the steady rate (the bucket's size). */
  readonly burstLimit: number;
}

export interface DatabaseConfig {
  /** Aurora Serverless v2 minimum capacity in ACUs; 0 lets the cluster pause when idle. */
  readonly minCapacityAcu: number;
  /** Aurora Serverless v2 maximum capacity in ACUs. */
  readonly maxCapacityAcu: number;
  /** Idle time before a cluster with 0 minimum ACUs pauses, in minutes. @default 10 (used only when minCapacityAcu is 0) */
  readonly autoPauseMinutes?: number;
  /** Days of automated backups (1-35). */
  readonly backupRetentionDays: number;
  /**
   * Whether the cluster refuses to be deleted. Turned on as the stack's last step
   * (lib/deletion-protection.ts), so a failed first deploy still rolls back.
   */
  readonly deletionProtection: boolean;
  /**
   * What happens to the cluster when it leaves the stack: `destroy` (dev), `snapshot` or `retain`.
   * Secrets and log groups are retained unless this is `destroy`.
   */
  readonly removalPolicy: 'destroy' | 'snapshot' | 'retain';
  /** Days between rotations of the master, the jobs' and the accounts API's database passwords. */
  readonly passwordRotationDays: number;
}

export interface ScheduleConfig {
  /** EventBridge schedule expression of the token refresh job, e.g. `rate(5 minutes)`. */
  readonly tokenRefresh: string;
  /** EventBridge schedule expression of the account sync job, e.g. `rate(10 minutes)`. */
  readonly accountSync: string;
  /**
   * Whether the schedules run. Off, the rules exist disabled and the jobs run only when invoked
   * (`aws lambda invoke`, see README): dev's cluster, at 0 ACU, then pauses once idle instead of
   * being woken every 5 minutes. @default true
   */
  readonly enabled?: boolean;
}

export interface AlarmConfig {
  /** Whether alarms notify (their actions are enabled); the alarms exist either way. */
  readonly notify: boolean;
  /** Address subscribed to the alarm topic. @default - no subscription */
  readonly email?: string;
}

/** CloudWatch Logs accepts only these retention periods. */
export const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
] as const;

const schedule = z
  .string()
  .regex(/^(rate|cron)\(.+\)$/, 'must be an EventBridge schedule expression: rate(...) or cron(...)');
const acu = z
  .number()
  .min(0)
  .max(256)
  .refine((v) => Number.isInteger(v * 2), 'must be a multiple of 0.5');

const httpsUrl = z.url({ protocol: /^https$/, error: 'must be an https URL' });
/** A browser origin: scheme, host and optional port; https, or http for a local development server. */
const origin = z
  .string()
  .regex(
    /^(https:\/\/[a-z0-9.-]+(:\d{1,5})?|http:\/\/(localhost|127\.0\.0\.1)(:\d{1,5})?)$/,
    'must be an origin such as https://app.example.com (no path, no trailing slash; http only for localhost)',
  );
/** A connect redirect URI: absolute, https (or http on localhost), no fragment, no comma. */
const redirectUri = z
  .string()
  .max(2048)
  .regex(
    /^(https:\/\/[a-z0-9.-]+(:\d{1,5})?|http:\/\/(localhost|127\.0\.0\.1)(:\d{1,5})?)\/[^\s#,]*$/,
    'must be a URL such as https://app.example.com/amazon/callback (no fragment, no comma; http only for localhost)',
  );
const audience = z
  .string()
  .min(1)
  .regex(/^[^,]+$/, 'must not contain a comma (give a list instead)');
const apiSchema = z.strictObject({
  jwtIssuer: httpsUrl,
  jwtAudience: z.union([audience, z.array(audience).min(1)]),
  jwksUrl: httpsUrl.optional(),
  corsAllowedOrigins: z.array(origin).min(1),
  connectRedirectUris: z.array(redirectUri).min(1),
  throttle: z
    .strictObject({
      // API Gateway's account-level quota per region (10,000 requests per second, burst 5,000) caps both.
      rateLimit: z.number().positive().max(10_000),
      burstLimit: z.number().int().min(1).max(5_000),
    })
    .refine((t) => t.burstLimit >= t.rateLimit || t.burstLimit === 5_000, {
      message: 'burstLimit should be at least rateLimit (or the 5,000 maximum)',
      path: ['burstLimit'],
    }),
});

const environmentSchema = z
  .object({
    account: z
      .string()
      .regex(/^\d{12}$/, 'must be a 12-digit AWS account id')
      .optional(),
    region: z
      .string()
      .regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'must be an AWS region such as eu-west-1')
      .optional(),
    database: z.strictObject({
      minCapacityAcu: acu,
      maxCapacityAcu: acu.refine((v) => v >= 1, 'must be at least 1'),
      autoPauseMinutes: z.number().int().min(5).max(1440).optional(),
      backupRetentionDays: z.number().int().min(1).max(35),
      deletionProtection: z.boolean(),
      removalPolicy: z.enum(['destroy', 'snapshot', 'retain']),
      passwordRotationDays: z.number().int().min(1).max(365),
    }),
    schedules: z.strictObject({ tokenRefresh: schedule, accountSync: schedule, enabled: z.boolean().optional() }),
    alarms: z.strictObject({ notify: z.boolean(), email: z.email().optional() }),
    logRetentionDays: z.number().refine((v) => (LOG_RETENTION_DAYS as readonly number[]).includes(v), {
      message: `must be one of ${LOG_RETENTION_DAYS.join(', ')}`,
    }),
    api: apiSchema,
    amazonLimits: z.strictObject({
      lwaRequestsPerSecond: z.number().positive().max(10_000),
      adsRequestsPerSecond: z.number().positive().max(10_000),
    }),
    jobs: z
      .strictObject({
        proactiveRefreshUsedWithinHours: z
          .number()
          .min(1, 'must be at least 1 (an access token lives an hour)')
          .max(8760, 'must be at most 8760 (a year); leave it out to refresh every connection')
          .optional(),
        fanOut: z
          .strictObject({
            maxConcurrency: z
              .number()
              .int()
              .min(2, 'must be at least 2 (SQS event source mappings start at 2)')
              .max(1000),
          })
          .optional(),
      })
      .optional(),
    events: z
      .strictObject({
        eventBusName: z
          .string()
          .regex(/^[A-Za-z0-9._-]{1,256}$/, 'must be an EventBridge bus name (letters, digits, . _ -)')
          .optional(),
        schedule: schedule.optional(),
        retentionDays: z.number().int().min(1).max(9999).optional(),
      })
      .optional(),
  })
  .strict()
  .refine((c) => c.database.minCapacityAcu <= c.database.maxCapacityAcu, {
    message: 'minCapacityAcu must not exceed maxCapacityAcu',
    path: ['database', 'minCapacityAcu'],
  })
  .refine((c) => (c.account === undefined) === (c.region === undefined), {
    message: 'give both account and region, or neither',
    path: ['account'],
  });

/** Rules the production environment must keep, whatever cdk.json says. */
function checkProduction(config: EnvironmentConfig): string[] {
  if (config.name !== 'prod') return [];
  const problems: string[] = [];
  if (!config.database.deletionProtection) problems.push('database.deletionProtection must be true');
  if (config.database.removalPolicy === 'destroy') problems.push('database.removalPolicy must be snapshot or retain');
  if (config.database.backupRetentionDays < 7) problems.push('database.backupRetentionDays must be at least 7');
  if (!config.alarms.notify) problems.push('alarms.notify must be true');
  if (config.api.corsAllowedOrigins.some((o) => !o.startsWith('https://')))
    problems.push('api.corsAllowedOrigins must all be https origins');
  if (config.api.connectRedirectUris.some((u) => !u.startsWith('https://')))
    problems.push('api.connectRedirectUris must all be https URLs');
  if (config.schedules.enabled === false) problems.push('schedules.enabled must not be false');
  return problems;
}

/** The environment name or configuration is missing or wrong; the message says how to fix it. */
export class EnvironmentConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EnvironmentConfigError';
  }
}

/**
 * Picks and validates one environment from the `environments` context of cdk.json.
 * @param name the `-c env=<name>` value
 * @param environments the `environments` context object
 */
export function resolveEnvironment(name: unknown, environments: unknown): EnvironmentConfig {
  if (typeof environments !== 'object' || environments === null || Array.isArray(environments)) {
    throw new EnvironmentConfigError('cdk.json has no "environments" object in its "context"');
  }
  const valid = Object.keys(environments);
  if (typeof name !== 'string' || !Object.hasOwn(environments, name)) {
    const given = typeof name === 'string' ? `Unknown environment "${name}"` : 'No environment given';
    throw new EnvironmentConfigError(`${given}. Pass -c env=<name> with one of: ${valid.join(', ')}`);
  }
  const parsed = environmentSchema.safeParse((environments as Record<string, unknown>)[name]);
  if (!parsed.success) {
    throw new EnvironmentConfigError(`Environment "${name}" in cdk.json is invalid:\n${z.prettifyError(parsed.error)}`);
  }
  const config: EnvironmentConfig = { name, ...parsed.data };
  const problems = checkProduction(config);
  if (problems.length > 0)
    throw new EnvironmentConfigError(
      `Environment "${name}" in cdk.json is invalid:\n${problems.map((p) => `✖ ${p}`).join('\n')}`,
    );
  return config;
}

/** CloudFormation stack name of an environment; unique per environment, so several share an account. */
export function stackNameOf(environment: string): string {
  return `AmazonAccounts-${environment}`;
}

/** The token refresh's window in seconds (PROACTIVE_REFRESH_USED_WITHIN_SECONDS), if the environment sets one. */
export function proactiveRefreshUsedWithinSeconds(config: EnvironmentConfig): number | undefined {
  const hours = config.jobs?.proactiveRefreshUsedWithinHours;
  return hours === undefined ? undefined : Math.round(hours * 3600);
}
