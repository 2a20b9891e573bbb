import {
  decryptToken,
  encryptToken,
  ENCRYPTED_TOKEN_PREFIX,
  isEncrypted,
  oauthTokenBinding,
  parseTokenKey,
  TokenDecryptionError,
  TokenKeyError,
  associatedData,
  decryptTokenV2,
  encryptTokenV2,
  LEGACY_KEY_ID,
  TokenCipher,
  storedFormat,
  type TokenBinding,
  TokenKeyRing,
  UnknownTokenKeyError,
} from '../../lambda/shared/token-crypto';

/**
 * Published vectors, so the web app (or any other system) can check its side of the format.
 * Computed independently with Python's `cryptography` AESGCM:
 *   key = bytes 0x00..0x1f  (base64 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=)
 *   iv  = bytes 0xa0..0xab
 */
const KEY_BASE64 = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
const IV = Buffer.from(Array.from({ length: 12 }, (_, i) => 0xa0 + i));
const VECTORS: [string, string][] = [
  [
    'Atzr|IwEBIExampleRefreshToken',
    'enc:v1:oKGio6Slpqeoqaqrp2wGXzmCdfogLMKrZhewshX+PHbg0jEEyGFN4xFlnhcyszTAEoZh5nj+sP//',
  ],
  ['Atza|ünïcødé-✓', 'enc:v1:oKGio6Slpqeoqaqrp2wGTDkIvtGhyuQQvx4Dd11OxYO2OVy2Av9MgLaOKP3wOWOc'],
];
const key = parseTokenKey(KEY_BASE64);

describe('token crypto', () => {
  test.each(VECTORS)('fixed vector: %s encrypts to the published value and back', (plaintext, stored) => {
    expect(encryptToken(plaintext, key, IV)).toBe(stored);
    expect(decryptToken(stored, key)).toBe(plaintext);
  });

  test('round trip with a fresh IV each time (enc:v2 under the current key, bound to the row)', async () => {
    const cipher = TokenCipher.fromBase64(KEY_BASE64);
    const at = oauthTokenBinding({ userId: '0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f', region: 'EU' }, 'refresh_token');
    const a = cipher.encrypt('Atzr|same-token', at);
    const b = cipher.encrypt('Atzr|same-token', at);
    expect(a).not.toBe(b);
    const prefix = 'enc:v2:legacy:';
    expect(a.startsWith(prefix) && b.startsWith(prefix)).toBe(true);
    expect(Buffer.from(a.slice(prefix.length), 'base64').subarray(0, 12)).not.toEqual(
      Buffer.from(b.slice(prefix.length), 'base64').subarray(0, 12),
    );
    expect(await cipher.decrypt(a, at)).toBe('Atzr|same-token');
    expect(await cipher.decrypt(b, at)).toBe('Atzr|same-token');
  });

  test('the stored layout is prefix + base64(IV 12 ‖ ciphertext ‖ tag 16)', () => {
    const stored = encryptToken('abc', key);
    expect(stored.startsWith(ENCRYPTED_TOKEN_PREFIX)).toBe(true);
    expect(Buffer.from(stored.slice(ENCRYPTED_TOKEN_PREFIX.length), 'base64')).toHaveLength(12 + 3 + 16);
  });

  test('legacy plaintext is read as is and recognised as not encrypted', () => {
    expect(isEncrypted('Atzr|legacy')).toBe(false);
    expect(decryptToken('Atzr|legacy', key)).toBe('Atzr|legacy');
    expect(isEncrypted(VECTORS[0][1])).toBe(true);
  });

  test.each([
    ['a flipped ciphertext bit', (s: string) => flipByte(s, 14)],
    ['a flipped tag bit', (s: string) => flipByte(s, -1)],
    ['a flipped IV bit', (s: string) => flipByte(s, 0)],
    ['truncation', (s: string) => s.slice(0, 20)],
  ])('tampering (%s) is detected', (_what, tamper) => {
    expect(() => decryptToken(tamper(VECTORS[0][1]), key)).toThrow(TokenDecryptionError);
  });

  test('another key cannot decrypt', () => {
    const other = parseTokenKey(Buffer.alloc(32, 7).toString('base64'));
    expect(() => decryptToken(VECTORS[0][1], other)).toThrow(TokenDecryptionError);
  });

  test.each(['', 'not base64!', Buffer.alloc(16).toString('base64'), 'REPLACE_ME'])(
    'rejects key %p without echoing it',
    (bad) => {
      const error = (() => {
        try {
          parseTokenKey(bad);
        } catch (e) {
          return e as Error;
        }
        return undefined;
      })();
      expect(error).toBeInstanceOf(TokenKeyError);
      if (bad.length > 3) expect(error?.message).not.toContain(bad);
    },
  );
});

function flipByte(stored: string, index: number): string {
  const bytes = Buffer.from(stored.slice(ENCRYPTED_TOKEN_PREFIX.length), 'base64');
  const i = index < 0 ? bytes.length + index : index;
  bytes[i] ^= 0x01;
  return ENCRYPTED_TOKEN_PREFIX + bytes.toString('base64');
}

describe('token crypto edges', () => {
  test('a key read from a secret keeps working with surrounding whitespace (a trailing newline)', () => {
    expect(parseTokenKey(`  ${KEY_BASE64}\n`)).toEqual(key);
  });

  test.each([
    ['junk after the base64', `${KEY_BASE64}!`],
    ['junk before the base64', `!${KEY_BASE64}`],
    ['too much padding', `${KEY_BASE64}==`],
  ])('a 32-byte key with %s is not base64 and is rejected', (_what, text) => {
    expect(() => parseTokenKey(text)).toThrow(new TokenKeyError('Token encryption key is not base64'));
  });

  test('a key of the wrong length says how long it was, and is refused by every entry point', () => {
    const short = Buffer.alloc(16, 1);
    const error = new TokenKeyError('Token encryption key must be 32 bytes, got 16');
    expect(() => parseTokenKey(short.toString('base64'))).toThrow(error);
    expect(() => encryptToken('x', short)).toThrow(error);
    expect(() => decryptToken('Atzr|legacy', short)).toThrow(error);
    expect(() => new TokenCipher(short)).toThrow(error);
    expect(captured(() => parseTokenKey(short.toString('base64')))?.name).toBe('TokenKeyError');
  });

  test('an IV that is not 12 bytes is refused', () => {
    expect(() => encryptToken('x', key, Buffer.alloc(16))).toThrow(new TypeError('IV must be 12 bytes'));
  });

  test('the empty token round-trips (the shortest stored value is IV and tag only)', () => {
    const stored = encryptToken('', key);
    expect(Buffer.from(stored.slice(ENCRYPTED_TOKEN_PREFIX.length), 'base64')).toHaveLength(12 + 16);
    expect(decryptToken(stored, key)).toBe('');
  });

  test('a truncated value is reported as truncated; a failed one keeps its cause and its name', () => {
    expect(() => decryptToken(`${ENCRYPTED_TOKEN_PREFIX}${Buffer.alloc(27).toString('base64')}`, key)).toThrow(
      'Encrypted token is truncated',
    );
    const error = captured(() => decryptToken(flipByte(VECTORS[0][1], -1), key));
    expect(error).toBeInstanceOf(TokenDecryptionError);
    expect(error?.name).toBe('TokenDecryptionError');
    expect(error?.message).toMatch(/failed authentication/);
    expect(error?.cause).toMatchObject({ message: 'Unsupported state or unable to authenticate data' });
  });

  test('TokenCipher tells encrypted values from legacy ones', () => {
    const cipher = new TokenCipher(key);
    const at = oauthTokenBinding({ userId: '0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f', region: 'EU' }, 'access_token');
    expect(cipher.isEncrypted(cipher.encrypt('Atzr|x', at))).toBe(true);
    expect(cipher.isEncrypted('Atzr|legacy')).toBe(false);
  });
});

function captured(fn: () => unknown): Error | undefined {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  return undefined;
}

// enc:v2 and the key ring (docs/token-encryption.md).
/**
 * The published `enc:v2` vectors (docs/token-encryption.md), computed independently with
 * Python's `cryptography` AESGCM (key 0x00..0x1f, IV 0xa0..0xab, key id `2026-12`).
 */
const V2_KEY_BASE64 = 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=';
const V2_IV = Buffer.from(Array.from({ length: 12 }, (_, i) => 0xa0 + i));
const USER = '0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f';
const REFRESH: TokenBinding = { table: 'oauth_tokens', userId: USER, region: 'EU', column: 'refresh_token' };
const ACCESS: TokenBinding = { ...REFRESH, column: 'access_token' };
const V2_VECTORS: [string, TokenBinding, string, string][] = [
  [
    'Atzr|IwEBIExampleRefreshToken',
    REFRESH,
    'enc:v2|2026-12|oauth_tokens|0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f|EU|refresh_token',
    'enc:v2:2026-12:oKGio6Slpqeoqaqrp2wGXzmCdfogLMKrZhewshX+PHbg0jEEyGFN4xGR95e9O/3O66/J+bpS8UCM',
  ],
  [
    'Atza|ünïcødé-✓',
    ACCESS,
    'enc:v2|2026-12|oauth_tokens|0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e5f|EU|access_token',
    'enc:v2:2026-12:oKGio6Slpqeoqaqrp2wGTDkIvtGhyuQQvx4Dd11OxYOX2ZTZjd3iumJQqmpK/qR2',
  ],
];
const V1_VECTOR = 'enc:v1:oKGio6Slpqeoqaqrp2wGXzmCdfogLMKrZhewshX+PHbg0jEEyGFN4xFlnhcyszTAEoZh5nj+sP//';
const v2Key = parseTokenKey(V2_KEY_BASE64);
const other = Buffer.alloc(32, 7);

describe('enc:v2', () => {
  test.each(V2_VECTORS)('published vector: %s', (plaintext, binding, aad, stored) => {
    expect(associatedData('2026-12', binding).toString('utf8')).toBe(aad);
    expect(encryptTokenV2(plaintext, v2Key, '2026-12', binding, V2_IV)).toBe(stored);
    expect(decryptTokenV2(stored, v2Key, binding)).toBe(plaintext);
    const ring = new TokenKeyRing({ '2026-12': key }, '2026-12');
    expect(ring.encrypt(plaintext, binding, V2_IV)).toBe(stored);
    expect(ring.decrypt(stored, binding)).toBe(plaintext);
  });

  test('the user id is bound in lowercase, so an uppercase spelling of the same row reads it', () => {
    const stored = encryptTokenV2('Atzr|x', v2Key, 'k1', REFRESH);
    expect(decryptTokenV2(stored, v2Key, { ...REFRESH, userId: USER.toUpperCase() })).toBe('Atzr|x');
  });

  test.each([
    ['another user', { ...REFRESH, userId: '0b3f5e4c-1d2a-4b6c-8e9f-0a1b2c3d4e50' }],
    ['another region', { ...REFRESH, region: 'NA' }],
    ['another column', ACCESS],
    ['another table', { table: 'connect_sessions', userId: USER, region: 'EU', column: 'code_verifier' } as const],
  ])('a value moved to %s fails authentication', (_what, binding) => {
    const stored = V2_VECTORS[0][3];
    expect(() => decryptTokenV2(stored, v2Key, binding)).toThrow(TokenDecryptionError);
    expect(() => decryptTokenV2(stored, v2Key, binding)).toThrow(/moved from another row or column/);
  });

  test('a value relabelled with another key id fails, even when that id names the same key', () => {
    const relabelled = V2_VECTORS[0][3].replace('enc:v2:2026-12:', 'enc:v2:2027-01:');
    const ring = new TokenKeyRing({ '2026-12': v2Key, '2027-01': key }, '2026-12');
    expect(() => ring.decrypt(relabelled, REFRESH)).toThrow(TokenDecryptionError);
  });

  test.each([
    ['no key id', 'enc:v2:'],
    ['an empty key id', 'enc:v2::AAAA'],
    ['a key id with a space', 'enc:v2:a b:AAAA'],
  ])('a value with %s is unreadable', (_what, stored) => {
    expect(() => storedFormat(stored)).toThrow(new TokenDecryptionError('Encrypted token has no valid key id'));
  });

  test('a truncated value is reported as truncated', () => {
    expect(() => decryptTokenV2('enc:v2:k:AAAA', v2Key, REFRESH)).toThrow('Encrypted token is truncated');
  });

  test('binding values are checked, never trusted into the associated data', () => {
    expect(() => associatedData('k', { ...REFRESH, userId: 'x|y' })).toThrow('user id is not a UUID');
    expect(() => associatedData('k', { ...REFRESH, region: 'E|' })).toThrow('region is not valid');
    expect(() => associatedData('k', { ...REFRESH, column: 'code_verifier' })).toThrow(/No encrypted column/);
    expect(() => associatedData('a|b', REFRESH)).toThrow('Key id is not valid');
  });
});

describe('key ring', () => {
  test('a bare base64 key (the single-key secret) is a one-key ring under the id legacy', () => {
    const ring = TokenKeyRing.parse(`${V2_KEY_BASE64}\n`);
    expect(ring.keyIds).toEqual([LEGACY_KEY_ID]);
    expect(ring.currentKeyId).toBe('legacy');
    expect(ring.encrypt('Atzr|x', REFRESH)).toMatch(/^enc:v2:legacy:/);
    expect(ring.decrypt(V1_VECTOR, REFRESH)).toBe('Atzr|IwEBIExampleRefreshToken');
  });

  test('a JSON ring: writes under the current key, reads under every key, v1 under whichever key it was, plaintext as is', () => {
    const text = JSON.stringify({ current: 'k2', keys: { legacy: V2_KEY_BASE64, k2: other.toString('base64') } });
    const ring = TokenKeyRing.parse(text);
    expect(ring.keyIds).toEqual(['k2', 'legacy']);
    const old = TokenKeyRing.single(v2Key).encrypt('Atzr|old', REFRESH);
    const fresh = ring.encrypt('Atzr|new', REFRESH);
    expect(fresh).toMatch(/^enc:v2:k2:/);
    expect(ring.decrypt(old, REFRESH)).toBe('Atzr|old');
    expect(ring.decrypt(fresh, REFRESH)).toBe('Atzr|new');
    expect(ring.decrypt(V1_VECTOR, REFRESH)).toBe('Atzr|IwEBIExampleRefreshToken');
    expect(ring.decrypt(encryptToken('Atzr|v1-new-key', other), ACCESS)).toBe('Atzr|v1-new-key');
    expect(ring.decrypt('Atzr|plain', REFRESH)).toBe('Atzr|plain');
    expect(ring.isCurrent(fresh)).toBe(true);
    expect(ring.isCurrent(old)).toBe(false);
    expect(ring.isCurrent(V1_VECTOR)).toBe(false);
    expect(ring.isCurrent('Atzr|plain')).toBe(false);
    expect(TokenKeyRing.parse(ring.toSecretText()).keyIds).toEqual(['k2', 'legacy']);
  });

  test('a v1 value no key of the ring wrote fails authentication; a v2 value under a missing key names the id', () => {
    const ring = TokenKeyRing.single(other, 'k2');
    expect(() => ring.decrypt(V1_VECTOR, REFRESH)).toThrow(/failed authentication/);
    const error = captured(() => ring.decrypt(V2_VECTORS[0][3], REFRESH));
    expect(error).toBeInstanceOf(UnknownTokenKeyError);
    expect(error).toBeInstanceOf(TokenDecryptionError);
    expect((error as UnknownTokenKeyError).keyId).toBe('2026-12');
  });

  test.each([
    ['not JSON', '{nope', 'Token key ring is not JSON'],
    ['no current', JSON.stringify({ keys: { a: V2_KEY_BASE64 } }), 'Token key ring: "current" must be a key id'],
    ['keys not an object', JSON.stringify({ current: 'a', keys: [V2_KEY_BASE64] }), /"keys" must be an object/],
    ['no keys', JSON.stringify({ current: 'a', keys: {} }), 'Token key ring has no keys'],
    ['current not in keys', JSON.stringify({ current: 'b', keys: { a: V2_KEY_BASE64 } }), /current key id is not one/],
    [
      'a short key',
      JSON.stringify({ current: 'a', keys: { a: 'AAAA' } }),
      'Token key ring: key "a": Token encryption key must be 32 bytes, got 3',
    ],
    ['a bad id', JSON.stringify({ current: 'a b', keys: { 'a b': V2_KEY_BASE64 } }), /a key id is not valid/],
    [
      'a key that is not a string',
      JSON.stringify({ current: 'a', keys: { a: 1 } }),
      'Token key ring: key "a" is not a string',
    ],
  ])('a malformed ring (%s) is refused without echoing a key', (_what, text, message) => {
    const error = captured(() => TokenKeyRing.parse(text));
    expect(error).toBeInstanceOf(TokenKeyError);
    expect(error?.message).toMatch(message);
    expect(error?.message).not.toContain(V2_KEY_BASE64);
  });

  test('a pasted key in the place of an id is not echoed', () => {
    const error = captured(() =>
      TokenKeyRing.parse(JSON.stringify({ current: 'a', keys: { [V2_KEY_BASE64]: 'AAAA' } })),
    );
    expect(error?.message).not.toContain(V2_KEY_BASE64);
  });

  test('derived keys follow the current key', () => {
    const one = TokenKeyRing.single(v2Key);
    const two = new TokenKeyRing({ legacy: v2Key, k2: other }, 'k2');
    expect(one.deriveKey('p')).toHaveLength(32);
    expect(two.deriveKey('p')).not.toEqual(one.deriveKey('p'));
    expect(new TokenKeyRing({ legacy: v2Key, k2: other }, 'legacy').deriveKey('p')).toEqual(one.deriveKey('p'));
  });
});

describe('a cipher that can re-read its ring', () => {
  const oldRing = TokenKeyRing.single(v2Key);
  const newRing = new TokenKeyRing({ legacy: v2Key, k2: other }, 'k2');
  const underK2 = newRing.encrypt('Atzr|k2', REFRESH);

  test('a value under a key it lacks re-reads the ring once, then reads and writes with the new ring', async () => {
    const reload = jest.fn(async () => newRing);
    const cipher = new TokenCipher(oldRing, reload);
    const [a, b] = await Promise.all([cipher.decrypt(underK2, REFRESH), cipher.decrypt(underK2, REFRESH)]);
    expect([a, b]).toEqual(['Atzr|k2', 'Atzr|k2']);
    expect(await cipher.decrypt(underK2, REFRESH)).toBe('Atzr|k2');
    expect(reload).toHaveBeenCalledTimes(1);
    expect(cipher.encrypt('x', REFRESH)).toMatch(/^enc:v2:k2:/);
  });

  test('a key id still missing after the re-read fails, and is not re-read again', async () => {
    const reload = jest.fn(async () => oldRing);
    const cipher = new TokenCipher(oldRing, reload);
    await expect(cipher.decrypt(underK2, REFRESH)).rejects.toBeInstanceOf(UnknownTokenKeyError);
    await expect(cipher.decrypt(underK2, REFRESH)).rejects.toBeInstanceOf(UnknownTokenKeyError);
    expect(reload).toHaveBeenCalledTimes(1);
  });

  test('a failed re-read fails the value as unreadable (the secret error is not the token error)', async () => {
    const cipher = new TokenCipher(oldRing, async () => {
      throw new Error('Secrets Manager unavailable');
    });
    await expect(cipher.decrypt(underK2, REFRESH)).rejects.toBeInstanceOf(UnknownTokenKeyError);
  });

  test('a value that fails authentication does not re-read', async () => {
    const reload = jest.fn(async () => newRing);
    const cipher = new TokenCipher(newRing, reload);
    await expect(cipher.decrypt(underK2, ACCESS)).rejects.toThrow(/moved from another row or column/);
    expect(reload).not.toHaveBeenCalled();
  });

  test('without a way to re-read, an unknown key fails at once', async () => {
    await expect(new TokenCipher(oldRing).decrypt(underK2, REFRESH)).rejects.toBeInstanceOf(UnknownTokenKeyError);
  });
});
