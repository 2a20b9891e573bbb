import type { RateLimiterRegistry } from '../amazon/rate-limiter';
import type { AmazonEndpoint } from '../amazon/regions';
import type { Database } from '../db/port';
import {
  EndpointState,
  endpointKey,
  endpointPrefix,
  RateLimitUsageRecorder,
  readEndpointStates,
} from '../amazon/usage-store';
import type { AmazonRegion } from '../amazon/regions';

/**
 * What a run starts from for one Amazon endpoint: per region, until when earlier invocations
 * were told to leave it alone (epoch ms), with the limiters restored as {@link restoreLimiters}
 * says.
 */
export async function restoreEndpointState(
  db: Database,
  endpoint: AmazonEndpoint,
  limiters: RateLimiterRegistry | undefined,
): Promise<Map<AmazonRegion, number>> {
  const states = await readEndpointStates(db, endpointPrefix(endpoint));
  const pausedUntil = new Map<AmazonRegion, number>();
  for (const [key, state] of states) {
    if (state.pausedUntil) pausedUntil.set(key.split(':')[1] as AmazonRegion, state.pausedUntil.getTime());
  }
  restoreLimiters(limiters, endpoint, states);
  return pausedUntil;
}

/**
 * The limiters take over what earlier invocations left in `rate_limit_tracking`: pauses still
 * in force and rates that 429s cut (so a new container does not start at full speed against
 * an endpoint that is throttling us).
 */
export function restoreLimiters(
  limiters: RateLimiterRegistry | undefined,
  endpoint: AmazonEndpoint,
  states: ReadonlyMap<string, EndpointState>,
): void {
  if (!limiters) return;
  for (const [key, state] of states) {
    const region = key.split(':')[1];
    if (!region || endpointKey(endpoint, region as AmazonRegion) !== key) continue;
    limiters.for(endpoint, region).restore({
      allowedRatePerSecond: state.allowedRatePerSecond,
      pausedUntilMs: state.pausedUntil?.getTime(),
    });
  }
}

/**
 * Adds each limiter's allowed rate at the end of the run to the usage written back; the 429s
 * its shared budget already recorded when they happened are not counted again.
 */
export function saveLimiterRates(
  limiters: RateLimiterRegistry | undefined,
  endpoint: AmazonEndpoint,
  usage: RateLimitUsageRecorder,
): void {
  if (!limiters) return;
  for (const entry of limiters.entries()) {
    if (entry.endpoint !== endpoint) continue;
    const rate = entry.limiter.allowedRate();
    const key = endpointKey(endpoint, entry.region as AmazonRegion);
    usage.allowedRate(key, rate < entry.limiter.ceiling ? Number(rate.toPrecision(6)) : null);
    usage.limitHitsRecorded(key, entry.limiter.shared?.takeRecordedThrottles() ?? 0);
  }
}
