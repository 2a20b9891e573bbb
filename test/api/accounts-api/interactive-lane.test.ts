import { randomUUID } from 'node:crypto';
import { budgetLimiters, jobsCeiling } from '../../../lambda/shared/amazon/api-share';
import { DatabaseRateBudgetStore } from '../../../lambda/shared/amazon/rate-budget';
import { Database, PgDatabase } from '../../../lambda/shared/db';
import { fakeProfile } from '../../../local/amazon/profiles';
import { ApiWorld, consent, request, useApiWorld, startConnectSession } from '../fixture';

// The accounts API's code exchange (POST /v1/connections) while a job's batch holds the shared
// LWA schedule seconds ahead: it draws from the interactive lane the jobs leave free (migration
// 0026, lambda/shared/amazon/api-share.ts) and connects within its 2 s bound, on both paths.

let world: ApiWorld;
let superuser: PgDatabase;
useApiWorld((started) => {
  ({ world, superuser } = started);
});
beforeEach(async () => {
  await world.reset();
  await world.admin.query(`DELETE FROM amazon_rate_budget`);
});

/** Today's default limits (LWA 10 requests/s per region), as the API's handler builds its limiters. */
const LIMITS = { lwa: 10, ads: 5 };

const paths: Array<[string, () => { db: Database; assume: boolean }]> = [
  ['Data API', () => ({ db: world.apiDataApi(), assume: false })],
  ['node-postgres', () => ({ db: superuser, assume: true })],
];

/** The API as lambda/accounts-api/handler.ts builds it: its LWA client on the API's share of the budget. */
function apiOn(db: Database, assume: boolean) {
  return world.api({
    db,
    assumeAuthenticatedRole: assume,
    lwaLimiters: budgetLimiters(db, LIMITS, { interactive: true }),
    syncs: { start: () => Promise.resolve() },
  });
}

describe.each(paths)('%s', (_name, make) => {
  test('a job batch holds the LWA schedule 6 s ahead: a connect still exchanges its code within its 2 s bound, from the lane', async () => {
    const { db, assume } = make();
    const api = apiOn(db, assume);
    const userId = randomUUID();
    world.amazon.addUser({ userId, refreshToken: `Atzr|before-${userId}`, profiles: [fakeProfile('NA')] });
    const token = world.token(userId, { email: `${userId.slice(0, 8)}@example.com` });
    const session = await startConnectSession(api, token, 'NA');
    const { code } = await consent(session, userId);
    // A job's batch, as a run reserves it (the jobs' login): the whole 6 s horizon at their pace.
    const batch = await new DatabaseRateBudgetStore(world.dataApi()).reserve(
      { endpoint: 'lwa', region: 'NA' },
      {
        ceiling: jobsCeiling('lwa', LIMITS.lwa),
        wanted: 100,
        maxWaitMs: 0,
        toleranceMs: 100,
        leadMs: 0,
        horizonMs: 6000,
      },
    );
    expect(batch.granted).toBeGreaterThanOrEqual(50);
    const before = world.amazon.counters.authorizationCodeCalls();

    const r = await api(
      request('POST', '/v1/connections', { token, body: { region: 'NA', code, state: session.state } }),
    );

    expect(r.statusCode).toBe(201);
    expect(world.amazon.counters.authorizationCodeCalls()).toBe(before + 1);
    const { rows } = await world.admin.query<{ endpoint: string; ceiling_per_second: number }>(
      `SELECT endpoint, ceiling_per_second FROM amazon_rate_budget WHERE region = 'NA' ORDER BY endpoint`,
    );
    // The jobs' schedule (paced at 9/s) and the lane it left free (1/s); no quota slot was needed.
    expect(rows).toEqual([
      { endpoint: 'lwa-token', ceiling_per_second: 9 },
      { endpoint: 'lwa-token:interactive', ceiling_per_second: 1 },
    ]);
  });
});
