import { type AccountSyncDeps, previewAccountSync, runAccountSync } from '../../lambda/account-sync/core';
import { DatabaseError } from '../../lambda/shared/db';
import { METRIC_NAMES } from '../../lambda/shared/jobs/metrics';
import { failingOnce, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/**
 * Account sync core paths its mutation run (docs/mutation.md) found unasserted by the group's
 * other test files.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

describe.each(PATHS)('%s path', (_path, database) => {
  test('a stored access token that cannot be decrypted fails only its user, counted once, with the reason and no token in the log', async () => {
    const [broken, fine] = await seedUsers(world, { count: 2 });
    const corrupt = `enc:v1:${Buffer.from('not a ciphertext of this key, at all').toString('base64')}`;
    await world.admin.query(`UPDATE oauth_tokens SET access_token = :token WHERE user_id = :id::uuid`, {
      token: corrupt,
      id: broken.userId,
    });
    const rt = runtime();
    const before = Date.now();

    const summary = await runAccountSync({ db: database(), ads: world.ads(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ connectionsClaimed: 2, connectionsSynced: 1, connectionsFailed: 1 });
    expect(world.amazon.counters.profileCalls(broken.userId)).toBe(0);
    expect(world.amazon.counters.profileCalls(fine.userId)).toBe(1);
    const rows = await history(broken.userId);
    expect(rows).toEqual([
      { sync_status: 'failed', error_details: expect.objectContaining({ class: 'token', reason: expect.any(String) }) },
    ]);
    const next = await nextAttempt(broken.userId);
    expect(next).toMatchObject({ sync_retry_count: 1, sync_lease_owner: null });
    expect(next.sync_last_error).toMatch(/^Stored access token is unreadable \(.+\)$/);
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThan(before);
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
    const before = Date.now();

    const summary = await runAccountSync({ db: database(), ads: world.ads(), cipher: world.cipher, ...rt });

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
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThanOrEqual(before + 600_000);
    expect(next.sync_next_attempt_at.getTime()).toBeLessThanOrEqual(Date.now() + 1_200_000);
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
    const before = Date.now();

    const summary = await runAccountSync({ db: database(), ads: lister, cipher: world.cipher, ...rt });

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
    expect(next.sync_next_attempt_at.getTime()).toBeGreaterThanOrEqual(before + 600_000);
    expect(next.sync_next_attempt_at.getTime()).toBeLessThanOrEqual(Date.now() + 1_200_000);
    const rows = await history(poisoned.userId);
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

    const summary = await runAccountSync({ db, ads: world.ads(), cipher: world.cipher, ...rt });

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

    const summary = await runAccountSync({ db, ads: world.ads(), cipher: world.cipher, ...rt });

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

    const summary = await runAccountSync({ db: database(), ads: world.ads(), cipher: world.cipher, ...runtime() });

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
});

/** The user's account_sync_history rows. */
async function history(userId: string) {
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
