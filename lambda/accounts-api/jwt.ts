import { JwtVerifier } from 'aws-jwt-verify';
import { SimpleJwksCache, type Jwks } from 'aws-jwt-verify/jwk';
import type { Fetcher } from 'aws-jwt-verify/https';
import type { JwtPayload } from 'aws-jwt-verify/jwt-model';

/**
 * Sign-in: `Authorization: Bearer <JWT>` from the product's identity provider, verified with
 * aws-jwt-verify against the issuer's JWKS (fetched once and cached per container; a token
 * whose `kid` is not in the cached set makes one re-fetch, rate-limited by the library's
 * penalty box). Accepted: asymmetric signatures only (RS256, ES256, EdDSA; Supabase signs
 * ES256), the configured issuer and audience, `exp` required and in the future, `nbf` (when
 * present) in the past, `sub` a uuid (`users.id`). Anything else is {@link Unauthenticated},
 * which the API answers with a plain 401 that does not say what was wrong.
 */

export const ALLOWED_JWT_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'] as const;

export interface JwtSettings {
  /** Expected `iss`. */
  readonly issuer: string;
  /** Expected `aud`: one value or several (any of them). */
  readonly audience: string | readonly string[];
  /** @default `${issuer}/.well-known/jwks.json` */
  readonly jwksUrl?: string;
  /** Timeout of one JWKS download. @default 3000 */
  readonly jwksTimeoutMs?: number;
  /** Clock skew allowed on `exp`/`nbf`, seconds. @default 0 */
  readonly graceSeconds?: number;
  /** A key set known in advance (the local issuer's): cached at once, fetched again only for an unknown `kid`. */
  readonly jwks?: { readonly keys: readonly object[] };
}

/** The signed-in caller, from a verified token. */
export interface Caller {
  /** `sub`: the user's id (uuid, lower case). */
  readonly userId: string;
  /** `email` when the token carries one. */
  readonly email: string | undefined;
}

/** Verifies a bearer token; rejects with {@link Unauthenticated}. */
export interface TokenVerifier {
  verify(token: string): Promise<Caller>;
}

/** The token was not accepted. Deliberately carries no reason (logged as its class only). */
export class Unauthenticated extends Error {
  constructor() {
    super('Unauthenticated');
    this.name = 'Unauthenticated';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** A compact JWS: three base64url parts; nothing else reaches the verifier. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** Fetches the JWKS with the global fetch (http allowed for a local issuer), with a timeout. */
export function jwksFetcher(timeoutMs: number): Fetcher {
  return {
    async fetch(uri: string): Promise<ArrayBuffer> {
      const response = await fetch(uri, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
      if (!response.ok) throw new Error(`JWKS download answered HTTP ${response.status}`);
      return response.arrayBuffer();
    },
  };
}

export function createTokenVerifier(settings: JwtSettings): TokenVerifier {
  const issuer = settings.issuer;
  const jwksUri = settings.jwksUrl ?? `${issuer.replace(/\/+$/, '')}/.well-known/jwks.json`;
  const verifier = JwtVerifier.create(
    {
      issuer,
      audience: [...(typeof settings.audience === 'string' ? [settings.audience] : settings.audience)],
      jwksUri,
      graceSeconds: settings.graceSeconds ?? 0,
      customJwtCheck: ({ header, payload }) => {
        if (!(ALLOWED_JWT_ALGORITHMS as readonly (string | undefined)[]).includes(header.alg))
          throw new Error('algorithm');
        if (typeof payload.exp !== 'number') throw new Error('exp');
        if (typeof payload.sub !== 'string' || !UUID.test(payload.sub)) throw new Error('sub');
      },
    },
    { jwksCache: new SimpleJwksCache({ fetcher: jwksFetcher(settings.jwksTimeoutMs ?? 3000) }) },
  );
  if (settings.jwks) verifier.cacheJwks(settings.jwks as unknown as Jwks);
  return {
    async verify(token: string): Promise<Caller> {
      if (!COMPACT_JWS.test(token)) throw new Unauthenticated();
      let payload: JwtPayload;
      try {
        payload = await verifier.verify(token);
      } catch {
        throw new Unauthenticated();
      }
      const email = typeof payload.email === 'string' && payload.email.length > 0 ? payload.email : undefined;
      return { userId: (payload.sub as string).toLowerCase(), email };
    },
  };
}

/** The bearer token of an `Authorization` header, or undefined. */
export function bearerToken(authorization: string | undefined): string | undefined {
  const match = /^Bearer[ ]+([^\s]+)\s*$/i.exec(authorization ?? '');
  return match?.[1];
}
