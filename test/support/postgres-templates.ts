import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runMigrations } from '../../lambda/migrate/run-migrations';
import {
  initialisePostgres,
  MIGRATED_TEMPLATE_DATABASE,
  POSTGRES_TEMPLATES_ENV,
  SHARED_POSTGRES_ENV,
  startPostgres,
} from '../../local/postgres/embedded-postgres';
import { LOCAL_MIGRATIONS_DIR_ENV } from '../../local/world';

/**
 * The data folders the tests' temporary PostgreSQL servers are copied from
 * (POSTGRES_TEMPLATES_ENV), made once per jest run (its global setup) instead of once per
 * test file: `initdb/` is what initdb leaves; `migrated/` is the same with
 * MIGRATED_TEMPLATE_DATABASE migrated, from which the local worlds clone their database. Each
 * test file still gets its own server and its own database; only initdb and the migrations
 * from scratch are not repeated. Nothing is made when the tests use one shared server (the
 * mutation harnesses) or when the variable is already set (a caller made them).
 */
export async function makePostgresTemplates(): Promise<void> {
  if (process.env[SHARED_POSTGRES_ENV] || process.env[POSTGRES_TEMPLATES_ENV]) return;
  const folder = mkdtempSync(join(tmpdir(), 'pg17-templates-'));
  // As root, the server runs as `postgres`, which must be able to enter the folder.
  chmodSync(folder, 0o755);
  await initialisePostgres(join(folder, 'initdb'));
  process.env[POSTGRES_TEMPLATES_ENV] = folder;
  made = folder;
  // The migrated template holds the repository's migrations only (the SQL mutation harness
  // points the worlds at other ones: they then migrate their own database, as before).
  if (process.env[LOCAL_MIGRATIONS_DIR_ENV]) return;
  const migrated = join(folder, 'migrated');
  execFileSync('cp', ['-a', join(folder, 'initdb'), migrated]);
  const pg = await startPostgres({ dataDir: migrated });
  try {
    await runMigrations({ database: await pg.createDatabase(MIGRATED_TEMPLATE_DATABASE) });
  } catch (error) {
    // No migrated template: each world migrates its own database and reports the failure there.
    await pg.stop();
    rmSync(migrated, { recursive: true, force: true });
    process.stderr.write(`\nno migrated PostgreSQL template (the worlds migrate their own): ${String(error)}\n`);
    return;
  }
  await pg.stop();
}

let made: string | undefined;

/** jest's global teardown: removes what makePostgresTemplates made. */
export function removePostgresTemplates(): void {
  if (!made) return;
  rmSync(made, { recursive: true, force: true });
  delete process.env[POSTGRES_TEMPLATES_ENV];
  made = undefined;
}
