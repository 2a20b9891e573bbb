import { previewTokenRefresh, runTokenRefresh } from '../../lambda/token-refresh/core';
import { LwaClient } from '../../lambda/shared/amazon';
import { endpointKey, RateLimitUsageRecorder, recordRateLimitUsage } from '../../lambda/shared/amazon/usage-store';
import { DatabaseError } from '../../lambda/shared/db';
import { failingOnce, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/**
 * Token refresh core paths its mutation run (docs/mutation.md) found unasserted by the group's
 * other test files.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const wrongCredentials = () =>
  new LwaClient({
    clientId: world.amazon.clientId,
    clientSecret: 'not-the-secret',
    tokenUrl: world.amazon.lwaTokenUrl,
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
    const before = Date.now();

    const summary = await runTokenRefresh({ db: database(), lwa: world.lwa(), cipher: world.cipher, ...rt });

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
    expect(row.next_refresh_attempt_at!.getTime()).toBeGreaterThanOrEqual(before + 120_000);
    expect(row.next_refresh_attempt_at!.getTime()).toBeLessThanOrEqual(Date.now() + 240_000);
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
    expect(stored).toMatch(/^enc:v1:/);
    expect(world.cipher.decrypt(stored)).toBe(u.refreshToken);
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
});

async function token(userId: string) {
  const { rows } = await world.admin.query<{
    refresh_token: string;
    proactive_refresh_enabled: boolean;
    refresh_failure_count: number;
    refresh_refusal_count: number;
    last_refresh_error: string | null;
    next_refresh_attempt_at: Date | null;
    refresh_lease_owner: string | null;
  }>(
    `SELECT refresh_token, proactive_refresh_enabled, refresh_failure_count, refresh_refusal_count, last_refresh_error,
            next_refresh_attempt_at, refresh_lease_owner
       FROM oauth_tokens WHERE user_id = :id::uuid`,
    { id: userId },
  );
  expect(rows).toHaveLength(1);
  return rows[0];
}
