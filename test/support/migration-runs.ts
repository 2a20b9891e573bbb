import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MigrationError } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';

/**
 * What the runMigrations test files share: one PostgreSQL for the file (handed to `onStart`),
 * and throwaway migration folders, all removed after the file. Returns the folder maker: each
 * call writes `files` into a new folder and returns its path; an `.sql` body without its
 * `-- Up Migration` section is given one (and an empty down section).
 */
export function useMigrationRuns(
  onStart: (pg: TestPostgres) => void,
  folderPrefix: string,
): (files: Record<string, string>) => string {
  let pg: TestPostgres | undefined;
  const dirs: string[] = [];
  beforeAll(async () => {
    pg = await startPostgres();
    onStart(pg);
  });
  afterAll(async () => {
    await pg?.stop();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  return (files) => {
    const dir = mkdtempSync(join(tmpdir(), folderPrefix));
    dirs.push(dir);
    for (const [name, body] of Object.entries(files))
      writeFileSync(
        join(dir, name),
        name.endsWith('.sql') && !body.startsWith('-- Up') ? `-- Up Migration\n${body}\n-- Down Migration\n` : body,
      );
    return dir;
  };
}

/** The MigrationError a run fails with (the test fails if it succeeds or throws something else). */
export async function migrationFailure(promise: Promise<unknown>): Promise<MigrationError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(MigrationError);
  return error as MigrationError;
}
