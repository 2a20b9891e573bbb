import { Client } from 'pg';

/** What a reviewer compares between two databases: the public schema's catalogue, as text. */
export interface SchemaSnapshot {
  columns: Record<string, { type: string; nullable: boolean; default: string | null }>;
  indexes: Record<string, string>;
  constraints: Record<string, string>;
  policies: Record<string, { command: string; roles: string[]; using: string | null; check: string | null }>;
  rls: Record<string, boolean>;
  grants: string[];
}

export async function withClient<T>(url: string, fn: (client: Client) => Promise<T>): Promise<T> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function snapshotSchema(url: string): Promise<SchemaSnapshot> {
  return withClient(url, async (c) => {
    const columns: SchemaSnapshot['columns'] = {};
    for (const r of (
      await c.query(`
        SELECT table_name, column_name, format_type(a.atttypid, a.atttypmod) AS type,
               is_nullable = 'YES' AS nullable, column_default
        FROM information_schema.columns col
        JOIN pg_attribute a ON a.attrelid = format('%I.%I', col.table_schema, col.table_name)::regclass
                           AND a.attname = col.column_name
        WHERE table_schema = 'public' AND table_name <> 'pgmigrations'`)
    ).rows) {
      columns[`${r.table_name}.${r.column_name}`] = { type: r.type, nullable: r.nullable, default: r.column_default };
    }
    const indexes: Record<string, string> = {};
    for (const r of (
      await c.query(
        `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename <> 'pgmigrations'`,
      )
    ).rows) {
      indexes[r.indexname] = r.indexdef;
    }
    const constraints: Record<string, string> = {};
    for (const r of (
      await c.query(`
        SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def, convalidated
        FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid <> 0
          AND conrelid::regclass::text <> 'pgmigrations'`)
    ).rows) {
      constraints[`${r.tbl}.${r.conname}`] = `${r.def}${r.convalidated ? '' : ' [NOT VALID]'}`;
    }
    const policies: SchemaSnapshot['policies'] = {};
    for (const r of (
      await c.query(
        `SELECT tablename, policyname, cmd, roles::text[] AS roles, qual, with_check FROM pg_policies WHERE schemaname = 'public'`,
      )
    ).rows) {
      policies[`${r.tablename}.${r.policyname}`] = {
        command: r.cmd,
        roles: r.roles,
        using: r.qual,
        check: r.with_check,
      };
    }
    const rls: Record<string, boolean> = {};
    for (const r of (
      await c.query(
        `SELECT relname, relrowsecurity FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND relname <> 'pgmigrations'`,
      )
    ).rows) {
      rls[r.relname] = r.relrowsecurity;
    }
    const grants = (
      await c.query(`
        SELECT grantee || ' ' || privilege_type || ' ON ' || table_name AS g FROM information_schema.role_table_grants
        WHERE table_schema = 'public' AND grantee NOT IN ('postgres')
        UNION ALL
        SELECT grantee || ' ' || privilege_type || ' (' || column_name || ') ON ' || table_name FROM information_schema.column_privileges
        WHERE table_schema = 'public' AND grantee NOT IN ('postgres')
          AND (grantee, table_name, privilege_type) NOT IN (
            SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants WHERE table_schema = 'public')
        ORDER BY 1`)
    ).rows.map((r) => r.g as string);
    return { columns, indexes, constraints, policies, rls, grants };
  });
}

export async function appliedMigrations(url: string): Promise<string[]> {
  return withClient(url, async (c) => {
    const exists = await c.query(`SELECT to_regclass('public.pgmigrations') AS t`);
    if (!exists.rows[0].t) return [];
    return (await c.query(`SELECT name FROM pgmigrations ORDER BY id`)).rows.map((r) => r.name as string);
  });
}
