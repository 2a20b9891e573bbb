import { randomUUID } from 'node:crypto';
import { Client } from 'pg';
import { RATE_BUDGET_ROLE } from '../../../lambda/migrate/worker-login';
import { DatabaseRateBudgetStore } from '../../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import { pollUntil } from '../../support/poll';
import { ApiWorld, consent, request, useApiWorld, startConnectSession } from '../fixture';

// Migration 0018: the accounts API's own Login with Amazon call (the authorization-code
// exchange of POST /v1/connections) draws from the shared rate budget, as the API's login
// (`accounts_api`) on the Data API path, and that login gets nothing else from it.

const LWA_PER_SECOND = 7;

let world: ApiWorld;
useApiWorld((started) => {
  ({ world } = started);
});
beforeEach(async () => {
  await world.reset();
});

/** The API as in AWS: the Data API as accounts_api, its LWA client on the shared budget. */
function api() {
  const db = world.apiDataApi();
  return world.api({
    db,
    lwaLimiters: new RateLimiterRegistry(
      { lwa: { ratePerSecond: LWA_PER_SECOND, burst: LWA_PER_SECOND, maxConcurrency: LWA_PER_SECOND } },
      {},
      new DatabaseRateBudgetStore(db),
    ),
    syncs: { start: () => Promise.resolve() },
  });
}

/** A connect of a new user in FE, after its session and consent (Amazon's code in hand). */
async function connectRequest(handle: ReturnType<typeof api>) {
  const userId = randomUUID();
  world.amazon.addUser({ userId, region: 'FE', refreshToken: `Atzr|before-${userId}` });
  const token = world.token(userId, { email: `${userId.slice(0, 8)}@example.com` });
  const session = await startConnectSession(handle, token, 'FE');
  const { code } = await consent(session, userId);
  return request('POST', '/v1/connections', { token, body: { region: 'FE', code, state: session.state } });
}

async function budgetRows() {
  const { rows } = await world.admin.query<{ region: string; ceiling_per_second: number; throttled_count: string }>(
    `SELECT region, ceiling_per_second, throttled_count::text FROM amazon_rate_budget WHERE endpoint = 'lwa-token'`,
  );
  return rows;
}

/** The budget rows once the 429's report has landed (it is sent in the background), or as they are after 10 s. */
function reportedThrottle() {
  return pollUntil(budgetRows, (rows) => rows.some((r) => r.throttled_count !== '0'), { timeoutMs: 10_000 });
}

test('connecting draws the code exchange from the shared LWA budget of the region', async () => {
  const handle = api();
  const result = await handle(await connectRequest(handle));

  expect(result.statusCode).toBe(201);
  expect(await budgetRows()).toEqual([{ region: 'FE', ceiling_per_second: LWA_PER_SECOND, throttled_count: '0' }]);
});

test('a 429 at the code exchange cuts and pauses the shared budget for everyone', async () => {
  const handle = api();
  const connect = await connectRequest(handle);
  world.amazon.setKnobs({ rate429: 1, retryAfterSeconds: 5 }, 'lwa');

  const result = await handle(connect);

  // Amazon's 429 is passed on as 503 with its Retry-After (the connect can be started again).
  expect(result.statusCode).toBe(503);
  expect(result.headers['retry-after']).toBe('5');
  // The client reports the 429 to the budget without holding the caller's answer back for it.
  expect(await reportedThrottle()).toEqual([
    { region: 'FE', ceiling_per_second: LWA_PER_SECOND, throttled_count: '1' },
  ]);
});

test('the budget role holds exactly the budget: its table and three functions; authenticated gets none of it', async () => {
  const owner = new Client({ connectionString: world.url });
  await owner.connect();
  try {
    const { rows: tables } = await owner.query<{ table_name: string; privilege_type: string }>(
      `SELECT DISTINCT table_name, privilege_type FROM information_schema.column_privileges
        WHERE grantee = $1 ORDER BY 1, 2`,
      [RATE_BUDGET_ROLE],
    );
    expect(tables).toEqual([
      { table_name: 'amazon_rate_budget', privilege_type: 'INSERT' },
      { table_name: 'amazon_rate_budget', privilege_type: 'SELECT' },
      { table_name: 'amazon_rate_budget', privilege_type: 'UPDATE' },
    ]);
    const { rows: whole } = await owner.query(
      `SELECT table_name FROM information_schema.role_table_grants WHERE grantee = $1`,
      [RATE_BUDGET_ROLE],
    );
    expect(whole).toEqual([]);
    const { rows: functions } = await owner.query<{ routine_name: string }>(
      `SELECT routine_name FROM information_schema.routine_privileges WHERE grantee = $1 ORDER BY 1`,
      [RATE_BUDGET_ROLE],
    );
    expect(functions.map((f) => f.routine_name)).toEqual([
      'amazon_rate_now',
      'amazon_requests_throttled',
      'reserve_amazon_requests',
    ]);
    // The API's login is a member; authenticated (the end users' role) is not.
    const { rows: members } = await owner.query<{ api: boolean; users: boolean }>(
      `SELECT pg_has_role('accounts_api', $1, 'USAGE') AS api, pg_has_role('authenticated', $1, 'USAGE') AS users`,
      [RATE_BUDGET_ROLE],
    );
    expect(members).toEqual([{ api: true, users: false }]);
    await owner.query('BEGIN');
    await owner.query('SET LOCAL ROLE authenticated');
    await expect(
      owner.query(`SELECT * FROM reserve_amazon_requests('lwa-token', 'NA', 1, 1, 0, 0, 0, 0, 1000)`),
    ).rejects.toThrow(/permission denied/);
    await owner.query('ROLLBACK');
  } finally {
    await owner.end();
  }
});
