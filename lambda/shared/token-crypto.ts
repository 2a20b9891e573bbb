import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * OAuth tokens at rest, in the format the web app shares (docs/architecture.md, "Tokens at rest"):
 * AES-256-GCM with a 32-byte key; stored value = `enc:v1:` + base64(IV(12) ‖ ciphertext ‖ tag(16)).
 * A value without the prefix is a legacy plaintext token: read as is, written back encrypted.
 */
export const ENCRYPTED_TOKEN_PREFIX = 'enc:v1:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

/** The key is missing or not 32 bytes of base64. The message never contains the key. */
export class TokenKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenKeyError';
  }
}

/** A stored value has the prefix but cannot be decrypted: tampered, truncated or another key. */
export class TokenDecryptionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TokenDecryptionError';
  }
}

/** Decodes the base64 key (`TOKEN_ENCRYPTION_KEY` or its secret); it must be exactly 32 bytes. */
export function parseTokenKey(base64: string): Buffer {
  const trimmed = base64.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed)) throw new TokenKeyError('Token encryption key is not base64');
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== KEY_BYTES)
    throw new TokenKeyError(`Token encryption key must be ${KEY_BYTES} bytes, got ${key.length}`);
  return key;
}

/** Whether a stored value is in the encrypted format (else it is a legacy plaintext token). */
export function isEncrypted(stored: string): boolean {
  return stored.startsWith(ENCRYPTED_TOKEN_PREFIX);
}

/**
 * Encrypts a token with a fresh random IV. `iv` exists only for the published test vector;
 * never pass it in production (reusing an IV with GCM breaks the encryption).
 */
export function encryptToken(plaintext: string, key: Buffer, iv: Buffer = randomBytes(IV_BYTES)): string {
  checkKey(key);
  if (iv.length !== IV_BYTES) throw new TypeError(`IV must be ${IV_BYTES} bytes`);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return ENCRYPTED_TOKEN_PREFIX + Buffer.concat([iv, ciphertext, cipher.getAuthTag()]).toString('base64');
}

/** Decrypts a stored token; a legacy plaintext value (no prefix) is returned unchanged. */
export function decryptToken(stored: string, key: Buffer): string {
  checkKey(key);
  if (!isEncrypted(stored)) return stored;
  const packed = Buffer.from(stored.slice(ENCRYPTED_TOKEN_PREFIX.length), 'base64');
  if (packed.length < IV_BYTES + TAG_BYTES) throw new TokenDecryptionError('Encrypted token is truncated');
  const iv = packed.subarray(0, IV_BYTES);
  const tag = packed.subarray(packed.length - TAG_BYTES);
  const ciphertext = packed.subarray(IV_BYTES, packed.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch (error) {
    throw new TokenDecryptionError('Encrypted token failed authentication (tampered, or encrypted with another key)', {
      cause: error,
    });
  }
}

/** The key bound once, for code that encrypts and decrypts many tokens. */
export class TokenCipher {
  constructor(private readonly key: Buffer) {
    checkKey(key);
  }

  /**
   * A 32-byte key for another purpose (HKDF-SHA-256 of the token key, `info` = purpose): one
   * secret to keep and rotate, and a derived key reveals nothing of the token key nor of keys
   * for other purposes.
   */
  deriveKey(purpose: string): Buffer {
    return Buffer.from(hkdfSync('sha256', this.key, Buffer.alloc(0), `accounts-platform:${purpose}`, KEY_BYTES));
  }

  /** Builds a cipher from the base64 key text. */
  static fromBase64(base64: string): TokenCipher {
    return new TokenCipher(parseTokenKey(base64));
  }

  encrypt(plaintext: string): string {
    return encryptToken(plaintext, this.key);
  }

  decrypt(stored: string): string {
    return decryptToken(stored, this.key);
  }

  isEncrypted(stored: string): boolean {
    return isEncrypted(stored);
  }
}

function checkKey(key: Buffer): void {
  if (key.length !== KEY_BYTES)
    throw new TokenKeyError(`Token encryption key must be ${KEY_BYTES} bytes, got ${key.length}`);
}
