import { randomUUID } from 'node:crypto';
import { LwaClient } from '../../../lambda/shared/amazon';
import { API_BUDGET_SHARE, ApiShareBudgetStore } from '../../../lambda/shared/amazon/api-share';
import { DatabaseRateBudgetStore, RateBudgetStore, ReserveRequest } from '../../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import { Database, PgDatabase } from '../../../lambda/shared/db';
import { createTokenRoute } from '../../../lambda/token-route/core';
import { fakeProfile } from '../../../local/amazon/profiles';
import { seedUsers } from '../../support/jobs';
import { ApiWorld, consent, Handler, request, useApiWorld, startConnectSession, tokenRouteRequest } from '../fixture';
import { checked } from '../openapi';

// Issue 23, finding 3, on both database paths: one user's connects cannot drain everyone's
// Login with Amazon budget. Connects need a session of the caller's and are limited per user
// (refused before Amazon); an API request waits at most a short bound for the shared budget
// (then 503 with Retry-After); and API traffic draws at most its share of a region's budget
// (the rest always stays for the scheduled jobs).

let world: ApiWorld;
let superuser: PgDatabase;
useApiWorld((started) => {
  ({ world, superuser } = started);
});
beforeEach(async () => {
  await world.reset();
  await world.admin.query(`DELETE FROM amazon_rate_budget`);
});

const paths: Array<[string, () => { db: Database; assume: boolean; jobs: Database }]> = [
  ['Data API', () => ({ db: world.apiDataApi(), assume: false, jobs: world.dataApi() })],
  ['node-postgres', () => ({ db: superuser, assume: true, jobs: superuser })],
];

/**
 * The on-demand token route as in AWS: its own function, as the jobs' login, its LWA client on
 * the jobs' pool of the shared budget at the production rate (10 per second per region).
 */
function tokenRouteOn(db: Database) {
  return createTokenRoute({
    db,
    lwa: new LwaClient({
      clientId: world.amazon.clientId,
      clientSecret: world.amazon.clientSecret,
      tokenUrl: world.amazon.lwaTokenUrl,
      limiters: new RateLimiterRegistry(
        { lwa: { ratePerSecond: 10, burst: 10, maxConcurrency: 10 } },
        {},
        new DatabaseRateBudgetStore(db),
      ),
    }),
    cipher: world.cipher,
    logger: world.logger,
  });
}

/** The API as in AWS: its LWA client on the shared budget in the database, within the API's share. */
function apiOn(db: Database, assume: boolean, amazonMaxWaitMs?: number): Handler {
  return checked(
    world.api({
      db,
      assumeAuthenticatedRole: assume,
      lwaLimiters: new RateLimiterRegistry(
        { lwa: { ratePerSecond: 10, burst: 10, maxConcurrency: 10 } },
        {},
        new ApiShareBudgetStore(new DatabaseRateBudgetStore(db)),
      ),
      syncs: { start: () => Promise.resolve() },
      settings: { amazonMaxWaitMs },
    }),
  );
}

function amazonUser() {
  const userId = randomUUID();
  world.amazon.addUser({ userId, refreshToken: `Atzr|before-${userId}`, profiles: [fakeProfile('NA')] });
  return { userId, token: world.token(userId, { email: `${userId.slice(0, 8)}@example.com` }) };
}

const exchanges = () => world.amazon.counters.authorizationCodeCalls();

describe.each(paths)('%s', (_name, make) => {
  test('300 junk connects from one user in flight: at most its limit reach Amazon; another user connects meanwhile', async () => {
    const { db, assume } = make();
    const api = apiOn(db, assume);
    const noisy = amazonUser();
    const other = amazonUser();
    const states: string[] = [];
    for (let i = 0; i < 10; i += 1) states.push((await startConnectSession(api, noisy.token, 'NA')).state);
    const before = exchanges();
    const junk = Array.from({ length: 300 }, (_, i) =>
      api(
        request('POST', '/v1/connections', {
          token: noisy.token,
          body: {
            region: 'NA',
            code: `ANjunk${i}`,
            state: i % 3 === 0 ? states[i % 10] : randomUUID().repeat(2).slice(0, 43),
          },
        }),
      ),
    );
    const session = await startConnectSession(api, other.token, 'NA');
    const { code } = await consent(session, other.userId);
    const theirs = api(
      request('POST', '/v1/connections', { token: other.token, body: { region: 'NA', code, state: session.state } }),
    );
    const [results, own] = await Promise.all([Promise.all(junk), theirs]);
    expect(own.statusCode).toBe(201);
    const statuses = new Set(results.map((r) => r.statusCode));
    // Refused (bad state, Amazon's invalid_grant), limited, or told to come back (the API's wait for the budget is short).
    expect([...statuses].filter((s) => ![400, 429, 503].includes(s))).toEqual([]);
    expect(results.filter((r) => r.statusCode === 429).length).toBeGreaterThan(0);
    // The noisy user's connects that reached Amazon: at most its connect limit (10 per 10 minutes).
    expect(exchanges() - before).toBeLessThanOrEqual(10 + 1);
  });

  test('300 junk connects from one user in flight: another user’s on-demand token request is refreshed at once (the jobs’ pool is not theirs)', async () => {
    const { db, assume, jobs } = make();
    const api = apiOn(db, assume);
    const noisy = amazonUser();
    const states: string[] = [];
    for (let i = 0; i < 10; i += 1) states.push((await startConnectSession(api, noisy.token, 'NA')).state);
    // Another user whose access token expires in a minute: the route must refresh it now.
    const [other] = await seedUsers(world, { count: 1, expiresInSeconds: 60, regions: () => ['NA'] });
    const junk = Array.from({ length: 300 }, (_, i) =>
      api(
        request('POST', '/v1/connections', {
          token: noisy.token,
          body: { region: 'NA', code: `ANjunk${i}`, state: states[i % 10] },
        }),
      ),
    );
    const served = tokenRouteOn(jobs)(tokenRouteRequest(other.userId, 'NA'));
    const [results, result] = await Promise.all([Promise.all(junk), served]);
    // Before the API's share and the per-user limits, this request waited 28.6 s for the budget
    // and was answered 503; now it is refreshed at once, whatever the junk does.
    expect(result.statusCode).toBe(200);
    expect(JSON.parse(result.body)).toMatchObject({ region: 'NA', refreshed: true });
    expect(world.amazon.counters.refreshCalls(other.refreshToken)).toBe(1);
    expect(results.filter((r) => r.statusCode === 429).length).toBeGreaterThan(0);
    // The route drew from the jobs' pool, whose schedule the API's traffic never moved ahead.
    const { rows } = await world.admin.query<{ endpoint: string; ahead: boolean }>(
      `SELECT endpoint, next_slot_at > now() + interval '2 seconds' AS ahead FROM amazon_rate_budget
        WHERE region = 'NA' ORDER BY endpoint`,
    );
    expect(rows.find((r) => r.endpoint === 'lwa-token')).toEqual({ endpoint: 'lwa-token', ahead: false });
  });

  test('a connect that cannot get a slot of the budget within the bound is a 503 with Retry-After; Amazon is not called', async () => {
    const { db, assume } = make();
    const api = apiOn(db, assume, 200);
    const u = amazonUser();
    const session = await startConnectSession(api, u.token, 'NA');
    const { code } = await consent(session, u.userId);
    // Everyone's budget is paused (as after Amazon's 429s) for longer than the API waits.
    await world.admin.query(
      `INSERT INTO amazon_rate_budget (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until)
       VALUES ('lwa-token', 'NA', 10, 10, now(), now(), now() + interval '30 seconds')`,
    );
    const before = exchanges();
    const r = await api(
      request('POST', '/v1/connections', { token: u.token, body: { region: 'NA', code, state: session.state } }),
    );
    expect(r.statusCode).toBe(503);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(exchanges()).toBe(before);
  });

  test('API traffic takes at most its share of a region’s budget: the jobs’ next slot is never behind the API’s queue', async () => {
    const { db } = make();
    const ceiling = 20;
    const request: ReserveRequest = {
      ceiling,
      wanted: 1,
      maxWaitMs: 60_000,
      toleranceMs: 100,
      leadMs: 0,
      horizonMs: 10_000,
    };
    // The slots the API's quota row (pool `api`) gave, and when each then asked the jobs'
    // schedule (no pool), in the database's time.
    const quotaSlots: number[] = [];
    const sharedAsks: number[] = [];
    const inner = new DatabaseRateBudgetStore(db);
    const recording: RateBudgetStore = {
      async reserve(key, ask) {
        const reservation = await inner.reserve(key, ask);
        if (key.pool === 'api' && reservation.granted > 0) quotaSlots.push(reservation.firstSlotAtMs);
        if (key.pool === undefined) sharedAsks.push(reservation.databaseNowMs);
        return reservation;
      },
      throttled: (key, report) => inner.throttled(key, report),
    };
    const share = new ApiShareBudgetStore(recording, API_BUDGET_SHARE);
    // The Ads endpoint: it has no interactive lane (migration 0026), so every request takes the
    // quota and the shared schedule, as an LWA request does once the lane is taken.
    const key = { endpoint: 'ads', region: 'EU' } as const;
    for (let i = 0; i < 6; i += 1) expect((await share.reserve(key, request)).granted).toBe(1);
    // The API's quota is paced at share × ceiling: its slots are at least an interval apart
    // (further when the calls themselves took longer: the pace is a floor, not a clock).
    expect(quotaSlots).toHaveLength(6);
    const quotaInterval = 1000 / (ceiling * API_BUDGET_SHARE);
    for (let i = 1; i < quotaSlots.length; i += 1) {
      expect(quotaSlots[i] - quotaSlots[i - 1]).toBeGreaterThanOrEqual(quotaInterval - 1);
    }
    // Each request waited for its quota slot before it asked for a slot of the jobs' schedule.
    expect(sharedAsks).toHaveLength(6);
    sharedAsks.forEach((askedAt, i) => expect(askedAt).toBeGreaterThanOrEqual(quotaSlots[i] - 5));
    // The API never reserved shared slots ahead: a job asking now gets a slot within one interval.
    const jobs = new DatabaseRateBudgetStore(superuser);
    const sharedInterval = (1000 + request.toleranceMs) / ceiling;
    expect((await jobs.reserve(key, { ...request, maxWaitMs: 2 * sharedInterval })).granted).toBe(1);
    const { rows } = await world.admin.query<{ endpoint: string; ceiling_per_second: number }>(
      `SELECT endpoint, ceiling_per_second FROM amazon_rate_budget WHERE region = 'EU' ORDER BY endpoint`,
    );
    expect(rows).toEqual([
      { endpoint: 'ads-profiles', ceiling_per_second: ceiling },
      { endpoint: 'ads-profiles:api', ceiling_per_second: ceiling * API_BUDGET_SHARE },
    ]);

    // Without the share, twenty API requests at once queue the whole budget ahead of the job.
    await world.admin.query(`DELETE FROM amazon_rate_budget`);
    expect((await new DatabaseRateBudgetStore(db).reserve(key, { ...request, wanted: 20 })).granted).toBe(20);
    expect((await jobs.reserve(key, { ...request, maxWaitMs: 2 * sharedInterval })).granted).toBe(0);
  });
});
