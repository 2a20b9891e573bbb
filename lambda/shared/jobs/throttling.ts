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
import { readRegionPauses } from './region-pauses';

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
  // The pause the limiters really apply (the shared budget's, Retry-After doubled per 429 in a
  // row) when it ends later than the last Retry-After recorded: the run leaves the region alone
  // until then instead of claiming its items into a budget that is still paused.
  for (const [region, until] of await readRegionPauses(db, endpoint))
    pausedUntil.set(region, Math.max(until, pausedUntil.get(region) ?? 0));
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

/**
 * Until when (epoch ms, the limiter's clock) the endpoint's limiter in `region` really holds
 * calls back: its own pause (Retry-After doubled per 429 in a row) and the shared budget's as
 * last seen; 0 when neither pauses it.
 */
export function limiterPausedUntil(
  limiters: RateLimiterRegistry | undefined,
  endpoint: AmazonEndpoint,
  region: AmazonRegion,
): number {
  if (!limiters) return 0;
  const limiter = limiters.for(endpoint, region);
  return Math.max(limiter.bucket.pausedUntilMs(), limiter.shared?.pausedUntilMs() ?? 0);
}

/**
 * How long one item may wait for its turn at Amazon (the limiter's pace, a pause) before it is
 * given back, unless the invocation or the item's lease leaves less: a region that cannot take
 * an item within this is left for a later run instead of holding the run (and its leases) idle.
 */
export const MAX_ITEM_WAIT_MS = 15_000;

/** Time kept between an Amazon call's start and the end of its item's lease (the call's own time, its write-back). */
export const LEASE_CALL_RESERVE_MS = 15_000;
