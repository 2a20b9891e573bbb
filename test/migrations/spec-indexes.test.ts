import { Client } from 'pg';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { runMigrations } from '../../lambda/migrate/run-migrations';

// The account filters on metadata (marketplace, account type, country) are `metadata @> …` in
// the API's SQL, so the GIN index of the specification serves them. Shown with the plan of
// the API's own statement (api.list_accounts, through auto_explain's nested statements) on
// 100,000 accounts, run as `accounts_api_caller` under RLS exactly as a request runs it.

const ACCOUNTS = 100_000;
const RARE = 'A2Q3Y263D00KWC';
const RARE_COUNT = 30;

let pg: TestPostgres;
let url: string;
let agency: string;

beforeAll(async () => {
  // A clone of the run's migrated template when there is one (then nothing is left to apply).
  pg = await startPostgres({ migrated: true });
  url = await pg.createDatabase(undefined, pg.migratedTemplate);
  await runMigrations({ database: url });
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    // One agency user with 40,000 accounts spread over the whole table (30 of them in a rare
    // marketplace), and 600 users sharing the other 60,000.
    await c.query(`INSERT INTO users (email) SELECT 'user' || n || '@example.com' FROM generate_series(1, 601) n`);
    agency = (await c.query(`SELECT id FROM users WHERE email = 'user1@example.com'`)).rows[0].id as string;
    // The outbox trigger (0023) writes an accounts-changed event per connection of the inserted
    // accounts; these users have no connection (no oauth_tokens row), so it would write nothing,
    // after tens of seconds merging 100,000 ids. It is off for this one insert only: the data and the
    // schema the plans are read from are the same.
    await c.query('ALTER TABLE user_accounts DISABLE TRIGGER user_accounts_events_insert');
    await c.query(
      `INSERT INTO user_accounts (user_id, region, amazon_account_id, status, sync_status, metadata)
       SELECT CASE WHEN n % 5 < 2 THEN $1::uuid
                   ELSE (SELECT id FROM users WHERE email = 'user' || (2 + n % 600) || '@example.com') END,
              'NA', (5000000000000 + n)::text, 'active', 'completed',
              jsonb_build_object('marketplaceStringId', CASE WHEN n % 5 = 0 AND n <= 5 * $2 THEN $3 ELSE 'ATVPDKIKX0DER' END,
                                 'countryCode', 'US', 'accountType', (ARRAY['seller','vendor','agency'])[1 + n % 3],
                                 'accountName', 'Account ' || n, 'region', 'NA')
         FROM generate_series(1, $4) n`,
      [agency, RARE_COUNT, RARE, ACCOUNTS],
    );
    await c.query('ALTER TABLE user_accounts ENABLE TRIGGER user_accounts_events_insert');
    expect((await c.query('SELECT count(*)::int AS n FROM oauth_tokens')).rows[0].n).toBe(0);
    await c.query('ANALYZE user_accounts');
  } finally {
    await c.end();
  }
}, 300_000);
afterAll(async () => {
  await pg?.stop();
});

/** The plans auto_explain logs for the statements inside one call of the API's function. */
async function nestedPlans(meta: object | null): Promise<{ plans: string; items: number }> {
  const c = new Client({ connectionString: url });
  await c.connect();
  const notices: string[] = [];
  c.on('notice', (n) => notices.push(n.message ?? ''));
  try {
    await c.query(`LOAD 'auto_explain'`);
    await c.query(`SET auto_explain.log_min_duration = 0`);
    await c.query(`SET auto_explain.log_nested_statements = on`);
    await c.query(`SET client_min_messages = log`);
    await c.query('BEGIN');
    await c.query('SET LOCAL ROLE accounts_api_caller');
    const { rows } = await c.query<{ r: unknown[] }>(
      `SELECT api.list_accounts($1::jsonb, $2::jsonb, NULL, NULL, NULL, 51, NULL, NULL) AS r`,
      [JSON.stringify({ sub: agency, role: 'authenticated' }), meta === null ? null : JSON.stringify(meta)],
    );
    await c.query('ROLLBACK');
    return { plans: notices.join('\n'), items: rows[0].r.length };
  } finally {
    await c.end();
  }
}

test(`a marketplace filter on ${ACCOUNTS.toLocaleString('en-US')} accounts is served by the GIN index on metadata`, async () => {
  const { plans, items } = await nestedPlans({ marketplaceStringId: RARE });
  expect(items).toBe(RARE_COUNT);
  expect(plans).toMatch(/Bitmap Index Scan on idx_user_accounts_metadata/);
  expect(plans).toMatch(/Index Cond: \(metadata @> /);
});

test('without a metadata filter the page is read in key order from the per-user index instead', async () => {
  const { plans, items } = await nestedPlans(null);
  expect(items).toBe(51);
  expect(plans).not.toMatch(/idx_user_accounts_metadata/);
  expect(plans).toMatch(/Index Scan using idx_user_accounts_user_amazon/);
});
