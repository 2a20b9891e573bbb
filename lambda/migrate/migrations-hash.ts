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
  const files = readdirSync(dir).filter((f) => MIGRATION_FILE.test(f)).sort();
  const hash = createHash('sha256');
  for (const file of files) {
    hash.update(`${file}\0`);
    hash.update(readFileSync(join(dir, file)));
    hash.update('\0');
  }
  const names = files.map((f) => f.replace(MIGRATION_FILE, ''));
  return { hash: hash.digest('hex'), latest: names.at(-1) ?? '', count: names.length };
}
