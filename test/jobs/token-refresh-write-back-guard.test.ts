import { randomUUID } from 'node:crypto';
import { claimDueTokens, saveResults } from '../../lambda/token-refresh/store';
import { JobWorld, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

// The token refresh's write-back (lambda/token-refresh/store.ts, saveResults) against a
// connection whose refresh token was replaced while the refresh ran, with the run's lease still
// on it: the refresh token digest guard (`md5(refresh_token) = claimed_md5`) is what keeps the
// new connection's values. (A reconnect through the API also clears the lease; a web app that
// writes the row itself does not, which is the case here.) Both database paths, as the jobs' login.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

interface Row {
  access_token: string;
  refresh_token: string;
  expires_at: Date;
  proactive_refresh_enabled: boolean;
  refresh_failure_count: number;
  refresh_refusal_count: number;
  last_refresh_error: string | null;
  next_refresh_attempt_at: Date | null;
  refresh_lease_owner: string | null;
  last_refreshed_at: Date | null;
}

async function row(userId: string): Promise<Row> {
  const { rows } = await world.admin.query<Row>(
    `SELECT access_token, refresh_token, expires_at, proactive_refresh_enabled, refresh_failure_count,
            refresh_refusal_count, last_refresh_error, next_refresh_attempt_at, refresh_lease_owner, last_refreshed_at
       FROM oauth_tokens WHERE user_id = :u::uuid`,
    { u: userId },
  );
  return rows[0];
}

/** One due connection claimed by `owner`, then its tokens replaced by the web app (lease kept). */
async function claimedThenReplaced(owner: string) {
  const [user] = await seedUsers(world, { count: 1, accountsDueInSeconds: 3600 });
  const [claimed] = await claimDueTokens(world.admin, {
    owner,
    windowSeconds: 1800,
    leaseSeconds: 300,
    limit: 1,
    pausedRegions: [],
  });
  const newRefresh = `Atzr|replaced-${randomUUID()}`;
  await world.admin.query(
    `UPDATE oauth_tokens SET access_token = :a, refresh_token = :r, expires_at = now() + interval '50 minutes'
      WHERE user_id = :u::uuid`,
    { a: world.cipher.encrypt('Atza|replaced'), r: world.cipher.encrypt(newRefresh), u: user.userId },
  );
  const replaced = await row(user.userId);
  expect(replaced.refresh_lease_owner).toBe(owner);
  return { user, claimed, newRefresh, replaced };
}

describe.each(PATHS)('%s', (_path, database) => {
  test('a refresh result for a refresh token replaced during the run writes no token: the new one stays, the lease is given back', async () => {
    const owner = randomUUID();
    const { user, claimed, newRefresh, replaced } = await claimedThenReplaced(owner);

    await saveResults(database(), owner, [
      {
        kind: 'success',
        result: {
          token: claimed,
          accessToken: world.cipher.encrypt('Atza|from-the-old-grant'),
          refreshToken: world.cipher.encrypt('Atzr|from-the-old-grant'),
          expiresAt: new Date(Date.now() + 3_600_000),
        },
      },
    ]);

    const after = await row(user.userId);
    expect(world.cipher.decrypt(after.refresh_token)).toBe(newRefresh);
    expect(world.cipher.decrypt(after.access_token)).toBe('Atza|replaced');
    expect(after).toEqual({ ...replaced, refresh_lease_owner: null });
  });

  test('a refusal for a refresh token replaced during the run neither turns refresh off nor flags the accounts', async () => {
    const owner = randomUUID();
    const { user, claimed, replaced } = await claimedThenReplaced(owner);

    await saveResults(database(), owner, [
      {
        kind: 'failure',
        result: {
          token: claimed,
          countsAsFailure: true,
          countsAsRefusal: true,
          disable: true,
          error: 'PermanentAuthError: invalid_grant',
          nextAttemptAt: new Date(Date.now() + 3_600_000),
        },
        reauth: 'Amazon access was revoked',
      },
    ]);

    const after = await row(user.userId);
    expect(after).toEqual({ ...replaced, refresh_lease_owner: null });
    const { rows } = await world.admin.query<{ sync_status: string }>(
      `SELECT DISTINCT sync_status FROM user_accounts WHERE user_id = :u::uuid`,
      { u: user.userId },
    );
    expect(rows.map((r) => r.sync_status)).not.toContain('reauth_required');
  });

  test('the same results for the token as claimed are written (the guard lets the unchanged token through)', async () => {
    const owner = randomUUID();
    const [user] = await seedUsers(world, { count: 1, accountsDueInSeconds: 3600 });
    const [claimed] = await claimDueTokens(world.admin, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: 300,
      limit: 1,
      pausedRegions: [],
    });
    await saveResults(database(), owner, [
      {
        kind: 'success',
        result: {
          token: claimed,
          accessToken: world.cipher.encrypt('Atza|fresh'),
          refreshToken: world.cipher.encrypt('Atzr|fresh'),
          expiresAt: new Date(Date.now() + 3_600_000),
        },
      },
    ]);
    const after = await row(user.userId);
    expect(world.cipher.decrypt(after.refresh_token)).toBe('Atzr|fresh');
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.last_refreshed_at).not.toBeNull();
  });
});
