import { isSqlTypedValue, SqlValue } from './port';

/**
 * How one {@link SqlValue} is bound: the PostgreSQL type the Data API gives it (see the table
 * in port.ts) and the value in the form both adapters send. node-postgres casts the
 * placeholder to `pgType` so that local runs type parameters exactly as production does.
 */
export type BoundValue =
  | { readonly kind: 'null' }
  | {
      readonly kind: 'string';
      readonly pgType: 'varchar' | 'uuid' | 'json' | 'numeric' | 'timestamp';
      readonly value: string;
    }
  | { readonly kind: 'long'; readonly pgType: 'int8'; readonly value: number }
  | { readonly kind: 'double'; readonly pgType: 'float8'; readonly value: number }
  | { readonly kind: 'boolean'; readonly pgType: 'bool'; readonly value: boolean }
  | { readonly kind: 'blob'; readonly pgType: 'bytea'; readonly value: Uint8Array };

/** Classifies a parameter value; throws TypeError for values no adapter can send. */
export function bindValue(name: string, value: SqlValue): BoundValue {
  if (value === null) return { kind: 'null' };
  switch (typeof value) {
    case 'string':
      return { kind: 'string', pgType: 'varchar', value };
    case 'boolean':
      return { kind: 'boolean', pgType: 'bool', value };
    case 'bigint':
      return { kind: 'string', pgType: 'numeric', value: value.toString() };
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`Parameter :${name} is not a finite number`);
      if (Number.isInteger(value)) {
        if (!Number.isSafeInteger(value)) throw new TypeError(`Parameter :${name} is an unsafe integer; pass a bigint`);
        return { kind: 'long', pgType: 'int8', value };
      }
      return { kind: 'double', pgType: 'float8', value };
    case 'object':
      if (value instanceof Date) {
        if (Number.isNaN(value.getTime())) throw new TypeError(`Parameter :${name} is an invalid Date`);
        return { kind: 'string', pgType: 'timestamp', value: formatUtcTimestamp(value) };
      }
      if (value instanceof Uint8Array) return { kind: 'blob', pgType: 'bytea', value };
      if (isSqlTypedValue(value)) {
        const pgType = value.sqlType === 'decimal' ? 'numeric' : value.sqlType;
        return { kind: 'string', pgType, value: value.value };
      }
      break;
    default:
      break;
  }
  throw new TypeError(`Parameter :${name} has an unsupported type (${typeof value})`);
}

/** `YYYY-MM-DD HH:MM:SS.mmm` in UTC: the Data API's TIMESTAMP format. */
export function formatUtcTimestamp(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '');
}

/**
 * Parses a `timestamp`/`timestamptz` text in UTC (`2024-01-02 03:04:05.123456`, optionally
 * with an offset such as `+00` or `+05:30`) into a Date (millisecond precision).
 */
export function parseUtcTimestamp(text: string): Date {
  const m =
    /^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:([+-])(\d\d)(?::?(\d\d))?(?::(\d\d))?)?( BC)?$/.exec(
      text,
    );
  if (!m) {
    if (text === 'infinity' || text === '-infinity') return new Date(text === 'infinity' ? 8.64e15 : -8.64e15);
    throw new TypeError(`Not a timestamp: ${text}`);
  }
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  let year = Number(m[1]);
  if (m[12]) year = 1 - year;
  const utc = Date.UTC(year, Number(m[2]) - 1, Number(m[3]), Number(m[4]), Number(m[5]), Number(m[6]), ms);
  const date = new Date(utc);
  if (year >= 0 && year < 100) date.setUTCFullYear(year);
  if (m[8]) {
    const offsetMinutes = (Number(m[9]) * 60 + Number(m[10] ?? 0)) * (m[8] === '+' ? 1 : -1);
    return new Date(date.getTime() - offsetMinutes * 60_000 - Number(m[11] ?? 0) * 1000 * (m[8] === '+' ? 1 : -1));
  }
  return date;
}
