import { GetSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import { z } from 'zod';
import type { JobConfig } from './config';
import { parseTokenKey } from './token-crypto';

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

/**
 * Secrets Manager reads, once per secret per container: the first call fetches, every later
 * call (concurrent ones included) shares the result. A failed fetch is not cached, so the next
 * invocation tries again. Create one per container (module scope of the handler).
 */
export class SecretsCache {
  private readonly values = new Map<string, Promise<string>>();

  constructor(private readonly client: SecretsManagerClient) {}

  /** The secret's string value. */
  getString(secretArn: string): Promise<string> {
    let value = this.values.get(secretArn);
    if (!value) {
      value = this.fetch(secretArn);
      this.values.set(secretArn, value);
      value.catch(() => this.values.delete(secretArn));
    }
    return value;
  }

  /** The secret parsed as JSON and validated with `schema`. */
  async getJson<T>(secretArn: string, schema: z.ZodType<T>): Promise<T> {
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
  clientId: z
    .string()
    .min(1)
    .refine((v) => v !== 'REPLACE_ME', 'is still the placeholder REPLACE_ME'),
  clientSecret: z.string().min(1),
});

/** What the jobs need from Secrets Manager. */
export interface JobSecrets {
  readonly lwaClientId: string;
  readonly lwaClientSecret: string;
  /** The decoded 32-byte token encryption key. */
  readonly tokenKey: Buffer;
}

/** Reads (through the cache) and validates the LWA client and the token key. */
export async function loadJobSecrets(
  config: Pick<JobConfig, 'lwaClientSecretArn' | 'tokenKeySecretArn'>,
  cache: SecretsCache,
): Promise<JobSecrets> {
  const [lwa, keyText] = await Promise.all([
    cache.getJson(config.lwaClientSecretArn, lwaClientSchema),
    cache.getString(config.tokenKeySecretArn),
  ]);
  let tokenKey: Buffer;
  try {
    tokenKey = parseTokenKey(keyText);
  } catch (error) {
    throw new SecretError(config.tokenKeySecretArn, (error as Error).message, { cause: error });
  }
  return { lwaClientId: lwa.clientId, lwaClientSecret: lwa.clientSecret, tokenKey };
}
