import type { ArrayValue, ColumnMetadata, Field, SqlParameter } from '@aws-sdk/client-rds-data';
import { bindValue, parseUtcTimestamp } from './parameter-types';
import { DatabaseError, Row, SqlParams } from './port';

const TYPE_HINTS = { uuid: 'UUID', json: 'JSON', numeric: 'DECIMAL', timestamp: 'TIMESTAMP' } as const;

/**
 * The Data API parameters for the names `sql` uses. Strings carry a `typeHint` when they are
 * not plain text (UUID, JSON, DECIMAL, TIMESTAMP); a name without a value is an error here,
 * before any call is made.
 */
export function toSqlParameters(names: readonly string[], params: SqlParams): SqlParameter[] {
  return names.map((name) => {
    if (!Object.prototype.hasOwnProperty.call(params, name)) throw new DatabaseError(`No value for parameter :${name}`);
    const bound = bindValue(name, params[name]);
    switch (bound.kind) {
      case 'null':
        return { name, value: { isNull: true } };
      case 'string':
        return bound.pgType === 'varchar'
          ? { name, value: { stringValue: bound.value } }
          : { name, value: { stringValue: bound.value }, typeHint: TYPE_HINTS[bound.pgType] };
      case 'long':
        return { name, value: { longValue: bound.value } };
      case 'double':
        return { name, value: { doubleValue: bound.value } };
      case 'boolean':
        return { name, value: { booleanValue: bound.value } };
      case 'blob':
        return { name, value: { blobValue: bound.value } };
    }
  });
}

/** Decodes Data API records into rows keyed by column label, as port.ts "Rows" describes. */
export function decodeRecords(records: Field[][] | undefined, columns: ColumnMetadata[] | undefined): Row[] {
  if (!records || records.length === 0) return [];
  const meta = columns ?? [];
  return records.map((fields) => {
    const row: Row = {};
    fields.forEach((field, index) => {
      const column = meta[index];
      const key = column?.label ?? column?.name ?? `column${index + 1}`;
      row[key] = decodeField(field, column?.typeName ?? '');
    });
    return row;
  });
}

function decodeField(field: Field, typeName: string): unknown {
  if (field.isNull) return null;
  const type = typeName.toLowerCase();
  if (field.arrayValue !== undefined) return decodeArray(field.arrayValue, type.replace(/^_/, ''));
  if (field.booleanValue !== undefined) return field.booleanValue;
  if (field.blobValue !== undefined) return Buffer.from(field.blobValue);
  if (field.doubleValue !== undefined) return field.doubleValue;
  if (field.longValue !== undefined)
    return type === 'int8' || type === 'bigserial' ? BigInt(field.longValue) : field.longValue;
  if (field.stringValue !== undefined) return decodeString(field.stringValue, type);
  throw new DatabaseError(`Unsupported Data API field for a ${typeName} column`);
}

function decodeString(text: string, type: string): unknown {
  switch (type) {
    case 'int8':
    case 'bigserial':
      return BigInt(text);
    case 'int2':
    case 'int4':
    case 'serial':
    case 'float4':
    case 'float8':
      return Number(text);
    case 'bool':
      return text === 't' || text === 'true';
    case 'json':
    case 'jsonb':
      return JSON.parse(text);
    case 'timestamp':
    case 'timestamptz':
      return parseUtcTimestamp(text);
    default:
      return text;
  }
}

function decodeArray(value: ArrayValue, elementType: string): unknown[] {
  if (value.arrayValues)
    return value.arrayValues.map((inner) => (inner === null ? null : decodeArray(inner, elementType)));
  if (value.booleanValues) return value.booleanValues;
  if (value.doubleValues) return value.doubleValues;
  if (value.longValues)
    return elementType === 'int8' ? value.longValues.map((v) => (v === null ? null : BigInt(v))) : value.longValues;
  if (value.stringValues) return value.stringValues.map((v) => (v === null ? null : decodeString(v, elementType)));
  return [];
}
