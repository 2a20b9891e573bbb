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
