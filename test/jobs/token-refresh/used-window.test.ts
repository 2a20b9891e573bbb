import { runAccountSync } from '../../../lambda/account-sync/core';
import { JOB_ENV } from '../../../lambda/shared/config';
import { Database } from '../../../lambda/shared/db';
import { handler } from '../../../lambda/token-refresh/handler';
import { runJobOnce } from '../../../scripts/job';
import { previewTokenRefresh, runTokenRefresh, TokenRefreshSettings } from '../../../lambda/token-refresh/core';
import {
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobHandlerEnvironment,
  useJobWorld,
} from '../../support/jobs';

/**
 * Refresh what is used: with `usedWithinSeconds` set, the proactive refresh leaves connections
 * idle for longer alone (NULL, never recorded, counts as used); the account sync records the
 * use of every connection it wants the token of, expired ones included, so the next refresh
 * renews them and the sync after that proceeds.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

const PATHS = useBothDatabasePaths(() => world);
const HOUR = 3600;

/** Sets the connection's last use `secondsAgo` seconds before now (null: never recorded). */
async function lastUsed(user: SeedUser, secondsAgo: number | null): Promise<void> {
  await world.admin.query(
    `UPDATE oauth_tokens
        SET last_used_at = CASE WHEN :ago::int IS NULL THEN NULL ELSE now() - make_interval(secs => :ago::int) END
      WHERE user_id = :userId::uuid`,
    { ago: secondsAgo, userId: user.userId },
  );
}

async function lastUsedAt(user: SeedUser): Promise<Date | null> {
  const { rows } = await world.admin.query<{ last_used_at: Date | null }>(
    'SELECT last_used_at FROM oauth_tokens WHERE user_id = :userId::uuid',
    { userId: user.userId },
  );
  return rows[0].last_used_at;
}

async function databaseNow(): Promise<Date> {
  const { rows } = await world.admin.query<{ now: Date }>('SELECT now() AS now');
  return rows[0].now;
}

function refresh(db: Database, settings: TokenRefreshSettings = {}) {
  return runTokenRefresh({ db, lwa: world.lwa(), cipher: world.cipher, ...runtime(), settings });
}

function sync(db: Database) {
  return runAccountSync({ db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() });
}

/** Three due connections: idle for 2 h, used 10 min ago, never recorded. */
async function seedDue(): Promise<{ idle: SeedUser; recent: SeedUser; unknown: SeedUser }> {
  const [idle, recent, unknown] = await seedUsers(world, { count: 3, expiresInSeconds: 600 });
  await lastUsed(idle, 2 * HOUR);
  await lastUsed(recent, 600);
  await lastUsed(unknown, null);
  return { idle, recent, unknown };
}

describe.each(PATHS)('%s', (_path, database) => {
  test('with a window of 1 hour, a due connection idle for 2 hours is not refreshed; used and unrecorded ones are', async () => {
    const { idle, recent, unknown } = await seedDue();
    const db = database();

    const preview = await previewTokenRefresh({ db, logger: runtime().logger, settings: { usedWithinSeconds: HOUR } });
    const summary = await refresh(db, { usedWithinSeconds: HOUR });

    expect(preview.due).toBe(2);
    expect(summary).toMatchObject({ claimed: 2, refreshed: 2, failed: 0 });
    expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(0);
    expect(world.amazon.counters.refreshCalls(recent.refreshToken)).toBe(1);
    expect(world.amazon.counters.refreshCalls(unknown.refreshToken)).toBe(1);
    // Refreshing is not using: the refresh leaves last_used_at as it was.
    expect(await lastUsedAt(unknown)).toBeNull();
  });

  test('without a window every due connection is refreshed, idle or not, as before', async () => {
    const { idle, recent, unknown } = await seedDue();
    const [notDue] = await seedUsers(world, { count: 1, expiresInSeconds: 2 * HOUR });
    const db = database();

    const preview = await previewTokenRefresh({ db, logger: runtime().logger });
    const summary = await refresh(db);

    expect(preview.due).toBe(3);
    expect(summary).toMatchObject({ claimed: 3, refreshed: 3 });
    for (const u of [idle, recent, unknown]) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
    expect(world.amazon.counters.refreshCalls(notDue.refreshToken)).toBe(0);
  });

  test('the account sync takes an idle connection’s expired token on demand: refreshed once, in the sync, and not marked used, so the proactive refresh still leaves it alone', async () => {
    const [idle] = await seedUsers(world, { count: 1, expiresInSeconds: -60, accountsDueInSeconds: -60 });
    await lastUsed(idle, 2 * HOUR);
    const db = database();
    const usedBefore = await lastUsedAt(idle);

    expect(await refresh(db, { usedWithinSeconds: HOUR })).toMatchObject({ claimed: 0 });
    expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(0);

    expect(await sync(db)).toMatchObject({
      connectionsClaimed: 1,
      connectionsSynced: 1,
      tokensRefreshed: 1,
      accountsSynced: idle.profiles.length,
    });
    expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(1);
    expect(await lastUsedAt(idle)).toEqual(usedBefore);
    // The token it took is fresh; the proactive refresh has nothing to do for an idle connection.
    expect(await refresh(db, { usedWithinSeconds: HOUR })).toMatchObject({ claimed: 0 });
    expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(1);
  });

  test('a connection the account sync claims is not marked used', async () => {
    const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 2 * HOUR, accountsDueInSeconds: -60 });
    await lastUsed(user, 2 * HOUR);
    const usedBefore = await lastUsedAt(user);

    expect(await sync(database())).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1, tokensRefreshed: 0 });
    expect(await lastUsedAt(user)).toEqual(usedBefore);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(0);
  });
});

test('the account sync neither marks nor refreshes a connection that is not due, nor one with refresh off', async () => {
  const [notDue] = await seedUsers(world, { count: 1, expiresInSeconds: -60, accountsDueInSeconds: HOUR });
  const [off] = await seedUsers(world, {
    count: 1,
    expiresInSeconds: -60,
    accountsDueInSeconds: -60,
    refreshEnabled: () => false,
  });
  await lastUsed(notDue, 2 * HOUR);
  await lastUsed(off, 2 * HOUR);
  const before = await databaseNow();

  await sync(world.dataApi());

  for (const u of [notDue, off]) {
    expect((await lastUsedAt(u))!.getTime()).toBeLessThan(before.getTime() - HOUR * 1000);
    expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(0);
  }
});

test('npm run job reads PROACTIVE_REFRESH_USED_WITHIN_SECONDS as the Lambda does', async () => {
  const { idle, recent, unknown } = await seedDue();
  const summary = await runJobOnce(
    'token-refresh',
    {
      DATABASE_URL: world.url,
      LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
      LWA_CLIENT_ID: world.amazon.clientId,
      LWA_CLIENT_SECRET: world.amazon.clientSecret,
      TOKEN_ENCRYPTION_KEY: world.keyBase64,
      [JOB_ENV.proactiveRefreshUsedWithinSeconds]: String(HOUR),
    },
    { logger: runtime().logger },
  );
  expect(summary).toMatchObject({ claimed: 2, refreshed: 2 });
  expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(0);
  for (const u of [recent, unknown]) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
});

describe('the Lambda handler', () => {
  // As the stack sets it on the token refresh function (read once per container).
  useJobHandlerEnvironment(
    () => world,
    () => ({ [JOB_ENV.proactiveRefreshUsedWithinSeconds]: String(HOUR), POWERTOOLS_LOG_LEVEL: 'SILENT' }),
  );
  beforeEach(() => {
    jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
  });

  const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'req-1' };

  test('its dry run and its run cover only connections used within PROACTIVE_REFRESH_USED_WITHIN_SECONDS', async () => {
    const { idle, recent, unknown } = await seedDue();
    expect(await handler({ dryRun: true }, context)).toMatchObject({ dryRun: true, due: 2 });
    expect(await handler({}, context)).toMatchObject({ claimed: 2, refreshed: 2 });
    expect(world.amazon.counters.refreshCalls(idle.refreshToken)).toBe(0);
    for (const u of [recent, unknown]) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  });
});
