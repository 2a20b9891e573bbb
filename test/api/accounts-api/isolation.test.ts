import { Client } from 'pg';
import type { SyncStarter } from '../../../lambda/accounts-api/core';
import type { ApiResult } from '../../../lambda/shared/http';
import { Database, Row, SqlParams } from '../../../lambda/shared/db';
import { ApiWorld, request, startApiWorld, startConnectSession } from '../fixture';
import { checked } from '../openapi';
import { SeededUser, seedApiUsers } from '../seed';

// The isolation harness: three users with accounts in several regions, history, rate-limit
// rows and connect sessions; 3,000 randomized requests over every endpoint and user, 32 in flight,
// through the API on the Data API path (the emulator signed in as accounts_api). No response
// may carry another user's row; others' ids are 404; every statement starts without claims.
// Then the same with the API's own user filters removed from its SQL: RLS alone isolates.

const REQUESTS = 3000;
const IN_FLIGHT = 32;

let world: ApiWorld;
let users: SeededUser[];
/** Every id (user, account, history, Amazon profile) → the user it belongs to. */
const owner = new Map<string, string>();

beforeAll(async () => {
  world = await startApiWorld();
  users = await seedApiUsers(world, [
    { regions: ['NA', 'EU', 'FE'], accountsPerRegion: 14, historyPerAccount: 2 },
    { regions: ['NA', 'EU'], accountsPerRegion: 9, historyPerAccount: 3 },
    { regions: ['FE'], accountsPerRegion: 23, historyPerAccount: 1 },
  ]);
  const { rows } = await world.admin.query<{ id: string; user_id: string; amazon_account_id: string }>(
    `SELECT id, user_id, amazon_account_id FROM user_accounts`,
  );
  for (const r of rows) {
    owner.set(r.id, r.user_id);
    owner.set(r.amazon_account_id, r.user_id);
  }
  const { rows: history } = await world.admin.query<{ id: string; user_id: string }>(
    `SELECT h.id, a.user_id FROM account_sync_history h JOIN user_accounts a ON a.id = h.user_account_id`,
  );
  for (const h of history) owner.set(h.id, h.user_id);
  for (const u of users) owner.set(u.userId, u.userId);
});
afterAll(async () => {
  await world?.close();
});

/** Ids in a response body that belong to someone other than `userId`. */
function foreignIds(body: string, userId: string): string[] {
  const found = body.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b\d{13}\b/g) ?? [];
  return found.filter((id) => owner.has(id) && owner.get(id) !== userId);
}

/** A database port that probes, before every statement, what a fresh statement sees. */
function probing(db: Database, probes: Array<{ claims: string; uid: string | null }>): Database {
  return {
    async query<T extends object = Row>(sql: string, params?: SqlParams) {
      const probe = await db.query<{ claims: string; uid: string | null }>(
        `SELECT coalesce(current_setting('request.jwt.claims', true), '') AS claims, auth.uid()::text AS uid`,
      );
      probes.push(probe.rows[0]);
      return db.query<T>(sql, params);
    },
    batch: (sql, sets) => db.batch(sql, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}

interface Outcome {
  readonly user: SeededUser;
  readonly kind: string;
  readonly result: ApiResult;
  readonly expectNotFound: boolean;
}

/** Seeded random numbers (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function runHarness(seed: number) {
  const probes: Array<{ claims: string; uid: string | null }> = [];
  const starts: string[] = [];
  const syncs: SyncStarter = {
    start: ({ userId }) => {
      starts.push(userId);
      return Promise.resolve();
    },
  };
  // A window longer than any run, so that exactly one manual sync per user gets through.
  await world.admin.query(`DELETE FROM rate_limit_tracking WHERE endpoint LIKE 'accounts-api:%'`);
  await world.admin.query(`DELETE FROM connect_sessions`);
  const api = checked(world.api({ db: probing(world.apiDataApi(), probes), syncs, manualSyncWindowSeconds: 3600 }));
  const rand = random(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];
  const tokens = new Map(users.map((u) => [u.userId, world.token(u.userId, { email: u.email })]));
  // One open connect session per user (one of each user's regions): the others try its state.
  const sessions = new Map<string, { region: string; state: string }>();
  for (const u of users) {
    const region = u.regions[0];
    sessions.set(u.userId, { region, state: (await startConnectSession(api, tokens.get(u.userId)!, region)).state });
  }
  const cursors = new Map<string, string>(); // user → a nextCursor of /v1/accounts without filters
  const outcomes: Outcome[] = [];

  const makeRequest = (): (() => Promise<Outcome>) => {
    const user = pick(users);
    const other = pick(users.filter((u) => u !== user));
    const token = tokens.get(user.userId)!;
    const kinds = [
      'accounts',
      'accounts-filtered',
      'accounts-cursor',
      'account-own',
      'account-other',
      'history-own',
      'history-other',
      'history-all',
      'connections',
      'sync',
      'disconnect-missing',
      'session',
      'connect-refused',
    ];
    const kind = pick(kinds);
    const run = async (event: ReturnType<typeof request>, expectNotFound = false): Promise<Outcome> => ({
      user,
      kind,
      result: await api(event),
      expectNotFound,
    });
    switch (kind) {
      case 'accounts':
        return () =>
          run(request('GET', '/v1/accounts', { token, query: { limit: String(1 + Math.floor(rand() * 100)) } }));
      case 'accounts-filtered': {
        const query: Record<string, string> = {};
        if (rand() < 0.5) query.region = pick(['NA', 'EU', 'FE']);
        if (rand() < 0.5) query.accountType = pick(['seller', 'vendor', 'agency']);
        if (rand() < 0.3)
          query.marketplace = pick(['ATVPDKIKX0DER', 'A1F83G8C2ARO7P', 'A1VC38T7YXB528', 'A1PA6795UKMFR9']);
        if (rand() < 0.3) query.countryCode = pick(['US', 'UK', 'JP', 'DE', 'CA']);
        if (rand() < 0.3) query.status = pick(['pending', 'active', 'inactive']);
        if (rand() < 0.3) query.syncStatus = pick(['pending', 'completed', 'failed', 'reauth_required']);
        return () => run(request('GET', '/v1/accounts', { token, query }));
      }
      case 'accounts-cursor': {
        const cursor = cursors.get(user.userId);
        return () =>
          run(request('GET', '/v1/accounts', { token, query: cursor ? { limit: '5', cursor } : { limit: '5' } })).then(
            (o) => {
              const next = (JSON.parse(o.result.body) as { nextCursor: string | null }).nextCursor;
              if (next) cursors.set(user.userId, next);
              else cursors.delete(user.userId);
              return o;
            },
          );
      }
      case 'account-own':
        return () => run(request('GET', `/v1/accounts/${pick(user.accountIds)}`, { token }));
      case 'account-other':
        return () => run(request('GET', `/v1/accounts/${pick(other.accountIds)}`, { token }), true);
      case 'history-own':
        return () =>
          run(request('GET', `/v1/accounts/${pick(user.accountIds)}/sync-history`, { token, query: { limit: '3' } }));
      case 'history-other':
        return () => run(request('GET', `/v1/accounts/${pick(other.accountIds)}/sync-history`, { token }), true);
      case 'history-all':
        return () =>
          run(request('GET', '/v1/sync-history', { token, query: { limit: String(1 + Math.floor(rand() * 100)) } }));
      case 'connections':
        return () => run(request('GET', '/v1/connections', { token }));
      case 'sync':
        return () =>
          run(request('POST', '/v1/syncs', { token, body: rand() < 0.5 ? {} : { region: pick(user.regions) } }));
      case 'disconnect-missing': {
        const missing = ['NA', 'EU', 'FE'].filter((r) => !user.regions.includes(r));
        if (missing.length === 0) return () => run(request('GET', '/v1/connections', { token }));
        return () => run(request('DELETE', `/v1/connections/${pick(missing)}`, { token }), true);
      }
      case 'session':
        return () =>
          run(
            request('POST', '/v1/connections/sessions', {
              token,
              body: { region: pick(['NA', 'EU', 'FE']), redirectUri: 'https://app.example.com/amazon/callback' },
            }),
          );
      default: {
        // Another user's open session: refused (or limited) before Amazon, the session left as it was.
        const theirs = sessions.get(other.userId)!;
        return () =>
          run(
            request('POST', '/v1/connections', {
              token,
              body: { region: theirs.region, code: `not-a-code-${Math.floor(rand() * 1e6)}`, state: theirs.state },
            }),
          );
      }
    }
  };

  const queue = Array.from({ length: REQUESTS }, makeRequest);
  const workers = Array.from({ length: IN_FLIGHT }, async () => {
    for (let next = queue.shift(); next; next = queue.shift()) outcomes.push(await next());
  });
  await Promise.all(workers);
  return { outcomes, probes, starts };
}

async function expectIsolated(seed: number) {
  const connectionsBefore = (
    await world.admin.query(`SELECT user_id, region, refresh_token FROM oauth_tokens ORDER BY 1, 2`)
  ).rows;
  const exchangesBefore = world.amazon.counters.authorizationCodeCalls();
  const { outcomes, probes, starts } = await runHarness(seed);
  expect(outcomes).toHaveLength(REQUESTS);
  const leaks = outcomes.flatMap((o) => foreignIds(o.result.body, o.user.userId).map((id) => `${o.kind}: ${id}`));
  expect(leaks).toEqual([]);
  const wrongStatus = outcomes.filter((o) => {
    if (o.expectNotFound) return o.result.statusCode !== 404;
    if (o.kind === 'sync') return ![202, 429].includes(o.result.statusCode);
    if (o.kind === 'session') return ![201, 429].includes(o.result.statusCode);
    if (o.kind === 'connect-refused')
      return !(
        (o.result.statusCode === 400 && o.result.body.includes('invalid-connect-state')) ||
        o.result.statusCode === 429
      );
    return o.result.statusCode !== 200;
  });
  expect(wrongStatus.map((o) => `${o.kind} ${o.result.statusCode} ${o.result.body.slice(0, 120)}`)).toEqual([]);
  // Every user's own data is reachable: the lists are not empty because of over-filtering.
  for (const u of users) {
    const own = outcomes.filter((o) => o.user === u && o.kind === 'accounts' && o.result.statusCode === 200);
    expect(own.some((o) => (JSON.parse(o.result.body) as { items: unknown[] }).items.length > 0)).toBe(true);
  }
  // Each statement started with no claims: nothing leaks from one request to the next on a pooled connection.
  expect(probes.length).toBeGreaterThanOrEqual(REQUESTS);
  expect(probes.filter((p) => p.claims !== '' || p.uid !== null)).toEqual([]);
  // One manual sync per user was let through (recorded under that user); the others were 429.
  expect(new Set(starts).size).toBe(starts.length);
  const syncRequests = outcomes.filter((o) => o.kind === 'sync');
  expect(starts.length).toBe(new Set(syncRequests.map((o) => o.user.userId)).size);
  // No connect reached Amazon, and every user's own session is still unused.
  expect(world.amazon.counters.authorizationCodeCalls()).toBe(exchangesBefore);
  expect(
    (await world.admin.query(`SELECT count(*)::int AS n FROM connect_sessions WHERE used_at IS NOT NULL`)).rows,
  ).toEqual([{ n: 0 }]);
  // Nothing was disconnected or changed by another user.
  expect(
    (await world.admin.query(`SELECT user_id, region, refresh_token FROM oauth_tokens ORDER BY 1, 2`)).rows,
  ).toEqual(connectionsBefore);
}

test('3,000 randomized requests at 32 in flight on the Data API path: no foreign row, others’ ids are 404, no claims carried over', async () => {
  await expectIsolated(12);
});

describe('with the API’s own user filters removed from its SQL', () => {
  let originals: string[] = [];
  beforeAll(async () => {
    const c = new Client({ connectionString: world.url });
    await c.connect();
    try {
      const { rows } = await c.query<{ def: string }>(
        `SELECT pg_get_functiondef(p.oid) AS def FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace`,
      );
      originals = rows.map((r) => r.def);
      let removed = 0;
      for (const def of originals) {
        const stripped = def.replace(/\/\* own rows \*\/ [a-z_]+\.[a-z_]+ = auth\.uid\(\)/g, () => {
          removed += 1;
          return 'true';
        });
        if (stripped !== def) await c.query(stripped);
      }
      // Every read of user data had its filter: accounts, history, connections, disconnect, syncs.
      expect(removed).toBeGreaterThanOrEqual(10);
      const after = await c.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_proc p WHERE p.pronamespace = 'api'::regnamespace AND pg_get_functiondef(p.oid) LIKE '%/* own rows */%'`,
      );
      expect(after.rows[0].n).toBe(0);
    } finally {
      await c.end();
    }
  });
  afterAll(async () => {
    const c = new Client({ connectionString: world.url });
    await c.connect();
    try {
      for (const def of originals) await c.query(def);
    } finally {
      await c.end();
    }
  });

  test('the same 3,000 requests still return zero rows of another user (RLS alone isolates)', async () => {
    await expectIsolated(34);
  });
});
