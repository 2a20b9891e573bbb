import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { TOKEN_REFRESH_WINDOW_SECONDS } from '../../../lambda/token-refresh/store';
import {
  ON_DEMAND_FRESH_SECONDS,
  proactiveRefreshWindowSeconds,
  scheduleSeconds,
  TOKEN_REFRESH_SCHEDULE_SECONDS,
} from '../../../lambda/token-refresh/window';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * The proactive refresh renews a used connection's token just in time (lambda/token-refresh/
 * window.ts): once per token lifetime, not every half hour. Time passes by back-dating the token
 * between runs, one schedule interval per run.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

test('the window is the schedule plus the on-demand route’s freshness plus a minute', () => {
  expect(TOKEN_REFRESH_WINDOW_SECONDS).toBe(TOKEN_REFRESH_SCHEDULE_SECONDS + ON_DEMAND_FRESH_SECONDS + 60);
});

describe.each(PATHS)('%s', (_path, database: () => Database) => {
  test('a used connection is refreshed once per token lifetime: twice in two hours of 5-minute runs', async () => {
    const [user] = await seedUsers(world, { count: 1, expiresInSeconds: 3600 });
    const db = database();
    const run = () =>
      runTokenRefresh({
        db,
        lwa: world.lwa(),
        cipher: world.cipher,
        ...runtime(),
        settings: { usedWithinSeconds: 3600 },
      });
    let refreshed = 0;
    for (let tick = 1; tick <= 24; tick++) {
      // Five minutes on: the token is that much closer to expiry, the product used it meanwhile.
      await world.admin.query(
        `UPDATE oauth_tokens SET expires_at = expires_at - make_interval(secs => :step), last_used_at = now()
          WHERE user_id = :id::uuid`,
        { step: TOKEN_REFRESH_SCHEDULE_SECONDS, id: user.userId },
      );
      const { rows } = await world.admin.query<{ left: number }>(
        `SELECT extract(epoch FROM expires_at - now())::int AS left FROM oauth_tokens WHERE user_id = :id::uuid`,
        { id: user.userId },
      );
      // Never left to the on-demand route: more than its five minutes remain at every run.
      expect(rows[0].left).toBeGreaterThan(ON_DEMAND_FRESH_SECONDS);
      refreshed += (await run()).refreshed;
    }
    expect(refreshed).toBe(2);
    expect(world.amazon.counters.refreshCalls(user.refreshToken)).toBe(2);
  });
});

test('the window follows the schedule in cdk.json: rate(…) expressions read as seconds, cron(…) has none', () => {
  expect(scheduleSeconds('rate(5 minutes)')).toBe(300);
  expect(scheduleSeconds('rate(1 minute)')).toBe(60);
  expect(scheduleSeconds('rate(2 hours)')).toBe(7200);
  expect(scheduleSeconds('rate(1 day)')).toBe(86_400);
  expect(scheduleSeconds('cron(0/5 * * * ? *)')).toBeUndefined();
  expect(proactiveRefreshWindowSeconds(scheduleSeconds('rate(5 minutes)')!)).toBe(660);
  expect(proactiveRefreshWindowSeconds(scheduleSeconds('rate(10 minutes)')!)).toBe(960);
});
