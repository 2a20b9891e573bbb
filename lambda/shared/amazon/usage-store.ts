import { Database, sqlJson } from '../db/port';
import type { AmazonEndpoint, AmazonRegion } from './regions';

/**
 * `rate_limit_tracking`: what each job asked of each Amazon endpoint and how often Amazon
 * answered 429. One row per (endpoint, user); endpoint-wide rows have user_id NULL (the LWA
 * token endpoint limits the application, not a user). Counters restart when the row's window
 * is older than {@link RATE_LIMIT_WINDOW_SECONDS}.
 */
export const RATE_LIMIT_WINDOW_SECONDS = 3600;

/**
 * Endpoint names as stored in `rate_limit_tracking.endpoint`: `<api>:<region>`, e.g.
 * `lwa-token:EU`, `ads-profiles:NA` (what an operator reads; dashboards and queries use them).
 */
const STORED_API_NAMES: Readonly<Record<AmazonEndpoint, string>> = { lwa: 'lwa-token', ads: 'ads-profiles' };

export function endpointKey(endpoint: AmazonEndpoint, region: AmazonRegion): string {
  return `${endpointPrefix(endpoint)}${region}`;
}

/** What every stored name of the endpoint starts with, e.g. `lwa-token:`. */
export function endpointPrefix(endpoint: AmazonEndpoint): string {
  return `${STORED_API_NAMES[endpoint]}:`;
}

export interface RateLimitUsage {
  readonly endpoint: string;
  /** NULL for endpoint-wide rows. */
  readonly userId: string | null;
  readonly requests: number;
  readonly limitHits: number;
  /** Retry-After of the last 429, in seconds, when there was one. */
  readonly retryAfterSeconds?: number;
  readonly lastLimitHit?: Date;
  /**
   * The endpoint's allowed rate at the end of the run (endpoint-wide rows only): a number when
   * 429s cut it below the ceiling, null when it is back at the ceiling; absent leaves the
   * stored value as it is.
   */
  readonly allowedRatePerSecond?: number | null;
}

/** Adds a run's usage in one statement (upsert per endpoint and user). */
export async function recordRateLimitUsage(db: Database, usage: readonly RateLimitUsage[]): Promise<void> {
  const rows = usage.filter((u) => u.requests > 0 || u.limitHits > 0 || u.allowedRatePerSecond !== undefined);
  if (rows.length === 0) return;
  await db.query(
    `INSERT INTO rate_limit_tracking AS r
            (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start, updated_at,
             allowed_rate_per_second)
     SELECT x.user_id, x.endpoint, x.requests, x.limit_hits, x.last_limit_hit, x.retry_after_seconds, now(), now(),
            CASE WHEN x.user_id IS NULL THEN (:rates::jsonb ->> x.endpoint)::numeric END
       FROM jsonb_to_recordset(:rows::jsonb) AS x(user_id uuid, endpoint text, requests int, limit_hits int,
                                                 last_limit_hit timestamptz, retry_after_seconds int)
     ON CONFLICT ON CONSTRAINT rate_limit_tracking_endpoint_user_key DO UPDATE SET
       request_count = CASE WHEN r.window_start < now() - make_interval(secs => :window)
                            THEN EXCLUDED.request_count ELSE r.request_count + EXCLUDED.request_count END,
       limit_hit_count = CASE WHEN r.window_start < now() - make_interval(secs => :window)
                              THEN EXCLUDED.limit_hit_count ELSE r.limit_hit_count + EXCLUDED.limit_hit_count END,
       window_start = CASE WHEN r.window_start < now() - make_interval(secs => :window) THEN now() ELSE r.window_start END,
       last_limit_hit = coalesce(EXCLUDED.last_limit_hit, r.last_limit_hit),
       retry_after_seconds = CASE WHEN EXCLUDED.last_limit_hit IS NOT NULL THEN EXCLUDED.retry_after_seconds ELSE r.retry_after_seconds END,
       -- :rates names the endpoints whose rate this run knows (null: back at the ceiling).
       allowed_rate_per_second = CASE WHEN EXCLUDED.user_id IS NULL AND :rates::jsonb ? EXCLUDED.endpoint
                                      THEN EXCLUDED.allowed_rate_per_second ELSE r.allowed_rate_per_second END,
       updated_at = now()`,
    {
      window: RATE_LIMIT_WINDOW_SECONDS,
      rows: sqlJson(
        rows.map((u) => ({
          user_id: u.userId,
          endpoint: u.endpoint,
          requests: u.requests,
          limit_hits: u.limitHits,
          last_limit_hit: u.lastLimitHit?.toISOString() ?? null,
          retry_after_seconds: u.retryAfterSeconds ?? null,
        })),
      ),
      rates: sqlJson(
        Object.fromEntries(
          rows
            .filter((u) => u.userId === null && u.allowedRatePerSecond !== undefined)
            .map((u) => [u.endpoint, u.allowedRatePerSecond]),
        ),
      ),
    },
  );
}

/**
 * Endpoint-wide pauses still in force: endpoint → the time its last Retry-After ends.
 * A new invocation reads these first, so it leaves an endpoint alone that a previous one was
 * told to leave alone.
 */
export async function readEndpointPauses(db: Database, endpointPrefix: string): Promise<Map<string, Date>> {
  const { rows } = await db.query<{ endpoint: string; until: Date }>(
    `SELECT endpoint, last_limit_hit + make_interval(secs => retry_after_seconds) AS until
       FROM rate_limit_tracking
      WHERE user_id IS NULL AND endpoint LIKE :prefix || '%'
        AND retry_after_seconds IS NOT NULL AND last_limit_hit IS NOT NULL
        AND last_limit_hit + make_interval(secs => retry_after_seconds) > now()`,
    { prefix: endpointPrefix },
  );
  return new Map(rows.map((r) => [r.endpoint, r.until]));
}

/** What an earlier invocation left for an endpoint: a pause still in force, a reduced rate. */
export interface EndpointState {
  readonly pausedUntil?: Date;
  readonly allowedRatePerSecond?: number;
}

/**
 * Endpoint-wide state an invocation starts from: endpoint → the pause of its last Retry-After
 * (when still in force) and the allowed rate 429s cut it to (when below the ceiling). The
 * limiter takes both over, so throttling carries over from one invocation to the next.
 */
export async function readEndpointStates(db: Database, endpointPrefix: string): Promise<Map<string, EndpointState>> {
  const { rows } = await db.query<{ endpoint: string; until: Date | null; rate: string | null }>(
    `SELECT endpoint,
            CASE WHEN last_limit_hit + make_interval(secs => retry_after_seconds) > now()
                 THEN last_limit_hit + make_interval(secs => retry_after_seconds) END AS until,
            allowed_rate_per_second::text AS rate
       FROM rate_limit_tracking
      WHERE user_id IS NULL AND endpoint LIKE :prefix || '%'
        AND (allowed_rate_per_second IS NOT NULL
             OR (retry_after_seconds IS NOT NULL AND last_limit_hit IS NOT NULL
                 AND last_limit_hit + make_interval(secs => retry_after_seconds) > now()))`,
    { prefix: endpointPrefix },
  );
  return new Map(
    rows.map((r) => [
      r.endpoint,
      {
        ...(r.until ? { pausedUntil: r.until } : {}),
        ...(r.rate !== null ? { allowedRatePerSecond: Number(r.rate) } : {}),
      },
    ]),
  );
}

/** Accumulates a run's usage per (endpoint, user) before one {@link recordRateLimitUsage}. */
export class RateLimitUsageRecorder {
  private readonly usage = new Map<
    string,
    {
      endpoint: string;
      userId: string | null;
      requests: number;
      limitHits: number;
      retryAfterSeconds?: number;
      lastLimitHit?: Date;
      allowedRatePerSecond?: number | null;
    }
  >();

  request(endpoint: string, userId: string | null = null): void {
    this.entry(endpoint, userId).requests += 1;
  }

  limitHit(endpoint: string, userId: string | null, retryAfterSeconds: number, at: Date): void {
    const e = this.entry(endpoint, userId);
    e.limitHits += 1;
    e.retryAfterSeconds = retryAfterSeconds;
    e.lastLimitHit = at;
  }

  /**
   * `count` of the endpoint-wide 429s counted here were already recorded when they happened
   * (with the pause applied, by the shared budget's report, migration 0022): they are not
   * added again, and their Retry-After does not replace the pause recorded.
   */
  limitHitsRecorded(endpoint: string, count: number): void {
    const e = this.usage.get(`${endpoint}\u0000`);
    if (!e || count <= 0) return;
    e.limitHits = Math.max(0, e.limitHits - count);
    if (e.limitHits === 0) {
      delete e.retryAfterSeconds;
      delete e.lastLimitHit;
    }
  }

  /** The endpoint's allowed rate at the end of the run (null: at its ceiling). */
  allowedRate(endpoint: string, ratePerSecond: number | null): void {
    this.entry(endpoint, null).allowedRatePerSecond = ratePerSecond;
  }

  /** 429s seen so far in this run. */
  get limitHits(): number {
    let n = 0;
    for (const e of this.usage.values()) n += e.limitHits;
    return n;
  }

  drain(): RateLimitUsage[] {
    const out = [...this.usage.values()];
    this.usage.clear();
    return out;
  }

  private entry(endpoint: string, userId: string | null) {
    const key = `${endpoint}\u0000${userId ?? ''}`;
    let e = this.usage.get(key);
    if (!e) {
      e = { endpoint, userId, requests: 0, limitHits: 0 };
      this.usage.set(key, e);
    }
    return e;
  }
}
