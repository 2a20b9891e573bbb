import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { problems } from '../shared/http';

/**
 * Opaque cursors for keyset pagination. A cursor holds the position after the last item of a
 * page (the sort key's values) and a fingerprint of the listing it belongs to (the route, the
 * path's id and every filter), sealed with an HMAC-SHA-256 under the API's cursor key (derived
 * from the token encryption key: `TokenCipher.deriveKey('accounts-api-cursor')`). A cursor that
 * was altered, truncated, forged, or comes from another listing or other filters is a 400; so
 * only positions the API itself wrote reach SQL. The keys are also checked on the way in
 * (the caller of {@link decodeCursor} validates each value's form), so a cursor made with a
 * leaked key still cannot carry a value PostgreSQL would refuse.
 *
 * A cursor only says where to continue inside what the caller may see; what the caller may see
 * is decided by Row Level Security, not by the cursor. When the token key is rotated, earlier
 * cursors stop being valid (400): a client starts the listing again.
 */

export type CursorKey = ReadonlyArray<string | number>;

/** The listing a cursor belongs to: route, path id and filters. */
export type Listing = Readonly<Record<string, string | number | undefined>>;

const VERSION = 2;
const MAC_LENGTH = 32; // base64url characters of the MAC kept (192 bits)

function fingerprint(listing: Listing): string {
  const canonical = Object.keys(listing)
    .filter((k) => listing[k] !== undefined)
    .sort()
    .map((k) => [k, listing[k]]);
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url').slice(0, 16);
}

function mac(body: string, key: Buffer): string {
  return createHmac('sha256', key).update(`accounts-api-cursor.${body}`).digest('base64url').slice(0, MAC_LENGTH);
}

export function encodeCursor(key: CursorKey, listing: Listing, macKey: Buffer): string {
  const body = Buffer.from(JSON.stringify({ v: VERSION, k: key, f: fingerprint(listing) })).toString('base64url');
  return `${body}.${mac(body, macKey)}`;
}

/** The position a cursor holds; a 400 problem when it is not one of this listing's cursors. */
export function decodeCursor(cursor: string, listing: Listing, keyLength: number, macKey: Buffer): CursorKey {
  const invalid = () => problems.badRequest('The cursor is not valid for this listing.');
  const match = new RegExp(`^([A-Za-z0-9_-]{1,2048})\\.([A-Za-z0-9_-]{${MAC_LENGTH}})$`).exec(cursor);
  if (!match) throw invalid();
  const expected = Buffer.from(mac(match[1], macKey));
  const given = Buffer.from(match[2]);
  if (expected.length !== given.length || !timingSafeEqual(expected, given)) throw invalid();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(match[1], 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  const value = parsed as { v?: unknown; k?: unknown; f?: unknown };
  if (
    value?.v !== VERSION ||
    value.f !== fingerprint(listing) ||
    !Array.isArray(value.k) ||
    value.k.length !== keyLength ||
    !value.k.every((x) => typeof x === 'string' || typeof x === 'number')
  )
    throw invalid();
  return value.k;
}
