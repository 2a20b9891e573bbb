import { Client } from 'pg';
import { MigrationError, runMigrations } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { appliedMigrations, snapshotSchema, withClient } from '../support/schema';

// Migration 0012: one connection per (user, region), accounts that know their region.

const MIGRATION = '0012_connections-per-region';

let pg: TestPostgres;
beforeAll(async () => {
  pg = await startPostgres();
});
afterAll(async () => {
  await pg?.stop();
});

/** Applies the migrations before 0012, whatever later issues add after it. */
async function migrateToBefore0012(url: string): Promise<void> {
  await runMigrations({ database: url, count: 11 });
  expect((await appliedMigrations(url)).at(-1)).toBe('0011_worker-column-grants');
}

async function migrateThrough0012(url: string): Promise<void> {
  await runMigrations({ database: url, count: 1 });
  expect((await appliedMigrations(url)).at(-1)).toBe(MIGRATION);
}

async function addUser(c: Client, email: string, region?: string): Promise<string> {
  const user = (await c.query(`INSERT INTO users (email) VALUES ($1) RETURNING id`, [email])).rows[0].id as string;
  if (region)
    await c.query(
      `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
       VALUES ($1, 'a', 'r', now() + interval '1 hour', $2)`,
      [user, region],
    );
  return user;
}

async function addAccount(c: Client, user: string, profileId: string, metadata: object): Promise<void> {
  await c.query(
    `INSERT INTO user_accounts (user_id, amazon_account_id, status, metadata) VALUES ($1, $2, 'active', $3)`,
    [user, profileId, metadata],
  );
}

const regionsByProfile = async (c: Client) =>
  Object.fromEntries(
    (await c.query(`SELECT amazon_account_id, region FROM user_accounts`)).rows.map((r) => [
      r.amazon_account_id,
      r.region,
    ]),
  );

describe('on data from before 0012', () => {
  let url: string;
  let users: Record<string, string>;

  beforeAll(async () => {
    url = await pg.createDatabase();
    await migrateToBefore0012(url);
    users = await withClient(url, async (c) => {
      const eu = await addUser(c, 'eu@example.com', 'EU');
      const fe = await addUser(c, 'fe@example.com', 'FE');
      const none = await addUser(c, 'none@example.com');
      await addAccount(c, eu, 'meta-eu', { region: 'EU' }); // metadata agrees with the token
      await addAccount(c, eu, 'meta-fe-on-eu', { region: 'FE' }); // metadata wins
      await addAccount(c, fe, 'bad-meta', { region: 'XX' }); // invalid: the token's region
      await addAccount(c, fe, 'no-meta', {});
      await addAccount(c, none, 'orphan', { region: 7 }); // no connection, no valid region: NA
      return { eu, fe, none };
    });
    await migrateThrough0012(url);
  });

  test('accounts get their region from metadata, else from the connection, else NA', async () => {
    expect(await withClient(url, regionsByProfile)).toEqual({
      'meta-eu': 'EU',
      'meta-fe-on-eu': 'FE',
      'bad-meta': 'FE',
      'no-meta': 'FE',
      orphan: 'NA',
    });
  });

  test('the schema: region NOT NULL and checked, unique (user_id, region), the old UNIQUE (user_id) gone', async () => {
    const schema = await snapshotSchema(url);
    expect(schema.columns['user_accounts.region']).toEqual({ type: 'text', nullable: false, default: null });
    expect(schema.columns['account_sync_history.region']).toEqual({ type: 'text', nullable: true, default: null });
    expect(schema.constraints['oauth_tokens.oauth_tokens_user_id_region_key']).toBe('UNIQUE (user_id, region)');
    expect(schema.constraints['oauth_tokens.oauth_tokens_user_id_key']).toBeUndefined();
    expect(schema.constraints['user_accounts.user_accounts_region_check']).toMatch(/'NA'.*'EU'.*'FE'/);
    expect(schema.constraints['account_sync_history.account_sync_history_region_check']).toMatch(/'NA'.*'EU'.*'FE'/);
    expect(Object.values(schema.constraints).filter((d) => d.includes('NOT VALID'))).toEqual([]);
    expect(Object.keys(schema.constraints).filter((n) => n.includes('not_null'))).toEqual([]);
    expect(schema.indexes.idx_user_accounts_user_region).toBe(
      'CREATE INDEX idx_user_accounts_user_region ON public.user_accounts USING btree (user_id, region)',
    );
  });

  test('a second region for a user is accepted, a second connection in the same region is not', async () => {
    await withClient(url, async (c) => {
      await c.query(
        `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
         VALUES ($1, 'a', 'r', now(), 'NA')`,
        [users.eu],
      );
      const error = await c
        .query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
           VALUES ($1, 'a', 'r', now(), 'EU')`,
          [users.eu],
        )
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ code: '23505', constraint: 'oauth_tokens_user_id_region_key' });
      await c.query(`DELETE FROM oauth_tokens WHERE user_id = $1 AND region = 'NA'`, [users.eu]);
    });
  });

  test('a writer that does not name the region gets the backfill rule; a wrong one is refused', async () => {
    await withClient(url, async (c) => {
      await addAccount(c, users.fe, 'old-writer', {});
      await addAccount(c, users.fe, 'old-writer-meta', { region: 'EU' });
      const regions = await regionsByProfile(c);
      expect([regions['old-writer'], regions['old-writer-meta']]).toEqual(['FE', 'EU']);
      const error = await c
        .query(`INSERT INTO user_accounts (user_id, amazon_account_id, region) VALUES ($1, 'x', 'US')`, [users.fe])
        .catch((e: unknown) => e);
      expect(error).toMatchObject({ code: '23514', constraint: 'user_accounts_region_check' });
    });
  });
});

describe('up → down → up', () => {
  test('without multi-region users: the same schema, and regions derived again', async () => {
    const url = await pg.createDatabase();
    await migrateToBefore0012(url);
    const before = await snapshotSchema(url);
    await withClient(url, async (c) => {
      const user = await addUser(c, 'fe@example.com', 'FE');
      await addAccount(c, user, 'p1', {});
    });
    await migrateThrough0012(url);
    const after = await snapshotSchema(url);

    await runMigrations({ database: url, direction: 'down', count: 1 });
    expect((await appliedMigrations(url)).at(-1)).toBe('0011_worker-column-grants');
    expect(await snapshotSchema(url)).toEqual(before);

    await migrateThrough0012(url);
    expect(await snapshotSchema(url)).toEqual(after);
    expect(await withClient(url, regionsByProfile)).toEqual({ p1: 'FE' });
  });

  test('down refuses clearly while a user has two regions, and changes nothing', async () => {
    const url = await pg.createDatabase();
    await migrateToBefore0012(url);
    await migrateThrough0012(url);
    const user = await withClient(url, async (c) => {
      const id = await addUser(c, 'two@example.com', 'NA');
      await c.query(
        `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region) VALUES ($1, 'a', 'r', now(), 'EU')`,
        [id],
      );
      return id;
    });
    const schema = await snapshotSchema(url);
    const error = await runMigrations({ database: url, direction: 'down', count: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as MigrationError).migration).toBe(MIGRATION);
    expect((error as MigrationError).databaseMessage).toBe(
      'cannot undo 0012_connections-per-region: 1 user(s) have connections in more than one region, which UNIQUE (user_id) cannot hold',
    );
    expect((await appliedMigrations(url)).at(-1)).toBe(MIGRATION);
    expect(await snapshotSchema(url)).toEqual(schema);

    // With one connection per user again, down goes through.
    await withClient(url, (c) => c.query(`DELETE FROM oauth_tokens WHERE user_id = $1 AND region = 'EU'`, [user]));
    await runMigrations({ database: url, direction: 'down', count: 1 });
    expect((await snapshotSchema(url)).constraints['oauth_tokens.oauth_tokens_user_id_key']).toBe('UNIQUE (user_id)');
  });
});

describe('re-connection per region', () => {
  test('storing a new refresh token re-enables only that connection, and only its region’s accounts', async () => {
    const url = await pg.createDatabase();
    await runMigrations({ database: url, count: 12 });
    await withClient(url, async (c) => {
      const user = await addUser(c, 'both@example.com', 'NA');
      await c.query(
        `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region) VALUES ($1, 'a', 'r', now(), 'EU')`,
        [user],
      );
      for (const region of ['NA', 'EU'])
        await c.query(
          `INSERT INTO user_accounts (user_id, amazon_account_id, status, metadata, region, sync_status)
           VALUES ($1, $2, 'active', '{}', $2, 'reauth_required')`,
          [user, region],
        );
      await c.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = $1`, [user]);

      await c.query(`UPDATE oauth_tokens SET refresh_token = 'new' WHERE user_id = $1 AND region = 'EU'`, [user]);
      const tokens = (await c.query(`SELECT region, proactive_refresh_enabled FROM oauth_tokens ORDER BY region`)).rows;
      expect(tokens).toEqual([
        { region: 'EU', proactive_refresh_enabled: true },
        { region: 'NA', proactive_refresh_enabled: false },
      ]);
      const accounts = (await c.query(`SELECT region, sync_status FROM user_accounts ORDER BY region`)).rows;
      expect(accounts).toEqual([
        { region: 'EU', sync_status: 'pending' },
        { region: 'NA', sync_status: 'reauth_required' },
      ]);
    });
  });
});
