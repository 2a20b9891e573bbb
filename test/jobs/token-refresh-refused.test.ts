import { runTokenRefresh } from '../../lambda/token-refresh/core';
import { type Database, DatabaseError } from '../../lambda/shared/db';
import { METRIC_NAMES } from '../../lambda/shared/jobs/metrics';
import { JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/**
 * A refresh result the database refuses even on its own: its lease is given back, and the run
 * counts it as given back, not as refreshed.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

describe.each(PATHS)('%s path', (_path, database) => {
  test('a refused result is counted as given back, not refreshed; the other tokens are refreshed', async () => {
    await seedUsers(world, { count: 12 });
    const { rows: ids } = await world.admin.query<{ id: string; user_id: string }>(
      `SELECT id, user_id FROM oauth_tokens ORDER BY id`,
    );
    const poison = ids[5];
    const rt = runtime();

    const summary = await runTokenRefresh({
      db: refusingResultOf(database(), poison.id),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
    });

    expect(summary).toMatchObject({ claimed: 12, refreshed: 11, released: 1, rejectedByDatabase: 1, notWritten: 0 });
    expect(rt.metrics.totals[METRIC_NAMES.tokensRefreshed]).toBe(11);
    const { rows } = await world.admin.query<{
      id: string;
      last_refreshed_at: Date | null;
      refresh_lease_owner: string | null;
    }>(`SELECT id, last_refreshed_at, refresh_lease_owner FROM oauth_tokens`);
    for (const r of rows) {
      expect(r.refresh_lease_owner).toBeNull();
      if (r.id === poison.id) expect(r.last_refreshed_at).toBeNull();
      else expect(r.last_refreshed_at).not.toBeNull();
    }
    expect(rt.logger.lines.filter((l) => l.level === 'error')).toEqual([
      {
        level: 'error',
        message: 'Token refresh result refused by the database; its lease was given back',
        attributes: { tokenId: poison.id, userId: poison.user_id, error: 'invalid input syntax' },
      },
    ]);
  });
});

/**
 * `db`, but any write-back carrying `tokenId`'s result (not its release) is refused as data,
 * as PostgreSQL refuses a value it cannot store (a real adapter underneath).
 */
function refusingResultOf(db: Database, tokenId: string): Database {
  return {
    query: (sql, params) => {
      const values = JSON.stringify(params ?? {});
      if (/jsonb_to_recordset\(:results/.test(sql) && values.includes(tokenId) && /success/.test(values))
        return Promise.reject(new DatabaseError('invalid input syntax', { code: '22P02' }));
      return db.query(sql, params);
    },
    batch: (sql, sets) => db.batch(sql, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: () => db.close(),
  };
}
