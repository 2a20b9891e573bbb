import { randomUUID } from 'node:crypto';
import { CLIENT_ERROR_STOP_AFTER, runTokenRefresh, TokenRefreshDeps } from '../../lambda/token-refresh/core';
import { claimDueTokens, saveResults, TokenResult } from '../../lambda/token-refresh/store';
import { LwaClient, PermanentAuthError } from '../../lambda/shared/amazon';
import { Database } from '../../lambda/shared/db';
import { JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/** Token refresh against races, expired leases, poison answers and a misconfigured client. */
let world: JobWorld;
useJobWorld((w) => (world = w));

/** Both database paths, as the jobs' own login: the Data API (emulator) and node-postgres. */
const PATHS = useBothDatabasePaths(() => world);

function deps(db: Database, extra: Partial<TokenRefreshDeps> = {}): TokenRefreshDeps {
  return { db, lwa: world.lwa(), cipher: world.cipher, ...runtime(), settings: { concurrency: 8 }, ...extra };
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
  refresh_lease_expires_at: Date | null;
  last_refreshed_at: Date | null;
}

async function token(userId: string): Promise<TokenRow> {
  const { rows } = await world.admin.query<TokenRow>(`SELECT * FROM oauth_tokens WHERE user_id = :id::uuid`, {
    id: userId,
  });
  return rows[0];
}

async function accountStatuses(userId: string): Promise<string[]> {
  const { rows } = await world.admin.query<{ sync_status: string }>(
    `SELECT sync_status FROM user_accounts WHERE user_id = :id::uuid ORDER BY id`,
    { id: userId },
  );
  return rows.map((r) => r.sync_status);
}

describe.each(PATHS)('%s path', (_name, database) => {
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
          accessToken: world.cipher.encrypt('Atza|late'),
          refreshToken: world.cipher.encrypt('Atzr|late'),
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
            { a: world.cipher.encrypt('Atza|new'), r: world.cipher.encrypt(newRefresh), id: user.userId },
          );
        }
        return lwa.refresh(request);
      },
    };
    const summary = await runTokenRefresh(deps(database(), { lwa: racing }));
    expect(summary).toMatchObject({ claimed: 2, refreshed: 1, failed: 1 });
    const row = await token(user.userId);
    expect(world.cipher.decrypt(row.refresh_token)).toBe(newRefresh);
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
