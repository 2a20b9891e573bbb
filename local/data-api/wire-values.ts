import { types as pgTypes } from 'pg';
import type { FieldDef } from 'pg';

/**
 * The RDS Data API's JSON field shapes, converted to and from PostgreSQL as the service does
 * for Aurora PostgreSQL (pgjdbc underneath): how a parameter is typed, and how a column value
 * comes back.
 */

/** A `Field` or `SqlParameter.value` as it appears in the JSON body. */
export interface WireField {
  isNull?: boolean;
  booleanValue?: boolean;
  longValue?: number;
  doubleValue?: number;
  stringValue?: string;
  /** base64 */
  blobValue?: string;
  arrayValue?: WireArray;
}

export interface WireArray {
  booleanValues?: boolean[];
  longValues?: number[];
  doubleValues?: number[];
  stringValues?: string[];
  arrayValues?: WireArray[];
}

export interface WireParameter {
  name?: string;
  value?: WireField;
  typeHint?: 'DATE' | 'DECIMAL' | 'JSON' | 'TIME' | 'TIMESTAMP' | 'UUID';
}

/** Thrown for requests the service rejects before running SQL. */
export class WireError extends Error {
  constructor(
    readonly errorType: string,
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
  }
}

const HINT_TYPES: Record<string, string> = {
  DATE: 'date',
  DECIMAL: 'numeric',
  JSON: 'json',
  TIME: 'time',
  TIMESTAMP: 'timestamp',
  UUID: 'uuid',
};

/**
 * The SQL type and node-postgres value of one parameter. Like pgjdbc, a plain string is bound
 * as `varchar` (so `uuid = :id` without a UUID hint fails, as it does on AWS), integers as
 * `bigint`, doubles as `double precision`; NULL is untyped.
 */
export function bindParameter(parameter: WireParameter): { cast: string | undefined; value: unknown } {
  const field = parameter.value ?? {};
  if (field.isNull) return { cast: undefined, value: null };
  if (field.stringValue !== undefined) {
    const cast = parameter.typeHint ? HINT_TYPES[parameter.typeHint] : 'varchar';
    if (!cast) throw new WireError('BadRequestException', 400, `Invalid type hint ${parameter.typeHint}`);
    return { cast, value: field.stringValue };
  }
  if (field.longValue !== undefined) return { cast: 'int8', value: String(field.longValue) };
  if (field.doubleValue !== undefined) return { cast: 'float8', value: String(field.doubleValue) };
  if (field.booleanValue !== undefined) return { cast: 'bool', value: field.booleanValue };
  if (field.blobValue !== undefined) return { cast: 'bytea', value: Buffer.from(field.blobValue, 'base64') };
  if (field.arrayValue !== undefined)
    throw new WireError('BadRequestException', 400, 'Array parameters are not supported.');
  throw new WireError('BadRequestException', 400, `Parameter ${parameter.name} has no value`);
}

/** A pg type from the catalogue. */
export interface PgType {
  readonly name: string;
  /** Element type OID for arrays, else 0. */
  readonly elem: number;
}

export interface ResultOptions {
  readonly longAsString: boolean;
  readonly decimalAsNumber: boolean;
}

const LONG_TYPES = new Set(['int2', 'int4', 'int8', 'oid']);
const DOUBLE_TYPES = new Set(['float4', 'float8']);
const parseTextArray = pgTypes.getTypeParser(1009 as Parameters<typeof pgTypes.getTypeParser>[0]) as (
  text: string,
) => unknown[];

/** One column value (PostgreSQL's text form) as a Data API field. */
export function encodeField(
  text: string | null,
  type: PgType,
  types: ReadonlyMap<number, PgType>,
  options: ResultOptions,
): WireField {
  if (text === null) return { isNull: true };
  if (type.elem !== 0 && type.name.startsWith('_')) {
    const element = types.get(type.elem) ?? { name: 'text', elem: 0 };
    return { arrayValue: encodeArray(parseTextArray(text), element.name) };
  }
  return encodeScalar(text, type.name, options);
}

function encodeScalar(text: string, typeName: string, options: ResultOptions): WireField {
  if (typeName === 'bool') return { booleanValue: text === 't' };
  if (LONG_TYPES.has(typeName)) return options.longAsString ? { stringValue: text } : { longValue: Number(text) };
  if (DOUBLE_TYPES.has(typeName))
    return Number.isFinite(Number(text)) ? { doubleValue: Number(text) } : { stringValue: text };
  if (typeName === 'numeric' && options.decimalAsNumber)
    return Number.isInteger(Number(text)) ? { longValue: Number(text) } : { doubleValue: Number(text) };
  if (typeName === 'bytea') return { blobValue: Buffer.from(text.slice(2), 'hex').toString('base64') };
  // The session runs in UTC; the service returns timestamps without the offset.
  if (typeName === 'timestamptz') return { stringValue: text.replace(/[+-]\d\d(:\d\d){0,2}$/, '') };
  return { stringValue: text };
}

function encodeArray(values: unknown[], elementType: string): WireArray {
  if (values.some(Array.isArray)) return { arrayValues: values.map((v) => encodeArray(v as unknown[], elementType)) };
  const strings = values as (string | null)[];
  if (elementType === 'bool') return { booleanValues: strings.map((v) => v === 't') };
  if (LONG_TYPES.has(elementType)) return { longValues: strings.map(Number) };
  if (DOUBLE_TYPES.has(elementType)) return { doubleValues: strings.map(Number) };
  return { stringValues: strings as string[] };
}

/** JDBC type codes pgjdbc reports for common PostgreSQL types (ColumnMetadata.type). */
const JDBC_TYPES: Record<string, number> = {
  bool: -7,
  int2: 5,
  int4: 4,
  int8: -5,
  float4: 7,
  float8: 8,
  numeric: 2,
  varchar: 12,
  text: 12,
  bpchar: 1,
  date: 91,
  time: 92,
  timestamp: 93,
  timestamptz: 93,
  bytea: -2,
};

export function columnMetadata(field: FieldDef, type: PgType) {
  const array = type.elem !== 0 && type.name.startsWith('_');
  return {
    name: field.name,
    label: field.name,
    typeName: type.name,
    type: array ? 2003 : (JDBC_TYPES[type.name] ?? 1111),
    schemaName: '',
    tableName: '',
    isAutoIncrement: false,
    isCaseSensitive: type.name === 'text' || type.name === 'varchar',
    isCurrency: false,
    isSigned: LONG_TYPES.has(type.name) || DOUBLE_TYPES.has(type.name) || type.name === 'numeric',
    nullable: 2,
    precision: 0,
    scale: 0,
    arrayBaseColumnType: 0,
  };
}
