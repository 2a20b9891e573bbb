import { createHash } from 'node:crypto';
import { CLAIM_TOKEN_CHARS, type Database, sqlJson, sqlUuid } from '../shared/db';
import type { AmazonRegion } from '../shared/amazon/regions';

/**
 * The token re-encryption's SQL (lambda/token-reencrypt/core.ts). It works under the token
 * refresh's lease (`refresh_lease_owner` / `refresh_lease_expires_at`), the one every writer of
 * a connection's tokens takes (the token refresh, its fan-out dispatch marks, the token route):
 * a connection leased by one of them is skipped (it is left for a later pass), and one leased
 * here is not claimed by them until the re-encryption wrote it back or its lease expired. Every
 * write is also guarded by the values read: a token stored again meanwhile (a connect, the web
 * app) is never overwritten with an older one.
 */

/** A connection whose tokens are not both `enc:v2` under the current key, leased by this run. */
export interface StaleConnection {
  readonly id: string;
  readonly userId: string;
  readonly region: AmazonRegion;
  readonly accessToken: string;
  readonly refreshToken: string;
}

export interface ClaimStaleOptions {
  /** This run's lease owner (a UUID). */
  readonly owner: string;
  /** Values under this key id, in `enc:v2`, are current and left alone. */
  readonly currentKeyId: string;
  /** Keyset position: only connections with a greater id. @default - from the start */
  readonly afterId?: string;
  readonly limit: number;
  readonly leaseSeconds: number;
  /** The response's budget of token characters (the Data API's 1 MiB). @default CLAIM_TOKEN_CHARS */
  readonly maxTokenChars?: number;
}

/**
 * Leases the next connections (by id, after `afterId`) holding a value that is not current,
 * skipping any another writer holds (a live lease, or a row locked right now), and returns
 * them with their values. One statement.
 */
export async function claimStaleConnections(db: Database, o: ClaimStaleOptions): Promise<StaleConnection[]> {
  const { rows } = await db.query<{
    id: string;
    user_id: string;
    region: AmazonRegion;
    access_token: string;
    refresh_token: string;
  }>(
    `WITH stale AS (
       SELECT id, length(access_token) + length(refresh_token) AS chars FROM oauth_tokens
        WHERE (:afterId::uuid IS NULL OR id > :afterId::uuid)
          -- Not both enc:v2 under the current key (left(), not LIKE: a key id may hold an underscore).
          AND NOT (left(access_token, length(:prefix)) = :prefix AND left(refresh_token, length(:prefix)) = :prefix)
          AND (refresh_lease_expires_at IS NULL OR refresh_lease_expires_at < now())
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
     ),
     sized AS (
       SELECT id FROM (SELECT id, chars, sum(chars) OVER (ORDER BY id) AS running FROM stale) r
        WHERE running <= :maxTokenChars OR running = chars
     )
     UPDATE oauth_tokens t
        SET refresh_lease_owner = :owner,
            refresh_lease_expires_at = now() + make_interval(secs => :leaseSeconds)
       FROM sized
      WHERE t.id = sized.id
     RETURNING t.id, t.user_id, t.region, t.access_token, t.refresh_token`,
    {
      owner: sqlUuid(o.owner),
      prefix: `enc:v2:${o.currentKeyId}:`,
      afterId: o.afterId === undefined ? null : sqlUuid(o.afterId),
      limit: o.limit,
      leaseSeconds: o.leaseSeconds,
      maxTokenChars: o.maxTokenChars ?? CLAIM_TOKEN_CHARS,
    },
  );
  return rows
    .map((r) => ({
      id: r.id,
      userId: r.user_id,
      region: r.region,
      accessToken: r.access_token,
      refreshToken: r.refresh_token,
    }))
    .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** A connection's new values, with the ones they replace (as read by the claim). */
export interface Reencrypted {
  readonly connection: StaleConnection;
  readonly accessToken: string;
  readonly refreshToken: string;
}

/**
 * Writes the new values where this run still holds the lease and both stored values are still
 * the ones read, and gives back the lease of every connection given (written or not: `skipped`
 * names the ones stored again meanwhile). The re-connection trigger is told this is no
 * re-connection (migration 0024), so a connection whose refresh is off stays off. One statement.
 */
export async function writeReencrypted(
  db: Database,
  owner: string,
  written: readonly Reencrypted[],
  releaseOnly: readonly StaleConnection[] = [],
): Promise<{ written: number; skipped: string[] }> {
  if (written.length === 0 && releaseOnly.length === 0) return { written: 0, skipped: [] };
  const input = [
    ...written.map((w) => ({
      id: w.connection.id,
      read_access_md5: md5Hex(w.connection.accessToken),
      read_refresh_md5: md5Hex(w.connection.refreshToken),
      access_token: w.accessToken,
      refresh_token: w.refreshToken,
    })),
    ...releaseOnly.map((c) => ({
      id: c.id,
      read_access_md5: null,
      read_refresh_md5: null,
      access_token: null,
      refresh_token: null,
    })),
  ];
  const { rows } = await db.query<{ id: string; outcome: 'written' | 'released' | 'skipped' }>(
    `WITH marked AS (SELECT set_config('accounts.token_reencryption', 'on', true) AS on),
     input AS (
       SELECT * FROM jsonb_to_recordset(:rows::jsonb)
         AS r(id uuid, read_access_md5 text, read_refresh_md5 text, access_token text, refresh_token text)
     ),
     written AS (
       UPDATE oauth_tokens t
          SET access_token = i.access_token, refresh_token = i.refresh_token,
              refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
         FROM input i, marked
        WHERE t.id = i.id AND i.access_token IS NOT NULL AND marked.on = 'on'
          AND t.refresh_lease_owner = :owner
          AND md5(t.access_token) = i.read_access_md5 AND md5(t.refresh_token) = i.read_refresh_md5
       RETURNING t.id
     ),
     -- (A data-modifying WITH runs to completion whether or not the query reads it.)
     released AS (
       UPDATE oauth_tokens t
          SET refresh_lease_owner = NULL, refresh_lease_expires_at = NULL
         FROM input i
        WHERE t.id = i.id AND t.refresh_lease_owner = :owner AND t.id NOT IN (SELECT id FROM written)
       RETURNING t.id
     )
     SELECT i.id,
            CASE WHEN w.id IS NOT NULL THEN 'written'
                 WHEN i.access_token IS NULL THEN 'released'
                 ELSE 'skipped' END AS outcome
       FROM input i LEFT JOIN written w ON w.id = i.id`,
    { owner: sqlUuid(owner), rows: sqlJson(input) },
  );
  return {
    written: rows.filter((r) => r.outcome === 'written').length,
    skipped: rows.filter((r) => r.outcome === 'skipped').map((r) => r.id),
  };
}

/** How many stored values use each format and key. */
export interface KeyUsage {
  /** `enc:v2` values per key id. */
  readonly v2: Readonly<Record<string, number>>;
  /** `enc:v1` values (their key is not named: any key of the ring may have written them). */
  readonly v1: number;
  /** Legacy plaintext values. */
  readonly plaintext: number;
  /** Connections with at least one value that is not `enc:v2` under `currentKeyId`. */
  readonly staleConnections: number;
}

/**
 * Counts oauth_tokens values (access and refresh) per format and key id, and the connections
 * still to re-encrypt. connect_sessions' verifiers are not counted: they live minutes, and a
 * session whose verifier cannot be read is only a connect to start again.
 */
export async function countKeyUsage(db: Database, currentKeyId: string): Promise<KeyUsage> {
  const { rows } = await db.query<{ kind: string; key_id: string | null; n: number }>(
    `WITH v AS (
       SELECT access_token AS value FROM oauth_tokens
       UNION ALL
       SELECT refresh_token FROM oauth_tokens
     ), classified AS (
       SELECT CASE WHEN left(value, 7) = 'enc:v2:' THEN 'v2'
                   WHEN left(value, 7) = 'enc:v1:' THEN 'v1'
                   ELSE 'plaintext' END AS kind,
              CASE WHEN left(value, 7) = 'enc:v2:' THEN split_part(value, ':', 3) END AS key_id
         FROM v
     )
     SELECT kind, key_id, count(*)::int AS n FROM classified GROUP BY kind, key_id
     UNION ALL
     SELECT 'stale', NULL, count(*)::int FROM oauth_tokens
      WHERE NOT (left(access_token, length(:prefix)) = :prefix AND left(refresh_token, length(:prefix)) = :prefix)`,
    { prefix: `enc:v2:${currentKeyId}:` },
  );
  const v2: Record<string, number> = {};
  let v1 = 0;
  let plaintext = 0;
  let staleConnections = 0;
  for (const r of rows) {
    if (r.kind === 'v2' && r.key_id !== null) v2[r.key_id] = r.n;
    else if (r.kind === 'v1') v1 = r.n;
    else if (r.kind === 'plaintext') plaintext = r.n;
    else if (r.kind === 'stale') staleConnections = r.n;
  }
  return { v2, v1, plaintext, staleConnections };
}

/** PostgreSQL's md5() of the text's UTF-8 bytes, as the token refresh's write-back compares it. */
function md5Hex(text: string): string {
  return createHash('md5').update(text, 'utf8').digest('hex');
}
