import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { Client, type ClientConfig } from 'pg';
import { runMigrations, type MigrationResult } from './run-migrations';
import { waitForDatabase } from './wait-for-database';
import { ensureApiLogin, ensureWorkerLogin, type LoginCredentials, type WorkerCredentials } from './worker-login';
import type { AppLogger } from '../shared/logger';

/** The custom resource's properties, as the CDK construct sets them. */
export interface SchemaMigrationProperties {
  /** Fingerprint of `migrations/` (see fingerprintMigrations): a new value means "run again". */
  readonly MigrationsHash: string;
  /** Name of the last migration the deployment brings. */
  readonly LatestMigration: string;
  /**
   * The accounts API's login secret. Not read from here (the function's environment names it):
   * its arrival in the properties makes CloudFormation run the resource again, which creates
   * the login on a stack deployed before the API.
   */
  readonly ApiSecretArn?: string;
}

/** What the Provider framework expects back; `Data` becomes the resource's attributes. */
export interface SchemaMigrationResponse {
  readonly PhysicalResourceId: string;
  readonly Data: { readonly Applied: string; readonly AppliedCount: number; readonly Outcome: Outcome };
}

type Outcome = 'migrated' | 'rollback-skipped' | 'deleted';

/** Everything the handler talks to, injected (the Lambda entry builds the real ones). */
export interface SchemaMigrationDeps {
  /** Connection settings of the master user (read from its secret on every call). */
  readonly masterConnection: () => Promise<ClientConfig>;
  /** Username and password of the jobs' login user (its secret). */
  readonly workerCredentials: () => Promise<WorkerCredentials>;
  /**
   * Username and password of the accounts API's login user (its secret). The Lambda always
   * passes it; a local run that serves no API may leave it out.
   * @default - no API login is created or updated
   */
  readonly apiCredentials?: () => Promise<LoginCredentials>;
  /** The folder holding the migrations bundled with this code. */
  readonly migrationsDir: string;
  /** Milliseconds left before the Lambda times out. */
  readonly remainingTimeMs: () => number;
  readonly logger: AppLogger;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Date.now */
  readonly now?: () => number;
  /** @default runMigrations */
  readonly migrate?: typeof runMigrations;
}

export const PHYSICAL_RESOURCE_ID = 'schema-migrations';

/** Time kept back for the migrations themselves when waiting for the database. */
export const MIGRATION_RESERVE_MS = 3 * 60_000;
/** Waiting longer than this for a cluster to start or resume means something else is wrong. */
export const MAX_CONNECT_WAIT_MS = 5 * 60_000;

/**
 * The migration custom resource.
 *
 * - Create/Update: waits for the cluster (starting, resuming from 0 ACU), applies pending
 *   migrations with node-pg-migrate (always `up`), then creates or updates the jobs' login user
 *   (member of `accounts_worker`) and the accounts API's (member of `authenticated`).
 *   A failed migration throws MigrationError ("Migration <name> failed: <database message>"),
 *   which the Provider framework reports as FAILED, so CloudFormation rolls the stack back.
 * - Update that is a rollback (the new properties name an earlier last migration than the old
 *   ones): succeeds without touching the database. The schema never goes down; migrations are
 *   written to be compatible with the previous code (expand, then contract in a later deploy).
 * - Delete: succeeds without touching the database (the cluster's own removal policy decides
 *   what happens to the data).
 */
export async function onSchemaMigrationEvent(
  event: CloudFormationCustomResourceEvent,
  deps: SchemaMigrationDeps,
): Promise<SchemaMigrationResponse> {
  const physicalId = event.RequestType === 'Create' ? PHYSICAL_RESOURCE_ID : event.PhysicalResourceId;
  if (event.RequestType === 'Delete') {
    deps.logger.info('Delete: the database is left as it is');
    return respond(physicalId, 'deleted');
  }
  if (event.RequestType === 'Update' && isRollback(event.ResourceProperties, event.OldResourceProperties)) {
    deps.logger.warn(
      `Update back to ${String(event.ResourceProperties.LatestMigration)} from ${String(event.OldResourceProperties.LatestMigration)} ` +
        'is a rollback: migrations are never undone on deploy, nothing to do',
    );
    return respond(physicalId, 'rollback-skipped');
  }

  const budgetMs = Math.max(0, Math.min(MAX_CONNECT_WAIT_MS, deps.remainingTimeMs() - MIGRATION_RESERVE_MS));
  let database = await waitForDatabase({
    connection: deps.masterConnection,
    budgetMs,
    sleep: deps.sleep,
    now: deps.now,
    onRetry: (attempt, error) =>
      deps.logger.warn(`Database not ready (attempt ${attempt}): ${(error as Error).message}`),
  });
  // Every step opens connections of its own with the password read above. Should the master
  // password be rotated in between (a rotation already under way when the deploy started),
  // the step fails with 28P01: the secret is read once more and the step run again (the
  // migrations resume where they stopped; the login step is idempotent).
  let reread = false;
  const withCurrentPassword = async <T>(step: () => Promise<T>): Promise<T> => {
    try {
      return await step();
    } catch (error) {
      if (reread || !isInvalidPassword(error)) throw error;
      reread = true;
      deps.logger.warn('The master password was refused (rotated meanwhile?): reading its secret again');
      database = await deps.masterConnection();
      return step();
    }
  };

  const result: MigrationResult = await withCurrentPassword(() =>
    (deps.migrate ?? runMigrations)({
      database,
      dir: deps.migrationsDir,
      logger: deps.logger,
      sleep: deps.sleep,
      remainingTimeMs: deps.remainingTimeMs,
    }),
  );
  deps.logger.info(
    `Applied ${result.applied.length} migration(s) in ${result.attempts} attempt(s): ${result.applied.join(', ') || 'none'}`,
  );

  const logins = [
    { label: 'Worker', credentials: await deps.workerCredentials(), ensure: ensureWorkerLogin },
    ...(deps.apiCredentials
      ? [{ label: 'API', credentials: await deps.apiCredentials(), ensure: ensureApiLogin }]
      : []),
  ];
  for (const { label, credentials, ensure } of logins) {
    await withCurrentPassword(async () => {
      const client = new Client(database);
      await client.connect();
      try {
        const outcome = await ensure(client, credentials, () =>
          canLogIn({ ...database, user: credentials.username, password: credentials.password }),
        );
        deps.logger.info(`${label} login user ${outcome}`);
      } finally {
        await client.end();
      }
    });
  }
  return respond(physicalId, 'migrated', result.applied);
}

/** Whether these settings log in (false only for a wrong password or a user that cannot log in). */
async function canLogIn(config: ClientConfig): Promise<boolean> {
  const client = new Client(config);
  try {
    await client.connect();
    return true;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === '28P01' || code === '28000') return false;
    throw error;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** SQLSTATE 28P01 invalid_password, on the error or one of its causes (MigrationError wraps it). */
function isInvalidPassword(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 5; depth++) {
    if ((e as { code?: unknown }).code === '28P01') return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * CloudFormation rolls a failed update back by sending another Update whose new properties are
 * the previous deployment's. Migration names sort in the order they run, so an Update that
 * goes to an earlier last migration than the one it replaces is that rollback.
 */
export function isRollback(next: Record<string, unknown>, previous: Record<string, unknown>): boolean {
  const name = (value: unknown) => (typeof value === 'string' ? value : '');
  const to = name(next.LatestMigration);
  const from = name(previous.LatestMigration);
  return to < from;
}

/** CloudFormation rejects custom resource responses over 4 KB; the names are only informative. */
export const MAX_APPLIED_LENGTH = 1000;

function respond(physicalId: string, outcome: Outcome, applied: string[] = []): SchemaMigrationResponse {
  let names = applied.join(',');
  if (names.length > MAX_APPLIED_LENGTH) names = `${applied[0]},...,${applied.at(-1)}`;
  return { PhysicalResourceId: physicalId, Data: { Applied: names, AppliedCount: applied.length, Outcome: outcome } };
}
