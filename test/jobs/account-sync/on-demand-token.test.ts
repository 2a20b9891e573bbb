import { randomBytes } from 'node:crypto';
import { runAccountSync } from '../../../lambda/account-sync/core';
import type { ApiRequestEvent } from '../../../lambda/shared/http';
import { runTokenRefresh, TokenRefresher } from '../../../lambda/token-refresh/core';
import { proactiveRefreshWindowSeconds } from '../../../lambda/token-refresh/window';
import { createTokenRoute } from '../../../lambda/token-route/core';
import {
  Database,
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';

/**
 * The account sync takes its token on demand (issue 25): a claimed connection whose token is
 * about to expire is refreshed once, through the token route's single-flight path
 * (lambda/token-refresh/on-demand.ts), without recording a use. So an idle connection is
 * refreshed once per sync cycle (when the sync needs its token) and a used one about once per
 * token lifetime (by the proactive refresh); and the sync, the route and the refresh job on
 * one connection at once make one Amazon call. Real PostgreSQL, both database paths, the fake
 * Amazon counting refresh calls.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const HOUR = 3600;
/** The account sync's schedule (cdk.json: every 10 minutes); the refresh runs on the same step here. */
const STEP_SECONDS = 600;

/**
 * Moves the database's world `seconds` into the future: every stored time of the connections
 * and accounts goes back by that much (the database's clock is the real one). `usedUserId`'s
 * connection is used all the time (the product asks the route for its token).
 */
async function elapse(seconds: number, usedUserId: string): Promise<void> {
  await world.admin.query(
    `UPDATE oauth_tokens
        SET expires_at = expires_at - make_interval(secs => :s),
            last_used_at = CASE WHEN user_id = :used::uuid THEN now() ELSE last_used_at - make_interval(secs => :s) END,
            next_refresh_attempt_at = next_refresh_attempt_at - make_interval(secs => :s),
            sync_next_attempt_at = sync_next_attempt_at - make_interval(secs => :s)`,
    { s: seconds, used: usedUserId },
  );
  await world.admin.query(`UPDATE user_accounts SET next_sync_at = next_sync_at - make_interval(secs => :s)`, {
    s: seconds,
  });
}

async function markUsed(user: SeedUser, secondsAgo: number): Promise<void> {
  await world.admin.query(
    `UPDATE oauth_tokens SET last_used_at = now() - make_interval(secs => :ago) WHERE user_id = :id::uuid`,
    { ago: secondsAgo, id: user.userId },
  );
}

/** An LWA client that answers only after `delayMs` (so that three callers overlap), counting its calls. */
function slowLwa(delayMs: number, calls: { n: number }): TokenRefresher {
  const lwa = world.lwa();
  return {
    refresh: async (request) => {
      calls.n += 1;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      return lwa.refresh(request);
    },
  };
}

function tokenRequest(body: unknown): ApiRequestEvent {
  return {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    isBase64Encoded: false,
    requestContext: {
      requestId: randomBytes(8).toString('hex'),
      http: { method: 'POST', path: '/internal/v1/access-tokens' },
      authorizer: { iam: { userArn: 'arn:aws:sts::123456789012:assumed-role/product-server/i-0abc' } },
    },
  } as unknown as ApiRequestEvent;
}

describe.each(PATHS)('%s', (_path, database: () => Database) => {
  test('over 11 simulated hours: an idle connection is refreshed once per sync cycle, a used one about once per token lifetime', async () => {
    const [idle] = await seedUsers(world, { count: 1, expiresInSeconds: -HOUR, accountsDueInSeconds: -60 });
    const [used] = await seedUsers(world, { count: 1, expiresInSeconds: HOUR, accountsDueInSeconds: -60 });
    await markUsed(idle, 2 * HOUR);
    await markUsed(used, 0);
    const db = database();
    const windowSeconds = proactiveRefreshWindowSeconds(STEP_SECONDS);
    const hours = 11;
    const steps = (hours * HOUR) / STEP_SECONDS;
    let syncRefreshes = 0;

    for (let step = 0; step < steps; step++) {
      await runTokenRefresh({
        db,
        lwa: world.lwa(),
        cipher: world.cipher,
        ...runtime(),
        settings: { windowSeconds, usedWithinSeconds: HOUR },
      });
      const sync = await runAccountSync({ db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() });
      expect(sync.connectionsFailed).toBe(0);
      syncRefreshes += sync.tokensRefreshed;
      await elapse(STEP_SECONDS, used.userId);
    }

    // The idle connection: synced every 6 hours (±5 % jitter: twice in 11 h), one refresh per
    // sync, all of them the sync's own; the proactive refresh never touched it.
    const idleSyncs = world.amazon.counters.profileCalls(idle.userId);
    const idleRefreshes = world.amazon.counters.refreshCalls(idle.refreshToken);
    expect(idleSyncs).toBe(2);
    expect(idleRefreshes).toBe(idleSyncs);
    expect(syncRefreshes).toBe(idleRefreshes);
    // The used connection: renewed just in time by the proactive refresh (never by the sync),
    // once per token lifetime plus the share the schedule's step costs: 1.2 per hour at most.
    const usedRefreshes = world.amazon.counters.refreshCalls(used.refreshToken);
    expect(world.amazon.counters.profileCalls(used.userId)).toBe(2);
    expect(usedRefreshes / hours).toBeGreaterThanOrEqual(1);
    expect(usedRefreshes / hours).toBeLessThanOrEqual(1.2);
  }, 120_000);

  test('the account sync, the token route and the token refresh on one connection at once make one Amazon refresh call', async () => {
    const [user] = await seedUsers(world, {
      count: 1,
      expiresInSeconds: 30,
      accountsDueInSeconds: -60,
      regions: () => ['EU'],
    });
    await markUsed(user, 60);
    const calls = { n: 0 };
    const route = createTokenRoute({
      db: database(),
      lwa: slowLwa(400, calls),
      cipher: world.cipher,
      logger: runtime().logger,
      settings: { pollIntervalMs: 20 },
    });

    const [sync, answer, refresh] = await Promise.all([
      runAccountSync({
        db: database(),
        ads: world.ads(),
        lwa: slowLwa(400, calls),
        cipher: world.cipher,
        ...runtime(),
      }),
      route(tokenRequest({ userId: user.userId, region: 'EU' })),
      runTokenRefresh({
        db: database(),
        lwa: slowLwa(400, calls),
        cipher: world.cipher,
        ...runtime(),
        settings: { usedWithinSeconds: HOUR },
      }),
    ]);

    expect(calls.n).toBe(1);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(1);
    expect(sync).toMatchObject({ connectionsSynced: 1, connectionsFailed: 0 });
    expect(answer.statusCode).toBe(200);
    expect(JSON.parse(answer.body)).toMatchObject({ refreshed: true });
    expect(sync.tokensRefreshed + refresh.refreshed).toBeLessThanOrEqual(1);
    expect(world.amazon.counters.profileCalls(user.userId)).toBe(1);
    const { rows } = await world.admin.query<{ owner: string | null; failures: number }>(
      `SELECT refresh_lease_owner AS owner, refresh_failure_count AS failures FROM oauth_tokens WHERE user_id = :id::uuid`,
      { id: user.userId },
    );
    expect(rows[0]).toEqual({ owner: null, failures: 0 });
  });
});
