import { runDispatch } from '../../../lambda/dispatcher/core';
import { accountSyncSelection, tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import { readRegionPauses } from '../../../lambda/shared/jobs/region-pauses';
import { recordingQueue, sentIds } from '../recording-queue';
import { JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * The dispatchers skip a region whose Amazon endpoint is paused until the pause ends, and the
 * pause they read is the one the limiters really apply: the shared budget's `paused_until`
 * (Retry-After doubled for each 429 in a row), not only the last Retry-After recorded.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

/** The shared budget row of an endpoint in a region, paused for `seconds` from now (negative: ended). */
async function pauseBudget(endpoint: 'lwa-token' | 'ads-profiles', region: AmazonRegion, seconds: number) {
  await world.admin.query(
    `INSERT INTO amazon_rate_budget (endpoint, region, ceiling_per_second, rate_per_second, rate_at, next_slot_at, paused_until)
     VALUES (:endpoint, :region, 10, 10, now(), now(), now() + make_interval(secs => :seconds))
     ON CONFLICT (endpoint, region) DO UPDATE SET paused_until = EXCLUDED.paused_until`,
    { endpoint, region, seconds },
  );
}

/** What a run recorded of a 429: Retry-After `seconds`, `agoSeconds` ago. */
async function recordRetryAfter(endpoint: string, seconds: number, agoSeconds: number) {
  await world.admin.query(
    `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds, window_start)
     VALUES (NULL, :endpoint, 1, 1, now() - make_interval(secs => :ago), :seconds, now())`,
    { endpoint, seconds, ago: agoSeconds },
  );
}

async function regionsOf(ids: readonly string[]): Promise<string[]> {
  const { rows } = await world.admin.query<{ region: string }>(
    `SELECT DISTINCT region FROM oauth_tokens WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid) ORDER BY region`,
    { ids: JSON.stringify(ids) },
  );
  return rows.map((r) => r.region);
}

describe.each(PATHS)('%s', (_path, database) => {
  test("the token refresh dispatcher leaves a region alone while the shared budget's pause lasts, though the recorded Retry-After has passed", async () => {
    await seedUsers(world, { count: 6, expiresInSeconds: 600 }); // two per region
    // The 429 said 30 s and came 40 s ago; the limiter doubled it (a second 429 in a row): 80 s.
    await recordRetryAfter('lwa-token:EU', 30, 40);
    await pauseBudget('lwa-token', 'EU', 40);
    const db = database();
    const { queue, messages } = recordingQueue();

    const summary = await runDispatch({
      selection: tokenRefreshSelection(db),
      queue,
      ...runtime(),
      settings: { maxIds: 1000 },
    });

    expect(summary.dispatched).toBe(4);
    expect(await regionsOf(sentIds(messages))).toEqual(['FE', 'NA']);
  });

  test('once the pause has ended, the next tick sends the region', async () => {
    await seedUsers(world, { count: 6, expiresInSeconds: 600 });
    await pauseBudget('lwa-token', 'EU', -1);
    await recordRetryAfter('lwa-token:EU', 30, 31);
    const { queue, messages } = recordingQueue();

    await runDispatch({
      selection: tokenRefreshSelection(database()),
      queue,
      ...runtime(),
      settings: { maxIds: 1000 },
    });

    expect(await regionsOf(sentIds(messages))).toEqual(['EU', 'FE', 'NA']);
  });

  test("the account sync dispatcher leaves a region alone while the Ads budget's pause lasts", async () => {
    await seedUsers(world, { count: 6, expiresInSeconds: 3600, accountsDueInSeconds: -60 });
    await pauseBudget('ads-profiles', 'FE', 120);
    // The LWA pause of another region says nothing about Ads.
    await pauseBudget('lwa-token', 'NA', 120);
    const { queue, messages } = recordingQueue();

    await runDispatch({ selection: accountSyncSelection(database()), queue, ...runtime(), settings: { maxIds: 1000 } });

    expect(await regionsOf(sentIds(messages))).toEqual(['EU', 'NA']);
  });

  test('the pauses read are the later of the budget and the record, per region, and only those in force', async () => {
    await pauseBudget('lwa-token', 'NA', 100);
    await recordRetryAfter('lwa-token:NA', 300, 0);
    await pauseBudget('lwa-token', 'EU', 200);
    await recordRetryAfter('lwa-token:EU', 30, 0);
    await pauseBudget('lwa-token', 'FE', -5);
    const { rows } = await world.admin.query<{ now: Date }>('SELECT now() AS now');
    const now = rows[0].now.getTime();

    const pauses = await readRegionPauses(database(), 'lwa');

    expect([...pauses.keys()].sort()).toEqual(['EU', 'NA']);
    expect(pauses.get('NA')! - now).toBeGreaterThan(290_000);
    expect(pauses.get('EU')! - now).toBeGreaterThan(190_000);
    expect(pauses.get('EU')! - now).toBeLessThan(210_000);
  });
});
