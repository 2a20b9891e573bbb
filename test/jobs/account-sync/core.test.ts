import { randomUUID } from 'node:crypto';
import { runAccountSync } from '../../../lambda/account-sync/core';
import type { AccountSyncDeps, ProfileLister } from '../../../lambda/account-sync/run-context';
import { previewAccountSync } from '../../../lambda/account-sync/preview';
import {
  ABANDONED_ATTEMPT_REASON,
  REAUTH_MESSAGE,
  ATTRIBUTION_PROFILE_MESSAGE,
  claimConnections,
  ConnectionSyncOutcome,
  MISSING_PROFILE_MESSAGE,
  saveOutcomes,
} from '../../../lambda/account-sync/store';
import { InvalidSyncEventError, parseSyncEvent } from '../../../lambda/account-sync/handler';
import { Database, DatabaseError } from '../../../lambda/shared/db';
import { oauthTokenBinding } from '../../../lambda/shared/token-crypto';
import { fakeProfile } from '../../../local/amazon/profiles';
import {
  accountSyncDeps,
  failingOnce,
  JobWorld,
  runtime,
  seedUsers,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { METRIC_NAMES } from '../../../lambda/shared/jobs/metrics';
import { JOB_TIMING, LEASE_MARGIN_SECONDS } from '../../../lambda/shared/jobs/timing';

/**
 * The account sync's run (lambda/account-sync/core.ts) against PostgreSQL 17 with every
 * migration and the fake Amazon: accounts per profile, due connections, faults, hostile and
 * poison data, lost leases, dead runs, very large users, pauses, the dry run.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
/** Both database paths, as the jobs' own login: the Data API (emulator) and node-postgres. */
const PATHS = useBothDatabasePaths(() => world);

/** A run's dependencies on `db` (32 calls at once); `extra` replaces any of them. */
function deps(db: Database, extra: Partial<AccountSyncDeps> = {}): AccountSyncDeps {
  return accountSyncDeps(world, db, { settings: { concurrency: 32 }, ...extra });
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

interface HistoryRow {
  sync_status: string;
  error_details: Record<string, unknown> | null;
  completed_at: Date | null;
  metadata: { userId: string };
}

async function userHistory(userId: string): Promise<HistoryRow[]> {
  const { rows } = await world.admin.query<HistoryRow>(
    `SELECT * FROM account_sync_history WHERE metadata->>'userId' = :id ORDER BY started_at`,
    { id: userId },
  );
  return rows;
}

async function syncLease(userId: string): Promise<{ sync_lease_owner: string | null; sync_retry_count: number }> {
  const { rows } = await world.admin.query<{ sync_lease_owner: string | null; sync_retry_count: number }>(
    `SELECT sync_lease_owner, sync_retry_count FROM oauth_tokens WHERE user_id = :id::uuid`,
    { id: userId },
  );
  return rows[0];
}

async function makeDue(userId: string): Promise<void> {
  await world.admin.query(
    `UPDATE user_accounts SET next_sync_at = now() - interval '1 minute' WHERE user_id = :id::uuid`,
    { id: userId },
  );
}

/** The user's account_sync_history rows. */
async function historyStatuses(userId: string) {
  const { rows } = await world.admin.query<{
    sync_status: string;
    error_details: { class?: string; reason?: string };
  }>(`SELECT sync_status, error_details FROM account_sync_history WHERE metadata->>'userId' = :id`, { id: userId });
  return rows;
}

/** The connection's retry state (its only connection). */
async function nextAttempt(userId: string) {
  const { rows } = await world.admin.query<{
    sync_retry_count: number;
    sync_next_attempt_at: Date;
    sync_lease_owner: string | null;
    sync_last_error: string | null;
  }>(
    `SELECT sync_retry_count, sync_next_attempt_at, sync_lease_owner, sync_last_error FROM oauth_tokens WHERE user_id = :id::uuid`,
    { id: userId },
  );
  expect(rows).toHaveLength(1);
  return rows[0];
}

test('users with no account yet get one row per profile, with the metadata keys of the account contract', async () => {
  const users = await seedUsers(world, { count: 3, profilesPerUser: 2 });
  const at = new Date(); // the run's clock, held still
  const summary = await runAccountSync(deps(world.dataApi(), { now: () => at }));
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
      expect(row.next_sync_at.getTime()).toBeGreaterThan(at.getTime() + 5.5 * 3600_000);
      expect(row.next_sync_at.getTime()).toBeLessThan(at.getTime() + 6.5 * 3600_000);
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

test('a user whose access token is about to expire takes a new one on demand (one refresh), unless its refresh is backing off', async () => {
  const [soon, backingOff] = await seedUsers(world, { count: 2, expiresInSeconds: 30 });
  await world.admin.query(
    `UPDATE oauth_tokens SET next_refresh_attempt_at = now() + interval '10 minutes' WHERE user_id = :id::uuid`,
    { id: backingOff.userId },
  );
  const summary = await runAccountSync(deps(world.dataApi()));
  expect(summary).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1, tokensRefreshed: 1 });
  expect(world.amazon.counters.refreshCalls(soon.refreshToken)).toBe(1);
  expect(world.amazon.counters.profileCalls(soon.userId)).toBe(1);
  expect(world.amazon.counters.refreshCalls(backingOff.refreshToken)).toBe(0);
  expect(world.amazon.counters.profileCalls(backingOff.userId)).toBe(0);
  const preview = await previewAccountSync({ db: world.dataApi(), logger: runtime().logger });
  expect(preview).toMatchObject({ due: 0, waitingForTokenRefresh: 1 });
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

// A hang is cut by the client's timeout: long enough that a call to the fake answered late by a
// busy machine (every core taken by other suites) is not taken for a hang, short enough that the
// hangs (5 %) cost a few seconds.
const HANG_TIMEOUT_MS = 1500;

test('faults at 20% 5xx, 10% 429, 5% hangs, 5% malformed: every user ends synced or with its failure recorded', async () => {
  const users = await seedUsers(world, { count: 300, accountsDueInSeconds: -60 });
  world.amazon.setKnobs({ rate5xx: 0.2, rate429: 0.1, retryAfterSeconds: 1, hangRate: 0.05, malformedRate: 0.05 });
  const started = Date.now();
  const summary = await runAccountSync(deps(world.dataApi(), { ads: world.ads(HANG_TIMEOUT_MS) }));

  let synced = 0;
  let failed = 0;
  const h = await history();
  // Every user's accounts in one read (in accounts()'s order), not one query per user.
  const byUser = new Map<string, AccountRow[]>(users.map((u) => [u.userId, []]));
  for (const row of await accounts()) byUser.get(row.user_id)?.push(row);
  for (const u of users) {
    // Nobody is called twice. A call that timed out on the client (a hang, or a busy machine)
    // may never have reached the fake, so a transient failure may show no call at all.
    const calls = world.amazon.counters.profileCalls(u.userId);
    expect(calls).toBeLessThanOrEqual(1);
    const rows = byUser.get(u.userId)!;
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

describe.each(PATHS)('%s path', (_path, database) => {
  test('a stored access token that cannot be decrypted is replaced by a new one from Amazon (one refresh) and its user synced, with no token in the log', async () => {
    const [broken, fine] = await seedUsers(world, { count: 2 });
    const corrupt = `enc:v1:${Buffer.from('not a ciphertext of this key, at all').toString('base64')}`;
    await world.admin.query(`UPDATE oauth_tokens SET access_token = :token WHERE user_id = :id::uuid`, {
      token: corrupt,
      id: broken.userId,
    });
    const rt = runtime();

    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
    });

    expect(summary).toMatchObject({
      connectionsClaimed: 2,
      connectionsSynced: 2,
      connectionsFailed: 0,
      tokensRefreshed: 1,
    });
    expect(world.amazon.counters.refreshCalls(broken.refreshToken)).toBe(1);
    expect(world.amazon.counters.refreshCalls(fine.refreshToken)).toBe(0);
    expect(world.amazon.counters.profileCalls(broken.userId)).toBe(1);
    const { rows } = await world.admin.query<{ access_token: string }>(
      `SELECT access_token FROM oauth_tokens WHERE user_id = :id::uuid`,
      { id: broken.userId },
    );
    expect(await world.cipher.decrypt(rows[0].access_token, oauthTokenBinding(broken, 'access_token'))).toBe(
      world.amazon.accessTokens(broken.userId).at(-1),
    );
    expect(rt.logger.text()).toContain('Stored access token is unreadable');
    expect(rt.logger.text()).not.toContain(corrupt);
  });

  test('access and refresh token both unreadable: that user alone fails (re-authorisation), the other is synced', async () => {
    const [broken, fine] = await seedUsers(world, { count: 2 });
    const corrupt = `enc:v1:${Buffer.from('not a ciphertext of this key, at all').toString('base64')}`;
    await world.admin.query(
      `UPDATE oauth_tokens SET access_token = :token, refresh_token = :token WHERE user_id = :id::uuid`,
      { token: corrupt, id: broken.userId },
    );
    const rt = runtime();
    const at = new Date(); // the run's clock, held still

    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
      now: () => at,
    });

    expect(summary).toMatchObject({ connectionsClaimed: 2, connectionsSynced: 1, connectionsFailed: 1 });
    expect(world.amazon.counters.refreshCalls(broken.refreshToken)).toBe(0);
    expect(world.amazon.counters.profileCalls(broken.userId)).toBe(0);
    expect(world.amazon.counters.profileCalls(fine.userId)).toBe(1);
    const next = await nextAttempt(broken.userId);
    expect(next).toMatchObject({ sync_retry_count: 1, sync_lease_owner: null });
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThan(at.getTime());
    const { rows } = await world.admin.query<{ proactive_refresh_enabled: boolean; last_refresh_error: string }>(
      `SELECT proactive_refresh_enabled, last_refresh_error FROM oauth_tokens WHERE user_id = :id::uuid`,
      { id: broken.userId },
    );
    expect(rows[0]).toMatchObject({ proactive_refresh_enabled: false });
    expect(rows[0].last_refresh_error).toMatch(/^Stored refresh token is unreadable/);
    expect(rt.logger.text()).not.toContain(corrupt);
  });

  test('a 429 pauses its region for the rest of the run and for the next runs: no more users of it are claimed', async () => {
    await seedUsers(world, { count: 4, regions: () => ['NA'], profilesPerUser: 1 });
    world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 100 }, 'ads');
    // 60 s left: a call may wait 45 s, less than the 100 s Amazon asked for.
    const deadline = Date.now() + 60_000;
    const left = () => deadline - Date.now();
    const settings = { batchSize: 1, concurrency: 1 };
    const calls = world.amazon.counters.arrivals('ads', 'NA').length;

    // Each run as a new container would make it: fresh limiters, the same database.
    const run = () =>
      runAccountSync({
        db: database(),
        ads: world.ads(),
        lwa: world.lwa(),
        cipher: world.cipher,
        settings,
        ...runtime({ remainingTimeMs: left }),
      });

    const first = await run();

    // The first user got the 429; the second was claimed before it came (the pipeline claims
    // one batch ahead) and is given back without a call; the region's other users are not
    // claimed by this run at all.
    expect(first).toMatchObject({
      connectionsClaimed: 2,
      connectionsFailed: 1,
      connectionsReleased: 1,
      rateLimited: 1,
    });
    expect(world.amazon.counters.arrivals('ads', 'NA')).toHaveLength(calls + 1);

    // A later run finds the pause in the database and
    // claims nobody in the region until it has passed, even though Amazon would answer now.
    world.amazon.setKnobs({ rate429: 0 }, 'ads');
    const second = await run();
    expect(second).toMatchObject({ connectionsClaimed: 0, connectionsReleased: 0 });
    expect(world.amazon.counters.arrivals('ads', 'NA')).toHaveLength(calls + 1);
  });

  test('a failed user counts each of its accounts (at least one), in the summary, the metric and its region; the backoff follows its failure count', async () => {
    const [many, none] = await seedUsers(world, {
      count: 2,
      regions: (i) => [i === 0 ? 'NA' : 'EU'],
      profilesPerUser: (i) => (i === 0 ? 3 : 0),
      accountsDueInSeconds: -60,
    });
    // Two failures in a row already: this is the third, so the next attempt is 600 to 1,200 s away.
    await world.admin.query(`UPDATE oauth_tokens SET sync_retry_count = 2 WHERE user_id = :id::uuid`, {
      id: many.userId,
    });
    world.amazon.setKnobs({ rate5xx: 1 }, 'ads');
    const rt = runtime();
    const at = new Date(); // the run's clock, held still

    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
      now: () => at,
    });

    expect(summary).toMatchObject({ connectionsClaimed: 2, connectionsFailed: 2, accountsFailed: 4 });
    expect(rt.metrics.totals[METRIC_NAMES.accountsFailed]).toBe(4);
    expect(rt.metrics.byRegion[METRIC_NAMES.accountsFailed]).toEqual({ NA: 3, EU: 1 });
    const failures = rt.logger.lines.filter((l) => l.message === 'Account sync failed');
    expect(failures.map((l) => l.attributes?.userId).sort()).toEqual([many.userId, none.userId].sort());
    expect(failures.find((l) => l.attributes?.userId === many.userId)?.attributes).toMatchObject({
      region: 'NA',
      error: expect.stringMatching(/^transient: /),
    });
    const next = await nextAttempt(many.userId);
    expect(next.sync_retry_count).toBe(3);
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThanOrEqual(at.getTime() + 600_000);
    expect(next.sync_next_attempt_at.getTime()).toBeLessThanOrEqual(at.getTime() + 1_200_000);
  });

  test('an outcome the database refuses is recorded as a write-back failure of that user alone, with its backoff, and logged', async () => {
    const [poisoned, fine] = await seedUsers(world, { count: 2, profilesPerUser: 1 });
    await world.admin.query(`UPDATE oauth_tokens SET sync_retry_count = 2 WHERE user_id = :id::uuid`, {
      id: poisoned.userId,
    });
    // A lister whose profiles reach SQL uncleaned (the Ads client's parsing replaces NUL):
    // PostgreSQL refuses NUL in jsonb, so that user's outcome cannot be written as it is.
    const ads = world.ads();
    const lister: AccountSyncDeps['ads'] = {
      limiters: ads.limiters,
      listProfiles: async (request) => {
        const profiles = await ads.listProfiles(request);
        return request.itemId !== poisoned.userId
          ? profiles
          : profiles.map((p) => ({ ...p, accountInfo: { ...p.accountInfo, name: 'bad\u0000name' } }));
      },
    };
    const rt = runtime();
    const at = new Date(); // the run's clock, held still

    const summary = await runAccountSync({
      db: database(),
      ads: lister,
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
      now: () => at,
    });

    expect(summary).toMatchObject({
      connectionsSynced: 1,
      accountsSynced: 1,
      connectionsFailed: 1,
      accountsFailed: 1,
      connectionsRejectedByDatabase: 1,
      connectionsNotWritten: 0,
    });
    const next = await nextAttempt(poisoned.userId);
    expect(next).toMatchObject({ sync_retry_count: 3, sync_lease_owner: null });
    expect(next.sync_last_error).toMatch(/^write_back: the database refused this user's outcome \(.+\)$/);
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThanOrEqual(at.getTime() + 600_000);
    expect(next.sync_next_attempt_at.getTime()).toBeLessThanOrEqual(at.getTime() + 1_200_000);
    const rows = await historyStatuses(poisoned.userId);
    expect(rows).toEqual([
      {
        sync_status: 'failed',
        error_details: expect.objectContaining({ class: 'write_back', reason: expect.any(String) }),
      },
    ]);
    expect(rows[0].error_details.reason).toBe(next.sync_last_error!.slice(54, -1));
    expect(rt.logger.lines.filter((l) => l.level === 'error')).toEqual([
      {
        level: 'error',
        message: 'Account sync outcome refused by the database; recorded as a failure',
        attributes: { userId: poisoned.userId, error: rows[0].error_details.reason },
      },
    ]);
    expect((await nextAttempt(fine.userId)).sync_retry_count).toBe(0);
  });

  test('a write-back that fails transiently when no time is left is not retried: the outcome is counted unwritten and logged', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 1 });
    let left = 600_000;
    const db = failingOnce(database(), /jsonb_to_recordset\(:users/, () => {
      // The write-back starts with 900 ms left: less than the second the run keeps for itself.
      left = 900;
      return new DatabaseError('could not serialize access due to concurrent update', { code: '40001' });
    });
    const rt = runtime({ remainingTimeMs: () => left });

    const summary = await runAccountSync({ db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 0, connectionsNotWritten: 1 });
    expect(rt.logger.lines.filter((l) => l.message === 'Could not write an outcome back')).toEqual([
      {
        level: 'error',
        message: 'Could not write an outcome back',
        attributes: {
          userId: u.userId,
          historyId: expect.any(String),
          outcome: 'success',
          error: expect.stringContaining('could not serialize access'),
        },
      },
    ]);
    // Nothing was written: the lease stays until it expires, and a later run syncs the user.
    expect((await nextAttempt(u.userId)).sync_lease_owner).not.toBeNull();
  });

  test('rate-limit usage that cannot be recorded is logged, and the run still reports', async () => {
    await seedUsers(world, { count: 1, profilesPerUser: 1 });
    const db = failingOnce(database(), /INSERT INTO rate_limit_tracking/, () => new DatabaseError('disk full'));
    const rt = runtime();

    const summary = await runAccountSync({ db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ connectionsSynced: 1 });
    expect(rt.logger.lines.filter((l) => l.message === 'Could not record rate-limit usage')).toEqual([
      {
        level: 'warn',
        message: 'Could not record rate-limit usage',
        attributes: { error: 'DatabaseError: disk full' },
      },
    ]);
  });

  test('the dry run counts only its own database calls, and says what it did', async () => {
    await seedUsers(world, { count: 3, profilesPerUser: 1 });
    const db = database();
    await db.query('SELECT 1');
    await db.query('SELECT 1');
    const rt = runtime();
    const callsBefore = db.callCounts().total;

    const preview = await previewAccountSync({ db, ...rt });

    expect(preview.databaseCalls).toBe(db.callCounts().total - callsBefore);
    expect(preview.databaseCalls).toBeGreaterThan(0);
    expect(rt.logger.lines).toEqual([
      {
        level: 'info',
        message: 'Account sync dry run: nothing claimed, written or sent to Amazon',
        attributes: { ...preview },
      },
    ]);
  });

  test('accounts of a connection whose refresh is off are flagged with the message that tells the user what to do', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 2, accountsDueInSeconds: 3600 });
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = FALSE WHERE user_id = :id::uuid`, {
      id: u.userId,
    });

    const summary = await runAccountSync({
      db: database(),
      ads: world.ads(),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime(),
    });

    expect(summary.reauthFlagged).toBe(2);
    const { rows } = await world.admin.query<{ sync_status: string; sync_error_message: string }>(
      `SELECT sync_status, sync_error_message FROM user_accounts WHERE user_id = :id::uuid`,
      { id: u.userId },
    );
    expect(rows).toEqual([
      {
        sync_status: 'reauth_required',
        sync_error_message: 'Amazon access needs re-authorisation: the user must reconnect their Amazon account',
      },
      {
        sync_status: 'reauth_required',
        sync_error_message: 'Amazon access needs re-authorisation: the user must reconnect their Amazon account',
      },
    ]);
  });

  test('a NUL or an unpaired surrogate in a profile blocks nobody: the value is stored cleaned', async () => {
    const users = await seedUsers(world, { count: 20, profilesPerUser: 1 });
    const [evil, lone] = users;
    const evilProfile = fakeProfile(evil.region, { accountInfo: { name: 'Evil\u0000Corp' } });
    const loneProfile = fakeProfile(lone.region, {
      timezone: 'Europe/\ud800London',
      countryCode: 'U\udc00S',
      accountInfo: { name: 'ok \ud83d\ude80 then \ud83d', id: 'A\u0000B' },
    });
    world.amazon.addProfiles(evil.userId, [evilProfile]);
    world.amazon.addProfiles(lone.userId, [loneProfile]);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({
      connectionsClaimed: 20,
      connectionsSynced: 20,
      connectionsFailed: 0,
      accountsSynced: 22,
    });
    const e = (await accounts(evil.userId)).find((a) => a.amazon_account_id === evilProfile.profileId)!;
    expect(e.metadata.accountName).toBe('Evil\uFFFDCorp');
    const l = (await accounts(lone.userId)).find((a) => a.amazon_account_id === loneProfile.profileId)!;
    expect(l.metadata).toMatchObject({
      timezone: 'Europe/\uFFFDLondon',
      countryCode: 'U\uFFFDS',
      accountName: 'ok \ud83d\ude80 then \uFFFD', // a valid pair is kept
      accountId: 'A\uFFFDB',
    });
    for (const u of users) {
      expect((await syncLease(u.userId)).sync_lease_owner).toBeNull();
      expect((await userHistory(u.userId)).map((h) => h.sync_status)).toEqual(['success']);
    }
  });

  test('an outcome the database refuses fails only its own user', async () => {
    const users = await seedUsers(world, { count: 20, profilesPerUser: 1 });
    const owner = randomUUID();
    const claimed = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 60,
      limit: 20,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed).toHaveLength(20);
    const poisoned = claimed[11];
    const outcomes: ConnectionSyncOutcome[] = claimed.map((user) => ({
      kind: 'success',
      connection: user,
      accounts: [
        {
          amazonAccountId: `${user === poisoned ? 9 : 1}${user.userId.replace(/\D/g, '').slice(0, 12)}`,
          // A value that reached SQL uncleaned: PostgreSQL refuses NUL in jsonb.
          metadata: { accountName: user === poisoned ? 'bad\u0000name' : 'fine' },
        },
      ],
      nextSyncAt: new Date(Date.now() + 6 * 3600_000),
    }));
    const { rejected } = await saveOutcomes(database(), owner, outcomes, {
      onRefused: (outcome, error) => ({
        kind: 'failure',
        connection: outcome.connection,
        error: `write_back: ${error}`,
        errorDetails: { class: 'write_back' },
        nextAttemptAt: new Date(Date.now() + 600_000),
      }),
    });
    expect(rejected.map((r) => r.connection.userId)).toEqual([poisoned.userId]);
    for (const u of users) {
      expect((await syncLease(u.userId)).sync_lease_owner).toBeNull();
      const [h] = await userHistory(u.userId);
      if (u.userId === poisoned.userId) {
        expect(await accounts(u.userId)).toEqual([]);
        expect(h).toMatchObject({ sync_status: 'failed', error_details: { class: 'write_back' } });
        expect((await syncLease(u.userId)).sync_retry_count).toBe(1);
      } else {
        expect((await accounts(u.userId)).map((a) => a.metadata.accountName)).toEqual(['fine']);
        expect(h.sync_status).toBe('success');
      }
    }
  });

  test('Amazon Attribution profiles are not stored as accounts, and stored ones are set inactive', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 2 });
    await runAccountSync(deps(database()));
    expect(await accounts(u.userId)).toHaveLength(2);
    // Amazon now says the second profile is an Attribution one, and lists a new Attribution profile.
    const [kept, turned] = u.profiles;
    const attribution = { ...turned, accountInfo: { ...turned.accountInfo, subType: 'AMAZON_ATTRIBUTION' } };
    const added = fakeProfile(u.region, { accountInfo: { subType: 'AMAZON_ATTRIBUTION' } });
    world.amazon.removeProfiles(u.userId, [turned.profileId]);
    world.amazon.addProfiles(u.userId, [attribution, added]);
    await makeDue(u.userId);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsSynced: 1, accountsSynced: 1, accountsMissing: 0 });
    const rows = await accounts(u.userId);
    expect(rows.map((r) => r.amazon_account_id)).toEqual([kept.profileId, turned.profileId].sort());
    expect(rows.find((r) => r.amazon_account_id === kept.profileId)).toMatchObject({ status: 'active' });
    expect(rows.find((r) => r.amazon_account_id === turned.profileId)).toMatchObject({
      status: 'inactive',
      sync_status: 'completed',
      sync_error_message: ATTRIBUTION_PROFILE_MESSAGE,
    });
  });

  test('a run whose lease was taken over writes no account, history or schedule', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 3 });
    const other = randomUUID();
    const ads = world.ads();
    // While Amazon answers, the lease expires and another run claims the user.
    const overtaken: ProfileLister = {
      listProfiles: async (request) => {
        await world.admin.query(
          `UPDATE oauth_tokens SET sync_lease_owner = :o::uuid, sync_lease_expires_at = now() + interval '10 minutes' WHERE user_id = :id::uuid`,
          { o: other, id: u.userId },
        );
        return ads.listProfiles(request);
      },
    };
    const summary = await runAccountSync(deps(database(), { ads: overtaken }));
    expect(summary.connectionsClaimed).toBe(1);
    expect(await accounts(u.userId)).toEqual([]);
    expect((await userHistory(u.userId)).map((h) => h.sync_status)).toEqual(['started']);
    expect(await syncLease(u.userId)).toEqual({ sync_lease_owner: other, sync_retry_count: 0 });
  });

  test('history rows of a run that died are closed as abandoned when their user is next claimed', async () => {
    const users = await seedUsers(world, { count: 5, profilesPerUser: 1 });
    // A run claims three users and dies: leases and 'started' rows are all that is left of it.
    const dead = await claimConnections(world.admin, {
      owner: randomUUID(),
      leaseSeconds: 60,
      limit: 3,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(dead).toHaveLength(3);
    await world.admin.query(`UPDATE oauth_tokens SET sync_lease_expires_at = now() - interval '1 second'`);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsClaimed: 5, connectionsSynced: 5 });
    for (const u of users) {
      const rows = await userHistory(u.userId);
      if (dead.some((d) => d.userId === u.userId)) {
        expect(rows).toHaveLength(2);
        expect(rows[0]).toMatchObject({
          sync_status: 'failed',
          error_details: { reason: ABANDONED_ATTEMPT_REASON, abandoned: true },
        });
        expect(rows[0].completed_at).not.toBeNull();
        expect(rows[1].sync_status).toBe('success');
      } else {
        expect(rows.map((r) => r.sync_status)).toEqual(['success']);
      }
    }
  });

  test('9,000 profiles of one agency user are written within the Data API’s request limit', async () => {
    const [agency, small] = await seedUsers(world, { count: 2, profilesPerUser: 1 });
    const many = Array.from({ length: 9000 }, (_, i) =>
      fakeProfile(agency.region, { accountInfo: { type: 'agency', name: `Client brand ${i} ${'x'.repeat(120)}` } }),
    );
    world.amazon.addProfiles(agency.userId, many);
    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsSynced: 2, connectionsFailed: 0, accountsSynced: 9002 });
    expect(await accounts(agency.userId)).toHaveLength(9001);
    expect(await accounts(small.userId)).toHaveLength(1);
    expect((await syncLease(agency.userId)).sync_lease_owner).toBeNull();
  }, 120_000);
});

test('leases outlast their function’s timeout by the margin (the sync lease measured in a run)', async () => {
  const [u] = await seedUsers(world, { count: 1 });
  let leaseSeconds = 0;
  const ads = world.ads();
  const measuring: ProfileLister = {
    listProfiles: async (request) => {
      const { rows } = await world.admin.query<{ s: number }>(
        `SELECT extract(epoch FROM sync_lease_expires_at - now())::float8 AS s FROM oauth_tokens WHERE user_id = :id::uuid`,
        { id: u.userId },
      );
      leaseSeconds = rows[0].s;
      return ads.listProfiles(request);
    },
  };
  await runAccountSync(deps(world.dataApi(), { ads: measuring }));
  expect(leaseSeconds).toBeGreaterThan(JOB_TIMING.accountSync.timeoutSeconds + LEASE_MARGIN_SECONDS - 30);
  for (const job of [JOB_TIMING.accountSync, JOB_TIMING.tokenRefresh])
    expect(job.leaseSeconds).toBeGreaterThanOrEqual(job.timeoutSeconds + LEASE_MARGIN_SECONDS);
});
