import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * OAuth tokens at rest, in the format the web app shares (docs/token-encryption.md):
 * AES-256-GCM with 32-byte keys from a key ring (several keys, one of them current).
 *
 * - `enc:v2:<key id>:` + base64(IV(12) ‖ ciphertext ‖ tag(16)), with associated data binding the
 *   value to its row and column (table, user id, region, column): what every write produces,
 *   under the ring's current key. A value copied to another row or column fails to decrypt.
 * - `enc:v1:` + base64(IV(12) ‖ ciphertext ‖ tag(16)), no associated data, no key id: the
 *   first format, still read (tried under each key of the ring), never written.
 * - a value without either prefix is a legacy plaintext token: read as is, written back encrypted.
 */
export const ENCRYPTED_TOKEN_PREFIX = 'enc:v1:';
export const V2_PREFIX = 'enc:v2:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

/** The id a bare base64 key (the single-key secret, `TOKEN_ENCRYPTION_KEY`) has in its one-key ring. */
export const LEGACY_KEY_ID = 'legacy';
/** What a key id may be: it sits in the stored value between colons, and in the associated data. */
export const KEY_ID_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

/** The key is missing or not 32 bytes of base64, or the ring is malformed. The message never contains a key. */
export class TokenKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenKeyError';
  }
}

/** A stored value has a prefix but cannot be decrypted: tampered, truncated, moved, or another key. */
export class TokenDecryptionError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TokenDecryptionError';
  }
}

/** An `enc:v2` value under a key id that the ring does not hold (yet, or any more). */
export class UnknownTokenKeyError extends TokenDecryptionError {
  constructor(readonly keyId: string) {
    super(`Encrypted token is under key id "${keyId}", which is not in the key ring`);
    this.name = 'UnknownTokenKeyError';
  }
}

/** The tables whose columns hold encrypted values. */
export type TokenTable = 'oauth_tokens' | 'connect_sessions';
/** The encrypted columns. */
export type TokenColumn = 'access_token' | 'refresh_token' | 'code_verifier';
const COLUMNS: Readonly<Record<TokenTable, readonly TokenColumn[]>> = {
  oauth_tokens: ['access_token', 'refresh_token'],
  connect_sessions: ['code_verifier'],
};

/** Where an encrypted value lives: its `enc:v2` associated data. */
export interface TokenBinding {
  readonly table: TokenTable;
  /** The row's `user_id` (a UUID; written in lowercase in the associated data). */
  readonly userId: string;
  /** The row's `region` (NA, EU, FE). */
  readonly region: string;
  readonly column: TokenColumn;
}

/** Where a connection's token lives: its oauth_tokens row (user and region) and column. */
export function oauthTokenBinding(
  connection: { readonly userId: string; readonly region: string },
  column: 'access_token' | 'refresh_token',
): TokenBinding {
  return { table: 'oauth_tokens', userId: connection.userId, region: connection.region, column };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The associated data of an `enc:v2` value: UTF-8 of
 * `enc:v2|<key id>|<table>|<user id, lowercase>|<region>|<column>`.
 */
export function associatedData(keyId: string, binding: TokenBinding): Buffer {
  const userId = binding.userId.toLowerCase();
  if (!KEY_ID_PATTERN.test(keyId)) throw new TypeError('Key id is not valid');
  if (!COLUMNS[binding.table]?.includes(binding.column))
    throw new TypeError(`No encrypted column ${binding.table}.${binding.column}`);
  if (!UUID.test(userId)) throw new TypeError('Token binding: user id is not a UUID');
  if (!/^[A-Z]{2}$/.test(binding.region)) throw new TypeError('Token binding: region is not valid');
  return Buffer.from(['enc:v2', keyId, binding.table, userId, binding.region, binding.column].join('|'), 'utf8');
}

/** Decodes a base64 key (a key of the ring, or the single-key secret); it must be exactly 32 bytes. */
export function parseTokenKey(base64: string): Buffer {
  const trimmed = base64.trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(trimmed)) throw new TokenKeyError('Token encryption key is not base64');
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== KEY_BYTES)
    throw new TokenKeyError(`Token encryption key must be ${KEY_BYTES} bytes, got ${key.length}`);
  return key;
}

/** Whether a stored value is encrypted (`enc:v1` or `enc:v2`), else it is a legacy plaintext token. */
export function isEncrypted(stored: string): boolean {
  return stored.startsWith(ENCRYPTED_TOKEN_PREFIX) || stored.startsWith(V2_PREFIX);
}

/** What a stored value is, from its prefix alone. */
export type StoredFormat = { format: 'plaintext' } | { format: 'v1' } | { format: 'v2'; keyId: string };

/** The stored value's format (and key id for `enc:v2`); an `enc:v2` value without a valid key id is refused. */
export function storedFormat(stored: string): StoredFormat {
  if (stored.startsWith(ENCRYPTED_TOKEN_PREFIX)) return { format: 'v1' };
  if (!stored.startsWith(V2_PREFIX)) return { format: 'plaintext' };
  const end = stored.indexOf(':', V2_PREFIX.length);
  const keyId = end < 0 ? '' : stored.slice(V2_PREFIX.length, end);
  if (!KEY_ID_PATTERN.test(keyId)) throw new TokenDecryptionError('Encrypted token has no valid key id');
  return { format: 'v2', keyId };
}

/**
 * `enc:v1`: encrypts a token with a fresh random IV and no associated data. Kept for the
 * published test vector and for reading; the application writes `enc:v2` only. `iv` exists only
 * for test vectors; never pass it in production (reusing an IV with GCM breaks the encryption).
 */
export function encryptToken(plaintext: string, key: Buffer, iv: Buffer = randomBytes(IV_BYTES)): string {
  return ENCRYPTED_TOKEN_PREFIX + seal(plaintext, key, iv);
}

/** `enc:v1`: decrypts a stored token; a legacy plaintext value (no prefix) is returned unchanged. */
export function decryptToken(stored: string, key: Buffer): string {
  checkKey(key);
  if (!stored.startsWith(ENCRYPTED_TOKEN_PREFIX)) {
    if (stored.startsWith(V2_PREFIX)) throw new TokenDecryptionError('An enc:v2 token needs its key ring and binding');
    return stored;
  }
  return open(stored.slice(ENCRYPTED_TOKEN_PREFIX.length), key);
}

/** `enc:v2`: encrypts under `key` (named `keyId`) bound to `binding`, with a fresh random IV (`iv`: test vectors only). */
export function encryptTokenV2(
  plaintext: string,
  key: Buffer,
  keyId: string,
  binding: TokenBinding,
  iv: Buffer = randomBytes(IV_BYTES),
): string {
  return `${V2_PREFIX}${keyId}:${seal(plaintext, key, iv, associatedData(keyId, binding))}`;
}

/** `enc:v2`: decrypts a value whose key id names `key`, bound to `binding` (any other binding fails). */
export function decryptTokenV2(stored: string, key: Buffer, binding: TokenBinding): string {
  checkKey(key);
  const f = storedFormat(stored);
  if (f.format !== 'v2') throw new TokenDecryptionError('Not an enc:v2 token');
  return open(stored.slice(V2_PREFIX.length + f.keyId.length + 1), key, associatedData(f.keyId, binding));
}

function seal(plaintext: string, key: Buffer, iv: Buffer, aad?: Buffer): string {
  checkKey(key);
  if (iv.length !== IV_BYTES) throw new TypeError(`IV must be ${IV_BYTES} bytes`);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  if (aad) cipher.setAAD(aad);
  const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, ciphertext, cipher.getAuthTag()]).toString('base64');
}

function open(payload: string, key: Buffer, aad?: Buffer): string {
  const packed = Buffer.from(payload, 'base64');
  if (packed.length < IV_BYTES + TAG_BYTES) throw new TokenDecryptionError('Encrypted token is truncated');
  const iv = packed.subarray(0, IV_BYTES);
  const tag = packed.subarray(packed.length - TAG_BYTES);
  const ciphertext = packed.subarray(IV_BYTES, packed.length - TAG_BYTES);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
    if (aad) decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]).toString('utf8');
  } catch (error) {
    throw new TokenDecryptionError(
      aad
        ? 'Encrypted token failed authentication (tampered, moved from another row or column, or another key)'
        : 'Encrypted token failed authentication (tampered, or encrypted with another key)',
      { cause: error },
    );
  }
}

/**
 * The keys tokens are encrypted under: every key by its id, and the current one (what every
 * write uses). The secret's text is either the ring as JSON,
 * `{"current": "<id>", "keys": {"<id>": "<base64 32 bytes>", …}}`, or one bare base64 key (the
 * format before rings), read as a ring of that one key under the id `legacy`.
 */
export class TokenKeyRing {
  private readonly keys: ReadonlyMap<string, Buffer>;

  constructor(
    keys: ReadonlyMap<string, Buffer> | Readonly<Record<string, Buffer>>,
    readonly currentKeyId: string,
  ) {
    const map = new Map<string, Buffer>(
      keys instanceof Map ? (keys as ReadonlyMap<string, Buffer>) : Object.entries(keys as Record<string, Buffer>),
    );
    if (map.size === 0) throw new TokenKeyError('Token key ring has no keys');
    for (const [id, key] of map) {
      if (!KEY_ID_PATTERN.test(id))
        throw new TokenKeyError('Token key ring: a key id is not valid (A-Z a-z 0-9 _ . -, 1 to 64)');
      checkKey(key);
    }
    if (!map.has(currentKeyId)) throw new TokenKeyError('Token key ring: the current key id is not one of its keys');
    this.keys = map;
  }

  /** A ring of one key under `id` (default `legacy`, the id of the single-key secret's key). */
  static single(key: Buffer, id: string = LEGACY_KEY_ID): TokenKeyRing {
    return new TokenKeyRing(new Map([[id, key]]), id);
  }

  /** Parses the key secret's text (JSON ring, or a bare base64 key). Messages never contain a key. */
  static parse(text: string): TokenKeyRing {
    const trimmed = text.trim();
    if (!trimmed.startsWith('{')) return TokenKeyRing.single(parseTokenKey(trimmed));
    let json: unknown;
    try {
      json = JSON.parse(trimmed);
    } catch {
      throw new TokenKeyError('Token key ring is not JSON');
    }
    const { current, keys } = (json ?? {}) as { current?: unknown; keys?: unknown };
    if (typeof current !== 'string') throw new TokenKeyError('Token key ring: "current" must be a key id');
    if (typeof keys !== 'object' || keys === null || Array.isArray(keys))
      throw new TokenKeyError('Token key ring: "keys" must be an object of key id to base64 key');
    const map = new Map<string, Buffer>();
    for (const [id, value] of Object.entries(keys)) {
      if (typeof value !== 'string') throw new TokenKeyError(`Token key ring: key "${safeId(id)}" is not a string`);
      try {
        map.set(id, parseTokenKey(value));
      } catch (error) {
        throw new TokenKeyError(`Token key ring: key "${safeId(id)}": ${(error as Error).message}`);
      }
    }
    return new TokenKeyRing(map, current);
  }

  /** The ring's key ids, current first. */
  get keyIds(): string[] {
    return [this.currentKeyId, ...[...this.keys.keys()].filter((id) => id !== this.currentKeyId)];
  }

  has(keyId: string): boolean {
    return this.keys.has(keyId);
  }

  /** The same ring without `keyId` (which must not be the current key). */
  without(keyId: string): TokenKeyRing {
    const keys = new Map(this.keys);
    keys.delete(keyId);
    return new TokenKeyRing(keys, this.currentKeyId);
  }

  /** The ring as the secret's JSON text (what an operator stores). */
  toSecretText(): string {
    const keys: Record<string, string> = {};
    for (const id of this.keyIds) keys[id] = this.keys.get(id)!.toString('base64');
    return JSON.stringify({ current: this.currentKeyId, keys });
  }

  /** `enc:v2` under the current key, bound to `binding`. `iv` exists only for test vectors. */
  encrypt(plaintext: string, binding: TokenBinding, iv?: Buffer): string {
    return encryptTokenV2(plaintext, this.keys.get(this.currentKeyId)!, this.currentKeyId, binding, iv);
  }

  /**
   * Any stored format: `enc:v2` under its key (an id the ring lacks throws
   * {@link UnknownTokenKeyError}) and bound to `binding`; `enc:v1` under whichever key of the
   * ring authenticates it; legacy plaintext as it is.
   */
  decrypt(stored: string, binding: TokenBinding): string {
    const f = storedFormat(stored);
    if (f.format === 'plaintext') return stored;
    if (f.format === 'v2') {
      const key = this.keys.get(f.keyId);
      if (!key) throw new UnknownTokenKeyError(f.keyId);
      return decryptTokenV2(stored, key, binding);
    }
    let failure: unknown;
    for (const id of this.keyIds) {
      try {
        return decryptToken(stored, this.keys.get(id)!);
      } catch (error) {
        failure ??= error;
        if (!(error instanceof TokenDecryptionError) || /truncated/.test(error.message)) throw error;
      }
    }
    throw failure;
  }

  /** Whether a stored value is already what a write would produce now (`enc:v2` under the current key). */
  isCurrent(stored: string): boolean {
    return stored.startsWith(`${V2_PREFIX}${this.currentKeyId}:`);
  }

  /**
   * A 32-byte key for another purpose (HKDF-SHA-256 of the current key, `info` = purpose): one
   * secret to keep and rotate, and a derived key reveals nothing of the token keys nor of keys
   * for other purposes. It changes when the current key does.
   */
  deriveKey(purpose: string): Buffer {
    return Buffer.from(
      hkdfSync('sha256', this.keys.get(this.currentKeyId)!, Buffer.alloc(0), `accounts-platform:${purpose}`, KEY_BYTES),
    );
  }
}

/** Re-reads the ring from where it is kept (the secret, bypassing the cache). */
export type TokenKeyRingReload = () => Promise<TokenKeyRing>;

/**
 * The key ring bound once, for code that encrypts and decrypts many tokens. With `reload`, a
 * value under a key id the ring lacks makes it re-read the ring once (per key id, shared by
 * concurrent callers) before failing: a key added and used elsewhere is picked up before the
 * cache's time to live has passed.
 */
export class TokenCipher {
  private ringNow: TokenKeyRing;
  private readonly reloads = new Map<string, Promise<TokenKeyRing | undefined>>();

  constructor(
    keyOrRing: Buffer | TokenKeyRing,
    private readonly reload?: TokenKeyRingReload,
  ) {
    this.ringNow = keyOrRing instanceof TokenKeyRing ? keyOrRing : TokenKeyRing.single(keyOrRing);
  }

  /** Builds a cipher from the key secret's text: a JSON ring, or one base64 key. */
  static fromBase64(text: string): TokenCipher {
    return new TokenCipher(TokenKeyRing.parse(text));
  }

  /** The ring as it is now (after any re-read). */
  get ring(): TokenKeyRing {
    return this.ringNow;
  }

  deriveKey(purpose: string): Buffer {
    return this.ringNow.deriveKey(purpose);
  }

  /** `enc:v2` under the current key, bound to `binding`. */
  encrypt(plaintext: string, binding: TokenBinding): string {
    return this.ringNow.encrypt(plaintext, binding);
  }

  /** Any stored format (see {@link TokenKeyRing.decrypt}); an unknown key id re-reads the ring once first. */
  async decrypt(stored: string, binding: TokenBinding): Promise<string> {
    try {
      return this.ringNow.decrypt(stored, binding);
    } catch (error) {
      if (!(error instanceof UnknownTokenKeyError) || !this.reload) throw error;
      let reloaded = this.reloads.get(error.keyId);
      if (!reloaded) {
        reloaded = this.reload().then(
          (ring) => ring,
          () => undefined,
        );
        this.reloads.set(error.keyId, reloaded);
      }
      const ring = await reloaded;
      if (!ring?.has(error.keyId)) throw error;
      this.ringNow = ring;
      return ring.decrypt(stored, binding);
    }
  }

  isEncrypted(stored: string): boolean {
    return isEncrypted(stored);
  }

  /** Whether a stored value is already `enc:v2` under the current key (nothing to re-encrypt). */
  isCurrent(stored: string): boolean {
    return this.ringNow.isCurrent(stored);
  }
}

function checkKey(key: Buffer): void {
  if (key.length !== KEY_BYTES)
    throw new TokenKeyError(`Token encryption key must be ${KEY_BYTES} bytes, got ${key.length}`);
}

/** A key id for an error message: shown only when it is a valid id (never a pasted key). */
function safeId(id: string): string {
  return KEY_ID_PATTERN.test(id) && id.length <= 32 ? id : '(invalid id)';
}
