import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import * as z from './validation';
import type { JobConfig } from './config';
import type { LwaCredentialsProvider } from './amazon/lwa-client';
import { TokenCipher, TokenKeyRing } from './token-crypto';

/** A secret is unreadable or malformed. Names the secret, never its value. */
export class SecretError extends Error {
  constructor(
    readonly secretArn: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`Secret ${secretArn}: ${message}`, options);
    this.name = 'SecretError';
  }
}

/** How long a secret read is reused: a value replaced in Secrets Manager is seen within this. */
export const SECRET_TTL_MS = 5 * 60_000;

export interface SecretsCacheOptions {
  /** @default SECRET_TTL_MS */
  readonly ttlMs?: number;
  /** @default Date.now */
  readonly now?: () => number;
}

/**
 * Secrets Manager reads, per container, for a time to live: the first call fetches, later
 * calls (concurrent ones included) share the result until it is `ttlMs` old, then the next
 * call fetches again (a replaced LWA client secret or token key is picked up without a cold
 * start). `refresh` re-reads at once (e.g. after Amazon said `invalid_client`). A failed fetch
 * is not cached, so the next call tries again. Create one per container (module scope).
 */
export class SecretsCache {
  private readonly values = new Map<string, { value: Promise<string>; fetchedAt: number }>();
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly client: SecretsManagerClient,
    options: SecretsCacheOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? SECRET_TTL_MS;
    this.now = options.now ?? Date.now;
  }

  /** The secret's string value. */
  getString(secretArn: string): Promise<string> {
    const entry = this.values.get(secretArn);
    if (entry && this.now() - entry.fetchedAt < this.ttlMs) return entry.value;
    return this.refresh(secretArn);
  }

  /**
   * Reads the secret again now (sharing a read already under way that started after the
   * cached one) and caches the new value.
   */
  refresh(secretArn: string): Promise<string> {
    const entry = { value: this.fetch(secretArn), fetchedAt: this.now() };
    this.values.set(secretArn, entry);
    entry.value.catch(() => {
      if (this.values.get(secretArn) === entry) this.values.delete(secretArn);
    });
    return entry.value;
  }

  /** The secret parsed as JSON and validated with `schema`. */
  async getJson<T>(secretArn: string, schema: z.ZodMiniType<T>): Promise<T> {
    const text = await this.getString(secretArn);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new SecretError(secretArn, 'is not JSON');
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw new SecretError(
        secretArn,
        `has an unexpected shape (${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')})`,
      );
    }
    return parsed.data;
  }

  private async fetch(secretArn: string): Promise<string> {
    let output;
    try {
      output = await this.client.send(new GetSecretValueCommand({ SecretId: secretArn }));
    } catch (error) {
      throw new SecretError(secretArn, `could not be read (${(error as Error).name ?? 'Error'})`, { cause: error });
    }
    if (typeof output.SecretString !== 'string') throw new SecretError(secretArn, 'has no string value');
    return output.SecretString;
  }
}

/** The LWA client secret's JSON (lib/application-secrets.ts); the stack's placeholder is refused. */
const lwaClientSchema = z.object({
  clientId: z.string().check(
    z.minLength(1),
    z.refine((v) => v !== 'REPLACE_ME', 'is still the placeholder REPLACE_ME'),
  ),
  clientSecret: z.string().check(z.minLength(1)),
});

/** What the jobs need from Secrets Manager. */
export interface JobSecrets {
  readonly lwaClientId: string;
  readonly lwaClientSecret: string;
  /** The token key ring (docs/token-encryption.md). */
  readonly tokenKeys: TokenKeyRing;
}

/**
 * The LWA client's credentials from Secrets Manager for LwaClient: `get` through the cache
 * (time to live), `refresh` reads the secret again at once.
 */
export function lwaCredentialsFromSecret(cache: SecretsCache, secretArn: string): LwaCredentialsProvider {
  return {
    get: () => cache.getJson(secretArn, lwaClientSchema),
    refresh: async () => {
      await cache.refresh(secretArn);
      return cache.getJson(secretArn, lwaClientSchema);
    },
  };
}

/** The key ring from the secret's text; a malformed one is a SecretError naming the secret, never a key. */
export function parseKeyRingSecret(secretArn: string, text: string): TokenKeyRing {
  try {
    return TokenKeyRing.parse(text);
  } catch (error) {
    throw new SecretError(secretArn, (error as Error).message, { cause: error });
  }
}

/** The token key ring's cipher as the secret is now, and the same read fresh. */
export interface KeyRingSource {
  /** Through the cache (time to live); rebuilt only when the secret's text changed. */
  (): Promise<TokenCipher>;
  /** Reads the secret again now (what the re-encryption starts from). */
  fresh(): Promise<TokenCipher>;
}

/**
 * The token key ring (docs/token-encryption.md) for the key secret, read through the cache: a
 * key added to the ring reaches the function within the cache's time to live. The cipher it
 * returns re-reads the secret once (bypassing the cache) when it meets a value under a key id
 * its ring lacks, before that value counts as unreadable.
 */
export function keyRingFromSecret(cache: SecretsCache, secretArn: string): KeyRingSource {
  let current: { text: string; cipher: TokenCipher } | undefined;
  const reload = async () => parseKeyRingSecret(secretArn, await cache.refresh(secretArn));
  const build = (text: string) => {
    if (current?.text !== text)
      current = { text, cipher: new TokenCipher(parseKeyRingSecret(secretArn, text), reload) };
    return current.cipher;
  };
  const source = async () => build(await cache.getString(secretArn));
  source.fresh = async () => build(await cache.refresh(secretArn));
  return source;
}

/** The token key ring's cipher through the cache (see {@link keyRingFromSecret}). */
export const tokenCipherFromSecret = keyRingFromSecret;

/** Reads (through the cache) and validates the LWA client and the token key ring. */
export async function loadJobSecrets(
  config: Pick<JobConfig, 'lwaClientSecretArn' | 'tokenKeySecretArn'>,
  cache: SecretsCache,
): Promise<JobSecrets> {
  const [lwa, keyText] = await Promise.all([
    cache.getJson(config.lwaClientSecretArn, lwaClientSchema),
    cache.getString(config.tokenKeySecretArn),
  ]);
  const tokenKeys = parseKeyRingSecret(config.tokenKeySecretArn, keyText);
  return { lwaClientId: lwa.clientId, lwaClientSecret: lwa.clientSecret, tokenKeys };
}
