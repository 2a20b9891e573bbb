import {
  decryptToken,
  encryptToken,
  ENCRYPTED_TOKEN_PREFIX,
  isEncrypted,
  parseTokenKey,
  TokenCipher,
  TokenDecryptionError,
  TokenKeyError,
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

  test('round trip with a fresh IV each time', () => {
    const cipher = TokenCipher.fromBase64(KEY_BASE64);
    const a = cipher.encrypt('Atzr|same-token');
    const b = cipher.encrypt('Atzr|same-token');
    expect(a).not.toBe(b);
    expect(Buffer.from(a.slice(7), 'base64').subarray(0, 12)).not.toEqual(
      Buffer.from(b.slice(7), 'base64').subarray(0, 12),
    );
    expect(cipher.decrypt(a)).toBe('Atzr|same-token');
    expect(cipher.decrypt(b)).toBe('Atzr|same-token');
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
    expect(cipher.isEncrypted(cipher.encrypt('Atzr|x'))).toBe(true);
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
