import { randomBytes } from 'node:crypto';
import type { Database } from '../../../lambda/shared/db';
import { REENCRYPTION_METRICS } from '../../../lambda/shared/jobs/metrics';
import { MetricTotals } from '../../../lambda/shared/jobs/runtime';
import { parseTokenKey, TokenCipher, TokenKeyRing } from '../../../lambda/shared/token-crypto';
import { runTokenReencryption } from '../../../lambda/token-reencrypt/core';
import { countKeyUsage } from '../../../lambda/token-reencrypt/store';
import { JobWorld, RecordingLogger, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/** The token re-encryption on both database paths, against PostgreSQL 17 with every migration. */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

/** The world's key (what seeded the enc:v1 values) kept as `legacy`, and a new current key `k2`. */
function rotatedRing(): TokenKeyRing {
  return new TokenKeyRing({ legacy: parseTokenKey(world.keyBase64), k2: randomBytes(32) }, 'k2');
}

interface Row {
  id: string;
  user_id: string;
  region: string;
  access_token: string;
  refresh_token: string;
  proactive_refresh_enabled: boolean;
  refresh_lease_owner: string | null;
}

async function rows(): Promise<Row[]> {
  const { rows } = await world.admin.query<Row>(
    `SELECT id, user_id, region, access_token, refresh_token, proactive_refresh_enabled, refresh_lease_owner
       FROM oauth_tokens ORDER BY id`,
  );
  return rows;
}

function binding(r: Row, column: 'access_token' | 'refresh_token') {
  return { table: 'oauth_tokens' as const, userId: r.user_id, region: r.region, column };
}

function runtime(remainingTimeMs = () => 600_000) {
  return { logger: new RecordingLogger(), metrics: new MetricTotals(), remainingTimeMs, sleep: async () => undefined };
}

describe.each(PATHS)('%s path', (_path, database) => {
  test('v1, v2 under an older key and plaintext all become v2 under the current key, reading as what Amazon issued; refresh that was off stays off', async () => {
    const users = await seedUsers(world, {
      count: 9,
      legacyPlaintext: (i) => i % 3 === 0,
      v1Encrypted: () => true,
      refreshEnabled: (i) => i !== 1,
    });
    const ring = rotatedRing();
    // A third of the v1 connections are v2 under the old key already (written before the rotation).
    const old = new TokenCipher(TokenKeyRing.single(parseTokenKey(world.keyBase64)));
    for (const user of users.filter((_, i) => i % 3 === 2)) {
      const r = (await rows()).find((x) => x.user_id === user.userId)!;
      await world.admin.query(`UPDATE oauth_tokens SET access_token = :a, refresh_token = :r WHERE id = :id::uuid`, {
        a: old.encrypt(user.accessToken, binding(r, 'access_token')),
        r: old.encrypt(user.refreshToken, binding(r, 'refresh_token')),
        id: r.id,
      });
    }
    const before = await countKeyUsage(world.admin, 'k2');
    expect(before).toEqual({ v2: { legacy: 6 }, v1: 6, plaintext: 6, staleConnections: 9 });
    const rt = runtime();

    const summary = await runTokenReencryption({
      db: database(),
      cipher: new TokenCipher(ring),
      ...rt,
      settings: { batchSize: 4 },
    });

    expect(summary).toMatchObject({
      currentKeyId: 'k2',
      reencrypted: 9,
      unreadable: 0,
      remaining: 0,
      complete: true,
      stoppedBy: 'complete',
      batches: 3,
      passes: 1,
    });
    // Two statements per batch, the claim that found none, a count after the pass and at the end.
    expect(summary.databaseCalls).toBe(3 * 2 + 1 + 1 + 1);
    expect(rt.metrics.totals).toMatchObject({
      [REENCRYPTION_METRICS.reencrypted]: 9,
      [REENCRYPTION_METRICS.remaining]: 0,
    });
    expect(await countKeyUsage(world.admin, 'k2')).toEqual({
      v2: { k2: 18 },
      v1: 0,
      plaintext: 0,
      staleConnections: 0,
    });
    const cipher = new TokenCipher(ring);
    for (const r of await rows()) {
      const user = users.find((u) => u.userId === r.user_id)!;
      expect(r.access_token).toMatch(/^enc:v2:k2:/);
      expect(await cipher.decrypt(r.access_token, binding(r, 'access_token'))).toBe(user.accessToken);
      expect(await cipher.decrypt(r.refresh_token, binding(r, 'refresh_token'))).toBe(user.refreshToken);
      expect(r.refresh_lease_owner).toBeNull();
      expect(r.proactive_refresh_enabled).toBe(user !== users[1]);
    }
    const text = rt.logger.text();
    for (const u of users) expect(text).not.toContain(u.refreshToken);
  });

  test('a value moved to another row fails that connection alone: counted, logged with its reason, left as it is', async () => {
    await seedUsers(world, { count: 4 });
    const ring = rotatedRing();
    const cipher = new TokenCipher(ring);
    const [a, b] = await rows();
    // b's refresh token is a's, encrypted for a's row: copied across, it must not decrypt.
    const moved = cipher.encrypt('Atzr|a-token', binding(a, 'refresh_token'));
    await world.admin.query(`UPDATE oauth_tokens SET refresh_token = :v WHERE id = :id::uuid`, { v: moved, id: b.id });
    const rt = runtime();

    const summary = await runTokenReencryption({ db: database(), cipher, ...rt });

    expect(summary).toMatchObject({ reencrypted: 3, unreadable: 1, remaining: 1, complete: true });
    const after = (await rows()).find((r) => r.id === b.id)!;
    expect(after.refresh_token).toBe(moved);
    expect(after.access_token).toBe(b.access_token);
    expect(after.refresh_lease_owner).toBeNull();
    const warnings = rt.logger.lines.filter((l) => l.level === 'warn');
    expect(warnings).toEqual([
      {
        level: 'warn',
        message: 'Stored token unreadable: not re-encrypted',
        attributes: expect.objectContaining({
          tokenId: b.id,
          error: expect.stringMatching(/moved from another row or column/),
        }),
      },
    ]);
    expect(rt.logger.text()).not.toContain(moved);
  });

  test('a killed run keeps what it wrote; the next run finishes the rest and nothing else', async () => {
    const users = await seedUsers(world, { count: 10 });
    const ring = rotatedRing();
    let writes = 0;
    const db = database();
    const dying: Database = {
      ...db,
      query: (text, params) => {
        if (/accounts\.token_reencryption/.test(text) && ++writes === 3)
          return Promise.reject(new Error('Lambda timed out'));
        return db.query(text, params);
      },
      callCounts: () => db.callCounts(),
    };

    await expect(
      runTokenReencryption({ db: dying, cipher: new TokenCipher(ring), ...runtime(), settings: { batchSize: 3 } }),
    ).rejects.toThrow('Lambda timed out');
    const half = await countKeyUsage(world.admin, 'k2');
    expect(half.v2).toEqual({ k2: 12, legacy: 8 });
    expect(half.staleConnections).toBe(4);
    // The killed batch's leases: others wait for them to expire (here: expired now).
    expect((await rows()).filter((r) => r.refresh_lease_owner !== null)).toHaveLength(3);
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_expires_at = now() - interval '1 second' WHERE refresh_lease_owner IS NOT NULL`,
    );

    const second = await runTokenReencryption({
      db: database(),
      cipher: new TokenCipher(ring),
      ...runtime(),
      settings: { batchSize: 3 },
    });

    expect(second).toMatchObject({ reencrypted: 4, remaining: 0, complete: true });
    const cipher = new TokenCipher(ring);
    for (const r of await rows()) {
      const user = users.find((u) => u.userId === r.user_id)!;
      expect(await cipher.decrypt(r.refresh_token, binding(r, 'refresh_token'))).toBe(user.refreshToken);
      expect(r.refresh_lease_owner).toBeNull();
    }
  });

  test('a connection another writer holds is skipped, not waited for; a value stored again meanwhile is never overwritten', async () => {
    await seedUsers(world, { count: 3 });
    const ring = rotatedRing();
    const [held, replaced] = await rows();
    const otherOwner = '00000000-0000-4000-8000-000000000001';
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = :o::uuid, refresh_lease_expires_at = now() + interval '5 minutes' WHERE id = :id::uuid`,
      { o: otherOwner, id: held.id },
    );
    const db = database();
    let replacedOnce = false;
    const racing: Database = {
      ...db,
      query: async (text, params) => {
        if (/accounts\.token_reencryption/.test(text) && !replacedOnce) {
          replacedOnce = true;
          // A connect stores new tokens between the run's read and its write.
          await world.admin.query(
            `UPDATE oauth_tokens SET refresh_token = 'enc:v1:bmV3', access_token = 'enc:v1:bmV3' WHERE id = :id::uuid`,
            { id: replaced.id },
          );
        }
        return db.query(text, params);
      },
      callCounts: () => db.callCounts(),
    };

    const summary = await runTokenReencryption({
      db: racing,
      cipher: new TokenCipher(ring),
      ...runtime(),
      settings: { maxPasses: 2 },
    });

    expect(summary).toMatchObject({
      reencrypted: 1,
      changedMeanwhile: 1,
      complete: false,
      stoppedBy: 'passes',
      passes: 2,
    });
    const after = await rows();
    expect(after.find((r) => r.id === held.id)).toMatchObject({
      refresh_token: held.refresh_token,
      refresh_lease_owner: otherOwner,
    });
    // The second pass tried the replaced connection again: its new value is unreadable here, left as it is.
    expect(after.find((r) => r.id === replaced.id)).toMatchObject({
      refresh_token: 'enc:v1:bmV3',
      refresh_lease_owner: null,
    });
  });

  test('the deadline: no batch starts within the reserve, and what is left is reported', async () => {
    await seedUsers(world, { count: 5 });
    let left = 60_000;
    const summary = await runTokenReencryption({
      db: database(),
      cipher: new TokenCipher(rotatedRing()),
      ...runtime(() => left),
      settings: { batchSize: 2, reserveMs: 10_000 },
      onBatch: () => (left = 9_000),
    });
    expect(summary).toMatchObject({ batches: 1, reencrypted: 2, remaining: 3, complete: false, stoppedBy: 'deadline' });
  });
});
