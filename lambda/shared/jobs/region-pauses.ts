import { AMAZON_REGIONS, type AmazonEndpoint, type AmazonRegion } from '../amazon/regions';
import { endpointPrefix } from '../amazon/usage-store';
import { Database, sqlJson } from '../db/port';

/**
 * Per region, until when an Amazon endpoint is paused now (epoch ms, database clock), from both
 * places a pause is kept:
 * - the shared rate budget's `paused_until` (`amazon_rate_budget`, migration 0015): the pause
 *   the limiters really apply (Retry-After doubled for each 429 in a row), set the moment a 429
 *   is reported;
 * - the endpoint-wide row of `rate_limit_tracking` (the last Retry-After a run recorded).
 * The later of the two wins; regions not paused now are absent. What the dispatchers and the
 * scheduled runs read before they select work: a paused region's items are left alone until its
 * pause ends (claimed, they could only wait or be given back).
 */
export async function readRegionPauses(db: Database, endpoint: AmazonEndpoint): Promise<Map<AmazonRegion, number>> {
  const prefix = endpointPrefix(endpoint);
  const { rows } = await db.query<{ region: AmazonRegion; until: Date | string }>(
    `WITH pauses AS (
       SELECT substr(endpoint, length(:prefix) + 1) AS region,
              last_limit_hit + make_interval(secs => retry_after_seconds) AS until
         FROM rate_limit_tracking
        WHERE user_id IS NULL AND endpoint LIKE :prefix || '%'
          AND retry_after_seconds IS NOT NULL AND last_limit_hit IS NOT NULL
       UNION ALL
       SELECT region, paused_until FROM amazon_rate_budget
        WHERE endpoint = :budgetEndpoint AND paused_until IS NOT NULL
     )
     SELECT region, max(until) AS until FROM pauses
      WHERE until > now() AND region IN (SELECT jsonb_array_elements_text(:regions::jsonb))
      GROUP BY region`,
    { prefix, budgetEndpoint: prefix.slice(0, -1), regions: sqlJson(AMAZON_REGIONS) },
  );
  return new Map(rows.map((r) => [r.region, (r.until instanceof Date ? r.until : new Date(r.until)).getTime()]));
}
