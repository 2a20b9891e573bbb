-- Up Migration
--
-- Baseline: the tables that the schema specification calls "existing" (users, oauth_tokens,
-- user_accounts) with the columns fixed in docs/architecture.md, and the Supabase-compatible pieces its
-- Row Level Security policies use (role `authenticated`, function `auth.uid()`).
-- `npm run migrate -- up 1` stops here: a database as it was before the specification.
--
-- Everything is created IF NOT EXISTS so that this baseline can be applied to a database that
-- already has these tables (the web app's, or Supabase's own auth schema); the migration then
-- only records that the baseline is in place.

-- Creating empty tables takes no lock anyone else waits for; the limits only make a stuck
-- migration fail fast instead of hanging a deploy.
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '60s';

-- Roles are cluster-wide: another database of the cluster (or Supabase itself) may have made
-- `authenticated` already, possibly concurrently; both are fine.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;

-- auth.uid(): the `sub` claim of the current request, read the way Supabase/PostgREST set it
-- (`request.jwt.claim.sub`, or `sub` inside the `request.jwt.claims` JSON), NULL when unset.
-- Created only when absent, so Supabase's own definition is never replaced.
DO $$
BEGIN
  IF to_regprocedure('auth.uid()') IS NULL THEN
    CREATE FUNCTION auth.uid() RETURNS uuid
      LANGUAGE sql STABLE
      SET search_path = ''
    AS $fn$
      SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
      )::uuid
    $fn$;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA auth TO authenticated;
GRANT EXECUTE ON FUNCTION auth.uid() TO authenticated;

CREATE TABLE IF NOT EXISTS users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS oauth_tokens (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
  access_token text NOT NULL,
  refresh_token text NOT NULL,
  expires_at timestamptz NOT NULL,
  region text NOT NULL DEFAULT 'NA' CONSTRAINT oauth_tokens_region_check CHECK (region IN ('NA', 'EU', 'FE')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS user_accounts (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  amazon_account_id text NOT NULL,
  status text NOT NULL DEFAULT 'pending' CONSTRAINT user_accounts_status_check CHECK (status IN ('pending', 'active', 'inactive')),
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Tokens are secrets: nobody but the owner (and, later, the jobs' own role) reads them.
REVOKE ALL ON users, oauth_tokens, user_accounts FROM PUBLIC;

-- Down Migration
--
-- Drops the baseline tables, auth.uid() and the auth schema when this migration made them.
-- The cluster-wide role `authenticated` is kept: other databases of the cluster may use it,
-- and an `up` after this `down` finds it and carries on.
DROP TABLE IF EXISTS user_accounts;
DROP TABLE IF EXISTS oauth_tokens;
DROP TABLE IF EXISTS users;
REVOKE ALL ON SCHEMA auth FROM authenticated;
DROP FUNCTION IF EXISTS auth.uid();
DROP SCHEMA IF EXISTS auth RESTRICT;
