import { randomUUID } from 'node:crypto';
import { accountSyncSelection, tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import type { DispatchSelection } from '../../../lambda/dispatcher/core';
import { markDueTokensDispatched, TOKEN_REFRESH_WINDOW_SECONDS } from '../../../lambda/token-refresh/store';
import {
  markDueConnectionsDispatched,
  MIN_TOKEN_VALIDITY_SECONDS,
  REAUTH_MESSAGE,
} from '../../../lambda/account-sync/store';
import { AMAZON_REGIONS, type AmazonRegion } from '../../../lambda/shared/amazon/regions';
import { Database, PgDatabase } from '../../../lambda/shared/db';
import { JobWorld, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

// The dispatchers' selections (lambda/dispatcher/selections.ts) on both database paths, as the
// jobs' login: which endpoint's pauses each honours, and two ticks racing for the same due rows.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

/** An endpoint-wide Retry-After in force, as a job records it (`lwa-token:EU`, `ads-profiles:NA`). */
async function pause(endpoint: string, seconds = 600): Promise<void> {
  await world.admin.query(
    `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds)
     VALUES (NULL, :endpoint, 1, 1, now(), :seconds)`,
    { endpoint, seconds },
  );
}

/** The regions of the connections (oauth_tokens ids) given. */
async function regionsOf(ids: readonly string[]): Promise<string[]> {
  const { rows } = await world.admin.query<{ region: string }>(
    `SELECT DISTINCT region FROM oauth_tokens WHERE id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid) ORDER BY region`,
    { ids: JSON.stringify(ids) },
  );
  return rows.map((r) => r.region);
}

/** Two connections due in each region (token refresh: expiring; account sync: accounts due). */
async function dueEverywhere(): Promise<void> {
  await seedUsers(world, {
    count: 6,
    regions: (i) => [AMAZON_REGIONS[i % AMAZON_REGIONS.length]],
    accountsDueInSeconds: -60,
  });
}

async function selectAll(selection: DispatchSelection): Promise<string[]> {
  await selection.beforeTick?.();
  return selection.select({ dispatchId: randomUUID(), limit: 1000 });
}

const others = (region: AmazonRegion) => AMAZON_REGIONS.filter((r) => r !== region).sort();

/** Each dispatcher's mark, called directly (to hold it open), and its selection. */
const RACES: Array<{
  job: string;
  ownerColumn: string;
  mark: (db: Database, dispatchId: string, limit: number) => Promise<string[]>;
  selection: (db: Database) => DispatchSelection;
}> = [
  {
    job: 'token refresh',
    ownerColumn: 'refresh_lease_owner',
    mark: (db, dispatchId, limit) =>
      markDueTokensDispatched(db, {
        dispatchId,
        limit,
        markSeconds: 600,
        windowSeconds: TOKEN_REFRESH_WINDOW_SECONDS,
        pausedRegions: [],
      }),
    selection: (db) => tokenRefreshSelection(db),
  },
  {
    job: 'account sync',
    ownerColumn: 'sync_lease_owner',
    mark: (db, dispatchId, limit) =>
      markDueConnectionsDispatched(db, {
        dispatchId,
        limit,
        markSeconds: 1800,
        minTokenValiditySeconds: MIN_TOKEN_VALIDITY_SECONDS,
        pausedRegions: [],
      }),
    selection: (db) => accountSyncSelection(db),
  },
];

describe.each(PATHS)('%s', (_path, database) => {
  test('the token refresh skips regions whose Login-with-Amazon endpoint is paused, not those whose Ads endpoint is', async () => {
    await dueEverywhere();
    await pause('lwa-token:EU');
    await pause('ads-profiles:NA');
    // A pause that has ended is no pause.
    await world.admin.query(
      `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count, limit_hit_count, last_limit_hit, retry_after_seconds)
       VALUES (NULL, 'lwa-token:FE', 1, 1, now() - interval '1 hour', 60)`,
    );

    const ids = await selectAll(tokenRefreshSelection(database()));

    expect(ids).toHaveLength(4);
    expect(await regionsOf(ids)).toEqual(others('EU'));
  });

  test('the account sync skips regions whose Ads endpoint is paused, not those whose Login-with-Amazon endpoint is', async () => {
    await dueEverywhere();
    await pause('ads-profiles:FE');
    await pause('lwa-token:NA');

    const ids = await selectAll(accountSyncSelection(database()));

    expect(ids).toHaveLength(4);
    expect(await regionsOf(ids)).toEqual(others('FE'));
  });

  test('the token refresh’s used-within window: only connections used within it (or never recorded) are dispatched', async () => {
    await seedUsers(world, { count: 3, expiresInSeconds: 600, regions: () => ['NA'] });
    const { rows } = await world.admin.query<{ id: string }>(`SELECT id FROM oauth_tokens ORDER BY id`);
    const [recent, idle, unknown] = rows.map((r) => r.id);
    await world.admin.query(
      `UPDATE oauth_tokens SET last_used_at = CASE id WHEN :recent::uuid THEN now() - interval '1 hour'
                                                      WHEN :idle::uuid THEN now() - interval '30 days' END`,
      { recent, idle },
    );

    const windowed = await selectAll(tokenRefreshSelection(database(), { usedWithinSeconds: 7 * 86_400 }));
    expect(windowed.sort()).toEqual([recent, unknown].sort());
    // Without the window the idle one is due too.
    const rest = await selectAll(tokenRefreshSelection(database()));
    expect(rest).toEqual([idle]);
  });

  test('each selection marks for its job’s dispatch mark by default (10 min, 30 min); the sync first flags the accounts of connections whose refresh is off', async () => {
    await dueEverywhere();
    const { rows: tokens } = await world.admin.query<{ id: string; user_id: string }>(
      `SELECT id, user_id FROM oauth_tokens ORDER BY id`,
    );
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE id = :id::uuid`, {
      id: tokens[0].id,
    });
    const markOf = async (column: string) => {
      const { rows } = await world.admin.query<{ seconds: number }>(
        `SELECT DISTINCT round(extract(epoch FROM ${column} - now()) / 60) * 60 AS seconds FROM oauth_tokens
          WHERE ${column} IS NOT NULL`,
      );
      return rows.map((r) => Number(r.seconds));
    };

    expect((await selectAll(tokenRefreshSelection(database()))).length).toBeGreaterThan(0);
    expect(await markOf('refresh_lease_expires_at')).toEqual([600]);

    expect((await selectAll(accountSyncSelection(database()))).length).toBeGreaterThan(0);
    expect(await markOf('sync_lease_expires_at')).toEqual([1800]);
    const { rows: flagged } = await world.admin.query<{ user_id: string; sync_error_message: string }>(
      `SELECT DISTINCT user_id::text, sync_error_message FROM user_accounts WHERE sync_status = 'reauth_required'`,
    );
    expect(flagged).toEqual([{ user_id: tokens[0].user_id, sync_error_message: REAUTH_MESSAGE }]);
  });

  describe.each(RACES)('$job', (race) => {
    test('two ticks racing for the same due rows mark disjoint sets: a tick neither waits for nor takes rows another is marking', async () => {
      await seedUsers(world, {
        count: 8,
        regions: () => ['NA'],
        accountsDueInSeconds: -60,
      });
      // The first tick's mark, held open in its transaction (node-postgres, as the jobs' login).
      const holder = new PgDatabase({ connection: world.workerUrl });
      const firstTick = randomUUID();
      let release!: () => void;
      const released = new Promise<void>((resolve) => (release = resolve));
      let firstIds: string[] = [];
      let marked!: () => void;
      const markedNow = new Promise<void>((resolve) => (marked = resolve));
      const first = holder.transaction(async (tx) => {
        firstIds = await race.mark(tx, firstTick, 5);
        marked();
        await released;
      });
      try {
        await markedNow;
        expect(firstIds).toHaveLength(5);
        // The second tick runs while the first one's rows are locked: it marks the others.
        let settled = false;
        const second = race
          .selection(database())
          .select({ dispatchId: randomUUID(), limit: 8 })
          .finally(() => (settled = true));
        const outcome = await Promise.race([
          second.then((ids) => ({ done: true as const, ids })),
          waitForLockWait(() => settled).then(() => ({ done: false as const })),
        ]);
        release();
        await first;
        const secondIds = outcome.done ? outcome.ids : await second;
        // Blocked behind the first tick's locks would have been the bug (its rows re-marked after).
        expect(outcome.done).toBe(true);
        expect(secondIds).toHaveLength(3);
        expect(secondIds.filter((id) => firstIds.includes(id))).toEqual([]);
        const owners = await world.admin.query<{ owner: string; n: number }>(
          `SELECT ${race.ownerColumn}::text AS owner, count(*)::int AS n FROM oauth_tokens GROUP BY 1 ORDER BY 2 DESC`,
        );
        expect(owners.rows.map((r) => r.n)).toEqual([5, 3]);
        expect(owners.rows[0].owner).toBe(firstTick);
      } finally {
        release();
        await first.catch(() => undefined);
        await holder.close();
      }
    });
  });
});

/** Resolves once some session of the database waits for a lock (polls pg_stat_activity), or `stop` says so. */
async function waitForLockWait(stop: () => boolean): Promise<void> {
  while (!stop()) {
    const { rows } = await world.admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
    );
    if (rows[0].n > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
