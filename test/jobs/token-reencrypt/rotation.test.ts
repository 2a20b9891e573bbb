import { randomBytes } from 'node:crypto';
import {
  oauthTokenBinding,
  parseTokenKey,
  storedFormat,
  TokenCipher,
  TokenKeyRing,
} from '../../../lambda/shared/token-crypto';
import type { ApiRequestEvent } from '../../../lambda/shared/http';
import type { Database } from '../../../lambda/shared/db';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { createTokenRoute } from '../../../lambda/token-route/core';
import { runTokenReencryption } from '../../../lambda/token-reencrypt/core';
import { countKeyUsage } from '../../../lambda/token-reencrypt/store';
import { JobWorld, runtime, SeedUser, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

// Issue 29's acceptance on both database paths: every stored format is read by the jobs and
// written back as enc:v2 under the current key; a value copied to another row or column fails
// that connection alone, its reason recorded; a key rotation with the token refresh, the token
// route and the re-encryption running at once loses and corrupts nothing.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

interface Row {
  user_id: string;
  region: string;
  access_token: string;
  refresh_token: string;
  proactive_refresh_enabled: boolean;
  last_refresh_error: string | null;
  refresh_lease_owner: string | null;
}

async function rows(): Promise<Map<string, Row>> {
  const { rows } = await world.admin.query<Row>(
    `SELECT user_id, region, access_token, refresh_token, proactive_refresh_enabled, last_refresh_error, refresh_lease_owner
       FROM oauth_tokens`,
  );
  return new Map(rows.map((r) => [r.user_id, r]));
}

const at = (r: Row) => ({ userId: r.user_id, region: r.region });

/** The route as the token route's Lambda builds it, for the test (authorised caller). */
function tokenRoute(db: Database, cipher: TokenCipher) {
  return createTokenRoute({
    db,
    lwa: world.lwa(),
    cipher,
    logger: runtime().logger,
    authorize: () => ({ ok: true, caller: 'rotation test' }),
    settings: { pollIntervalMs: 5, waitDeadlineMs: 5_000 },
  });
}

function tokenRequest(u: { userId: string; region: string }): ApiRequestEvent {
  return {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: u.userId, region: u.region }),
    requestContext: { http: { method: 'POST' } },
  };
}

/** Every row: both tokens read (under `cipher`, bound to the row) as what Amazon issued last. */
async function expectWhatAmazonIssued(users: readonly SeedUser[], cipher: TokenCipher) {
  const stored = await rows();
  for (const u of users) {
    const r = stored.get(u.userId)!;
    expect(await cipher.decrypt(r.refresh_token, oauthTokenBinding(at(r), 'refresh_token'))).toBe(
      world.amazon.currentRefreshToken(u.userId),
    );
    const access = await cipher.decrypt(r.access_token, oauthTokenBinding(at(r), 'access_token'));
    expect([u.accessToken, ...world.amazon.accessTokens(u.userId)]).toContain(access);
    expect(r).toMatchObject({ proactive_refresh_enabled: true, last_refresh_error: null, refresh_lease_owner: null });
  }
}

describe.each(PATHS)('%s path', (_path, database) => {
  test('enc:v1, enc:v2 and legacy plaintext are read by the token refresh and written back as enc:v2 under the current key', async () => {
    const users = await seedUsers(world, {
      count: 9,
      legacyPlaintext: (i) => i % 3 === 0,
      v1Encrypted: (i) => i % 3 === 1,
      refreshTokenMode: 'rotate',
    });
    const before = await rows();
    expect(users.map((u) => storedFormat(before.get(u.userId)!.refresh_token).format)).toEqual(
      users.map((_u, i) => ['plaintext', 'v1', 'v2'][i % 3]),
    );

    expect(
      await runTokenRefresh({ db: database(), lwa: world.lwa(), cipher: world.cipher, ...runtime() }),
    ).toMatchObject({ claimed: 9, refreshed: 9, failed: 0 });

    const after = await rows();
    for (const u of users) {
      const r = after.get(u.userId)!;
      expect(world.cipher.isCurrent(r.access_token) && world.cipher.isCurrent(r.refresh_token)).toBe(true);
    }
    await expectWhatAmazonIssued(users, world.cipher);
  });

  test('a value copied to another row or column fails that connection alone, its reason recorded; the others are refreshed', async () => {
    const [a, b, c, d] = await seedUsers(world, { count: 4, regions: () => ['EU'] });
    const before = await rows();
    // b holds a's refresh token (another row); c holds its own access token as its refresh token (another column).
    await world.admin.query(`UPDATE oauth_tokens SET refresh_token = :v WHERE user_id = :u::uuid`, {
      v: before.get(a.userId)!.refresh_token,
      u: b.userId,
    });
    await world.admin.query(`UPDATE oauth_tokens SET refresh_token = access_token WHERE user_id = :u::uuid`, {
      u: c.userId,
    });
    const rt = runtime();

    const summary = await runTokenRefresh({ db: database(), lwa: world.lwa(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ claimed: 4, refreshed: 2, failed: 2 });
    const after = await rows();
    for (const u of [b, c]) {
      expect(after.get(u.userId)).toMatchObject({ proactive_refresh_enabled: false, refresh_lease_owner: null });
      expect(after.get(u.userId)!.last_refresh_error).toMatch(
        /^Stored refresh token is unreadable \(.*moved from another row or column.*\); the user must reconnect Amazon$/,
      );
      expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(0);
    }
    for (const u of [a, d]) expect(after.get(u.userId)).toMatchObject({ proactive_refresh_enabled: true });
    expect(world.amazon.counters.refreshCalls(a.refreshToken)).toBe(1);
    expect(rt.logger.text()).not.toContain(before.get(a.userId)!.refresh_token);
  });

  test('the token route: a refresh token copied from another row is answered 409 (reconnect), recorded on that connection alone', async () => {
    const [a, b] = await seedUsers(world, { count: 2, expiresInSeconds: 30, regions: () => ['NA'] });
    const before = await rows();
    await world.admin.query(`UPDATE oauth_tokens SET refresh_token = :v WHERE user_id = :u::uuid`, {
      v: before.get(a.userId)!.refresh_token,
      u: b.userId,
    });
    const route = tokenRoute(database(), world.cipher);

    const refused = await route(tokenRequest(b));
    const served = await route(tokenRequest(a));

    expect(refused.statusCode).toBe(409);
    expect(served.statusCode).toBe(200);
    const after = await rows();
    expect(after.get(b.userId)!.last_refresh_error).toMatch(/moved from another row or column/);
    expect(after.get(b.userId)!.proactive_refresh_enabled).toBe(false);
    expect(after.get(a.userId)).toMatchObject({ proactive_refresh_enabled: true, last_refresh_error: null });
  });

  test('a rotation while the token refresh and the token route run loses and corrupts nothing: every token reads as what Amazon issued, before and after', async () => {
    const users = await seedUsers(world, {
      count: 24,
      expiresInSeconds: (i) => (i % 2 === 0 ? 60 : 900),
      legacyPlaintext: (i) => i % 4 === 0,
      v1Encrypted: (i) => i % 4 === 1,
      refreshTokenMode: 'rotate',
    });
    const oldRing = TokenKeyRing.single(parseTokenKey(world.keyBase64));
    await expectWhatAmazonIssued(users, new TokenCipher(oldRing));

    // The secret gets the new key, made current. Functions that read the secret before keep the
    // old ring until their cache expires (they re-read it on a key id they lack); the
    // re-encryption reads it fresh.
    const newRing = new TokenKeyRing({ legacy: parseTokenKey(world.keyBase64), next: randomBytes(32) }, 'next');
    const reload = () => Promise.resolve(newRing);
    const stale = () => new TokenCipher(oldRing, reload);
    const fresh = () => new TokenCipher(newRing, reload);
    const db = database();

    const refreshes = (async () => {
      const outcomes = [];
      for (const cipher of [stale(), stale(), fresh()]) {
        outcomes.push(
          await runTokenRefresh({
            db,
            lwa: world.lwa(),
            cipher,
            ...runtime(),
            settings: { windowSeconds: 3600, concurrency: 4 },
          }),
        );
        // Due again at once: every run refreshes every token it can lease.
        await world.admin.query(
          `UPDATE oauth_tokens SET expires_at = now() + interval '60 seconds', next_refresh_attempt_at = NULL`,
        );
      }
      return outcomes;
    })();
    const routes = (async () => {
      const answers = [];
      for (const cipher of [stale(), fresh()]) {
        const route = tokenRoute(db, cipher);
        answers.push(...(await Promise.all(users.map((u) => route(tokenRequest(u))))));
      }
      return answers;
    })();
    const reencryption = runTokenReencryption({
      db,
      cipher: fresh(),
      ...runtime(),
      sleep: (ms) => new Promise((r) => setTimeout(r, Math.min(ms, 20))),
      settings: { batchSize: 5, maxPasses: 20 },
    });
    const [outcomes, answers, first] = await Promise.all([refreshes, routes, reencryption]);

    for (const o of outcomes) expect(o).toMatchObject({ failed: 0 });
    for (const answer of answers) {
      expect(answer.statusCode).toBe(200);
      const { accessToken } = JSON.parse(answer.body) as { accessToken: string };
      expect(users.some((u) => [u.accessToken, ...world.amazon.accessTokens(u.userId)].includes(accessToken))).toBe(
        true,
      );
    }
    expect(first.unreadable).toBe(0);
    // What the stale functions wrote meanwhile (under the old key) is re-encrypted by a later
    // run, as the runbook says (once the caches have expired).
    const last = await runTokenReencryption({ db, cipher: fresh(), ...runtime() });
    expect(last).toMatchObject({ unreadable: 0, remaining: 0, complete: true });
    expect(await countKeyUsage(world.admin, 'next')).toEqual({
      v2: { next: 48 },
      v1: 0,
      plaintext: 0,
      staleConnections: 0,
    });
    await expectWhatAmazonIssued(users, fresh());
    // A lost write would leave a refresh token Amazon has replaced: its next use is refused
    // (invalid_grant), which turns refresh off and records the error; expectWhatAmazonIssued
    // found neither, and every stored refresh token is Amazon's current one.
  });
});
