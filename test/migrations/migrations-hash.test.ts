import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fingerprintMigrations } from '../../lambda/migrate/migrations-hash';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';

// The custom resource runs when this fingerprint changes: it must change with anything the
// bundled migrations execute, and with nothing else.
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'fingerprint-'));
  cpSync(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

test('names the last migration and counts only migrations, not their helpers', () => {
  const f = fingerprintMigrations(dir);
  expect(f.latest).toMatch(/^\d{4}_/);
  expect(f.count).toBeGreaterThanOrEqual(8);
  expect(f).toEqual(fingerprintMigrations(DEFAULT_MIGRATIONS_DIR));
});

test('changes when a migration or a helper the migrations require changes', () => {
  const before = fingerprintMigrations(dir).hash;
  writeFileSync(join(dir, 'lib', 'online.js'), '\n// changed\n', { flag: 'a' });
  const afterHelper = fingerprintMigrations(dir).hash;
  expect(afterHelper).not.toBe(before);
  writeFileSync(join(dir, '0001_baseline.sql'), '\n-- changed\n', { flag: 'a' });
  expect(fingerprintMigrations(dir).hash).not.toBe(afterHelper);
});
