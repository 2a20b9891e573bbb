import { randomBytes } from 'node:crypto';
import { MetricTotals } from '../../../lambda/shared/jobs/runtime';
import { parseTokenKey, TokenCipher, TokenKeyRing } from '../../../lambda/shared/token-crypto';
import { runTokenReencryption } from '../../../lambda/token-reencrypt/core';
import { type KeySecretStore, parseTokenKeyAction, removeKey } from '../../../lambda/token-reencrypt/keys';
import { JobWorld, RecordingLogger, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/** Removing a key from the ring (lambda/token-reencrypt/keys.ts) on both database paths. */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

const HOUR = 3_600_000;
const parse = (text: string) => TokenKeyRing.parse(text);

/** The key secret in memory: its text, when it was last written, and every write. */
function secretHolding(ring: TokenKeyRing, createdAt: Date | undefined) {
  const state = { text: ring.toSecretText(), createdAt, writes: 0 };
  const store: KeySecretStore = {
    read: async () => ({ text: state.text, createdAt: state.createdAt }),
    write: async (text) => {
      state.text = text;
      state.writes += 1;
    },
  };
  return { state, store };
}

function rotatedRing(): TokenKeyRing {
  return new TokenKeyRing({ legacy: parseTokenKey(world.keyBase64), k2: randomBytes(32) }, 'k2');
}

const runtime = () => ({
  logger: new RecordingLogger(),
  metrics: new MetricTotals(),
  remainingTimeMs: () => 600_000,
  sleep: async () => undefined,
});

describe.each(PATHS)('%s path', (_path, database) => {
  test('a key still in use is refused, the secret untouched; once nothing uses it, it leaves the ring and every token still reads', async () => {
    const users = await seedUsers(world, { count: 4, v1Encrypted: () => true });
    const ring = rotatedRing();
    const { state, store } = secretHolding(ring, new Date(Date.now() - HOUR));
    const now = new Date();

    // enc:v1 values (which name no key) may be under any key.
    expect(await removeKey(database(), store, 'legacy', parse, now)).toEqual({
      removed: false,
      keyId: 'legacy',
      reason: '8 stored enc:v1 values may be under key "legacy": run the token re-encryption first',
    });
    expect(await removeKey(database(), store, 'k2', parse, now)).toMatchObject({
      removed: false,
      reason: 'Key "k2" is the current key: make another key current first',
    });
    expect(await removeKey(database(), store, 'nope', parse, now)).toMatchObject({
      removed: false,
      reason: 'Key "nope" is not in the ring',
    });
    expect(state.writes).toBe(0);

    await runTokenReencryption({ db: database(), cipher: new TokenCipher(ring), ...runtime() });
    const outcome = await removeKey(database(), store, 'legacy', parse, now);

    expect(outcome).toEqual({ removed: true, keyId: 'legacy', keyIds: ['k2'] });
    expect(state.writes).toBe(1);
    const after = TokenKeyRing.parse(state.text);
    expect(after.keyIds).toEqual(['k2']);
    const { rows } = await world.admin.query<{ user_id: string; region: string; refresh_token: string }>(
      'SELECT user_id, region, refresh_token FROM oauth_tokens',
    );
    for (const r of rows)
      expect(
        after.decrypt(r.refresh_token, {
          table: 'oauth_tokens',
          userId: r.user_id,
          region: r.region,
          column: 'refresh_token',
        }),
      ).toBe(users.find((u) => u.userId === r.user_id)!.refreshToken);
  });

  test('enc:v2 values under the key are counted and refuse it; so does a ring changed within the settling time', async () => {
    await seedUsers(world, { count: 3 });
    const old = TokenKeyRing.single(parseTokenKey(world.keyBase64));
    // Everything re-encrypted under `legacy` (v2), then k2 made current.
    await runTokenReencryption({ db: database(), cipher: new TokenCipher(old), ...runtime() });
    const ring = new TokenKeyRing({ legacy: parseTokenKey(world.keyBase64), k2: randomBytes(32) }, 'k2');
    const recent = secretHolding(ring, new Date(Date.now() - 60_000));

    expect(await removeKey(database(), recent.store, 'legacy', parse, new Date())).toMatchObject({
      removed: false,
      reason: '6 stored values use key "legacy": run the token re-encryption first',
    });
    await runTokenReencryption({ db: database(), cipher: new TokenCipher(ring), ...runtime() });
    const refused = await removeKey(database(), recent.store, 'legacy', parse, new Date());
    expect(refused).toMatchObject({
      removed: false,
      reason: expect.stringMatching(
        /^The ring changed at .*: functions may still write under keys read before; try after /,
      ),
    });
    expect(recent.state.writes).toBe(0);
    const unknownAge = secretHolding(ring, undefined);
    expect(await removeKey(database(), unknownAge.store, 'legacy', parse, new Date())).toMatchObject({
      removed: false,
      reason: 'When the ring last changed is unknown: try again later',
    });
  });
});

describe('the function event', () => {
  test.each([
    [{}, { action: 'reencrypt' }],
    [null, { action: 'reencrypt' }],
    [{ action: 'reencrypt' }, { action: 'reencrypt' }],
    [{ action: 'usage' }, { action: 'usage' }],
    [
      { action: 'remove-key', keyId: '2026-12' },
      { action: 'remove-key', keyId: '2026-12' },
    ],
  ])('%p is %p', (event, action) => {
    expect(parseTokenKeyAction(event)).toEqual(action);
  });

  test.each([
    [{ action: 'remove-key' }, 'remove-key needs a valid "keyId"'],
    [{ action: 'remove-key', keyId: 'a:b' }, 'remove-key needs a valid "keyId"'],
    [{ action: 'rotate' }, 'Unknown action: use "reencrypt", "usage" or "remove-key"'],
    ['text', 'The event must be an object'],
  ])('%p is refused', (event, message) => {
    expect(() => parseTokenKeyAction(event)).toThrow(message);
  });
});
