/**
 * Lambda entry of the migration custom resource (invoked by the CDK Provider framework, which
 * answers CloudFormation). Builds the real collaborators from the environment and calls the
 * core in on-event.ts. Environment, set by lib/schema-migration.ts:
 *   MASTER_SECRET_ARN  the cluster's master secret (host, port, username, password, dbname)
 *   WORKER_SECRET_ARN  the jobs' login (username, password)
 *   API_SECRET_ARN     the accounts API's login (username, password)
 *   DB_NAME            database to migrate
 *   DB_TLS             'verify-full' (default) or 'disable' (local runs against a test server)
 *   DB_CA_FILE         PEM file of the CAs the server's certificate must chain to (the RDS CA
 *                      bundle shipped with the function; see tls.ts)
 */
import { join } from 'node:path';
import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { CloudFormationCustomResourceEvent, Context } from 'aws-lambda';
import type { ClientConfig } from 'pg';
import { onSchemaMigrationEvent, type SchemaMigrationResponse } from './on-event';
import type { AppLogger } from '../shared/logger';
import { tlsSettings } from './tls';

export { onSchemaMigrationEvent } from './on-event';

const secrets = new SecretsManagerClient({});

/** The migrations copied next to the bundle by the NodejsFunction's command hooks. */
export const BUNDLED_MIGRATIONS_DIR = join(__dirname, 'migrations');

export async function handler(
  event: CloudFormationCustomResourceEvent,
  context: Context,
): Promise<SchemaMigrationResponse> {
  const env = requiredEnv(['MASTER_SECRET_ARN', 'WORKER_SECRET_ARN', 'API_SECRET_ARN', 'DB_NAME']);
  const credentials = async (secretId: string) => {
    const secret = await readJsonSecret(secretId);
    return { username: String(secret.username), password: String(secret.password) };
  };
  return onSchemaMigrationEvent(event, {
    masterConnection: async () => masterConnectionConfig(await readJsonSecret(env.MASTER_SECRET_ARN), process.env),
    workerCredentials: () => credentials(env.WORKER_SECRET_ARN),
    apiCredentials: () => credentials(env.API_SECRET_ARN),
    migrationsDir: BUNDLED_MIGRATIONS_DIR,
    remainingTimeMs: () => context.getRemainingTimeInMillis(),
    logger: consoleLogger,
  });
}

/**
 * The master user's connection settings, from its secret (host, port, username, password) and
 * the function's environment (DB_NAME, DB_TLS, DB_CA_FILE): what every connection of the
 * migration uses.
 */
export function masterConnectionConfig(secret: Record<string, unknown>, env: NodeJS.ProcessEnv): ClientConfig {
  return {
    host: String(secret.host),
    port: Number(secret.port ?? 5432),
    user: String(secret.username),
    password: String(secret.password),
    database: env.DB_NAME,
    ssl: tlsSettings(env.DB_TLS, env.DB_CA_FILE),
    connectionTimeoutMillis: 10_000,
    application_name: 'schema-migrations',
  };
}

async function readJsonSecret(secretId: string): Promise<Record<string, unknown>> {
  const { SecretString } = await secrets.send(new GetSecretValueCommand({ SecretId: secretId }));
  if (!SecretString) throw new Error(`Secret ${secretId} has no string value`);
  return JSON.parse(SecretString) as Record<string, unknown>;
}

function requiredEnv<K extends string>(names: K[]): Record<K, string> {
  const values = {} as Record<K, string>;
  for (const name of names) {
    const value = process.env[name];
    if (!value) throw new Error(`Environment variable ${name} is not set`);
    values[name] = value;
  }
  return values;
}

/**
 * The function logs in Lambda's JSON format, which turns each console call into one JSON line
 * with its level. Messages never carry secrets (passwords are never logged).
 */
const consoleLogger: AppLogger = {
  info: (message) => console.info(message),
  warn: (message) => console.warn(message),
  error: (message) => console.error(message),
};
