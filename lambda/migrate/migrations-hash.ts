import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** What the migration custom resource's properties say about a migrations folder. */
export interface MigrationsFingerprint {
  /** SHA-256 over every migration's file name and content, in order. */
  readonly hash: string;
  /** Name of the last migration (node-pg-migrate's name: the file name without extension). */
  readonly latest: string;
  /** How many migrations the folder holds. */
  readonly count: number;
}

/** Files node-pg-migrate treats as migrations (it ignores everything else in the folder). */
const MIGRATION_FILE = /\.(sql|js|cjs|mjs|ts)$/;

/**
 * Fingerprints a migrations folder. The CDK stack puts this into the custom resource's
 * properties at synth time, so CloudFormation calls the resource exactly when a migration was
 * added or changed; the handler compares `latest` of the new and old properties to recognise a
 * rollback.
 */
export function fingerprintMigrations(dir: string): MigrationsFingerprint {
  const entries = readdirSync(dir, { withFileTypes: true });
  const files = entries
    .filter((e) => e.isFile() && MIGRATION_FILE.test(e.name))
    .map((e) => e.name)
    .sort();
  // Helpers the migrations require (migrations/lib/) ship with them and change what they do.
  const helpers = entries
    .filter((e) => e.isDirectory())
    .flatMap((d) =>
      readdirSync(join(dir, d.name), { recursive: true, withFileTypes: true })
        .filter((e) => e.isFile())
        .map((e) => join(e.parentPath, e.name)),
    )
    .map((path) => path.slice(dir.length + 1))
    .sort();
  const hash = createHash('sha256');
  for (const file of [...files, ...helpers]) {
    hash.update(`${file}\0`);
    hash.update(readFileSync(join(dir, file)));
    hash.update('\0');
  }
  const names = files.map((f) => f.replace(MIGRATION_FILE, ''));
  return { hash: hash.digest('hex'), latest: names.at(-1) ?? '', count: names.length };
}
