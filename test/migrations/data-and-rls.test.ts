import { Client } from 'pg';
import { runMigrations } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { withClient } from '../support/schema';

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

describe('data migration on pre-spec data', () => {
  let url: string;
  let migratedAt: Date;
  const accounts: Record<string, { status: string; user: string }> = {};

  beforeAll(async () => {
    url = await pg.createDatabase();
    await runMigrations({ database: url, count: 1 }); // the database as it was before the spec
    await withClient(url, async (c) => {
      for (let u = 0; u < 30; u++) {
        const user = (await c.query(`INSERT INTO users (email) VALUES ($1) RETURNING id`, [`user${u}@example.com`]))
          .rows[0].id;
        await c.query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region) VALUES ($1, $2, $3, now() + interval '10 minutes', $4)`,
          [user, `Atza|secret-access-${u}`, `Atzr|secret-refresh-${u}`, ['NA', 'EU', 'FE'][u % 3]],
        );
        for (const status of ['active', 'pending', 'inactive']) {
          const id = (
            await c.query(
              `INSERT INTO user_accounts (user_id, amazon_account_id, status, metadata) VALUES ($1, $2, $3, $4) RETURNING id`,
              [user, `${u}-${status}`, status, { countryCode: 'US' }],
            )
          ).rows[0].id;
          accounts[id] = { status, user };
        }
      }
    });
    // Users who connected Amazon but have no account row yet.
    await withClient(url, async (c) => {
      for (let u = 0; u < 5; u++) {
        const user = (await c.query(`INSERT INTO users (email) VALUES ($1) RETURNING id`, [`new${u}@example.com`]))
          .rows[0].id;
        await c.query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at) VALUES ($1, 'a', 'r', now())`,
          [user],
        );
      }
    });
    migratedAt = new Date();
    await runMigrations({ database: url });
  });

  test('each status maps to the spec CASE: active → completed, pending → pending, otherwise failed', async () => {
    const rows = (await withClient(url, (c) => c.query(`SELECT id, status, sync_status FROM user_accounts`))).rows;
    expect(rows).toHaveLength(90);
    const expected: Record<string, string> = { active: 'completed', pending: 'pending', inactive: 'failed' };
    for (const row of rows) expect(row.sync_status).toBe(expected[row.status]);
  });

  test('every account gets next_sync_at an hour or more out, spread over the following hour, per user', async () => {
    const rows = (await withClient(url, (c) => c.query(`SELECT user_id, next_sync_at FROM user_accounts`))).rows;
    const byUser = new Map<string, number>();
    for (const row of rows) {
      const at = (row.next_sync_at as Date).getTime();
      expect(at).toBeGreaterThanOrEqual(migratedAt.getTime() + 3600_000 - 1000);
      expect(at).toBeLessThan(Date.now() + 2 * 3600_000);
      const seen = byUser.get(row.user_id);
      if (seen !== undefined) expect(at).toBe(seen); // a user's accounts come due together
      byUser.set(row.user_id, at);
    }
    expect(new Set(byUser.values()).size).toBeGreaterThan(20); // not one thundering herd
  });

  test('the backups hold the pre-spec rows, without token values', async () => {
    await withClient(url, async (c) => {
      const accountsBackup = (await c.query(`SELECT count(*)::int AS n FROM user_accounts_backup`)).rows[0].n;
      expect(accountsBackup).toBe(90);
      const tokens = await c.query(`SELECT * FROM oauth_tokens_backup`);
      expect(tokens.rowCount).toBe(35);
      expect(JSON.stringify(tokens.rows)).not.toMatch(/secret-(access|refresh)/);
    });
  });

  test('rows written after the migration get the defaults: pending, due now', async () => {
    await withClient(url, async (c) => {
      const user = Object.values(accounts)[0].user;
      const row = (
        await c.query(
          `INSERT INTO user_accounts (user_id, amazon_account_id) VALUES ($1, 'new') RETURNING sync_status, next_sync_at, sync_retry_count, now() AS now`,
          [user],
        )
      ).rows[0];
      expect(row.sync_status).toBe('pending');
      expect(row.sync_retry_count).toBe(0);
      expect((row.next_sync_at as Date).getTime()).toBe((row.now as Date).getTime());
    });
  });

  test('existing tokens keep proactive refresh on with no failures recorded', async () => {
    const rows = (
      await withClient(url, (c) =>
        c.query(`SELECT proactive_refresh_enabled, refresh_failure_count, last_refresh_error FROM oauth_tokens`),
      )
    ).rows;
    expect(rows).toHaveLength(35);
    for (const row of rows)
      expect(row).toEqual({ proactive_refresh_enabled: true, refresh_failure_count: 0, last_refresh_error: null });
  });

  test('users without an account become due for their first sync; users with accounts follow their accounts', async () => {
    const rows = (
      await withClient(url, (c) =>
        c.query(
          `SELECT EXISTS (SELECT 1 FROM user_accounts ua WHERE ua.user_id = t.user_id) AS has_accounts, t.sync_next_attempt_at FROM oauth_tokens t`,
        ),
      )
    ).rows;
    const without = rows.filter((r) => !r.has_accounts);
    expect(without).toHaveLength(5);
    for (const r of without) expect((r.sync_next_attempt_at as Date).getTime()).toBeLessThanOrEqual(Date.now());
    for (const r of rows.filter((r) => r.has_accounts)) expect(r.sync_next_attempt_at).toBeNull();
  });

  test('invalid values are refused', async () => {
    await withClient(url, async (c) => {
      const id = Object.keys(accounts)[0];
      await expect(c.query(`UPDATE user_accounts SET sync_status = 'bogus' WHERE id = $1`, [id])).rejects.toThrow(
        /user_accounts_sync_status_check/,
      );
      await expect(c.query(`UPDATE user_accounts SET sync_status = NULL WHERE id = $1`, [id])).rejects.toThrow(
        /null value in column "sync_status"/,
      );
      await expect(c.query(`UPDATE user_accounts SET sync_retry_count = -1 WHERE id = $1`, [id])).rejects.toThrow(
        /sync_retry_count_check/,
      );
      await expect(c.query(`UPDATE oauth_tokens SET refresh_failure_count = -1`)).rejects.toThrow(
        /refresh_failure_count_check/,
      );
      await expect(
        c.query(
          `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status) VALUES ($1, 'cron', 'started')`,
          [id],
        ),
      ).rejects.toThrow(/sync_type_check/);
      await expect(
        c.query(
          `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status) VALUES ($1, 'manual', 'success')`,
          [id],
        ),
      ).rejects.toThrow(/completion_check/);
    });
  });
});

describe('row level security as `authenticated`', () => {
  let url: string;
  const ids = { userA: '', userB: '', accountA: '', accountB: '' };

  beforeAll(async () => {
    url = await pg.createDatabase();
    await runMigrations({ database: url });
    await withClient(url, async (c) => {
      for (const who of ['A', 'B'] as const) {
        const user = (await c.query(`INSERT INTO users (email) VALUES ($1) RETURNING id`, [`${who}@example.com`]))
          .rows[0].id;
        await c.query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at) VALUES ($1, 'Atza|x', 'Atzr|x', now())`,
          [user],
        );
        const account = (
          await c.query(`INSERT INTO user_accounts (user_id, amazon_account_id) VALUES ($1, $2) RETURNING id`, [
            user,
            `profile-${who}`,
          ])
        ).rows[0].id;
        await c.query(
          `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status) VALUES ($1, 'scheduled', 'started')`,
          [account],
        );
        await c.query(
          `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count) VALUES ($1, 'GET /v2/profiles', 1)`,
          [user],
        );
        ids[`user${who}`] = user;
        ids[`account${who}`] = account;
      }
    });
  });

  /** A session as PostgREST opens it: role authenticated, the JWT's claims in settings. */
  async function as<T>(
    claims: { sub?: string; style?: 'claim.sub' | 'claims' } | null,
    fn: (c: Client) => Promise<T>,
  ): Promise<T> {
    return withClient(url, async (c) => {
      await c.query('BEGIN');
      await c.query('SET LOCAL ROLE authenticated');
      if (claims?.sub && claims.style === 'claims') {
        await c.query(`SELECT set_config('request.jwt.claims', $1, true)`, [
          JSON.stringify({ sub: claims.sub, role: 'authenticated' }),
        ]);
      } else if (claims?.sub) {
        await c.query(`SELECT set_config('request.jwt.claim.sub', $1, true)`, [claims.sub]);
      }
      try {
        return await fn(c);
      } finally {
        await c.query('ROLLBACK');
      }
    });
  }

  test.each(['claim.sub', 'claims'] as const)(
    'with A’s claim (request.jwt.%s), A sees only A’s rows',
    async (style) => {
      await as({ sub: ids.userA, style }, async (c) => {
        expect((await c.query('SELECT auth.uid() AS uid')).rows[0].uid).toBe(ids.userA);
        expect((await c.query('SELECT user_account_id FROM account_sync_history')).rows).toEqual([
          { user_account_id: ids.accountA },
        ]);
        expect((await c.query('SELECT user_id FROM rate_limit_tracking')).rows).toEqual([{ user_id: ids.userA }]);
        expect((await c.query('SELECT id, user_id FROM user_accounts')).rows).toEqual([
          { id: ids.accountA, user_id: ids.userA },
        ]);
      });
    },
  );

  test('A reads its own user row and connection, without the tokens', async () => {
    await as({ sub: ids.userA }, async (c) => {
      expect((await c.query('SELECT id, email FROM users')).rows).toEqual([{ id: ids.userA, email: 'A@example.com' }]);
      expect((await c.query('SELECT user_id, region, proactive_refresh_enabled FROM oauth_tokens')).rows).toEqual([
        { user_id: ids.userA, region: 'NA', proactive_refresh_enabled: true },
      ]);
    });
  });

  test('A changes no rate-limit row, not even its own, and no history', async () => {
    await as({ sub: ids.userA }, async (c) => {
      // Its own counters are read-only (0027): moving its window back would lift its own
      // manual-sync limit.
      for (const user of [ids.userA, ids.userB]) {
        await c.query('SAVEPOINT s');
        await expect(
          c.query(`UPDATE rate_limit_tracking SET request_count = 0, window_start = '-infinity' WHERE user_id = $1`, [
            user,
          ]),
        ).rejects.toThrow(/permission denied/);
        await c.query('ROLLBACK TO SAVEPOINT s');
      }
      await c.query('SAVEPOINT s');
      await expect(c.query(`UPDATE account_sync_history SET accounts_failed = 1`)).rejects.toThrow(/permission denied/);
      await c.query('ROLLBACK TO SAVEPOINT s');
      await expect(c.query(`DELETE FROM rate_limit_tracking WHERE user_id = $1`, [ids.userB])).rejects.toThrow(
        /permission denied/,
      );
    });
    // Nothing of B's changed.
    const b = await withClient(url, (c) =>
      c.query(`SELECT request_count FROM rate_limit_tracking WHERE user_id = $1`, [ids.userB]),
    );
    expect(b.rows[0].request_count).toBe(1);
  });

  test('A cannot insert rows, for B or for itself, nor move A’s rows to B', async () => {
    await as({ sub: ids.userA }, async (c) => {
      await c.query('SAVEPOINT s');
      await expect(
        c.query(`INSERT INTO rate_limit_tracking (user_id, endpoint) VALUES ($1, 'x')`, [ids.userB]),
      ).rejects.toThrow(/permission denied/);
      await c.query('ROLLBACK TO SAVEPOINT s');
      await expect(c.query(`INSERT INTO rate_limit_tracking (user_id, endpoint) VALUES (NULL, 'x')`)).rejects.toThrow(
        /permission denied/,
      );
      await c.query('ROLLBACK TO SAVEPOINT s');
      await expect(c.query(`UPDATE rate_limit_tracking SET user_id = $1`, [ids.userB])).rejects.toThrow(
        /permission denied/,
      );
      await c.query('ROLLBACK TO SAVEPOINT s');
      await expect(
        c.query(
          `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status) VALUES ($1, 'manual', 'started')`,
          [ids.accountA],
        ),
      ).rejects.toThrow(/permission denied/);
      await c.query('ROLLBACK TO SAVEPOINT s');
      // Nor a row of its own (0027): the manual sync's limit is recorded by the API's function.
      await c.query('ROLLBACK TO SAVEPOINT s');
      await expect(
        c.query(`INSERT INTO rate_limit_tracking (user_id, endpoint) VALUES ($1, 'POST /v1/syncs')`, [ids.userA]),
      ).rejects.toThrow(/permission denied/);
    });
  });

  test('with no claim, nothing is visible', async () => {
    await as(null, async (c) => {
      expect((await c.query('SELECT auth.uid() AS uid')).rows[0].uid).toBeNull();
      expect((await c.query('SELECT * FROM account_sync_history')).rowCount).toBe(0);
      expect((await c.query('SELECT * FROM rate_limit_tracking')).rowCount).toBe(0);
      expect((await c.query('SELECT id FROM user_accounts')).rowCount).toBe(0);
      expect((await c.query('SELECT id FROM users')).rowCount).toBe(0);
      expect((await c.query('SELECT id FROM oauth_tokens')).rowCount).toBe(0);
    });
  });

  test.each([
    'SELECT access_token FROM oauth_tokens',
    'SELECT refresh_token FROM oauth_tokens',
    'SELECT * FROM oauth_tokens',
    'SELECT * FROM oauth_tokens_backup',
    'SELECT * FROM user_accounts_backup',
    'SELECT * FROM pgmigrations',
    `UPDATE users SET email = 'x@example.com'`,
    // 0013 lets the accounts API's disconnect update status (own rows only); never these:
    `UPDATE user_accounts SET sync_status = 'completed'`,
    `UPDATE user_accounts SET metadata = '{}'`,
    'DELETE FROM account_sync_history',
    'TRUNCATE rate_limit_tracking',
  ])('authenticated is refused: %s', async (sql) => {
    await as({ sub: ids.userA }, async (c) => {
      await expect(c.query(sql)).rejects.toThrow(/permission denied/);
    });
  });
});
