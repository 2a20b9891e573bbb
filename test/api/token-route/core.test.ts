import { randomBytes, randomUUID } from 'node:crypto';
import { LwaClient } from '../../../lambda/shared/amazon';
import { DatabaseRateBudgetStore } from '../../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import type { ApiRequestEvent, ApiResult } from '../../../lambda/shared/http';
import { Database, DatabaseError } from '../../../lambda/shared/db';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { takeAccessToken } from '../../../lambda/token-refresh/on-demand';
import { claimDueTokens, ClaimedToken, saveResults } from '../../../lambda/token-refresh/store';
import { createTokenRoute, TokenRouteDeps } from '../../../lambda/token-route/core';
import {
  failingOnce,
  JobWorld,
  RecordingLogger,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { pollUntil } from '../../support/poll';

// The on-demand token route (POST /internal/v1/access-tokens) against PostgreSQL 17 with every
// migration, as the jobs' login, on both database paths (the Data API through the emulator,
// and node-postgres), with the fake Amazon counting refresh calls. Its LWA client draws from
// the shared rate budget in the database, as in AWS.

let world: JobWorld;
useJobWorld((w) => (world = w));

const PATHS = useBothDatabasePaths(() => world);
const HOUR = 3600;
const CALLER = 'arn:aws:sts::123456789012:assumed-role/product-server/i-0abc';

let logger: RecordingLogger;
let lwaBefore = 0;
/** Calls to the fake token endpoint in this test (the fake's counters run for the whole file). */
const lwaCalls = () => world.amazon.counters.total('lwa') - lwaBefore;
/** Every token the fake Amazon or the seed handed out in a test: none may reach a log line. */
let secrets: string[];

beforeEach(() => {
  logger = new RecordingLogger();
  secrets = [];
  lwaBefore = world.amazon.counters.total('lwa');
});

afterEach(() => {
  const text = logger.text();
  for (const u of seeded) for (const c of u.connections) secrets.push(c.accessToken, c.refreshToken);
  for (const u of seeded) for (const c of u.connections) secrets.push(...world.amazon.accessTokens(u.userId, c.region));
  for (const secret of secrets) expect(text).not.toContain(secret);
  seeded = [];
});

let seeded: SeedUser[] = [];
async function seed(count: number, expiresInSeconds: number, extra: { accountsDueInSeconds?: number } = {}) {
  const users = await seedUsers(world, { count, expiresInSeconds, regions: () => ['EU'], ...extra });
  seeded.push(...users);
  return users;
}

/**
 * An LWA client whose limiter draws from the shared budget in the database: the endpoint's own
 * schedule, at a rate that never holds these tests back. In AWS the route draws from the
 * interactive lane first (budgetLimiters in lambda/shared/amazon/api-share.ts): interactive-lane.test.ts.
 */
function budgetedLwa(db: Database): LwaClient {
  return new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    timeoutMs: 15_000,
    limiters: new RateLimiterRegistry(
      { lwa: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 64 } },
      {},
      new DatabaseRateBudgetStore(db),
    ),
  });
}

function route(db: Database, deps: Partial<TokenRouteDeps> = {}) {
  return createTokenRoute({
    db,
    lwa: budgetedLwa(db),
    cipher: world.cipher,
    logger,
    settings: { pollIntervalMs: 20 },
    ...deps,
  });
}

/** The event API Gateway passes for a request it authorised with IAM (payload 2.0). */
function tokenRequest(body: unknown, o: { iam?: boolean; method?: string; raw?: string } = {}): ApiRequestEvent {
  const event = {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: o.raw ?? JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      requestId: randomBytes(8).toString('hex'),
      http: { method: o.method ?? 'POST', path: '/internal/v1/access-tokens' },
      ...(o.iam === false ? {} : { authorizer: { iam: { userArn: CALLER, accountId: '123456789012' } } }),
    },
  };
  return event;
}

function json(result: ApiResult): Record<string, unknown> {
  return JSON.parse(result.body) as Record<string, unknown>;
}

async function row(user: SeedUser) {
  const { rows } = await world.admin.query<{
    access_token: string;
    expires_at: Date;
    last_used_at: Date | null;
    refresh_lease_owner: string | null;
    proactive_refresh_enabled: boolean;
    refresh_failure_count: number;
    refresh_refusal_count: number;
    next_refresh_attempt_at: Date | null;
    last_refresh_error: string | null;
  }>(
    `SELECT access_token, expires_at, last_used_at, refresh_lease_owner, proactive_refresh_enabled,
            refresh_failure_count, refresh_refusal_count, next_refresh_attempt_at, last_refresh_error
       FROM oauth_tokens WHERE user_id = :userId::uuid AND region = :region`,
    { userId: user.userId, region: user.region },
  );
  return rows[0];
}

/** The user's accounts, as the tests compare them before and after. */
async function accounts(user: SeedUser) {
  const { rows } = await world.admin.query<{ id: string; status: string; sync_status: string }>(
    `SELECT id, status, sync_status, sync_error_message FROM user_accounts WHERE user_id = :userId::uuid ORDER BY id`,
    { userId: user.userId },
  );
  return rows;
}

/** The connection's backoff has run out (as if its time had passed). */
async function backOffPassed(user: SeedUser) {
  await world.admin.query(
    `UPDATE oauth_tokens SET next_refresh_attempt_at = now() - interval '1 second' WHERE user_id = :userId::uuid`,
    { userId: user.userId },
  );
}

async function databaseNow(): Promise<Date> {
  const { rows } = await world.admin.query<{ now: Date }>('SELECT now() AS now');
  return rows[0].now;
}

async function setLease(user: SeedUser, owner: string, secondsFromNow: number) {
  await world.admin.query(
    `UPDATE oauth_tokens SET refresh_lease_owner = :owner::uuid,
            refresh_lease_expires_at = now() + make_interval(secs => :secs)
      WHERE user_id = :userId::uuid`,
    { owner, secs: secondsFromNow, userId: user.userId },
  );
}

const body = (u: SeedUser, region: AmazonRegion = u.region) => ({ userId: u.userId, region });

/**
 * The route's sleep, counted; at its `at`-th call the job run that holds `claimed` (as `owner`)
 * refreshes it with Amazon and writes the result back, as a live run would while the route waits.
 */
function jobFinishesAtSleep(db: Database, owner: string, claimed: ClaimedToken, user: SeedUser, at: number) {
  let slept = 0;
  let token = '';
  return {
    slept: () => slept,
    /** The access token the job obtained. */
    token: () => token,
    sleep: async () => {
      slept += 1;
      if (slept !== at) return;
      const tokens = await world.lwa().refresh({ itemId: claimed.id, region: 'EU', refreshToken: user.refreshToken });
      token = tokens.accessToken;
      await saveResults(db, owner, [
        {
          kind: 'success',
          result: {
            token: claimed,
            accessToken: world.cipher.encrypt(tokens.accessToken, oauthTokenBinding(claimed, 'access_token')),
            refreshToken: claimed.storedRefreshToken,
            expiresAt: new Date(Date.now() + tokens.expiresInSeconds * 1000),
          },
        },
      ]);
    },
  };
}

describe.each(PATHS)('%s', (_path, database) => {
  test('a token with more than 5 minutes left is returned as stored, without calling Amazon, and the use is recorded', async () => {
    const [user] = await seed(1, 20 * 60);
    const before = await databaseNow();

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(result.headers['cache-control']).toBe('no-store');
    expect(json(result)).toMatchObject({ accessToken: user.accessToken, region: 'EU', refreshed: false });
    expect(lwaCalls()).toBe(0);
    const after = await row(user);
    expect(new Date(String(json(result).expiresAt)).getTime()).toBe(after.expires_at.getTime());
    expect(after.last_used_at!.getTime()).toBeGreaterThanOrEqual(before.getTime());
    expect(after.refresh_lease_owner).toBeNull();
  });

  test('a stored access token that cannot be decrypted (moved from another row) is replaced: one call to Amazon, 200 with the new token', async () => {
    const [user, other] = await seed(2, 20 * 60);
    // The other connection's access token, copied into this row: bound to the other row, it fails here.
    await world.admin.query(
      `UPDATE oauth_tokens SET access_token = (SELECT access_token FROM oauth_tokens WHERE user_id = :other::uuid)
        WHERE user_id = :userId::uuid`,
      { userId: user.userId, other: other.userId },
    );

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(json(result)).toMatchObject({ region: 'EU', refreshed: true });
    expect(json(result).accessToken).not.toBe(other.accessToken);
    expect(lwaCalls()).toBe(1);
    const after = await row(user);
    expect(await world.cipher.decrypt(after.access_token, oauthTokenBinding(user, 'access_token'))).toBe(
      json(result).accessToken,
    );
    expect(after.refresh_lease_owner).toBeNull();
    expect(logger.text()).toContain('Stored access token is unreadable');
  });

  test('50 concurrent requests for one expiring connection: one call to Amazon, all 50 get the same new token', async () => {
    const [user] = await seed(1, 120);
    // Amazon takes its time: the requests that come meanwhile wait for the winner's write-back.
    world.amazon.setKnobs({ latencyMs: 300 }, 'lwa');
    let waits = 0;
    const db = database();
    const handle = route(db, {
      sleep: (ms) => {
        waits += 1;
        return new Promise((resolve) => setTimeout(resolve, ms));
      },
    });

    const results = await Promise.all(Array.from({ length: 50 }, () => handle(tokenRequest(body(user)))));

    expect(results.map((r) => r.statusCode)).toEqual(Array(50).fill(200));
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
    const issued = world.amazon.accessTokens(user.userId, 'EU');
    const newToken = issued[issued.length - 1];
    expect(newToken).not.toBe(user.accessToken);
    expect(new Set(results.map((r) => json(r).accessToken))).toEqual(new Set([newToken]));
    // Those that read the row after the winner's write-back got it as stored (refreshed: false).
    expect(results.filter((r) => json(r).refreshed === true).length).toBeGreaterThanOrEqual(1);
    expect(lwaCalls()).toBe(1);
    expect(waits).toBeGreaterThan(0);
    secrets.push(newToken);
    const after = await row(user);
    expect(await world.cipher.decrypt(after.access_token, oauthTokenBinding(user, 'access_token'))).toBe(newToken);
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.expires_at.getTime()).toBeGreaterThan((await databaseNow()).getTime() + 50 * 60 * 1000);
    // The call drew from the shared budget of the LWA endpoint in the EU.
    const { rows } = await world.admin.query<{ region: string }>(
      `SELECT region FROM amazon_rate_budget WHERE endpoint = 'lwa-token'`,
    );
    expect(rows).toEqual([{ region: 'EU' }]);
  });

  test('an idle connection is left alone by the scheduled refresh, refreshed on demand, and covered by the job from then on', async () => {
    const [user] = await seed(1, 120);
    await world.admin.query(`UPDATE oauth_tokens SET last_used_at = now() - interval '2 hours'`);
    const db = database();
    const job = () =>
      runTokenRefresh({
        db,
        lwa: world.lwa(),
        cipher: world.cipher,
        ...runtime(),
        settings: { usedWithinSeconds: HOUR },
      });

    expect(await job()).toMatchObject({ claimed: 0, refreshed: 0 });
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(0);

    const result = await route(db)(tokenRequest(body(user)));
    expect(result.statusCode).toBe(200);
    expect(json(result).refreshed).toBe(true);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);

    // An hour later the new token is due again: the use just recorded puts it in the job's window.
    await world.admin.query(`UPDATE oauth_tokens SET expires_at = now() + interval '10 minutes'`);
    expect(await job()).toMatchObject({ claimed: 1, refreshed: 1 });
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(2);
  });

  test('a lease left by a dead run (expired) is taken over', async () => {
    const [user] = await seed(1, 60);
    await setLease(user, randomUUID(), -5);

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(json(result).refreshed).toBe(true);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
    expect((await row(user)).refresh_lease_owner).toBeNull();
  });

  test('a waiter takes over when the holder dies while it waits (the lease runs out)', async () => {
    const [user] = await seed(1, 60);
    await setLease(user, randomUUID(), 60);
    let slept = 0;
    const sleep = async () => {
      slept += 1;
      // The holder never writes back; its lease runs out.
      if (slept === 2) await setLease(user, randomUUID(), -1);
    };

    const result = await route(database(), { sleep })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(slept).toBe(2);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
  });

  test('a lease held by a live job run: the route waits and returns the job’s token, without a second call to Amazon', async () => {
    const [user] = await seed(1, 60);
    const db = database();
    const owner = randomUUID();
    const [claimed] = await claimDueTokens(db, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: 240,
      limit: 10,
      pausedRegions: [],
    });
    // The job's refresh of its claimed token finishes and is written back while the route waits.
    const job = jobFinishesAtSleep(db, owner, claimed, user, 3);

    const result = await route(db, { sleep: job.sleep })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(job.slept()).toBe(3);
    expect(json(result)).toMatchObject({ accessToken: job.token(), refreshed: true });
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
  });

  test('a live lease that outlasts the wait deadline: 503 with Retry-After, no call to Amazon', async () => {
    const [user] = await seed(1, 60);
    await setLease(user, randomUUID(), 60);
    let clock = 1_000_000;
    const result = await route(database(), {
      now: () => clock,
      sleep: async (ms) => {
        clock += ms;
      },
      settings: { pollIntervalMs: 1000, waitDeadlineMs: 5000 },
    })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(503);
    expect(result.headers['content-type']).toBe('application/problem+json');
    expect(result.headers['retry-after']).toBe('2');
    expect(json(result)).toMatchObject({
      type: 'https://accounts-api.invalid/problems/unavailable',
      title: 'Service unavailable',
      detail: 'The connection is being refreshed by another run; try again shortly.',
      retryAfterSeconds: 2,
    });
    expect(lwaCalls()).toBe(0);
  });

  test('a live lease that outlasts the wait deadline, with the stored token still usable: that token, no call to Amazon', async () => {
    const [user] = await seed(1, 240);
    await setLease(user, randomUUID(), 60);
    let clock = 1_000_000;
    const result = await route(database(), {
      now: () => clock,
      sleep: async (ms) => {
        clock += ms;
      },
      settings: { pollIntervalMs: 1000, waitDeadlineMs: 5000 },
    })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(json(result)).toMatchObject({ accessToken: user.accessToken, refreshed: false });
    expect(lwaCalls()).toBe(0);
  });

  test('invalid_grant: 409, refresh turned off and the region’s accounts flagged, as the job does', async () => {
    const [user] = await seed(1, 60, { accountsDueInSeconds: 3600 });
    world.amazon.revoke(user.userId, 'EU');

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(409);
    expect(json(result)).toMatchObject({
      status: 409,
      type: expect.stringMatching(/reauth-required$/),
      title: 'Re-authorisation required',
      detail: 'The Amazon connection in EU must be authorised again by the user (or its refresh was switched off).',
    });
    const after = await row(user);
    expect(after.proactive_refresh_enabled).toBe(false);
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.last_refresh_error).toMatch(/^invalid_grant/);
    const { rows } = await world.admin.query<{ sync_status: string }>(
      'SELECT DISTINCT sync_status FROM user_accounts WHERE user_id = :userId::uuid',
      { userId: user.userId },
    );
    expect(rows).toEqual([{ sync_status: 'reauth_required' }]);

    // Later requests answer 409 at once.
    const again = await route(database())(tokenRequest(body(user)));
    expect(again.statusCode).toBe(409);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
  });

  test('Amazon answers 429: 503 with its Retry-After, the shared budget paused, the failure not counted', async () => {
    const [user] = await seed(1, 60);
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 7 }, 'lwa');

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(503);
    expect(result.headers['retry-after']).toBe('7');
    expect(json(result)).toMatchObject({
      retryAfterSeconds: 7,
      detail: 'Login with Amazon is limiting requests; try again later.',
    });
    const after = await row(user);
    expect(after.refresh_failure_count).toBe(0);
    expect(after.proactive_refresh_enabled).toBe(true);
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.next_refresh_attempt_at!.getTime()).toBeGreaterThan((await databaseNow()).getTime());
    // The client reports the 429 to the shared budget in the background.
    const rows = await pollUntil(
      async () =>
        (
          await world.admin.query<{ throttled_count: string; paused: boolean }>(
            `SELECT throttled_count::text, paused_until > now() AS paused FROM amazon_rate_budget
              WHERE endpoint = 'lwa-token' AND region = 'EU'`,
          )
        ).rows,
      (found) => found[0]?.throttled_count === '1',
      { timeoutMs: 10_000 },
    );
    expect(rows).toEqual([{ throttled_count: '1', paused: true }]);
  });

  test('Amazon refusing the application (invalid_client): 502, the operators told in an error log line, the user not asked to re-authorise', async () => {
    const [user] = await seed(1, 60);
    const db = database();
    const wrongSecret = new LwaClient({
      clientId: world.amazon.clientId,
      clientSecret: `${world.amazon.clientSecret}-wrong`,
      tokenUrl: world.amazon.lwaTokenUrl,
      timeoutMs: 15_000,
      limiters: new RateLimiterRegistry(
        { lwa: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 64 } },
        {},
        new DatabaseRateBudgetStore(db),
      ),
    });

    const result = await route(db, { lwa: wrongSecret })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(502);
    expect(json(result)).toMatchObject({
      type: 'https://accounts-api.invalid/problems/amazon-unavailable',
      detail: 'Login with Amazon refused the refresh; the operators have been told.',
    });
    expect(logger.lines).toContainEqual({
      level: 'error',
      message: "Login with Amazon refused the application's request",
      attributes: { tokenId: expect.any(String), amazonError: 'invalid_client' },
    });
    expect((await row(user)).proactive_refresh_enabled).toBe(true);
  });

  test('a malformed answer from Amazon: 502, counted as a failure, the lease given back', async () => {
    const [user] = await seed(1, 60);
    world.amazon.setKnobs({ malformedRate: 1 }, 'lwa');

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(502);
    expect(json(result)).toMatchObject({
      type: 'https://accounts-api.invalid/problems/amazon-unavailable',
      detail: 'Login with Amazon answered with something that is not a token; try again.',
    });
    const after = await row(user);
    expect(after.refresh_failure_count).toBe(1);
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.last_refresh_error).toMatch(/^malformed/);
  });

  test('Login with Amazon answering 5xx for a minute: 100 requests make a handful of calls, get the stored token, and leave the connection enabled and its accounts untouched', async () => {
    // Four minutes left: due for a refresh (under five), but usable (over one).
    const [user] = await seed(1, 240, { accountsDueInSeconds: 3600 });
    const accountsBefore = await accounts(user);
    world.amazon.setKnobs({ rate5xx: 1 }, 'lwa');
    const handle = route(database());

    const results: ApiResult[] = [];
    for (let wave = 0; wave < 4; wave += 1) {
      // Half-way through, the first backoff has passed (as it would have a minute in): one more attempt.
      if (wave === 2) await backOffPassed(user);
      results.push(...(await Promise.all(Array.from({ length: 25 }, () => handle(tokenRequest(body(user)))))));
    }

    expect(results.map((r) => r.statusCode)).toEqual(Array(100).fill(200));
    for (const r of results) expect(json(r)).toMatchObject({ accessToken: user.accessToken, refreshed: false });
    // Two refreshes (the first, and the one after the backoff), each the client's own attempts.
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBeGreaterThanOrEqual(2);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBeLessThanOrEqual(6);
    const after = await row(user);
    expect(after).toMatchObject({
      proactive_refresh_enabled: true,
      refresh_failure_count: 2,
      refresh_refusal_count: 0,
      refresh_lease_owner: null,
    });
    expect(after.last_refresh_error).toMatch(/^transient: /);
    expect(after.next_refresh_attempt_at!.getTime()).toBeGreaterThan((await databaseNow()).getTime());
    expect(await accounts(user)).toEqual(accountsBefore);
  });

  test('a connection backing off after a failure is not refreshed on demand: its stored token while usable, else 503 with Retry-After', async () => {
    const [usable, expiring] = await seed(2, 240);
    await world.admin.query(
      `UPDATE oauth_tokens SET next_refresh_attempt_at = now() + interval '90 seconds', refresh_failure_count = 1,
              expires_at = CASE WHEN user_id = :expiring::uuid THEN now() + interval '50 seconds' ELSE expires_at END`,
      { expiring: expiring.userId },
    );
    const handle = route(database());

    const served = await handle(tokenRequest(body(usable)));
    expect(served.statusCode).toBe(200);
    expect(json(served)).toMatchObject({ accessToken: usable.accessToken, refreshed: false });

    const refused = await handle(tokenRequest(body(expiring)));
    expect(refused.statusCode).toBe(503);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(85);
    expect(Number(refused.headers['retry-after'])).toBeLessThanOrEqual(90);
    expect(json(refused)).toMatchObject({
      detail: 'The refresh of this connection failed recently; try again later.',
      retryAfterSeconds: Number(refused.headers['retry-after']),
    });
    expect(lwaCalls()).toBe(0);
    expect((await row(expiring)).refresh_lease_owner).toBeNull();

    // Once the backoff has passed, the next request refreshes.
    await backOffPassed(expiring);
    const refreshed = await handle(tokenRequest(body(expiring)));
    expect(refreshed.statusCode).toBe(200);
    expect(json(refreshed).refreshed).toBe(true);
    secrets.push(String(json(refreshed).accessToken));
    expect(lwaCalls()).toBe(1);
  });

  test('a failed refresh with the stored token still usable answers it (refreshed: false); malformed and 429 alike', async () => {
    const [user] = await seed(1, 240);
    const handle = route(database());
    for (const knobs of [{ malformedRate: 1 }, { rate429: 1, retryAfterSeconds: 1 }, { rate5xx: 1 }]) {
      world.amazon.setKnobs({ malformedRate: 0, rate429: 0, rate5xx: 0, ...knobs }, 'lwa');
      await backOffPassed(user);
      await world.admin.query('DELETE FROM amazon_rate_budget');
      const result = await handle(tokenRequest(body(user)));
      expect(result.statusCode).toBe(200);
      expect(json(result)).toMatchObject({ accessToken: user.accessToken, refreshed: false });
    }
    // Three failures, none of them a refusal (the 429 not even a failure).
    expect(await row(user)).toMatchObject({
      proactive_refresh_enabled: true,
      refresh_failure_count: 2,
      refresh_refusal_count: 0,
    });
  });

  test('unknown connections are 404; a connection whose refresh is off is 409 without calling Amazon', async () => {
    const [user] = await seed(1, 20 * 60);
    const handle = route(database());

    expect((await handle(tokenRequest({ userId: randomUUID(), region: 'EU' }))).statusCode).toBe(404);
    expect((await handle(tokenRequest(body(user, 'NA')))).statusCode).toBe(404);

    await world.admin.query('UPDATE oauth_tokens SET proactive_refresh_enabled = FALSE');
    expect((await handle(tokenRequest(body(user)))).statusCode).toBe(409);
    expect(lwaCalls()).toBe(0);
  });

  test('a revoked grant is 409 even while the stored token is still usable: it is not served', async () => {
    const [user] = await seed(1, 240);
    world.amazon.revoke(user.userId, 'EU');

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(409);
    expect(json(result)).toMatchObject({ type: 'https://accounts-api.invalid/problems/reauth-required' });
    expect((await row(user)).proactive_refresh_enabled).toBe(false);
  });

  test('Login with Amazon not answering (5xx) with no usable token: 502 "did not answer"', async () => {
    const [user] = await seed(1, 30);
    world.amazon.setKnobs({ rate5xx: 1 }, 'lwa');

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(502);
    expect(json(result)).toMatchObject({
      type: 'https://accounts-api.invalid/problems/amazon-unavailable',
      detail: 'Login with Amazon did not answer; try again.',
    });
    expect((await row(user)).last_refresh_error).toMatch(/^transient: /);
  });

  test('the holder’s lease runs out in the database’s time while the wait deadline passes: 503 "try again shortly" (Retry-After 2), no call to Amazon; at the deadline exactly it is taken over', async () => {
    const [late, onTime] = await seed(2, 30);
    const db = database();
    const lwa = budgetedLwa(db);
    const waits: Array<number | undefined> = [];
    const run = async (user: SeedUser, overshootMs: number) => {
      await setLease(user, randomUUID(), 60);
      let clock = 1_000_000;
      let slept = 0;
      const result = await route(db, {
        lwa: {
          // What the route lets the call wait is recorded; the call itself may wait a second here
          // (a budget slot can be a few ms ahead), so that the takeover's outcome is the refresh.
          refresh: (request) => {
            waits.push(request.maxWaitMs);
            return lwa.refresh({ ...request, maxWaitMs: 1000 });
          },
        },
        now: () => clock,
        sleep: async (ms) => {
          slept += 1;
          clock += ms;
          if (slept < 5) return;
          // The last poll the 5 s deadline allows: the holder died and its lease has run out; the
          // timer fired `overshootMs` late.
          await setLease(user, randomUUID(), -1);
          clock += overshootMs;
        },
        settings: { pollIntervalMs: 1000, waitDeadlineMs: 5000 },
      })(tokenRequest(body(user)));
      return { result, slept };
    };

    const missed = await run(late, 1);
    expect(missed.slept).toBe(5);
    expect(missed.result.statusCode).toBe(503);
    expect(missed.result.headers['retry-after']).toBe('2');
    expect(json(missed.result)).toMatchObject({
      type: 'https://accounts-api.invalid/problems/unavailable',
      detail: 'Try again shortly.',
      retryAfterSeconds: 2,
    });
    expect(waits).toEqual([]);

    // At the deadline exactly the lease is taken over (with no time left to wait for the budget).
    const inTime = await run(onTime, 0);
    expect(inTime.slept).toBe(5);
    expect(waits).toEqual([0]);
    expect(inTime.result.statusCode).toBe(200);
    expect(json(inTime.result).refreshed).toBe(true);
    secrets.push(String(json(inTime.result).accessToken));
    expect(world.amazon.counters.refreshCalls(onTime.refreshToken)).toBe(1);
    expect((await row(onTime)).refresh_lease_owner).toBeNull();
    expect(lwaCalls()).toBe(1);
  });

  test('a holder is polled every interval up to the deadline: its write-back at the last poll is served; without one, 503 after exactly that many polls, the request’s duration in its log line', async () => {
    const [user, other] = await seed(2, 30);
    const db = database();
    const owner = randomUUID();
    const claimed = await claimDueTokens(db, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: 240,
      limit: 10,
      pausedRegions: [],
    });
    expect(claimed).toHaveLength(2);
    const job = claimed.find((c) => c.userId === user.userId)!;
    const run = async (u: SeedUser, writeBackAt: number | undefined) => {
      let clock = 1_000_000;
      let slept = 0;
      let jobToken = '';
      const result = await route(db, {
        now: () => clock,
        sleep: async (ms) => {
          slept += 1;
          clock += ms;
          if (slept !== writeBackAt) return;
          const tokens = await world.lwa().refresh({ itemId: job.id, region: 'EU', refreshToken: u.refreshToken });
          jobToken = tokens.accessToken;
          await saveResults(db, owner, [
            {
              kind: 'success',
              result: {
                token: job,
                accessToken: world.cipher.encrypt(tokens.accessToken, oauthTokenBinding(job, 'access_token')),
                refreshToken: job.storedRefreshToken,
                expiresAt: new Date(Date.now() + tokens.expiresInSeconds * 1000),
              },
            },
          ]);
        },
        settings: { pollIntervalMs: 1000, waitDeadlineMs: 5000 },
      })(tokenRequest(body(u)));
      return { result, slept, jobToken };
    };

    // Polls at 1, 2, 3, 4 and 5 s: the fifth is at the deadline, still in time.
    const served = await run(user, 5);
    expect(served.result.statusCode).toBe(200);
    expect(json(served.result)).toMatchObject({ accessToken: served.jobToken, refreshed: true });
    expect(served.slept).toBe(5);

    // Nobody writes back: after the fifth poll the next would be past the deadline.
    const refused = await run(other, undefined);
    expect(refused.result.statusCode).toBe(503);
    expect(json(refused.result).detail).toBe('The connection is being refreshed by another run; try again shortly.');
    expect(refused.slept).toBe(5);
    const requests = logger.lines.filter((l) => l.message === 'request').map((l) => l.attributes);
    expect(requests).toEqual([
      expect.objectContaining({ status: 200, durationMs: 5000 }),
      expect.objectContaining({ status: 503, durationMs: 5000 }),
    ]);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
    expect(world.amazon.counters.refreshCalls(other.refreshToken)).toBe(0);
  });

  test('a connection another run is refreshing is waited for even when a backoff was recorded on it meanwhile', async () => {
    const [user] = await seed(1, 30);
    const db = database();
    const owner = randomUUID();
    const [job] = await claimDueTokens(db, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: 240,
      limit: 10,
      pausedRegions: [],
    });
    await world.admin.query(
      `UPDATE oauth_tokens SET next_refresh_attempt_at = now() + interval '90 seconds' WHERE user_id = :userId::uuid`,
      { userId: user.userId },
    );
    const finishing = jobFinishesAtSleep(db, owner, job, user, 2);

    const result = await route(db, { sleep: finishing.sleep })(tokenRequest(body(user)));

    expect(result.statusCode).toBe(200);
    expect(json(result)).toMatchObject({ accessToken: finishing.token(), refreshed: true });
    expect(finishing.slept()).toBe(2);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
  });

  test('an unreadable stored token is replaced however long it has left (two days: no access token lives that long); one with over a year left is a 500, logged as a warning', async () => {
    const [days, year, other] = await seed(3, 20 * 60);
    await world.admin.query(
      `UPDATE oauth_tokens SET access_token = (SELECT access_token FROM oauth_tokens WHERE user_id = :other::uuid),
              expires_at = now() + CASE WHEN user_id = :days::uuid THEN interval '2 days' ELSE interval '2 years' END
        WHERE user_id IN (:days::uuid, :year::uuid)`,
      { days: days.userId, year: year.userId, other: other.userId },
    );
    const handle = route(database());

    const replaced = await handle(tokenRequest(body(days)));
    expect(replaced.statusCode).toBe(200);
    expect(json(replaced)).toMatchObject({ refreshed: true });
    secrets.push(String(json(replaced).accessToken));
    expect(world.amazon.counters.refreshCalls(days.refreshToken)).toBe(1);

    const broken = await handle(tokenRequest(body(year)));
    expect(broken.statusCode).toBe(500);
    expect(json(broken)).toMatchObject({ type: 'https://accounts-api.invalid/problems/internal' });
    expect(world.amazon.counters.refreshCalls(year.refreshToken)).toBe(0);
    // A refused request, not a failure of the route: the warning names the token, no error line.
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);
    expect(
      logger.lines.filter((l) => l.message === 'Stored access token is unreadable; a new one is requested instead'),
    ).toEqual([
      expect.objectContaining({ level: 'warn', attributes: expect.objectContaining({ userId: days.userId }) }),
      expect.objectContaining({ level: 'warn', attributes: expect.objectContaining({ userId: year.userId }) }),
      expect.objectContaining({ level: 'warn', attributes: expect.objectContaining({ userId: year.userId }) }),
    ]);
  });

  test('an unreadable stored token while backing off: 503 backing off, not a 500', async () => {
    const [user, other] = await seed(2, 240);
    await world.admin.query(
      `UPDATE oauth_tokens SET access_token = (SELECT access_token FROM oauth_tokens WHERE user_id = :other::uuid),
              next_refresh_attempt_at = now() + interval '90 seconds', refresh_failure_count = 1
        WHERE user_id = :userId::uuid`,
      { userId: user.userId, other: other.userId },
    );

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(503);
    expect(json(result)).toMatchObject({ detail: 'The refresh of this connection failed recently; try again later.' });
    expect(Number(result.headers['retry-after'])).toBeGreaterThanOrEqual(85);
    expect(lwaCalls()).toBe(0);
  });

  test('after a failed refresh the stored token’s time left is counted from its read: 80 s then, Amazon taking 30 s, is under the minute now', async () => {
    const [tight, roomy] = await seed(2, 80);
    await world.admin.query(
      `UPDATE oauth_tokens SET expires_at = now() + interval '100 seconds' WHERE user_id = :id::uuid`,
      {
        id: roomy.userId,
      },
    );
    world.amazon.setKnobs({ malformedRate: 1 }, 'lwa');
    const db = database();
    const lwa = budgetedLwa(db);
    let clock = Date.now();
    const waits: Array<number | undefined> = [];
    const slowLwa = {
      refresh: async (request: Parameters<LwaClient['refresh']>[0]) => {
        waits.push(request.maxWaitMs);
        try {
          return await lwa.refresh(request);
        } finally {
          clock += 30_000;
        }
      },
    };
    const handle = route(db, { lwa: slowLwa, now: () => clock });

    const refused = await handle(tokenRequest(body(tight)));
    expect(refused.statusCode).toBe(502);
    expect(json(refused).detail).toBe('Login with Amazon answered with something that is not a token; try again.');

    const served = await handle(tokenRequest(body(roomy)));
    expect(served.statusCode).toBe(200);
    expect(json(served)).toMatchObject({ accessToken: roomy.accessToken, refreshed: false });
    expect(lwaCalls()).toBe(2);
    // Each call could wait for the budget up to the request's deadline: 20 s.
    expect(waits).toEqual([20_000, 20_000]);
  });

  test('a stored refresh token that cannot be decrypted: 409, refresh turned off, Amazon not called', async () => {
    const [user, other] = await seed(2, 60);
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_token = (SELECT refresh_token FROM oauth_tokens WHERE user_id = :other::uuid)
        WHERE user_id = :userId::uuid`,
      { userId: user.userId, other: other.userId },
    );

    const result = await route(database())(tokenRequest(body(user)));

    expect(result.statusCode).toBe(409);
    expect(json(result)).toMatchObject({ type: 'https://accounts-api.invalid/problems/reauth-required' });
    expect(lwaCalls()).toBe(0);
    const after = await row(user);
    expect(after.proactive_refresh_enabled).toBe(false);
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.last_refresh_error).toMatch(/^Stored refresh token is unreadable/);
  });

  test('the refresh token is written back only when it changes: Amazon’s new one; the same one again when stored under an old format; else the stored value as it was', async () => {
    const [rotating] = await seedUsers(world, {
      count: 1,
      expiresInSeconds: 60,
      regions: () => ['EU'],
      refreshTokenMode: 'rotate',
    });
    const [omitting] = await seedUsers(world, {
      count: 1,
      expiresInSeconds: 60,
      regions: () => ['EU'],
      refreshTokenMode: 'omit',
    });
    const [legacy] = await seedUsers(world, {
      count: 1,
      expiresInSeconds: 60,
      regions: () => ['EU'],
      refreshTokenMode: 'omit',
      legacyPlaintext: () => true,
    });
    seeded.push(rotating, omitting, legacy);
    const stored = async (u: SeedUser) =>
      (
        await world.admin.query<{ refresh_token: string }>(
          `SELECT refresh_token FROM oauth_tokens WHERE user_id = :userId::uuid`,
          { userId: u.userId },
        )
      ).rows[0].refresh_token;
    const before = await stored(omitting);
    const handle = route(database());
    for (const u of [rotating, omitting, legacy]) {
      const result = await handle(tokenRequest(body(u)));
      expect(result.statusCode).toBe(200);
      expect(json(result).refreshed).toBe(true);
      secrets.push(String(json(result).accessToken));
    }

    const rotated = world.amazon.currentRefreshToken(rotating.userId);
    secrets.push(rotated);
    expect(rotated).not.toBe(rotating.refreshToken);
    expect(await world.cipher.decrypt(await stored(rotating), oauthTokenBinding(rotating, 'refresh_token'))).toBe(
      rotated,
    );
    expect(await stored(omitting)).toBe(before);
    const reEncrypted = await stored(legacy);
    expect(world.cipher.isCurrent(reEncrypted)).toBe(true);
    expect(await world.cipher.decrypt(reEncrypted, oauthTokenBinding(legacy, 'refresh_token'))).toBe(
      legacy.refreshToken,
    );
  });

  test('a refresh that fails is logged as a warning with the token, its region and the recorded error; a revoked grant is not', async () => {
    const [failing, revoked] = await seed(2, 60);
    const ids = new Map(
      (
        await world.admin.query<{ id: string; user_id: string }>(
          `SELECT id, user_id FROM oauth_tokens WHERE user_id IN (:a::uuid, :b::uuid)`,
          { a: failing.userId, b: revoked.userId },
        )
      ).rows.map((r) => [r.user_id, r.id]),
    );
    world.amazon.revoke(revoked.userId, 'EU');
    world.amazon.setKnobs({ malformedRate: 1 }, 'lwa');
    const handle = route(database());

    expect((await handle(tokenRequest(body(failing)))).statusCode).toBe(502);
    world.amazon.setKnobs({ malformedRate: 0 }, 'lwa');
    expect((await handle(tokenRequest(body(revoked)))).statusCode).toBe(409);

    const recorded = (await row(failing)).last_refresh_error;
    expect(recorded).toMatch(/^malformed: /);
    expect(logger.lines.filter((l) => l.level !== 'info')).toEqual([
      {
        level: 'warn',
        message: 'Token refresh on demand failed',
        attributes: { tokenId: ids.get(failing.userId), region: 'EU', error: recorded },
      },
    ]);
  });

  test('a result the database refuses is logged as an error with the token and the database’s message, and its lease given back', async () => {
    const [user] = await seed(1, 60);
    const { rows } = await world.admin.query<{ id: string }>(
      `SELECT id FROM oauth_tokens WHERE user_id = :userId::uuid`,
      {
        userId: user.userId,
      },
    );
    const db = failingOnce(
      database(),
      /jsonb_to_recordset\(:results/,
      () => new DatabaseError('invalid input syntax', { code: '22P02' }),
    );

    const result = await route(db)(tokenRequest(body(user)));

    // Amazon's token is answered (it is valid); the row keeps the one it had.
    expect(result.statusCode).toBe(200);
    secrets.push(String(json(result).accessToken));
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([
      {
        level: 'error',
        message: 'Token result refused by the database; its lease was given back',
        attributes: { tokenId: rows[0].id, userId: user.userId, error: 'invalid input syntax' },
      },
    ]);
    const after = await row(user);
    expect(after.refresh_lease_owner).toBeNull();
    expect(await world.cipher.decrypt(after.access_token, oauthTokenBinding(user, 'access_token'))).toBe(
      user.accessToken,
    );
  });

  test('a failed refresh with no usable token answers when to try again: the backoff it recorded (or the 429’s Retry-After)', async () => {
    const [user] = await seed(1, 30);
    world.amazon.setKnobs({ malformedRate: 1 }, 'lwa');
    const db = database();
    const at = Date.now();
    const settings = {
      minRemainingSeconds: 300,
      leaseSeconds: 30,
      pollIntervalMs: 20,
      usableSeconds: 60,
      maxConsecutiveRefusals: 5,
      retryBaseSeconds: 60,
      retryMaxSeconds: 3600,
    };
    const take = () =>
      takeAccessToken(
        {
          db,
          lwa: budgetedLwa(db),
          cipher: world.cipher,
          logger,
          now: () => at,
          sleep: async () => {},
          random: () => 0,
        },
        settings,
        { userId: user.userId, region: 'EU', recordUse: false, deadline: at + 5000 },
      );

    const failed = await take();
    const next = (await row(user)).next_refresh_attempt_at!.getTime();
    // The first failure's backoff: half the base at least (full jitter, random 0), 30 s.
    expect(next - at).toBe(30_000);
    expect(failed).toMatchObject({ kind: 'unavailable', reason: 'failed', retryAfterSeconds: 30 });

    world.amazon.setKnobs({ malformedRate: 0, rate429: 1, retryAfterSeconds: 7 }, 'lwa');
    await backOffPassed(user);
    expect(await take()).toMatchObject({ kind: 'unavailable', reason: 'failed', retryAfterSeconds: 7 });
  });
});

describe('requests', () => {
  test('no IAM identity in the request context: 403 before anything is read', async () => {
    const [user] = await seed(1, 20 * 60);
    const result = await route(world.dataApi())(tokenRequest(body(user), { iam: false }));
    expect(result.statusCode).toBe(403);
    expect((await row(user)).last_used_at).toBeNull();
  });

  test('malformed bodies are 400, other methods 405, other paths 404', async () => {
    const handle = route(world.dataApi());
    expect((await handle(tokenRequest({ userId: 'x', region: 'EU' }))).statusCode).toBe(400);
    expect((await handle(tokenRequest({ userId: randomUUID(), region: 'US' }))).statusCode).toBe(400);
    expect((await handle(tokenRequest({ userId: randomUUID(), region: 'EU', extra: 1 }))).statusCode).toBe(400);
    expect((await handle(tokenRequest(undefined, { raw: '{' }))).statusCode).toBe(400);
    expect((await handle(tokenRequest({}, { method: 'GET' }))).statusCode).toBe(405);
    const other = tokenRequest({});
    expect((await handle({ ...other, rawPath: '/internal/v1/other' })).statusCode).toBe(404);
  });

  test('each refused request names its problem: type, title and detail', async () => {
    const handle = route(world.dataApi());
    const problem = async (event: ApiRequestEvent) => {
      const result = await handle(event);
      return { status: result.statusCode, ...json(result) };
    };
    const type = (kind: string) => `https://accounts-api.invalid/problems/${kind}`;
    const id = randomUUID();
    expect(await problem(tokenRequest({ userId: id, region: 'EU' }, { iam: false }))).toMatchObject({
      status: 403,
      type: type('forbidden'),
      title: 'Forbidden',
      detail: 'This route is for the product’s servers (IAM) only.',
    });
    expect(await problem(tokenRequest({ userId: 'x', region: 'EU' }))).toMatchObject({
      status: 400,
      type: type('bad-request'),
      detail: 'userId must be a UUID.',
    });
    // The UUID's pattern is anchored at both ends.
    for (const userId of [`x${id}`, `${id}x`, 42, [id]])
      expect(await problem(tokenRequest({ userId, region: 'EU' }))).toMatchObject({
        status: 400,
        detail: 'userId must be a UUID.',
      });
    for (const region of ['US', 'eu', 7])
      expect(await problem(tokenRequest({ userId: id, region }))).toMatchObject({
        status: 400,
        detail: 'region must be one of NA, EU, FE.',
      });
    expect(await problem(tokenRequest({ userId: id, region: 'EU', 'extra\u0001': 1 }))).toMatchObject({
      status: 400,
      detail: 'Unknown field "extra?".',
    });
    expect(await problem(tokenRequest({}, { method: 'GET' }))).toMatchObject({
      status: 405,
      type: type('method-not-allowed'),
    });
    expect(await problem({ ...tokenRequest({}), rawPath: '/internal/v1/access-tokens/more' })).toMatchObject({
      status: 404,
      type: type('not-found'),
      detail: 'No such resource.',
    });
    // A user without a connection there: its own detail.
    expect(await problem(tokenRequest({ userId: id, region: 'FE' }))).toMatchObject({
      status: 404,
      detail: 'No Amazon connection in FE for this user.',
    });
    // Refused requests are answered, not failures of the route: no error line for any of them.
    expect(logger.lines.filter((l) => l.level === 'error')).toEqual([]);
  });

  test('a trailing slash, a lower-case method and an upper-case user id reach the same route and user', async () => {
    const [user] = await seed(1, 20 * 60);
    const handle = route(world.dataApi());
    const upper = { userId: user.userId.toUpperCase(), region: user.region };
    for (const event of [
      { ...tokenRequest(body(user)), rawPath: '/internal/v1/access-tokens//' },
      tokenRequest(body(user), { method: 'post' }),
      tokenRequest(upper),
    ]) {
      const result = await handle(event);
      expect(result.statusCode).toBe(200);
      expect(json(result)).toMatchObject({ accessToken: user.accessToken, region: 'EU', refreshed: false });
    }
    const users = logger.lines.filter((l) => l.message === 'request').map((l) => l.attributes?.userId);
    expect(users).toEqual([user.userId, user.userId, user.userId]);
  });

  test('the log has one line per request, with caller, user, region and status, and never a token', async () => {
    const [user] = await seed(1, 60);
    const result = await route(world.dataApi())(tokenRequest(body(user)));
    const served = String(json(result).accessToken);
    secrets.push(served);

    const lines = logger.lines.filter((l) => l.message === 'request');
    expect(lines).toEqual([
      {
        level: 'info',
        message: 'request',
        attributes: expect.objectContaining({
          caller: CALLER,
          userId: user.userId,
          region: 'EU',
          refreshed: true,
          status: 200,
        }),
      },
    ]);
    expect(logger.text()).not.toContain(served);
  });
});
