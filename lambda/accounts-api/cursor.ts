import { createHash } from 'node:crypto';
import { problems } from './http';

/**
 * Opaque cursors for keyset pagination. A cursor holds the position after the last item of a
 * page (the sort key's values) and a fingerprint of the listing it belongs to (the route, the
 * path's id and every filter), sealed with a checksum. A cursor that was altered, truncated, or
 * comes from another listing or other filters is a 400.
 *
 * The checksum detects alteration; it is not a secret. It does not need to be: a cursor only
 * says where to continue inside what the caller may see, and what the caller may see is
 * decided by Row Level Security, not by the cursor.
 */

export type CursorKey = ReadonlyArray<string | number>;

/** The listing a cursor belongs to: route, path id and filters. */
export type Listing = Readonly<Record<string, string | number | undefined>>;

const VERSION = 1;

function fingerprint(listing: Listing): string {
  const canonical = Object.keys(listing)
    .filter((k) => listing[k] !== undefined)
    .sort()
    .map((k) => [k, listing[k]]);
  return createHash('sha256').update(JSON.stringify(canonical)).digest('base64url').slice(0, 16);
}

function checksum(body: string): string {
  return createHash('sha256').update(`accounts-api-cursor.${body}`).digest('base64url').slice(0, 16);
}

export function encodeCursor(key: CursorKey, listing: Listing): string {
  const body = Buffer.from(JSON.stringify({ v: VERSION, k: key, f: fingerprint(listing) })).toString('base64url');
  return `${body}.${checksum(body)}`;
}

/** The position a cursor holds; a 400 problem when it is not one of this listing's cursors. */
export function decodeCursor(cursor: string, listing: Listing, keyLength: number): CursorKey {
  const invalid = () => problems.badRequest('The cursor is not valid for this listing.');
  const match = /^([A-Za-z0-9_-]{1,2048})\.([A-Za-z0-9_-]{16})$/.exec(cursor);
  if (!match || checksum(match[1]) !== match[2]) throw invalid();
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
