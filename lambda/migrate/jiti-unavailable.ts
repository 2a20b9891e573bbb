/**
 * Stands in for `jiti` (node-pg-migrate's TypeScript/ESM migration loader) in the migration
 * Lambda's bundle: lib/schema-migration.ts aliases the `jiti` import to this file, which keeps
 * about 280 KB out of the bundle. node-pg-migrate creates a jiti instance when it is loaded,
 * but run-migrations.ts loads `.sql` and CommonJS `.js` migrations itself and never asks
 * jiti to load anything; should anything else do so, it gets this explanation.
 */
const UNSUPPORTED =
  'The migration Lambda loads only .sql and CommonJS .js migrations (jiti, the TypeScript/ESM loader, is not bundled)';

interface JitiLike {
  import(id: string): Promise<never>;
}

export function createJiti(): JitiLike {
  return {
    import: (id: string) => Promise.reject(new Error(`${UNSUPPORTED}: ${id}`)),
  };
}
