import { randomBytes, randomUUID } from 'node:crypto';
import { claimDueTokens, saveResults, TokenResult } from '../../../../lambda/token-refresh/store';
import { JobWorld, seedUsers, useBothDatabasePaths, useJobWorld } from '../../../support/jobs';
import { oauthTokenBinding } from '../../../../lambda/shared/token-crypto';

/**
 * The write-back's own size limit: the Data API refuses a request over 4 MiB (the emulator
 * does too), so results are written in statements of at most ~1.5 MB each. A normal batch
 * never comes near it (claims stop at ~1 MiB of tokens); this one is built to.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

test('results over the Data API’s 4 MiB request limit are written in several statements, and every one lands', async () => {
  const users = await seedUsers(world, { count: 800, tokenChars: 2048 });
  const owner = randomUUID();
  // Claimed through node-postgres, which has no response limit: all 800 at once.
  const claimed = await claimDueTokens(world.admin, {
    owner,
    windowSeconds: 1800,
    leaseSeconds: 600,
    limit: 800,
    pausedRegions: [],
    maxTokenChars: 100_000_000,
  });
  expect(claimed).toHaveLength(800);
  // Ciphertext-sized values (an `enc:v1:` token of Amazon's 2,048 characters is ~2,800).
  const value = () => `enc:v1:${randomBytes(2100).toString('base64')}`;
  const expiresAt = new Date(Date.now() + 3600_000);
  const results: TokenResult[] = claimed.map((token) => ({
    kind: 'success',
    result: { token, accessToken: value(), refreshToken: value(), expiresAt },
  }));
  expect(JSON.stringify(results).length).toBeGreaterThan(4 * 1024 * 1024);

  // Every statement the write-back sends, and the ones refused: a statement over 4 MiB would be
  // refused and then written in halves (write-in-halves), so only the refusals tell.
  const db = world.dataApi();
  const refused: unknown[] = [];
  const watched = new Proxy(db, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property !== 'query') return (value as (...a: unknown[]) => unknown).bind(target);
      return async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (error) {
          refused.push(error);
          throw error;
        }
      };
    },
  });
  const { rejected } = await saveResults(watched, owner, results);
  expect(rejected).toEqual([]);
  expect(refused).toEqual([]);
  expect(db.callCounts().total).toBeGreaterThanOrEqual(3);

  const { rows } = await world.admin.query<{
    user_id: string;
    refresh_token: string;
    refresh_lease_owner: string | null;
  }>('SELECT user_id, refresh_token, refresh_lease_owner FROM oauth_tokens');
  const written = new Map(results.map((r) => [r.kind === 'success' ? r.result.token.userId : '', r]));
  expect(rows).toHaveLength(users.length);
  for (const row of rows) {
    const result = written.get(row.user_id);
    expect(result?.kind === 'success' && result.result.refreshToken).toBe(row.refresh_token);
    expect(row.refresh_lease_owner).toBeNull();
  }
});

// The token refresh's write-back (lambda/token-refresh/store/write-back.ts, saveResults) against a
// connection whose refresh token was replaced while the refresh ran, with the run's lease still
// on it: the refresh token digest guard (`md5(refresh_token) = claimed_md5`) is what keeps the
// new connection's values. (A reconnect through the API also clears the lease; a web app that
// writes the row itself does not, which is the case here.) Both database paths, as the jobs' login.

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
    {
      a: world.cipher.encrypt('Atza|replaced', oauthTokenBinding(user, 'access_token')),
      r: world.cipher.encrypt(newRefresh, oauthTokenBinding(user, 'refresh_token')),
      u: user.userId,
    },
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
          accessToken: world.cipher.encrypt('Atza|from-the-old-grant', oauthTokenBinding(claimed, 'access_token')),
          refreshToken: world.cipher.encrypt('Atzr|from-the-old-grant', oauthTokenBinding(claimed, 'refresh_token')),
          expiresAt: new Date(Date.now() + 3_600_000),
        },
      },
    ]);

    const after = await row(user.userId);
    expect(await world.cipher.decrypt(after.refresh_token, oauthTokenBinding(user, 'refresh_token'))).toBe(newRefresh);
    expect(await world.cipher.decrypt(after.access_token, oauthTokenBinding(user, 'access_token'))).toBe(
      'Atza|replaced',
    );
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
          accessToken: world.cipher.encrypt('Atza|fresh', oauthTokenBinding(claimed, 'access_token')),
          refreshToken: world.cipher.encrypt('Atzr|fresh', oauthTokenBinding(claimed, 'refresh_token')),
          expiresAt: new Date(Date.now() + 3_600_000),
        },
      },
    ]);
    const after = await row(user.userId);
    expect(await world.cipher.decrypt(after.refresh_token, oauthTokenBinding(user, 'refresh_token'))).toBe(
      'Atzr|fresh',
    );
    expect(after.refresh_lease_owner).toBeNull();
    expect(after.last_refreshed_at).not.toBeNull();
  });
});
