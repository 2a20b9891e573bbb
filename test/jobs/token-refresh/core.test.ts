import { randomUUID } from 'node:crypto';
import {
  CLIENT_ERROR_STOP_AFTER,
  previewTokenRefresh,
  runTokenRefresh,
  TokenRefreshDeps,
} from '../../../lambda/token-refresh/core';
import { claimDueTokens, saveResults, TokenResult } from '../../../lambda/token-refresh/store';
import { Database, DatabaseError } from '../../../lambda/shared/db';
import { MAX_PAUSE_SECONDS } from '../../../lambda/shared/amazon/rate-limiter';
import {
  failingOnce,
  JobWorld,
  runtime,
  seedUsers,
  tokenRefreshDeps,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { LwaClient, PermanentAuthError } from '../../../lambda/shared/amazon';
import { endpointKey, RateLimitUsageRecorder, recordRateLimitUsage } from '../../../lambda/shared/amazon/usage-store';
import { METRIC_NAMES } from '../../../lambda/shared/jobs/metrics';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';

/**
 * The token refresh's run (lambda/token-refresh/core.ts) against PostgreSQL 17 with every
 * migration and the fake Amazon: concurrency and leases, revocation and re-connection, late
 * and refused write-backs, poison answers, pauses, a misconfigured client, the dry run.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
/** Both database paths, as the jobs' own login: the Data API (emulator) and node-postgres. */
const PATHS = useBothDatabasePaths(() => world);

/** A run's dependencies on `db` (32 calls at once); `extra` replaces any of them. */
function deps(db: Database, extra: Partial<TokenRefreshDeps> = {}): TokenRefreshDeps {
  return tokenRefreshDeps(world, db, { settings: { concurrency: 32 }, ...extra });
}

interface TokenRow {
  user_id: string;
  access_token: string;
  refresh_token: string;
  expires_at: Date;
  proactive_refresh_enabled: boolean;
  refresh_failure_count: number;
  refresh_refusal_count: number;
  last_refresh_error: string | null;
  next_refresh_attempt_at: Date | null;
  refresh_lease_owner: string | null;
  refresh_lease_expires_at: Date | null;
  last_refreshed_at: Date | null;
}

async function token(userId: string): Promise<TokenRow> {
  const { rows } = await world.admin.query<TokenRow>(`SELECT * FROM oauth_tokens WHERE user_id = :id::uuid`, {
    id: userId,
  });
  expect(rows).toHaveLength(1);
  return rows[0];
}

async function accountStatuses(userId: string): Promise<string[]> {
  const { rows } = await world.admin.query<{ sync_status: string }>(
    `SELECT sync_status FROM user_accounts WHERE user_id = :id::uuid ORDER BY id`,
    { id: userId },
  );
  return rows.map((r) => r.sync_status);
}

const wrongCredentials = () =>
  new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: 'not-the-secret',
    tokenUrl: world.amazon.lwaTokenUrl,
  });

/**
 * `db`, but any write-back carrying `tokenId`'s result (not its release) is refused as data,
 * as PostgreSQL refuses a value it cannot store (a real adapter underneath).
 */
function refusingResultOf(db: Database, tokenId: string): Database {
  return {
    query: (sql, params) => {
      const values = JSON.stringify(params ?? {});
      if (/jsonb_to_recordset\(:results/.test(sql) && values.includes(tokenId) && /success/.test(values))
        return Promise.reject(new DatabaseError('invalid input syntax', { code: '22P02' }));
      return db.query(sql, params);
    },
    batch: (sql, sets) => db.batch(sql, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

async function tokens(): Promise<Map<string, TokenRow>> {
  const { rows } = await world.admin.query<TokenRow>('SELECT * FROM oauth_tokens');
  return new Map(rows.map((r) => [r.user_id, r]));
}

test('four invocations at once over 2,000 due tokens refresh every token exactly once (Data API path)', async () => {
  const due = await seedUsers(world, { count: 2000, expiresInSeconds: 600 });
  const notDue = await seedUsers(world, { count: 30, expiresInSeconds: 7200 });
  const off = await seedUsers(world, { count: 30, expiresInSeconds: 60, refreshEnabled: () => false });
  const before = Date.now();

  // The fake Amazon answers in this process, behind four runs, their crypto and the Data API
  // emulator: on a loaded machine an answer can take longer than the client's usual 15 s, and a
  // call that times out is a (correct) failure this test is not about. A minute covers it.
  const runs = await Promise.all(
    [0, 1, 2, 3].map(() =>
      runTokenRefresh(deps(world.dataApi(), { lwa: world.lwa(60_000), settings: { batchSize: 200, concurrency: 16 } })),
    ),
  );

  expect(runs.reduce((n, r) => n + r.refreshed, 0)).toBe(2000);
  expect(runs.reduce((n, r) => n + r.claimed, 0)).toBe(2000);
  expect(runs.filter((r) => r.claimed > 0).length).toBeGreaterThan(1); // the work really was shared
  for (const u of due) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  for (const u of [...notDue, ...off]) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(0);

  const rows = await tokens();
  for (const u of due) {
    const row = rows.get(u.userId)!;
    expect(row.refresh_lease_owner).toBeNull();
    expect(row.refresh_failure_count).toBe(0);
    expect(row.expires_at.getTime()).toBeGreaterThan(before + 3500_000);
    // The new access token is the one Amazon issued, stored encrypted.
    expect(world.cipher.isCurrent(row.access_token)).toBe(true);
    expect(await world.cipher.decrypt(row.access_token, oauthTokenBinding(u, 'access_token'))).toBe(
      world.amazon.accessTokens(u.userId).at(-1),
    );
    expect(await world.cipher.decrypt(row.refresh_token, oauthTokenBinding(u, 'refresh_token'))).toBe(u.refreshToken);
  }
  for (const u of off) expect(rows.get(u.userId)!.proactive_refresh_enabled).toBe(false);
  // 2,000 real refreshes on the Data API path: minutes, not seconds, on a loaded machine.
}, 300_000);

test('round trips are batched: at most 30 database calls per 1,000 tokens', async () => {
  await seedUsers(world, { count: 1000 });
  const db = world.dataApi();
  const summary = await runTokenRefresh(deps(db));
  expect(summary.refreshed).toBe(1000);
  expect(summary.databaseCalls).toBeLessThanOrEqual(30);
  expect(summary.databaseCalls).toBe(db.callCounts().total);
});

test('refresh tokens of Amazon’s maximum size (2,048 bytes) are claimed within the Data API’s 1 MiB response', async () => {
  const users = await seedUsers(world, { count: 600, tokenChars: 2048 });
  const db = world.dataApi();
  const summary = await runTokenRefresh(deps(db, { settings: { batchSize: 500 } }));
  expect(summary.refreshed).toBe(600);
  expect(summary.batches).toBeGreaterThan(2); // the claims were cut by size, not by count
  const rows = await tokens();
  for (const u of users)
    expect(await world.cipher.decrypt(rows.get(u.userId)!.refresh_token, oauthTokenBinding(u, 'refresh_token'))).toBe(
      u.refreshToken,
    );
});

// A hang is cut by the client's timeout: long enough that a call to the fake answered late by a
// busy machine (every core taken by other suites) is not taken for a hang, short enough that the
// hangs (5 %) cost a few seconds.
const HANG_TIMEOUT_MS = 1500;

test('faults at 20% 5xx, 10% 429, 5% hangs, 5% malformed: every token ends refreshed or with its failure recorded', async () => {
  const users = await seedUsers(world, { count: 400 });
  world.amazon.setKnobs({ rate5xx: 0.2, rate429: 0.1, retryAfterSeconds: 1, hangRate: 0.05, malformedRate: 0.05 });
  const rt = runtime();
  const summary = await runTokenRefresh(deps(world.dataApi(), { lwa: world.lwa(HANG_TIMEOUT_MS), ...rt }));

  const rows = await tokens();
  let refreshed = 0;
  let failed = 0;
  let rateLimited = 0;
  for (const u of users) {
    const row = rows.get(u.userId)!;
    expect(row.refresh_lease_owner).toBeNull();
    // Nothing is attempted twice. A call that timed out on the client (a hang, or a busy
    // machine) may never have reached the fake, so a transient failure may show no call at all.
    const calls = world.amazon.counters.refreshCalls(u.refreshToken);
    expect(calls).toBeLessThanOrEqual(1);
    if (!row.last_refresh_error?.startsWith('transient')) expect(calls).toBe(1); // Amazon answered
    if (row.last_refresh_error === null) {
      refreshed += 1;
      expect(row.refresh_failure_count).toBe(0);
      expect(row.last_refreshed_at).not.toBeNull();
    } else if (row.last_refresh_error.startsWith('rate_limited')) {
      rateLimited += 1;
      expect(row.refresh_failure_count).toBe(0); // Amazon's pace, not the token's fault
      expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThan(Date.now() - 5000);
    } else {
      failed += 1;
      expect(row.last_refresh_error).toMatch(/^(transient|malformed): /);
      expect(row.refresh_failure_count).toBe(1); // counted once
      expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThan(Date.now());
      expect(row.proactive_refresh_enabled).toBe(true);
    }
  }
  expect(refreshed + failed + rateLimited).toBe(400);
  expect(refreshed).toBeGreaterThan(150);
  expect(failed).toBeGreaterThan(50);
  expect(rateLimited).toBeGreaterThan(10);
  expect({ refreshed: summary.refreshed, failed: summary.failed, rateLimited: summary.rateLimited }).toEqual({
    refreshed,
    failed,
    rateLimited,
  });

  // The 429s are in rate_limit_tracking for the token endpoints.
  const { rows: limits } = await world.admin.query<{
    endpoint: string;
    limit_hit_count: number;
    request_count: number;
    retry_after_seconds: number;
  }>(
    `SELECT endpoint, limit_hit_count, request_count, retry_after_seconds FROM rate_limit_tracking WHERE user_id IS NULL ORDER BY endpoint`,
  );
  expect(limits.map((l) => l.endpoint)).toEqual(['lwa-token:EU', 'lwa-token:FE', 'lwa-token:NA']);
  expect(limits.reduce((n, l) => n + l.limit_hit_count, 0)).toBe(rateLimited);
  expect(limits.reduce((n, l) => n + l.request_count, 0)).toBe(400);
  // The pause recorded is the one applied (issue 25, migration 0022): the shared budget's
  // paused_until − now, rounded up, after Retry-After 1 s doubled per 429 in a row; never less
  // than Amazon asked for, never more than the longest pause.
  for (const l of limits)
    if (l.limit_hit_count > 0) {
      expect(l.retry_after_seconds).toBeGreaterThanOrEqual(1);
      expect(l.retry_after_seconds).toBeLessThanOrEqual(MAX_PAUSE_SECONDS);
    }
});

test('a token whose refresh keeps failing with 5xx is backed off but never turned off, and its accounts are untouched', async () => {
  // Amazon's 5xx says nothing about the token (outcome.ts): four failures so far, a fifth now.
  const [user] = await seedUsers(world, { count: 1, accountsDueInSeconds: 3600 });
  await world.admin.query(`UPDATE oauth_tokens SET refresh_failure_count = 4 WHERE user_id = :id::uuid`, {
    id: user.userId,
  });
  world.amazon.setKnobs({ rate5xx: 1 });
  const at = new Date(); // the run's clock, held still
  const summary = await runTokenRefresh(deps(world.dataApi(), { now: () => at }));
  expect(summary).toMatchObject({ failed: 1, reauthRequired: 0 });
  const row = (await tokens()).get(user.userId)!;
  expect(row).toMatchObject({ proactive_refresh_enabled: true, refresh_failure_count: 5 });
  expect(row.last_refresh_error).toMatch(/^transient: /);
  expect(row.last_refresh_error).not.toMatch(/in a row/);
  // The fifth failure in a row: 8 to 16 minutes away.
  expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThanOrEqual(at.getTime() + 480_000);
  expect(row.next_refresh_attempt_at!.getTime()).toBeLessThanOrEqual(at.getTime() + 960_000);
  const { rows } = await world.admin.query<{ sync_status: string }>(
    `SELECT sync_status FROM user_accounts WHERE user_id = :id::uuid`,
    { id: user.userId },
  );
  expect(rows.map((r) => r.sync_status)).toEqual(['completed', 'completed']);
});

test('invalid_grant turns refresh off at once and flags the accounts; a re-connected token is picked up again', async () => {
  const [revoked, fine] = await seedUsers(world, { count: 2, accountsDueInSeconds: 3600 });
  world.amazon.revoke(revoked.userId);
  const first = await runTokenRefresh(deps(world.dataApi()));
  expect(first).toMatchObject({ refreshed: 1, failed: 1, reauthRequired: 1 });

  let rows = await tokens();
  expect(rows.get(revoked.userId)).toMatchObject({ proactive_refresh_enabled: false, refresh_failure_count: 1 });
  expect(rows.get(revoked.userId)!.last_refresh_error).toMatch(/^invalid_grant/);
  expect(rows.get(fine.userId)!.proactive_refresh_enabled).toBe(true);
  const accounts = await world.admin.query<{ user_id: string; sync_status: string; sync_error_message: string | null }>(
    `SELECT user_id, sync_status, sync_error_message FROM user_accounts`,
  );
  for (const a of accounts.rows) {
    if (a.user_id === revoked.userId)
      expect(a).toMatchObject({
        sync_status: 'reauth_required',
        sync_error_message: expect.stringMatching(/reconnect/),
      });
    else expect(a.sync_status).toBe('completed');
  }

  // Nothing more happens to it while it stays revoked.
  await runTokenRefresh(deps(world.dataApi()));
  expect(world.amazon.counters.refreshCalls(revoked.refreshToken)).toBe(1);

  // The user reconnects: the web app writes new tokens (and nothing else).
  const newRefresh = `Atzr|reconnected-${randomUUID()}`;
  world.amazon.addUser({ userId: `${revoked.userId}-again`, refreshToken: newRefresh });
  await world.admin.query(
    `UPDATE oauth_tokens SET access_token = :a, refresh_token = :r, expires_at = now() + interval '10 minutes' WHERE user_id = :id::uuid`,
    {
      a: world.cipher.encrypt('Atza|new', oauthTokenBinding(revoked, 'access_token')),
      r: world.cipher.encrypt(newRefresh, oauthTokenBinding(revoked, 'refresh_token')),
      id: revoked.userId,
    },
  );
  rows = await tokens();
  expect(rows.get(revoked.userId)).toMatchObject({
    proactive_refresh_enabled: true,
    refresh_failure_count: 0,
    last_refresh_error: null,
  });
  const reconnectedAccounts = await world.admin.query<{ sync_status: string }>(
    `SELECT sync_status FROM user_accounts WHERE user_id = :id::uuid`,
    { id: revoked.userId },
  );
  expect(reconnectedAccounts.rows.map((r) => r.sync_status)).toEqual(['pending', 'pending']);

  const again = await runTokenRefresh(deps(world.dataApi()));
  expect(again.refreshed).toBe(1); // the other token was refreshed by the first run
  expect(world.amazon.counters.refreshSuccesses(revoked.userId)).toBe(0);
  expect(world.amazon.counters.refreshCalls(newRefresh)).toBe(1);
});

test('a run killed mid-batch leaves leases that the next run recovers once they expire', async () => {
  const users = await seedUsers(world, { count: 20 });
  // A run that claimed ten tokens and died: its lease is all that is left of it.
  const owner = randomUUID();
  const dead = await claimDueTokens(world.admin, {
    owner,
    windowSeconds: 1800,
    leaseSeconds: 240,
    limit: 10,
    pausedRegions: [],
  });
  expect(dead).toHaveLength(10);

  const next = await runTokenRefresh(deps(world.dataApi()));
  expect(next.refreshed).toBe(10); // the leased ones are left alone
  for (const t of dead)
    expect(world.amazon.counters.refreshCalls(users.find((u) => u.userId === t.userId)!.refreshToken)).toBe(0);

  // The dead run's leases run out (back-dated rather than waited for).
  await world.admin.query(
    `UPDATE oauth_tokens SET refresh_lease_expires_at = now() - interval '1 second' WHERE refresh_lease_owner = :owner::uuid`,
    { owner },
  );
  const recovery = await runTokenRefresh(deps(world.dataApi()));
  expect(recovery.refreshed).toBe(10);
  const rows = await tokens();
  for (const u of users) {
    expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
    expect(rows.get(u.userId)!.refresh_lease_owner).toBeNull();
  }
});

test('time running out gives unprocessed claims back instead of holding them', async () => {
  await seedUsers(world, { count: 50 });
  let calls = 0;
  // Plenty of time for the claim, then almost none: every claimed token is released.
  const summary = await runTokenRefresh(
    deps(world.dataApi(), { remainingTimeMs: () => (calls++ === 0 ? 60_000 : 1_000) }),
  );
  expect(summary).toMatchObject({ claimed: 50, refreshed: 0, released: 50 });
  const { rows } = await world.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL`,
  );
  expect(rows[0].n).toBe(0);
});

test('DatabaseResumingException on the first calls of a run delays it and loses nothing', async () => {
  const users = await seedUsers(world, { count: 100 });
  world.emulator.failNextCalls(3, 'DatabaseResumingException');
  const summary = await runTokenRefresh(deps(world.dataApi()));
  expect(summary.refreshed).toBe(100);
  for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
});

test('legacy plaintext tokens are read as they are and written back encrypted; rotated refresh tokens are kept', async () => {
  const legacy = await seedUsers(world, { count: 6, legacyPlaintext: () => true });
  const rotating = await seedUsers(world, { count: 6, refreshTokenMode: 'rotate' });
  const omitting = await seedUsers(world, { count: 6, refreshTokenMode: 'omit' });
  const summary = await runTokenRefresh(deps(world.dataApi()));
  expect(summary.refreshed).toBe(18);
  const rows = await tokens();
  for (const u of legacy) {
    const row = rows.get(u.userId)!;
    expect(world.cipher.isCurrent(row.refresh_token)).toBe(true);
    expect(await world.cipher.decrypt(row.refresh_token, oauthTokenBinding(u, 'refresh_token'))).toBe(u.refreshToken);
  }
  for (const u of rotating)
    expect(await world.cipher.decrypt(rows.get(u.userId)!.refresh_token, oauthTokenBinding(u, 'refresh_token'))).toBe(
      world.amazon.currentRefreshToken(u.userId),
    );
  for (const u of omitting)
    expect(await world.cipher.decrypt(rows.get(u.userId)!.refresh_token, oauthTokenBinding(u, 'refresh_token'))).toBe(
      u.refreshToken,
    );
});

test('a token the web app replaces during a refresh is not overwritten with the old grant’s values', async () => {
  const [user] = await seedUsers(world, { count: 1 });
  const replaced = world.cipher.encrypt('Atzr|replaced-by-web-app', oauthTokenBinding(user, 'refresh_token'));
  const lwa = world.lwa();
  const racing = {
    refresh: async (request: Parameters<typeof lwa.refresh>[0]) => {
      const result = await lwa.refresh(request);
      await world.admin.query(`UPDATE oauth_tokens SET refresh_token = :r WHERE user_id = :id::uuid`, {
        r: replaced,
        id: user.userId,
      });
      return result;
    },
  };
  await runTokenRefresh(deps(world.dataApi(), { lwa: racing }));
  const row = (await tokens()).get(user.userId)!;
  expect(row.refresh_token).toBe(replaced);
  expect(row.refresh_lease_owner).toBeNull();
  expect(row.last_refreshed_at).toBeNull();
});

test('no token or secret reaches a log line', async () => {
  const users = await seedUsers(world, { count: 60, legacyPlaintext: (i) => i % 2 === 0 });
  world.amazon.revoke(users[0].userId);
  world.amazon.setKnobs({ rate5xx: 0.2, malformedRate: 0.1 });
  const rt = runtime();
  await runTokenRefresh(deps(world.dataApi(), rt));
  const text = rt.logger.text();
  expect(rt.logger.lines.length).toBeGreaterThan(5);
  for (const u of users) {
    for (const secret of [u.refreshToken, u.accessToken, ...world.amazon.accessTokens(u.userId)])
      expect(text).not.toContain(secret);
  }
  expect(text).not.toContain(world.amazon.clientSecret);
  const stored = await world.admin.query<{ access_token: string; refresh_token: string }>(
    `SELECT access_token, refresh_token FROM oauth_tokens`,
  );
  for (const r of stored.rows) {
    expect(text).not.toContain(r.access_token);
    expect(text).not.toContain(r.refresh_token);
  }
});

describe.each(PATHS)('%s path', (_path, database) => {
  test('a stored refresh token that cannot be decrypted turns refresh off for its connection, counted as a failure, with its backoff', async () => {
    const [broken, fine] = await seedUsers(world, { count: 2 });
    const corrupt = `enc:v1:${Buffer.from('not a ciphertext of this key, at all').toString('base64')}`;
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_token = :token, refresh_failure_count = 2 WHERE user_id = :id::uuid`,
      { token: corrupt, id: broken.userId },
    );
    const rt = runtime();
    const at = new Date(); // the run's clock, held still

    const summary = await runTokenRefresh({
      db: database(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
      now: () => at,
    });

    expect(summary).toMatchObject({ claimed: 2, refreshed: 1, failed: 1 });
    expect(world.amazon.counters.refreshCalls(broken.refreshToken)).toBe(0);
    const row = await token(broken.userId);
    expect(row).toMatchObject({
      proactive_refresh_enabled: false,
      refresh_failure_count: 3,
      refresh_lease_owner: null,
    });
    expect(row.last_refresh_error).toMatch(
      /^Stored refresh token is unreadable \(.+\); the user must reconnect Amazon$/,
    );
    // The third failure in a row: 120 to 240 s (1 min doubling, half of it jittered).
    expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThanOrEqual(at.getTime() + 120_000);
    expect(row.next_refresh_attempt_at!.getTime()).toBeLessThanOrEqual(at.getTime() + 240_000);
    expect((await token(fine.userId)).proactive_refresh_enabled).toBe(true);
    expect(rt.logger.text()).not.toContain(corrupt);
  });

  test('the fifth definite refusal in a row turns refresh off; the fourth does not, nor do earlier 5xx failures', async () => {
    const [fifth, fourth] = await seedUsers(world, { count: 2 });
    // Both have failed four times in a row; `fifth` was refused four times, `fourth` three
    // times and once with a 5xx (which is not a refusal).
    for (const [u, refusals] of [
      [fifth, 4],
      [fourth, 3],
    ] as const)
      await world.admin.query(
        `UPDATE oauth_tokens SET refresh_failure_count = 4, refresh_refusal_count = :refusals WHERE user_id = :id::uuid`,
        { refusals, id: u.userId },
      );

    // Two tokens refused for the application's credentials: fewer in a row than stop the run.
    const summary = await runTokenRefresh({
      db: database(),
      lwa: wrongCredentials(),
      cipher: world.cipher,
      settings: { concurrency: 1 },
      ...runtime(),
    });

    expect(summary).toMatchObject({ claimed: 2, failed: 2, reauthRequired: 1 });
    expect(await token(fifth.userId)).toMatchObject({
      refresh_failure_count: 5,
      refresh_refusal_count: 5,
      proactive_refresh_enabled: false,
    });
    expect((await token(fifth.userId)).last_refresh_error).toBe(
      'invalid_client: Login with Amazon refused the refresh (5 refusals in a row: proactive refresh turned off)',
    );
    expect(await token(fourth.userId)).toMatchObject({
      refresh_failure_count: 5,
      refresh_refusal_count: 4,
      proactive_refresh_enabled: true,
    });
  });

  test('a connection the web app reconnects after five refusals starts a new streak: its next refusal is the first, and refresh stays on', async () => {
    const [u] = await seedUsers(world, { count: 1 });
    // Turned off by five refusals in a row (as the test above leaves it).
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_failure_count = 5, refresh_refusal_count = 5, proactive_refresh_enabled = false,
              last_refresh_error = 'invalid_client: refused' WHERE user_id = :id::uuid`,
      { id: u.userId },
    );
    // The web app stores the new grant's refresh token on the row itself (not api.store_connection):
    // the re-connection trigger turns refresh on and clears both counts.
    await world.admin.query(`UPDATE oauth_tokens SET refresh_token = :token WHERE user_id = :id::uuid`, {
      id: u.userId,
      token: world.cipher.encrypt(`${u.refreshToken}-reconnected`, oauthTokenBinding(u, 'refresh_token')),
    });
    expect(await token(u.userId)).toMatchObject({
      proactive_refresh_enabled: true,
      refresh_failure_count: 0,
      refresh_refusal_count: 0,
      last_refresh_error: null,
    });

    const summary = await runTokenRefresh({
      db: database(),
      lwa: wrongCredentials(),
      cipher: world.cipher,
      settings: { concurrency: 1 },
      ...runtime(),
    });

    expect(summary).toMatchObject({ claimed: 1, failed: 1, reauthRequired: 0 });
    expect(await token(u.userId)).toMatchObject({
      refresh_failure_count: 1,
      refresh_refusal_count: 1,
      proactive_refresh_enabled: true,
    });
  });

  test('the run stops with a ClientCredentialsError that names the code and the streak', async () => {
    await seedUsers(world, { count: 3 });
    await expect(
      runTokenRefresh({
        db: database(),
        lwa: wrongCredentials(),
        cipher: world.cipher,
        settings: { concurrency: 1 },
        ...runtime(),
      }),
    ).rejects.toMatchObject({ name: 'ClientCredentialsError', code: 'invalid_client', tokensInARow: 3 });
  });

  test('a 429 pauses its region for the rest of the run and for the next runs: no more tokens of it are claimed', async () => {
    await seedUsers(world, { count: 4, regions: () => ['NA'] });
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 100 }, 'lwa');
    // 60 s left: a call may wait 45 s, less than the 100 s Amazon asked for.
    const deadline = Date.now() + 60_000;
    const calls = world.amazon.counters.arrivals('lwa', 'NA').length;
    // Each run as a new container would make it: fresh limiters, the same database.
    const run = () =>
      runTokenRefresh({
        db: database(),
        lwa: world.lwa(),
        cipher: world.cipher,
        settings: { batchSize: 1, concurrency: 1 },
        ...runtime({ remainingTimeMs: () => deadline - Date.now() }),
      });

    // The first token got the 429; the second was claimed before it came (the pipeline claims
    // one batch ahead) and is given back without a call; no other token of the region is claimed.
    expect(await run()).toMatchObject({ claimed: 2, rateLimited: 1, released: 1 });
    expect(world.amazon.counters.arrivals('lwa', 'NA')).toHaveLength(calls + 1);

    // A later run finds the pause in the database and claims nothing in the region until it
    // has passed, even though Amazon would answer now.
    world.amazon.setKnobs({ rate429: 0 }, 'lwa');
    expect(await run()).toMatchObject({ claimed: 0, released: 0 });
    expect(world.amazon.counters.arrivals('lwa', 'NA')).toHaveLength(calls + 1);
  });

  test('a legacy plaintext refresh token that Amazon does not replace is stored encrypted', async () => {
    const [u] = await seedUsers(world, { count: 1, legacyPlaintext: () => true, refreshTokenMode: 'omit' });
    expect((await token(u.userId)).refresh_token).toBe(u.refreshToken);

    expect(
      await runTokenRefresh({ db: database(), lwa: world.lwa(), cipher: world.cipher, ...runtime() }),
    ).toMatchObject({ refreshed: 1 });

    const stored = (await token(u.userId)).refresh_token;
    expect(world.cipher.isCurrent(stored)).toBe(true);
    expect(await world.cipher.decrypt(stored, oauthTokenBinding(u, 'refresh_token'))).toBe(u.refreshToken);
  });

  test('a write-back that fails transiently when no time is left is not retried: the result is counted unwritten and logged', async () => {
    const [u] = await seedUsers(world, { count: 1 });
    let left = 600_000;
    const db = failingOnce(database(), /jsonb_to_recordset\(:results/, () => {
      // The write-back starts with 900 ms left: less than the second the run keeps for itself.
      left = 900;
      return new DatabaseError('could not serialize access due to concurrent update', { code: '40001' });
    });
    const rt = runtime({ remainingTimeMs: () => left });

    const summary = await runTokenRefresh({ db, lwa: world.lwa(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ claimed: 1, refreshed: 0, notWritten: 1 });
    expect(rt.logger.lines.filter((l) => l.message === 'Could not write an outcome back')).toEqual([
      {
        level: 'error',
        message: 'Could not write an outcome back',
        attributes: {
          tokenId: expect.any(String),
          userId: u.userId,
          outcome: 'success',
          error: expect.stringContaining('could not serialize access'),
        },
      },
    ]);
    expect((await token(u.userId)).refresh_lease_owner).not.toBeNull();
  });

  test('rate-limit usage that cannot be recorded is logged, and the run still reports', async () => {
    await seedUsers(world, { count: 1 });
    const db = failingOnce(database(), /INSERT INTO rate_limit_tracking/, () => new DatabaseError('disk full'));
    const rt = runtime();

    expect(await runTokenRefresh({ db, lwa: world.lwa(), cipher: world.cipher, ...rt })).toMatchObject({
      refreshed: 1,
    });
    expect(rt.logger.lines.filter((l) => l.message === 'Could not record rate-limit usage')).toEqual([
      {
        level: 'warn',
        message: 'Could not record rate-limit usage',
        attributes: { error: 'DatabaseError: disk full' },
      },
    ]);
  });

  test('the dry run reports the token endpoint’s pauses in force at its clock, counts only its own calls, and says what it did', async () => {
    await seedUsers(world, { count: 3 });
    // Retry-After: 600 s from EU's token endpoint and from FE's Ads endpoint.
    const usage = new RateLimitUsageRecorder();
    usage.limitHit(endpointKey('lwa', 'EU'), null, 600, new Date());
    usage.limitHit(endpointKey('ads', 'FE'), null, 600, new Date());
    await recordRateLimitUsage(world.admin, usage.drain());
    const db = database();
    await db.query('SELECT 1');
    const callsBefore = db.callCounts().total;
    const rt = runtime();

    const preview = await previewTokenRefresh({ db, ...rt });

    expect(preview.pausedRegions).toEqual(['EU']);
    expect(preview.databaseCalls).toBe(db.callCounts().total - callsBefore);
    expect(preview.databaseCalls).toBeGreaterThan(0);
    expect(rt.logger.lines).toEqual([
      {
        level: 'info',
        message: 'Token refresh dry run: nothing claimed, written or sent to Amazon',
        attributes: { ...preview },
      },
    ]);
    // An hour from now (the injected clock), EU's pause is over.
    const later = await previewTokenRefresh({ db, ...runtime(), now: () => new Date(Date.now() + 3600_000) });
    expect(later.pausedRegions).toEqual([]);
  });

  test('a run whose lease expired and was taken over writes nothing back late', async () => {
    // 'omit': Amazon keeps the refresh token, so the stored value (and its md5) stays the
    // same across the second run's refresh: only the lease owner tells the two runs apart.
    const [user] = await seedUsers(world, { count: 1, refreshTokenMode: 'omit', accountsDueInSeconds: 3600 });
    const lateOwner = randomUUID();
    const [claimed] = await claimDueTokens(world.admin, {
      owner: lateOwner,
      windowSeconds: 1800,
      leaseSeconds: 60,
      limit: 1,
      pausedRegions: [],
    });
    expect(claimed.userId).toBe(user.userId);
    // The late run stalls past its lease; another run claims the token again and refreshes it.
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_expires_at = now() - interval '1 second' WHERE user_id = :id::uuid`,
      { id: user.userId },
    );
    expect(await runTokenRefresh(deps(database()))).toMatchObject({ claimed: 1, refreshed: 1 });
    const settled = await token(user.userId);
    expect(settled).toMatchObject({ refresh_lease_owner: null, refresh_failure_count: 0, last_refresh_error: null });

    // The late run writes back what it had: a success from the old call …
    const late: TokenResult[] = [
      {
        kind: 'success',
        result: {
          token: claimed,
          accessToken: world.cipher.encrypt('Atza|late', oauthTokenBinding(claimed, 'access_token')),
          refreshToken: world.cipher.encrypt('Atzr|late', oauthTokenBinding(claimed, 'refresh_token')),
          expiresAt: new Date(Date.now() + 3600_000),
        },
      },
    ];
    await saveResults(database(), lateOwner, late);
    expect(await token(user.userId)).toEqual(settled);
    // … or a failure that would turn refresh off and flag the accounts.
    const lateFailure: TokenResult = {
      kind: 'failure',
      reauth: 'invalid_grant: stale',
      result: {
        token: claimed,
        countsAsFailure: true,
        disable: true,
        error: 'invalid_grant: stale',
        nextAttemptAt: new Date(Date.now() + 3600_000),
      },
    };
    await saveResults(database(), lateOwner, [lateFailure]);
    expect(await token(user.userId)).toEqual(settled);
    expect(await accountStatuses(user.userId)).toEqual(['completed', 'completed']);

    // And while the other run still holds its lease, the late write cannot touch it either.
    const holder = randomUUID();
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = :o::uuid, refresh_lease_expires_at = now() + interval '5 minutes' WHERE user_id = :id::uuid`,
      { o: holder, id: user.userId },
    );
    const held = await token(user.userId);
    await saveResults(database(), lateOwner, [...late, lateFailure, { kind: 'released', token: claimed }]);
    expect(await token(user.userId)).toEqual(held);
  });

  test('a stale invalid_grant for a token the user replaced during the run changes nothing', async () => {
    const [user, other] = await seedUsers(world, { count: 2, accountsDueInSeconds: 3600 });
    const lwa = world.lwa();
    const newRefresh = `Atzr|reconnected-${randomUUID()}`;
    // Amazon answers invalid_grant for the old token, while the user reconnects in the web app.
    const racing = {
      refresh: async (request: Parameters<typeof lwa.refresh>[0]) => {
        if (request.refreshToken === user.refreshToken) {
          world.amazon.revoke(user.userId);
          await world.admin.query(
            `UPDATE oauth_tokens SET access_token = :a, refresh_token = :r, expires_at = now() + interval '10 minutes' WHERE user_id = :id::uuid`,
            {
              a: world.cipher.encrypt('Atza|new', oauthTokenBinding(user, 'access_token')),
              r: world.cipher.encrypt(newRefresh, oauthTokenBinding(user, 'refresh_token')),
              id: user.userId,
            },
          );
        }
        return lwa.refresh(request);
      },
    };
    const summary = await runTokenRefresh(deps(database(), { lwa: racing }));
    expect(summary).toMatchObject({ claimed: 2, refreshed: 1, failed: 1 });
    const row = await token(user.userId);
    expect(await world.cipher.decrypt(row.refresh_token, oauthTokenBinding(user, 'refresh_token'))).toBe(newRefresh);
    expect(row).toMatchObject({
      proactive_refresh_enabled: true,
      refresh_failure_count: 0,
      last_refresh_error: null,
      next_refresh_attempt_at: null,
      refresh_lease_owner: null,
    });
    expect(await accountStatuses(user.userId)).not.toContain('reauth_required');
    expect((await token(other.userId)).last_refreshed_at).not.toBeNull();
  });

  test('expires_in outside 60 s … 24 h is a malformed answer for that token alone', async () => {
    const users = await seedUsers(world, { count: 12 });
    const [huge, tenYears] = users;
    const before = await token(huge.userId);
    // Amazon's answer for two of the tokens carries a lifetime no token has.
    const lifetimes = new Map([
      [huge.refreshToken, 9e12],
      [tenYears.refreshToken, 10 * 365 * 86_400],
    ]);
    const fetchWithLifetimes: typeof fetch = async (input, init) => {
      const response = await fetch(input, init);
      const form = new URLSearchParams(typeof init?.body === 'string' ? init.body : '');
      const lifetime = lifetimes.get(form.get('refresh_token') ?? '');
      if (lifetime === undefined || response.status !== 200) return response;
      const body = (await response.json()) as Record<string, unknown>;
      return new Response(JSON.stringify({ ...body, expires_in: lifetime }), {
        status: 200,
        headers: { 'content-type': 'application/json' },
      });
    };
    const lwa = new LwaClient({
      clientId: world.amazon.clientId,
      clientSecret: world.amazon.clientSecret,
      tokenUrl: world.amazon.lwaTokenUrl,
      fetch: fetchWithLifetimes,
    });
    const summary = await runTokenRefresh(deps(database(), { lwa }));
    expect(summary).toMatchObject({ claimed: 12, refreshed: 10, failed: 2 });
    for (const u of [huge, tenYears]) {
      const row = await token(u.userId);
      expect(row.last_refresh_error).toMatch(/^malformed: .*expires_in/);
      expect(row).toMatchObject({
        refresh_failure_count: 1,
        refresh_lease_owner: null,
        proactive_refresh_enabled: true,
      });
      expect(row.expires_at).toEqual(before.expires_at);
      expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThan(Date.now());
    }
    for (const u of users.slice(2)) expect((await token(u.userId)).last_refreshed_at).not.toBeNull();
  });

  test('invalid_client on one token backs that token off; the run goes on', async () => {
    const users = await seedUsers(world, { count: 10 });
    const [odd] = users;
    const lwa = world.lwa();
    const oneRejected = {
      refresh: async (request: Parameters<typeof lwa.refresh>[0]) => {
        if (request.refreshToken === odd.refreshToken)
          throw new PermanentAuthError(request.itemId, request.region, 401, 'invalid_client');
        return lwa.refresh(request);
      },
    };
    const summary = await runTokenRefresh(deps(database(), { lwa: oneRejected }));
    expect(summary).toMatchObject({ claimed: 10, refreshed: 9, failed: 1 });
    const row = await token(odd.userId);
    expect(row.last_refresh_error).toMatch(/^invalid_client/);
    expect(row).toMatchObject({ refresh_failure_count: 1, refresh_lease_owner: null, proactive_refresh_enabled: true });
    expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThan(Date.now());
    // Backed off: the next run does not take it first (or at all) and does not stop.
    const next = await runTokenRefresh(deps(database(), { lwa: oneRejected }));
    expect(next.claimed).toBe(0);
    expect(world.amazon.counters.refreshCalls(odd.refreshToken)).toBe(0);
  });

  test('a result the database refuses fails only its own token', async () => {
    await seedUsers(world, { count: 20 });
    const owner = randomUUID();
    const claimed = await claimDueTokens(world.admin, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: 60,
      limit: 20,
      pausedRegions: [],
    });
    expect(claimed).toHaveLength(20);
    const results: TokenResult[] = claimed.map((t, i) => ({
      kind: 'failure',
      result: {
        token: t,
        countsAsFailure: true,
        disable: false,
        // PostgreSQL refuses NUL in text: one poisoned row in the batch.
        error: i === 7 ? 'transient: bad\u0000byte' : 'transient: http_5xx (HTTP 503)',
        nextAttemptAt: new Date(Date.now() + 600_000),
      },
    }));
    const { rejected } = await saveResults(database(), owner, results);
    expect(rejected.map((r) => r.token.id)).toEqual([claimed[7].id]);
    for (const [i, t] of claimed.entries()) {
      const row = await token(t.userId);
      expect(row.refresh_lease_owner).toBeNull();
      if (i === 7) expect(row).toMatchObject({ refresh_failure_count: 0, last_refresh_error: null });
      else
        expect(row).toMatchObject({ refresh_failure_count: 1, last_refresh_error: 'transient: http_5xx (HTTP 503)' });
    }
  });

  test('a refused result is counted as given back, not refreshed; the other tokens are refreshed', async () => {
    await seedUsers(world, { count: 12 });
    const { rows: ids } = await world.admin.query<{ id: string; user_id: string }>(
      `SELECT id, user_id FROM oauth_tokens ORDER BY id`,
    );
    const poison = ids[5];
    const rt = runtime();

    const summary = await runTokenRefresh({
      db: refusingResultOf(database(), poison.id),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
    });

    expect(summary).toMatchObject({ claimed: 12, refreshed: 11, released: 1, rejectedByDatabase: 1, notWritten: 0 });
    expect(rt.metrics.totals[METRIC_NAMES.tokensRefreshed]).toBe(11);
    const { rows } = await world.admin.query<{
      id: string;
      last_refreshed_at: Date | null;
      refresh_lease_owner: string | null;
    }>(`SELECT id, last_refreshed_at, refresh_lease_owner FROM oauth_tokens`);
    for (const r of rows) {
      expect(r.refresh_lease_owner).toBeNull();
      if (r.id === poison.id) expect(r.last_refreshed_at).toBeNull();
      else expect(r.last_refreshed_at).not.toBeNull();
    }
    expect(rt.logger.lines.filter((l) => l.level === 'error')).toEqual([
      {
        level: 'error',
        message: 'Token refresh result refused by the database; its lease was given back',
        attributes: { tokenId: poison.id, userId: poison.user_id, error: 'invalid input syntax' },
      },
    ]);
  });
});

test('the application’s credentials rejected for several tokens in a row stops the run; those tokens are backed off', async () => {
  const users = await seedUsers(world, { count: 10 });
  const before = new Map(await Promise.all(users.map(async (u) => [u.userId, await token(u.userId)] as const)));
  const badClient = new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: 'not-the-secret',
    tokenUrl: world.amazon.lwaTokenUrl,
  });
  await expect(
    runTokenRefresh(deps(world.dataApi(), { lwa: badClient, settings: { concurrency: 1 } })),
  ).rejects.toThrow(/invalid_client/);
  let backedOff = 0;
  for (const u of users) {
    const row = await token(u.userId);
    expect(row).toMatchObject({ proactive_refresh_enabled: true, refresh_lease_owner: null });
    expect(row.refresh_token).toBe(before.get(u.userId)!.refresh_token);
    if (row.refresh_failure_count === 1) {
      backedOff += 1;
      expect(row.last_refresh_error).toMatch(/^invalid_client/);
      expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThan(Date.now());
    } else {
      expect(row).toEqual(before.get(u.userId));
    }
  }
  expect(backedOff).toBe(CLIENT_ERROR_STOP_AFTER);
});
