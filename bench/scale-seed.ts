/**
 * The steady state of an environment whose proactive refresh covers only connections used within
 * a window, seeded in SQL (generate_series: a million connections in well under a minute).
 *
 * Connection `g` (1…count) is in region NA, EU, FE by g mod 3, and is, deterministically by `g`:
 * - **used** (share `usedShare`): used in the last 15 minutes, its access token renewed by the
 *   proactive refresh, so it expires 25 to 60 minutes from now (a refresh window of 30 minutes
 *   on a 5-minute schedule keeps it there: about a seventh of them are inside the window, due);
 * - **never recorded** (share `nullShare`): `last_used_at` NULL (rows from before migration 0016),
 *   which the claim counts as used, so their tokens are kept fresh like used ones;
 * - **idle** (the rest): last used by the account sync at some point in the last 6 hours (its
 *   interval); the ones used within the window were renewed then and are still valid, the
 *   others' tokens expired 65 minutes after that use (the refresh ran about 5 minutes after the
 *   sync marked them): they are the rows the windowed claim must step over.
 * Every row has proactive refresh on, no lease, no retry pending, and its next sync within the
 * coming 6 hours (no accounts are seeded: the rows are what the token refresh's claim reads).
 * Refresh tokens are a fixed string of `tokenChars` characters (the claim's cost depends on the
 * row, not on the value), unknown to the fake Amazon: bench/scale-measure.ts claims and writes
 * back some of them without calling Amazon, and moves the rest out of the refresh window before
 * the real cores run.
 */
import type { PgDatabase } from '../lambda/shared/db';

export interface SteadyStateOptions {
  readonly count: number;
  /** Share of connections used within the window (0…1). */
  readonly usedShare: number;
  /** Share with last_used_at NULL (0…1). @default 0.005 */
  readonly nullShare?: number;
  /** The proactive refresh's "used within" window. @default 3600 */
  readonly usedWithinSeconds?: number;
  /** Length of the stored (encrypted) refresh token: 979 characters is a 700-byte Amazon token. @default 979 */
  readonly tokenChars?: number;
  /** Prefix of the users' e-mail addresses (several seeds in one database). @default 'scale' */
  readonly prefix?: string;
}

export interface SteadyStateCounts {
  readonly connections: number;
  readonly used: number;
  readonly neverRecorded: number;
  readonly idle: number;
  /** Idle connections whose access token has expired (outside the window). */
  readonly idleExpired: number;
  /** Connections a windowed claim finds due now (used or never recorded, expiring within 30 minutes). */
  readonly dueInWindow: number;
}

/** Deterministic class of connection g: a hash of g into [0, 1000). */
const BUCKET = '((g::bigint * 7919) % 1000)';

export async function seedSteadyState(admin: PgDatabase, o: SteadyStateOptions): Promise<void> {
  const used = Math.round(o.usedShare * 1000);
  const nulls = Math.round((o.nullShare ?? 0.005) * 1000);
  if (used + nulls > 1000) throw new Error('usedShare + nullShare must not exceed 1');
  const prefix = o.prefix ?? 'scale';
  // Ids derived from g (md5 → uuid), so the tokens need no join back to their users.
  await admin.query(
    `INSERT INTO users (id, email)
     SELECT md5(:prefix || '-' || g)::uuid, :prefix || '-' || g || '@example.com' FROM generate_series(1, :count::int) g`,
    { prefix, count: o.count },
  );
  // Classes: bucket < used: used; < used + nulls: never recorded; else idle.
  await admin.query(
    `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region, last_used_at, sync_next_attempt_at)
     SELECT md5(:prefix || '-' || c.g)::uuid, 'enc:v1:access', repeat('r', :tokenChars::int),
            CASE WHEN c.kind <> 'idle' OR c.idle_used_at >= now() - make_interval(secs => :window::int)
                 THEN now() + make_interval(secs => 1500 + c.r * 2100)
                 ELSE c.idle_used_at + interval '65 minutes' END,
            (ARRAY['NA', 'EU', 'FE'])[c.g % 3 + 1],
            CASE c.kind WHEN 'used' THEN now() - make_interval(secs => c.r * 900)
                        WHEN 'null' THEN NULL
                        ELSE c.idle_used_at END,
            c.idle_used_at + interval '6 hours'
       FROM (SELECT g, r,
                    CASE WHEN ${BUCKET} < :used THEN 'used' WHEN ${BUCKET} < :used + :nulls THEN 'null' ELSE 'idle' END AS kind,
                    now() - make_interval(secs => r * 21600) AS idle_used_at
               FROM (SELECT g, ((g::bigint * 2654435761) % 1000003) / 1000003.0 AS r
                       FROM generate_series(1, :count::int) g) x) c`,
    { prefix, count: o.count, used, nulls, window: o.usedWithinSeconds ?? 3600, tokenChars: o.tokenChars ?? 979 },
  );
}

/** What the seeded table holds, counted by the database (not assumed from the options). */
export async function steadyStateCounts(admin: PgDatabase, usedWithinSeconds = 3600): Promise<SteadyStateCounts> {
  const { rows } = await admin.query<Record<keyof SteadyStateCounts, number>>(
    `SELECT count(*)::int AS connections,
            count(*) FILTER (WHERE last_used_at >= now() - make_interval(secs => :w::int))::int AS used,
            count(*) FILTER (WHERE last_used_at IS NULL)::int AS "neverRecorded",
            count(*) FILTER (WHERE last_used_at < now() - make_interval(secs => :w::int))::int AS idle,
            count(*) FILTER (WHERE last_used_at < now() - make_interval(secs => :w::int) AND expires_at <= now())::int AS "idleExpired",
            count(*) FILTER (WHERE (last_used_at IS NULL OR last_used_at >= now() - make_interval(secs => :w::int))
                               AND expires_at < now() + interval '30 minutes')::int AS "dueInWindow"
       FROM oauth_tokens`,
    { w: usedWithinSeconds },
  );
  const r = rows[0];
  return {
    connections: Number(r.connections),
    used: Number(r.used),
    neverRecorded: Number(r.neverRecorded),
    idle: Number(r.idle),
    idleExpired: Number(r.idleExpired),
    dueInWindow: Number(r.dueInWindow),
  };
}
