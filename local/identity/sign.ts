import { createHmac, KeyObject, sign as signWith } from 'node:crypto';

/**
 * Compact JWS signing for the local issuer and for tests (which also need tokens the API must
 * refuse: `alg: none`, a symmetric algorithm, a wrong key). Never used by the Lambda.
 */
export type SigningAlgorithm = 'ES256' | 'RS256' | 'EdDSA' | 'HS256' | 'none';

export interface SignOptions {
  readonly alg: SigningAlgorithm;
  /** The private key (ES256, RS256, EdDSA) or the shared secret (HS256). Unused for `none`. */
  readonly key?: KeyObject | Buffer;
  readonly kid?: string;
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

export function signJwt(payload: Record<string, unknown>, options: SignOptions): string {
  const header = { alg: options.alg, typ: 'JWT', ...(options.kid ? { kid: options.kid } : {}) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  switch (options.alg) {
    case 'none':
      return `${input}.`;
    case 'HS256':
      return `${input}.${b64url(
        createHmac('sha256', options.key as Buffer)
          .update(input)
          .digest(),
      )}`;
    case 'ES256':
      return `${input}.${b64url(signWith('sha256', Buffer.from(input), { key: options.key as KeyObject, dsaEncoding: 'ieee-p1363' }))}`;
    case 'RS256':
      return `${input}.${b64url(signWith('sha256', Buffer.from(input), options.key as KeyObject))}`;
    case 'EdDSA':
      return `${input}.${b64url(signWith(null, Buffer.from(input), options.key as KeyObject))}`;
  }
}
