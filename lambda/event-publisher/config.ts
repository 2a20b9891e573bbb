import * as z from '../shared/validation';
import { ConfigError, JOB_ENV } from '../shared/config';
import { EVENT_PUBLISHER_ENV } from './contract';

export { EVENT_PUBLISHER_ENV };

export interface EventPublisherConfig {
  readonly environment: string;
  readonly clusterArn: string;
  readonly databaseSecretArn: string;
  readonly databaseName: string;
  readonly eventBusName: string;
  readonly retentionDays?: number;
}

const schema = z.object({
  [JOB_ENV.environment]: z.enum(['dev', 'staging', 'prod']),
  [JOB_ENV.clusterArn]: z.string().check(z.regex(/^arn:aws[a-z-]*:rds:/, 'not an rds ARN')),
  [JOB_ENV.databaseSecretArn]: z.string().check(z.regex(/^arn:aws[a-z-]*:secretsmanager:/, 'not a secretsmanager ARN')),
  [JOB_ENV.databaseName]: z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_$]*$/, 'not a database name')),
  [EVENT_PUBLISHER_ENV.eventBusName]: z
    .string()
    .check(z.regex(/^[A-Za-z0-9._\-/:]{1,1600}$/, 'not an event bus name or ARN')),
  [EVENT_PUBLISHER_ENV.retentionDays]: z.optional(
    z.string().check(z.refine((v) => /^[1-9][0-9]{0,3}$/.test(v), 'not a number of days from 1 to 9999')),
  ),
});

/** Reads and validates the publisher's configuration; one ConfigError names every problem, never a value. */
export function readEventPublisherConfig(
  env: Readonly<Record<string, string | undefined>> = process.env,
): EventPublisherConfig {
  const picked: Record<string, string | undefined> = {};
  for (const name of Object.keys(schema.shape)) picked[name] = env[name]?.trim() || undefined;
  const optional: string[] = [EVENT_PUBLISHER_ENV.retentionDays];
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
  const retention = v[EVENT_PUBLISHER_ENV.retentionDays];
  return {
    environment: v[JOB_ENV.environment],
    clusterArn: v[JOB_ENV.clusterArn],
    databaseSecretArn: v[JOB_ENV.databaseSecretArn],
    databaseName: v[JOB_ENV.databaseName],
    eventBusName: v[EVENT_PUBLISHER_ENV.eventBusName],
    ...(retention === undefined ? {} : { retentionDays: Number(retention) }),
  };
}
