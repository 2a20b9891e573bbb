import { AccountSyncDeps, REAUTH_MESSAGE, runAccountSync } from '../../lambda/account-sync/core';
import { MISSING_PROFILE_MESSAGE } from '../../lambda/account-sync/store';
import { parseSyncEvent, InvalidSyncEventError } from '../../lambda/account-sync/handler';
import { Database } from '../../lambda/shared/db';
import { fakeProfile } from '../../local/amazon/profiles';
import { JobWorld, runtime, seedUsers, useJobWorld } from './fixture';

let world: JobWorld;
useJobWorld((w) => (world = w));

function deps(db: Database, extra: Partial<AccountSyncDeps> = {}): AccountSyncDeps {
  return { db, ads: world.ads(), cipher: world.cipher, ...runtime(), settings: { concurrency: 32 }, ...extra };
}

interface AccountRow {
  id: string;
  user_id: string;
  amazon_account_id: string;
  status: string;
  metadata: Record<string, unknown>;
  sync_status: string;
  sync_error_message: string | null;
  sync_retry_count: number;
  next_sync_at: Date;
}

async function accounts(userId?: string): Promise<AccountRow[]> {
  const { rows } = await world.admin.query<AccountRow>(
    `SELECT * FROM user_accounts WHERE :userId::uuid IS NULL OR user_id = :userId::uuid ORDER BY amazon_account_id`,
    { userId: userId ?? null },
  );
  return rows;
}

async function history(): Promise<
  Array<{
    user_account_id: string | null;
    sync_type: string;
    sync_status: string;
    accounts_synced: number;
    accounts_failed: number;
    error_details: Record<string, unknown> | null;
    metadata: Record<string, unknown>;
    completed_at: Date | null;
  }>
> {
  return (await world.admin.query(`SELECT * FROM account_sync_history ORDER BY started_at`)).rows as never;
}

test('users with no account yet get one row per profile, with the metadata keys of the account contract', async () => {
  const users = await seedUsers(world, { count: 3, profilesPerUser: 2 });
  const before = Date.now();
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary).toMatchObject({
    connectionsClaimed: 3,
    connectionsSynced: 3,
    accountsSynced: 6,
    connectionsFailed: 0,
  });

  for (const u of users) {
    const rows = await accounts(u.userId);
    expect(rows.map((r) => r.amazon_account_id)).toEqual(u.profiles.map((p) => p.profileId).sort());
    for (const row of rows) {
      const p = u.profiles.find((x) => x.profileId === row.amazon_account_id)!;
      expect(row).toMatchObject({
        status: 'active',
        sync_status: 'completed',
        sync_retry_count: 0,
        sync_error_message: null,
      });
      expect(row.metadata).toEqual({
        marketplaceStringId: p.accountInfo.marketplaceStringId,
        countryCode: p.countryCode,
        currencyCode: p.currencyCode,
        timezone: p.timezone,
        accountType: p.accountInfo.type,
        accountSubType: null,
        accountId: p.accountInfo.id,
        accountName: p.accountInfo.name,
        validPaymentMethod: p.accountInfo.validPaymentMethod,
        dailyBudget: p.dailyBudget,
        region: u.region,
      });
      // Next regular sync in about six hours (±5 % jitter).
      expect(row.next_sync_at.getTime()).toBeGreaterThan(before + 5.5 * 3600_000);
      expect(row.next_sync_at.getTime()).toBeLessThan(Date.now() + 6.5 * 3600_000);
    }
  }
  const h = await history();
  expect(h).toHaveLength(3);
  for (const row of h) {
    expect(row).toMatchObject({
      sync_type: 'scheduled',
      sync_status: 'success',
      accounts_synced: 2,
      accounts_failed: 0,
      user_account_id: null,
    });
    expect(users.map((u) => u.userId)).toContain(row.metadata.userId);
    expect(row.completed_at).not.toBeNull();
  }

  // Nothing is due any more: a second run claims no one and calls Amazon for no one.
  const again = await runAccountSync(deps(world.dataApi()));
  expect(again.connectionsClaimed).toBe(0);
  for (const u of users) expect(world.amazon.counters.profileCalls(u.userId)).toBe(1);
});

test('only due users are synced; users whose token needs re-authorisation are not called and their accounts say why', async () => {
  const due = await seedUsers(world, { count: 4, accountsDueInSeconds: -60 });
  const notDue = await seedUsers(world, { count: 4, accountsDueInSeconds: 3600 });
  const revoked = await seedUsers(world, { count: 2, accountsDueInSeconds: -60, refreshEnabled: () => false });
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary).toMatchObject({ connectionsClaimed: 4, connectionsSynced: 4, reauthFlagged: 4 });
  for (const u of due) expect(world.amazon.counters.profileCalls(u.userId)).toBe(1);
  for (const u of [...notDue, ...revoked]) expect(world.amazon.counters.profileCalls(u.userId)).toBe(0);
  for (const u of revoked) {
    for (const row of await accounts(u.userId))
      expect(row).toMatchObject({ sync_status: 'reauth_required', sync_error_message: REAUTH_MESSAGE });
  }
  for (const u of due) {
    const h = (await history()).filter((r) => r.metadata.userId === u.userId);
    expect(h).toHaveLength(1);
    expect(h[0].user_account_id).not.toBeNull(); // a user with accounts: the row points at one of them
  }
});

test('a user whose access token is about to expire waits for the refresh job', async () => {
  const [soon] = await seedUsers(world, { count: 1, expiresInSeconds: 30 });
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary.connectionsClaimed).toBe(0);
  expect(world.amazon.counters.profileCalls(soon.userId)).toBe(0);
});

test('accounts Amazon stops returning are kept but inactive, and come back when the profile does', async () => {
  const [u] = await seedUsers(world, { count: 1, profilesPerUser: 3 });
  await runAccountSync(deps(world.dataApi()));
  const [gone] = u.profiles;

  // Amazon now lists two of the three profiles, plus a new one.
  const added = fakeProfile(u.region);
  const amazon = world.amazon;
  amazon.removeProfiles(u.userId, [gone.profileId]);
  amazon.addProfiles(u.userId, [added]);
  await world.admin.query(
    `UPDATE user_accounts SET next_sync_at = now() - interval '1 minute' WHERE user_id = :id::uuid`,
    { id: u.userId },
  );
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary).toMatchObject({ connectionsSynced: 1, accountsSynced: 3, accountsMissing: 1 });

  const rows = await accounts(u.userId);
  expect(rows).toHaveLength(4);
  const missing = rows.find((r) => r.amazon_account_id === gone.profileId)!;
  expect(missing).toMatchObject({
    status: 'inactive',
    sync_status: 'completed',
    sync_error_message: MISSING_PROFILE_MESSAGE,
  });
  expect(typeof missing.metadata.missingFromAmazonSince).toBe('string');
  expect(missing.metadata.accountName).toBe(gone.accountInfo.name); // what we knew is kept
  expect(rows.find((r) => r.amazon_account_id === added.profileId)).toMatchObject({
    status: 'active',
    sync_status: 'completed',
  });

  // The profile reappears.
  amazon.addProfiles(u.userId, [gone]);
  await world.admin.query(
    `UPDATE user_accounts SET next_sync_at = now() - interval '1 minute' WHERE user_id = :id::uuid`,
    { id: u.userId },
  );
  await runAccountSync(deps(world.dataApi()));
  const back = (await accounts(u.userId)).find((r) => r.amazon_account_id === gone.profileId)!;
  expect(back).toMatchObject({ status: 'active', sync_status: 'completed', sync_error_message: null });
  expect(back.metadata.missingFromAmazonSince).toBeUndefined();
});

test('faults at 20% 5xx, 10% 429, 5% hangs, 5% malformed: every user ends synced or with its failure recorded', async () => {
  const users = await seedUsers(world, { count: 300, accountsDueInSeconds: -60 });
  world.amazon.setKnobs({ rate5xx: 0.2, rate429: 0.1, retryAfterSeconds: 1, hangRate: 0.05, malformedRate: 0.05 });
  const started = Date.now();
  const summary = await runAccountSync(deps(world.dataApi(), { ads: world.ads(300) }));

  let synced = 0;
  let failed = 0;
  const h = await history();
  for (const u of users) {
    // Nobody is called twice. A call that timed out on the client (a hang, or a busy machine)
    // may never have reached the fake, so a transient failure may show no call at all.
    const calls = world.amazon.counters.profileCalls(u.userId);
    expect(calls).toBeLessThanOrEqual(1);
    const rows = await accounts(u.userId);
    const userHistory = h.filter((r) => r.metadata.userId === u.userId);
    expect(userHistory).toHaveLength(1);
    if (rows.every((r) => r.sync_status === 'completed')) {
      synced += 1;
      expect(calls).toBe(1);
      expect(userHistory[0]).toMatchObject({ sync_status: 'success', accounts_synced: 2, accounts_failed: 0 });
    } else {
      failed += 1;
      for (const r of rows) {
        expect(r.sync_status).toBe('failed');
        expect(r.sync_retry_count).toBe(1);
        expect(r.sync_error_message).toMatch(/^(transient|malformed|rate_limited): /);
        if (!r.sync_error_message?.startsWith('transient')) expect(calls).toBe(1); // Amazon answered
        expect(r.next_sync_at.getTime()).toBeGreaterThan(started + 150_000); // backoff: at least half of 5 min
      }
      expect(userHistory[0]).toMatchObject({ sync_status: 'failed', accounts_synced: 0, accounts_failed: 2 });
      expect(userHistory[0].error_details).toMatchObject({
        class: expect.stringMatching(/transient|malformed|rate_limited/),
        userId: u.userId,
      });
    }
  }
  expect(synced + failed).toBe(300);
  expect(synced).toBeGreaterThan(100);
  expect(failed).toBeGreaterThan(50);
  expect(summary).toMatchObject({ connectionsSynced: synced, connectionsFailed: failed });
  // Per endpoint: every request and every 429; per user: a row only for users Amazon throttled.
  const { rows: limits } = await world.admin.query<{
    endpoint_hits: number;
    endpoint_requests: number;
    users: number;
    user_hits: number;
  }>(
    `SELECT coalesce(sum(limit_hit_count) FILTER (WHERE user_id IS NULL), 0)::int AS endpoint_hits,
            coalesce(sum(request_count) FILTER (WHERE user_id IS NULL), 0)::int AS endpoint_requests,
            count(*) FILTER (WHERE user_id IS NOT NULL)::int AS users,
            coalesce(sum(limit_hit_count) FILTER (WHERE user_id IS NOT NULL), 0)::int AS user_hits
       FROM rate_limit_tracking WHERE endpoint LIKE 'ads-profiles:%'`,
  );
  expect(limits[0]).toEqual({
    endpoint_hits: summary.rateLimited,
    endpoint_requests: 300,
    users: summary.rateLimited,
    user_hits: summary.rateLimited,
  });
  expect(summary.rateLimited).toBeGreaterThan(5);
});

test('hostile strings in Amazon’s fields are stored verbatim, never executed', async () => {
  const hostile = [
    "Robert'); DROP TABLE user_accounts; --",
    '"; DELETE FROM users; --',
    ':userId ::uuid $1 ? ?| @> \\x00',
    'Ünïcödé 名前 🚀 \u202e\u200b',
    '{"json": "in a string", "nested": {"q": "\\"quoted\\""}}',
    '<script>alert(1)</script>',
  ];
  const [u] = await seedUsers(world, { count: 1, profilesPerUser: 0 });
  const profiles = hostile.map((name, i) =>
    fakeProfile(u.region, { timezone: `Zone/${name}`, accountInfo: { name, id: `A${i}${name}` } }),
  );
  world.amazon.addProfiles(u.userId, profiles);
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary.accountsSynced).toBe(hostile.length);
  const rows = await accounts(u.userId);
  for (const p of profiles) {
    const row = rows.find((r) => r.amazon_account_id === p.profileId)!;
    expect(row.metadata.accountName).toBe(p.accountInfo.name);
    expect(row.metadata.accountId).toBe(p.accountInfo.id);
    expect(row.metadata.timezone).toBe(p.timezone);
  }
  const { rows: counts } = await world.admin.query<{ users: number }>(`SELECT count(*)::int AS users FROM users`);
  expect(counts[0].users).toBe(1);
});

test('a manual sync takes one user now, due or not, and records its type', async () => {
  const [a, b] = await seedUsers(world, { count: 2, accountsDueInSeconds: 3600 });
  const summary = await runAccountSync(deps(world.dataApi()), parseSyncEvent({ syncType: 'manual', userId: a.userId }));
  expect(summary).toMatchObject({ syncType: 'manual', connectionsClaimed: 1, connectionsSynced: 1 });
  expect(world.amazon.counters.profileCalls(a.userId)).toBe(1);
  expect(world.amazon.counters.profileCalls(b.userId)).toBe(0);
  const h = await history();
  expect(h).toHaveLength(1);
  expect(h[0]).toMatchObject({ sync_type: 'manual', sync_status: 'success' });
  expect(parseSyncEvent({ 'detail-type': 'Scheduled Event', source: 'aws.events' })).toEqual({ syncType: 'scheduled' });
  expect(() => parseSyncEvent({ syncType: 'manual', userId: '1; DROP TABLE users' })).toThrow(InvalidSyncEventError);
});

test('overlapping invocations sync each user exactly once', async () => {
  const users = await seedUsers(world, { count: 600, accountsDueInSeconds: -60, profilesPerUser: 1 });
  world.amazon.setKnobs({ latencyMs: 5 });
  const runs = await Promise.all(
    [0, 1, 2].map(() => runAccountSync(deps(world.dataApi(), { settings: { batchSize: 100, concurrency: 16 } }))),
  );
  expect(runs.reduce((n, r) => n + r.connectionsSynced, 0)).toBe(600);
  for (const u of users) expect(world.amazon.counters.profileCalls(u.userId)).toBe(1);
  expect(await history()).toHaveLength(600);
  const { rows } = await world.admin.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM oauth_tokens WHERE sync_lease_owner IS NOT NULL`,
  );
  expect(rows[0].n).toBe(0);
});

test('access tokens of Amazon’s maximum size are claimed within the Data API’s 1 MiB response', async () => {
  await seedUsers(world, { count: 500, tokenChars: 2048, profilesPerUser: 1 });
  const summary = await runAccountSync(deps(world.dataApi(), { settings: { batchSize: 500 } }));
  expect(summary.connectionsSynced).toBe(500);
  expect(summary.batches).toBeGreaterThan(1);
});

test('at most 30 database calls per 1,000 users', async () => {
  await seedUsers(world, { count: 1000, accountsDueInSeconds: -60, profilesPerUser: 2 });
  const db = world.dataApi();
  const summary = await runAccountSync(deps(db));
  expect(summary.connectionsSynced).toBe(1000);
  expect(summary.databaseCalls).toBeLessThanOrEqual(30);
});

test('DatabaseResumingException at the start of a run delays it and loses nothing', async () => {
  const users = await seedUsers(world, { count: 50 });
  world.emulator.failNextCalls(2, 'DatabaseResumingException');
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary.connectionsSynced).toBe(50);
  for (const u of users) expect(await accounts(u.userId)).toHaveLength(2);
});

test('no token reaches a log line', async () => {
  const users = await seedUsers(world, { count: 40, accountsDueInSeconds: -60 });
  world.amazon.setKnobs({ rate5xx: 0.3, malformedRate: 0.2 });
  world.amazon.expireAccessTokens(users[0].userId);
  const rt = runtime();
  await runAccountSync(deps(world.dataApi(), rt));
  const text = rt.logger.text();
  expect(rt.logger.lines.some((l) => l.level === 'warn')).toBe(true);
  for (const u of users) for (const secret of [u.accessToken, u.refreshToken]) expect(text).not.toContain(secret);
});
