import { Client } from 'pg';

/**
 * Makes a cluster look the way Supabase prepares one, before any of this project's migrations
 * run: the roles `anon` and `authenticated` (NOLOGIN NOINHERIT) and `service_role`
 * (BYPASSRLS). Roles are cluster-wide: call once per server, on its `postgres` database.
 */
export async function createSupabaseRoles(adminUrl: string): Promise<void> {
  const c = new Client({ connectionString: adminUrl });
  await c.connect();
  try {
    await c.query(`CREATE ROLE anon NOLOGIN NOINHERIT`);
    await c.query(`CREATE ROLE authenticated NOLOGIN NOINHERIT`);
    await c.query(`CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS`);
  } finally {
    await c.end();
  }
}

/** What Supabase's own `auth.uid()` says about itself; the migrations must keep that function. */
export const SUPABASE_UID_COMMENT = "Deprecated. Use auth.jwt() -> 'sub' instead.";

/**
 * Prepares one database as Supabase does: its `auth` schema with `auth.uid()`, `auth.role()`
 * and `auth.jwt()` (their definitions), usage of `auth` and `public` for the three API roles,
 * and Supabase's default privileges in `public`: ALL on every new table, sequence and
 * function for `anon`, `authenticated` and `service_role`.
 */
export async function prepareSupabaseDatabase(url: string): Promise<void> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(`
      CREATE SCHEMA auth;
      GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
      CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
        select
        coalesce(
          nullif(current_setting('request.jwt.claim.sub', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
        )::uuid
      $$;
      COMMENT ON FUNCTION auth.uid() IS ${literal(SUPABASE_UID_COMMENT)};
      CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
        select
        coalesce(
          nullif(current_setting('request.jwt.claim.role', true), ''),
          (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
        )::text
      $$;
      CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
        select
          coalesce(
              nullif(current_setting('request.jwt.claim', true), ''),
              nullif(current_setting('request.jwt.claims', true), '')
          )::jsonb
      $$;
      GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;
      GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
      ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
      ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;
      ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
    `);
  } finally {
    await c.end();
  }
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}
