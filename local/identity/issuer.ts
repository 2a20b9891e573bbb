import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { signJwt } from './sign';

/**
 * The local identity provider: what `npm run api`, `npm run token` and `npm start` trust when
 * no issuer is configured. One ES256 key (the algorithm Supabase signs with), created on first
 * use in `.local/identity/` (git-ignored) and kept, so a token printed by `npm run token` stays
 * valid for an API started later. Its JWKS is served by the local API at
 * `/.well-known/jwks.json`.
 */
export const LOCAL_ISSUER = 'urn:amazon-accounts:local-issuer';
export const LOCAL_AUDIENCE = 'accounts-api';

export interface Jwk {
  readonly kty: string;
  readonly kid: string;
  readonly alg: string;
  readonly use: string;
  readonly [key: string]: unknown;
}

export interface LocalIssuer {
  readonly issuer: string;
  readonly audience: string;
  readonly kid: string;
  /** The public key set (one ES256 key). */
  readonly jwks: { readonly keys: readonly Jwk[] };
  readonly privateKey: KeyObject;
  /** A signed token for `sub` (a uuid), valid for `expiresInSeconds` (default 3600). */
  token(options: { sub: string; email?: string; expiresInSeconds?: number; extra?: Record<string, unknown> }): string;
}

/** `.local/identity` (or `$ACCOUNTS_LOCAL_DIR/identity`, as `npm start` moves `.local`). */
export const DEFAULT_IDENTITY_DIR = join(process.env.ACCOUNTS_LOCAL_DIR ?? '.local', 'identity');

/** Loads the local issuer's key from `dir`, creating it there on first use. */
export function localIssuer(dir: string = DEFAULT_IDENTITY_DIR): LocalIssuer {
  const file = join(dir, 'signing-key.json');
  let privateKey: KeyObject;
  if (existsSync(file)) {
    privateKey = createPrivateKey({ key: JSON.parse(readFileSync(file, 'utf8')) as never, format: 'jwk' });
  } else {
    privateKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    mkdirSync(dir, { recursive: true });
    writeFileSync(file, JSON.stringify(privateKey.export({ format: 'jwk' })), { mode: 0o600 });
  }
  return issuerFromKey(privateKey);
}

/** An issuer on a key held in memory only (tests). */
export function ephemeralIssuer(options: { issuer?: string; audience?: string } = {}): LocalIssuer {
  return issuerFromKey(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, options);
}

function issuerFromKey(privateKey: KeyObject, options: { issuer?: string; audience?: string } = {}): LocalIssuer {
  const publicJwk = createPublicKey(privateKey).export({ format: 'jwk' }) as Record<string, string>;
  const kid = createHash('sha256').update(`${publicJwk.x}.${publicJwk.y}`).digest('base64url').slice(0, 16);
  const issuer = options.issuer ?? LOCAL_ISSUER;
  const audience = options.audience ?? LOCAL_AUDIENCE;
  return {
    issuer,
    audience,
    kid,
    jwks: { keys: [{ ...publicJwk, kty: 'EC', kid, alg: 'ES256', use: 'sig' }] },
    privateKey,
    token({ sub, email, expiresInSeconds = 3600, extra = {} }) {
      const now = Math.floor(Date.now() / 1000);
      return signJwt(
        {
          iss: issuer,
          aud: audience,
          sub,
          ...(email ? { email } : {}),
          role: 'authenticated',
          iat: now,
          exp: now + expiresInSeconds,
          ...extra,
        },
        { alg: 'ES256', key: privateKey, kid },
      );
    },
  };
}
