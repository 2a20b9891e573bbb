import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, ServerResponse } from 'node:http';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import { busiestSecond } from './busiest-second';
import { DEFAULT_KNOBS, FakeAmazonKnobs, FakeEndpoint, SENT_AT_HEADER } from './types';

/**
 * The fake Amazon's answers and its knobs: every answer is written (and counted per status)
 * here, and the knobs (latency, 429s, 5xx, hangs, malformed bodies, failing the first N calls,
 * Amazon's own limit per second) decide whether a call misbehaves before an endpoint answers it.
 */
export interface Misbehaviour {
  /** Writes an answer (JSON) and counts its status for the endpoint. */
  answer(
    res: ServerResponse,
    endpoint: FakeEndpoint,
    status: number,
    body: string,
    headers?: Record<string, string>,
  ): void;
  /**
   * Applies the knobs; returns true when the call was answered (or left hanging). The call
   * counts at `sentAt` (its client's stamp, {@link SENT_AT_HEADER}) when given, else on arrival.
   */
  misbehave(res: ServerResponse, endpoint: FakeEndpoint, region: AmazonRegion, sentAt?: number): Promise<boolean>;
  /** A malformed 200 body, when the knobs say this one is. */
  malformed(endpoint: FakeEndpoint): string | undefined;
  setKnobs(knobs: Partial<FakeAmazonKnobs>, endpoint?: FakeEndpoint): void;
  byStatus(endpoint: FakeEndpoint): Readonly<Record<number, number>>;
  arrivals(endpoint: FakeEndpoint, region: AmazonRegion): readonly number[];
  limitedAt(endpoint: FakeEndpoint, region: AmazonRegion): readonly number[];
  busiestSecond(endpoint: FakeEndpoint, region: AmazonRegion): number;
}

/** mulberry32: a small seeded PRNG. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
export function createMisbehaviour(initial: Partial<FakeAmazonKnobs> | undefined, seed: number): Misbehaviour {
  const random = seededRandom(seed);
  const knobs: Record<FakeEndpoint, FakeAmazonKnobs> = {
    lwa: { ...DEFAULT_KNOBS, ...initial },
    ads: { ...DEFAULT_KNOBS, ...initial },
  };
  const callsSinceKnobs: Record<FakeEndpoint, number> = { lwa: 0, ads: 0 };
  const statuses: Record<FakeEndpoint, Record<number, number>> = { lwa: {}, ads: {} };

  function answer(
    res: ServerResponse,
    endpoint: FakeEndpoint,
    status: number,
    body: string,
    headers: Record<string, string> = {},
  ): void {
    statuses[endpoint][status] = (statuses[endpoint][status] ?? 0) + 1;
    if (res.destroyed) return;
    res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-requestid': randomUUID(), ...headers });
    res.end(body);
  }

  const arrivals = new Map<string, number[]>();
  /** Calls let through by limitPerSecond (a refused call does not use up Amazon's allowance). */
  const admitted = new Map<string, number[]>();
  const refused = new Map<string, number[]>();
  /**
   * Records the arrival at `now` (kept ascending: a client's stamps may reach the handler out of
   * order); true when it is over the endpoint's limit per second in that region: when some
   * second that holds `now` already holds `limit` admitted calls.
   */
  function overLimit(endpoint: FakeEndpoint, region: AmazonRegion, now: number): boolean {
    const key = `${endpoint}:${region}`;
    // Appended in place: a copy per call made a long run (the scale simulation) quadratic.
    const seen = arrivals.get(key) ?? [];
    if (seen.length === 0) arrivals.set(key, seen);
    insertAscending(seen, now);
    const limit = knobs[endpoint].limitPerSecond;
    if (!(limit > 0)) return false;
    // Admitted calls within a second either side of this one (older ones no longer matter).
    const near = (admitted.get(key) ?? []).filter((t) => t > now - 1000 - 1000);
    admitted.set(key, near);
    if (busiestWindowHolding(near, now) >= limit) {
      const over = refused.get(key) ?? [];
      if (over.length === 0) refused.set(key, over);
      insertAscending(over, now);
      return true;
    }
    insertAscending(near, now);
    return false;
  }

  /** Applies the knobs; returns true when the call was answered (or left hanging). */
  async function misbehave(
    res: ServerResponse,
    endpoint: FakeEndpoint,
    region: AmazonRegion,
    sentAt?: number,
  ): Promise<boolean> {
    const k = knobs[endpoint];
    callsSinceKnobs[endpoint] += 1;
    // Amazon's limit counts a call when it arrives; its 429 comes back after the same latency as
    // any other answer (so calls sent meanwhile are already on their way, as with the real one).
    if (overLimit(endpoint, region, sentAt ?? Date.now())) {
      if (k.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, k.latencyMs));
      const body = endpoint === 'lwa' ? '{"error":"TooManyRequests"}' : '{"code":"429","details":"Too Many Requests"}';
      answer(res, endpoint, 429, body, { 'retry-after': String(k.retryAfterSeconds) });
      return true;
    }
    if (callsSinceKnobs[endpoint] <= k.failFirstN) {
      answer(
        res,
        endpoint,
        500,
        endpoint === 'lwa' ? '{"error":"server_error"}' : '{"code":"500","details":"Internal Server Error"}',
      );
      return true;
    }
    if (k.hangRate > 0 && random() < k.hangRate) {
      statuses[endpoint][0] = (statuses[endpoint][0] ?? 0) + 1;
      return true;
    }
    if (k.latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, k.latencyMs));
    if (k.rate429 > 0 && random() < k.rate429) {
      const body = endpoint === 'lwa' ? '{"error":"TooManyRequests"}' : '{"code":"429","details":"Too Many Requests"}';
      answer(res, endpoint, 429, body, { 'retry-after': String(k.retryAfterSeconds) });
      return true;
    }
    if (k.rate5xx > 0 && random() < k.rate5xx) {
      const status = random() < 0.5 ? 500 : 503;
      answer(
        res,
        endpoint,
        status,
        endpoint === 'lwa' ? '{"error":"server_error"}' : `{"code":"${status}","details":"Service Unavailable"}`,
      );
      return true;
    }
    return false;
  }

  function malformed(endpoint: FakeEndpoint): string | undefined {
    const k = knobs[endpoint];
    if (!(k.malformedRate > 0 && random() < k.malformedRate)) return undefined;
    const truncated = random() < 0.5;
    if (endpoint === 'lwa')
      return truncated ? '{"access_token":"Atza|trunc' : '{"access_token":"","token_type":"mac","expires_in":"soon"}';
    return truncated ? '[{"profileId":12' : '[{"profileId":"not-a-number","countryCode":1}]';
  }

  return {
    answer,
    misbehave,
    malformed,
    setKnobs(changes, endpoint) {
      for (const e of endpoint ? [endpoint] : (['lwa', 'ads'] as const)) {
        knobs[e] = { ...knobs[e], ...changes };
        if (changes.failFirstN !== undefined) callsSinceKnobs[e] = 0;
        // A limit set anew starts with a full allowance: calls admitted under the last setting
        // (an earlier test's) do not use it up.
        if (changes.limitPerSecond !== undefined)
          for (const key of [...admitted.keys()]) if (key.startsWith(`${e}:`)) admitted.delete(key);
      }
    },
    byStatus: (endpoint) => ({ ...statuses[endpoint] }),
    arrivals: (endpoint, region) => [...(arrivals.get(`${endpoint}:${region}`) ?? [])],
    limitedAt: (endpoint, region) => [...(refused.get(`${endpoint}:${region}`) ?? [])],
    busiestSecond: (endpoint, region) => busiestSecond(arrivals.get(`${endpoint}:${region}`) ?? []),
  };
}

/** Inserts `t` into ascending `times` in place (from the end: nearly always its place). */
function insertAscending(times: number[], t: number): void {
  let i = times.length;
  while (i > 0 && times[i - 1] > t) i -= 1;
  times.splice(i, 0, t);
}

/**
 * The most of ascending `times` within any one second [start, start + 1000 ms) that holds `at`
 * (the busiest is one that starts at `at` or at one of the times in the second before it).
 */
function busiestWindowHolding(times: readonly number[], at: number): number {
  const starts = times.filter((t) => t > at - 1000 && t < at);
  starts.push(at);
  let most = 0;
  let first = 0;
  let end = 0;
  for (const start of starts) {
    while (first < times.length && times[first] < start) first += 1;
    end = Math.max(end, first);
    while (end < times.length && times[end] < start + 1000) end += 1;
    most = Math.max(most, end - first);
  }
  return most;
}

/**
 * The time a call counts at: its client's {@link SENT_AT_HEADER} stamp, when it sent a valid
 * one no later than now; else undefined (it counts on arrival).
 */
export function sentAtOf(headers: IncomingHttpHeaders): number | undefined {
  const raw = headers[SENT_AT_HEADER];
  if (typeof raw !== 'string' || !/^\d{13}$/.test(raw)) return undefined;
  const at = Number(raw);
  return at <= Date.now() ? at : undefined;
}
