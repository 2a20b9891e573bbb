import * as z from '../shared/validation';
import { ConfigError, JOB_ENV } from '../shared/config';
import { FAN_OUT_JOBS, type FanOutJob } from '../shared/jobs/fan-out';

/** Environment variables of a dispatcher function (besides the database ones of JOB_ENV). */
export const DISPATCHER_ENV = {
  /** Which job's ids it dispatches: `token-refresh` or `account-sync`. */
  job: 'FAN_OUT_JOB',
  /** The job's queue. */
  queueUrl: 'FAN_OUT_QUEUE_URL',
  /** Requests per second per region of the job's Amazon endpoint: the tick's cap follows from it. */
  requestsPerSecond: 'FAN_OUT_REQUESTS_PER_SECOND',
} as const;

export interface DispatcherConfig {
  readonly environment: string;
  readonly clusterArn: string;
  readonly databaseSecretArn: string;
  readonly databaseName: string;
  readonly job: FanOutJob;
  readonly queueUrl: string;
  readonly requestsPerSecond: number;
  /** The token refresh's used-within window. @default - every connection */
  readonly usedWithinSeconds?: number;
  /** The token refresh's window (from its schedule). @default - the core's */
  readonly windowSeconds?: number;
}

const schema = z.object({
  [JOB_ENV.environment]: z.enum(['dev', 'staging', 'prod']),
  [JOB_ENV.clusterArn]: z.string().check(z.regex(/^arn:aws[a-z-]*:rds:/, 'not an rds ARN')),
  [JOB_ENV.databaseSecretArn]: z.string().check(z.regex(/^arn:aws[a-z-]*:secretsmanager:/, 'not a secretsmanager ARN')),
  [JOB_ENV.databaseName]: z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_$]*$/, 'not a database name')),
  [DISPATCHER_ENV.job]: z.enum(FAN_OUT_JOBS),
  [DISPATCHER_ENV.queueUrl]: z.string().check(z.url('not a URL')),
  [DISPATCHER_ENV.requestsPerSecond]: z.string().check(z.regex(/^\d+(\.\d+)?$/, 'not a rate')),
  [JOB_ENV.proactiveRefreshUsedWithinSeconds]: z.optional(z.string().check(z.regex(/^[1-9][0-9]*$/, 'not seconds'))),
  [JOB_ENV.proactiveRefreshWindowSeconds]: z.optional(z.string().check(z.regex(/^[1-9][0-9]*$/, 'not seconds'))),
});

/** Reads and validates a dispatcher's configuration; one ConfigError names every problem, never a value. */
export function readDispatcherConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): DispatcherConfig {
  const picked: Record<string, string | undefined> = {};
  for (const name of Object.keys(schema.shape)) picked[name] = env[name]?.trim() || undefined;
  const optional: string[] = [JOB_ENV.proactiveRefreshUsedWithinSeconds, JOB_ENV.proactiveRefreshWindowSeconds];
  const missing = Object.keys(schema.shape).filter((n) => !optional.includes(n) && picked[n] === undefined);
  const result = schema.safeParse(picked);
  if (!result.success || missing.length > 0) {
    const invalid = result.success
      ? []
      : result.error.issues
          .filter((i) => !missing.includes(String(i.path[0])))
          .map((i) => `${String(i.path[0])}: ${i.message}`);
    throw new ConfigError(missing, invalid);
  }
  const v = result.data;
  const usedWithin = v[JOB_ENV.proactiveRefreshUsedWithinSeconds];
  const window = v[JOB_ENV.proactiveRefreshWindowSeconds];
  return {
    environment: v[JOB_ENV.environment],
    clusterArn: v[JOB_ENV.clusterArn],
    databaseSecretArn: v[JOB_ENV.databaseSecretArn],
    databaseName: v[JOB_ENV.databaseName],
    job: v[DISPATCHER_ENV.job],
    queueUrl: v[DISPATCHER_ENV.queueUrl],
    requestsPerSecond: Number(v[DISPATCHER_ENV.requestsPerSecond]),
    ...(usedWithin === undefined ? {} : { usedWithinSeconds: Number(usedWithin) }),
    ...(window === undefined ? {} : { windowSeconds: Number(window) }),
  };
}
