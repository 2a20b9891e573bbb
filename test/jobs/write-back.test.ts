import { Database, DatabaseError, QueryResult, Row, SqlParams } from '../../lambda/shared/db';
import { runTokenRefresh } from '../../lambda/token-refresh/core';
import { JobWorld, runtime, seedUsers, useJobWorld } from '../support/jobs';
import { oauthTokenBinding } from '../../lambda/shared/token-crypto';

// Write-backs that fail (lambda/shared/jobs/write-back.ts, write-in-halves.ts), in a token
// refresh run on both database paths: retried, then split until only the rows that cannot be
// written are left.

let world: JobWorld;
useJobWorld((w) => (world = w));

/** A node-postgres database whose write-back statements fail as `fail` decides (a real adapter underneath). */
function faultyWriteBack(
  db: Database,
  fail: (params: SqlParams, attempt: number) => DatabaseError | undefined,
): Database {
  let attempts = 0;
  return {
    query: async <T extends object = Row>(sql: string, params?: SqlParams): Promise<QueryResult<T>> => {
      if (/jsonb_to_recordset\(:results/.test(sql)) {
        attempts += 1;
        const error = fail(params ?? {}, attempts);
        if (error) throw error;
      }
      return db.query<T>(sql, params);
    },
    batch: (sql, sets) => db.batch(sql, sets),
    transaction: (fn) => db.transaction(fn),
    callCounts: () => db.callCounts(),
    close: async () => undefined,
  };
}

const SERIALIZATION = 'could not serialize access due to concurrent update';

describe.each([
  [
    'Data API',
    (failFirst: number) => {
      world.emulator.injectFault({
        errorType: 'BadRequestException',
        statusCode: 400,
        message: `ERROR: ${SERIALIZATION}`,
        sql: /jsonb_to_recordset\(:results/,
        count: failFirst,
      });
      return world.dataApi();
    },
    (poisonId: string) => {
      world.emulator.injectFault({
        errorType: 'BadRequestException',
        statusCode: 400,
        message: 'ERROR: invalid input syntax',
        sql: /jsonb_to_recordset\(:results/,
        body: new RegExp(poisonId),
      });
      return world.dataApi();
    },
  ],
  [
    'node-postgres',
    (failFirst: number) =>
      faultyWriteBack(world.admin, (_p, attempt) =>
        attempt <= failFirst ? new DatabaseError(SERIALIZATION, { code: '40001' }) : undefined,
      ),
    (poisonId: string) =>
      faultyWriteBack(world.admin, (params) =>
        JSON.stringify(params).includes(poisonId)
          ? new DatabaseError('invalid input syntax', { code: '22P02' })
          : undefined,
      ),
  ],
])('write-back failures lose nothing (%s)', (_path, transientFailures, failingRow) => {
  test('a write-back that fails transiently is retried: rotated refresh tokens are stored, nothing stays leased', async () => {
    const users = await seedUsers(world, { count: 30, refreshTokenMode: 'rotate' });
    const summary = await runTokenRefresh({
      db: transientFailures(2),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...runtime(),
    });
    expect(summary).toMatchObject({ refreshed: 30, notWritten: 0 });
    const { rows } = await world.admin.query<{
      user_id: string;
      refresh_token: string;
      refresh_lease_owner: string | null;
    }>(`SELECT user_id, refresh_token, refresh_lease_owner FROM oauth_tokens`);
    const byUser = new Map(rows.map((r) => [r.user_id, r]));
    for (const u of users) {
      const row = byUser.get(u.userId)!;
      expect(row.refresh_lease_owner).toBeNull();
      const refresh = await world.cipher.decrypt(row.refresh_token, oauthTokenBinding(u, 'refresh_token'));
      expect(refresh).toBe(world.amazon.currentRefreshToken(u.userId));
      expect(refresh).not.toBe(u.refreshToken);
    }
  });

  test('a write-back that keeps failing is split until only the rows it cannot write are left; those are counted and logged', async () => {
    const users = await seedUsers(world, { count: 24 });
    const { rows: ids } = await world.admin.query<{ id: string; user_id: string }>(
      `SELECT id, user_id FROM oauth_tokens`,
    );
    const poison = ids[7];
    const rt = runtime();
    const summary = await runTokenRefresh({
      db: failingRow(poison.id),
      lwa: world.lwa(),
      cipher: world.cipher,
      ...rt,
    });
    expect(summary).toMatchObject({ refreshed: 23, notWritten: 1 });
    const { rows } = await world.admin.query<{ id: string; last_refreshed_at: Date | null }>(
      `SELECT id, last_refreshed_at FROM oauth_tokens`,
    );
    for (const r of rows) {
      if (r.id === poison.id) expect(r.last_refreshed_at).toBeNull();
      else expect(r.last_refreshed_at).not.toBeNull();
    }
    const lost = rt.logger.lines.filter((l) => l.message === 'Could not write an outcome back');
    expect(lost).toHaveLength(1);
    expect(lost[0]).toMatchObject({ level: 'error', attributes: { tokenId: poison.id, userId: poison.user_id } });
    for (const u of users) expect(rt.logger.text()).not.toContain(u.refreshToken);
  });
});
