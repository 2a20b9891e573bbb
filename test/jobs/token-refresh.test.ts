import { randomUUID } from 'node:crypto';
import { runTokenRefresh, TokenRefreshDeps } from '../../lambda/token-refresh/core';
import { claimDueTokens } from '../../lambda/token-refresh/store';
import { Database } from '../../lambda/shared/db';
import { JobWorld, runtime, seedUsers, useJobWorld } from './fixture';

let world: JobWorld;
useJobWorld((w) => (world = w));

function deps(db: Database, extra: Partial<TokenRefreshDeps> = {}): TokenRefreshDeps {
  return { db, lwa: world.lwa(), cipher: world.cipher, ...runtime(), settings: { concurrency: 32 }, ...extra };
}

interface TokenRow {
  user_id: string;
  access_token: string;
  refresh_token: string;
  expires_at: Date;
  proactive_refresh_enabled: boolean;
  refresh_failure_count: number;
  last_refresh_error: string | null;
  next_refresh_attempt_at: Date | null;
  refresh_lease_owner: string | null;
  last_refreshed_at: Date | null;
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

  const runs = await Promise.all(
    [0, 1, 2, 3].map(() => runTokenRefresh(deps(world.dataApi(), { settings: { batchSize: 200, concurrency: 16 } }))),
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
    expect(row.access_token.startsWith('enc:v1:')).toBe(true);
    expect(world.cipher.decrypt(row.access_token)).toBe(world.amazon.accessTokens(u.userId).at(-1));
    expect(world.cipher.decrypt(row.refresh_token)).toBe(u.refreshToken);
  }
  for (const u of off) expect(rows.get(u.userId)!.proactive_refresh_enabled).toBe(false);
});

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
  for (const u of users) expect(world.cipher.decrypt(rows.get(u.userId)!.refresh_token)).toBe(u.refreshToken);
});

test('faults at 20% 5xx, 10% 429, 5% hangs, 5% malformed: every token ends refreshed or with its failure recorded', async () => {
  const users = await seedUsers(world, { count: 400 });
  world.amazon.setKnobs({ rate5xx: 0.2, rate429: 0.1, retryAfterSeconds: 1, hangRate: 0.05, malformedRate: 0.05 });
  const rt = runtime();
  const summary = await runTokenRefresh(deps(world.dataApi(), { lwa: world.lwa(300), ...rt }));

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
  for (const l of limits) if (l.limit_hit_count > 0) expect(l.retry_after_seconds).toBe(1);
});

test('a token whose refresh keeps failing with 5xx is backed off but never turned off, and its accounts are untouched', async () => {
  // Amazon's 5xx says nothing about the token (outcome.ts): four failures so far, a fifth now.
  const [user] = await seedUsers(world, { count: 1, accountsDueInSeconds: 3600 });
  await world.admin.query(`UPDATE oauth_tokens SET refresh_failure_count = 4 WHERE user_id = :id::uuid`, {
    id: user.userId,
  });
  world.amazon.setKnobs({ rate5xx: 1 });
  const before = Date.now();
  const summary = await runTokenRefresh(deps(world.dataApi()));
  expect(summary).toMatchObject({ failed: 1, reauthRequired: 0 });
  const row = (await tokens()).get(user.userId)!;
  expect(row).toMatchObject({ proactive_refresh_enabled: true, refresh_failure_count: 5 });
  expect(row.last_refresh_error).toMatch(/^transient: /);
  expect(row.last_refresh_error).not.toMatch(/in a row/);
  // The fifth failure in a row: 8 to 16 minutes away.
  expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThanOrEqual(before + 480_000);
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
    { a: world.cipher.encrypt('Atza|new'), r: world.cipher.encrypt(newRefresh), id: revoked.userId },
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
  // A run that claimed ten tokens and died: its lease (2 s here) is all that is left of it.
  const dead = await claimDueTokens(world.admin, {
    owner: randomUUID(),
    windowSeconds: 1800,
    leaseSeconds: 2,
    limit: 10,
    pausedRegions: [],
  });
  expect(dead).toHaveLength(10);

  const next = await runTokenRefresh(deps(world.dataApi()));
  expect(next.refreshed).toBe(10); // the leased ones are left alone
  for (const t of dead)
    expect(world.amazon.counters.refreshCalls(users.find((u) => u.userId === t.userId)!.refreshToken)).toBe(0);

  await new Promise((r) => setTimeout(r, 2100));
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
    expect(row.refresh_token.startsWith('enc:v1:')).toBe(true);
    expect(world.cipher.decrypt(row.refresh_token)).toBe(u.refreshToken);
  }
  for (const u of rotating)
    expect(world.cipher.decrypt(rows.get(u.userId)!.refresh_token)).toBe(world.amazon.currentRefreshToken(u.userId));
  for (const u of omitting) expect(world.cipher.decrypt(rows.get(u.userId)!.refresh_token)).toBe(u.refreshToken);
});

test('a token the web app replaces during a refresh is not overwritten with the old grant’s values', async () => {
  const [user] = await seedUsers(world, { count: 1 });
  const replaced = world.cipher.encrypt('Atzr|replaced-by-web-app');
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
