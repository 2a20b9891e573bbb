import { readFileSync } from 'node:fs';
import { migratedSchema, SCHEMA_FILE } from '../../scripts/schema-dump';

// docs/schema.sql is the schema a reader reads instead of replaying every migration: it
// must be exactly what the migrations produce today. On a difference, run `npm run schema:dump`
// and commit the file (its diff is the schema change a reviewer should see).

test('docs/schema.sql is what the migrations produce (npm run schema:dump)', async () => {
  const produced = await migratedSchema();
  const committed = readFileSync(SCHEMA_FILE, 'utf8');
  if (produced !== committed) {
    const a = committed.split('\n');
    const b = produced.split('\n');
    const line = a.findIndex((text, i) => text !== b[i]);
    throw new Error(
      `docs/schema.sql differs from what the migrations produce, first at line ${line + 1}:\n` +
        `  committed: ${a[line] ?? '(end of file)'}\n  produced:  ${b[line] ?? '(end of file)'}\n` +
        'Run `npm run schema:dump` and commit docs/schema.sql.',
    );
  }
}, 120_000);
