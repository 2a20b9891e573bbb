import type { ColumnMetadata, Field } from '@aws-sdk/client-rds-data';
import { decodeRecords, toSqlParameters } from '../../../lambda/shared/db/data-api-values';
import { bindValue, formatUtcTimestamp, parseUtcTimestamp } from '../../../lambda/shared/db/parameter-types';
import { DatabaseError, sqlDecimal, sqlJson, sqlUuid } from '../../../lambda/shared/db/port';

// The Data API's wire values, both ways, without a database: what each parameter is sent as
// and what each returned field is read as (test/runtime/db/port.test.ts runs the
// same values through real PostgreSQL).

describe('parameters sent to the Data API', () => {
  test('each kind of value, with a type hint where the Data API needs one, in the order of the names', () => {
    const bytes = new Uint8Array([0, 1, 255]);
    const params = toSqlParameters(
      ['text', 'none', 'int', 'float', 'yes', 'bytes', 'uuid', 'json', 'decimal', 'when', 'big'],
      {
        big: 12345678901234567890n,
        when: new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6)),
        decimal: sqlDecimal('1.50'),
        json: sqlJson({ a: [1, 'b'] }),
        uuid: sqlUuid('00000000-0000-4000-8000-000000000001'),
        bytes,
        yes: false,
        float: 1.5,
        int: -42,
        none: null,
        text: "O'Brien",
      },
    );
    expect(params).toStrictEqual([
      { name: 'text', value: { stringValue: "O'Brien" } },
      { name: 'none', value: { isNull: true } },
      { name: 'int', value: { longValue: -42 } },
      { name: 'float', value: { doubleValue: 1.5 } },
      { name: 'yes', value: { booleanValue: false } },
      { name: 'bytes', value: { blobValue: bytes } },
      { name: 'uuid', value: { stringValue: '00000000-0000-4000-8000-000000000001' }, typeHint: 'UUID' },
      { name: 'json', value: { stringValue: '{"a":[1,"b"]}' }, typeHint: 'JSON' },
      { name: 'decimal', value: { stringValue: '1.50' }, typeHint: 'DECIMAL' },
      { name: 'when', value: { stringValue: '2024-01-02 03:04:05.006' }, typeHint: 'TIMESTAMP' },
      { name: 'big', value: { stringValue: '12345678901234567890' }, typeHint: 'DECIMAL' },
    ]);
  });

  test('a name without a value is an error before any call; an inherited property is not a value', () => {
    expect(() => toSqlParameters(['id', 'missing'], { id: 1 })).toThrow(
      new DatabaseError('No value for parameter :missing'),
    );
    const inherited = Object.create({ id: 1 }) as Record<string, number>;
    expect(() => toSqlParameters(['id'], inherited)).toThrow(new DatabaseError('No value for parameter :id'));
    expect(toSqlParameters([], {})).toEqual([]);
  });
});

describe('bindValue', () => {
  test.each([
    ['a string', 'x', { kind: 'string', pgType: 'varchar', value: 'x' }],
    ['the empty string', '', { kind: 'string', pgType: 'varchar', value: '' }],
    ['true', true, { kind: 'boolean', pgType: 'bool', value: true }],
    ['a bigint', -5n, { kind: 'string', pgType: 'numeric', value: '-5' }],
    ['a safe integer', Number.MAX_SAFE_INTEGER, { kind: 'long', pgType: 'int8', value: Number.MAX_SAFE_INTEGER }],
    ['zero', 0, { kind: 'long', pgType: 'int8', value: 0 }],
    ['a fraction', -0.25, { kind: 'double', pgType: 'float8', value: -0.25 }],
    [
      'a Date',
      new Date(Date.UTC(1999, 11, 31, 23, 59, 59, 999)),
      { kind: 'string', pgType: 'timestamp', value: '1999-12-31 23:59:59.999' },
    ],
    ['a uuid', sqlUuid('u'), { kind: 'string', pgType: 'uuid', value: 'u' }],
    ['a decimal', sqlDecimal('2.5'), { kind: 'string', pgType: 'numeric', value: '2.5' }],
    ['json', sqlJson([1]), { kind: 'string', pgType: 'json', value: '[1]' }],
    ['null', null, { kind: 'null' }],
  ] as const)('%s', (_what, value, bound) => {
    expect(bindValue('p', value)).toStrictEqual(bound);
  });

  test('bytes are sent as they are', () => {
    const buffer = Buffer.from('abc');
    expect(bindValue('p', buffer)).toStrictEqual({ kind: 'blob', pgType: 'bytea', value: buffer });
  });

  test.each([
    ['NaN', NaN, 'Parameter :p is not a finite number'],
    ['Infinity', Infinity, 'Parameter :p is not a finite number'],
    ['-Infinity', -Infinity, 'Parameter :p is not a finite number'],
    ['an unsafe integer', 2 ** 53, 'Parameter :p is an unsafe integer; pass a bigint'],
    ['an invalid Date', new Date('not a date'), 'Parameter :p is an invalid Date'],
    ['a plain object', { a: 1 }, 'Parameter :p has an unsupported type (object)'],
    ['an object with only a value', { value: 'x' }, 'Parameter :p has an unsupported type (object)'],
    ['undefined', undefined, 'Parameter :p has an unsupported type (undefined)'],
    ['a function', () => 1, 'Parameter :p has an unsupported type (function)'],
  ])('refuses %s', (_what, value, message) => {
    expect(() => bindValue('p', value as never)).toThrow(new TypeError(message));
  });
});

describe('timestamps', () => {
  test('are formatted in UTC, to the millisecond, as the Data API wants them', () => {
    expect(formatUtcTimestamp(new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6)))).toBe('2024-01-02 03:04:05.006');
  });

  test.each([
    ['2024-01-02 03:04:05', Date.UTC(2024, 0, 2, 3, 4, 5)],
    ['2024-01-02T03:04:05', Date.UTC(2024, 0, 2, 3, 4, 5)],
    ['2024-01-02 03:04:05.123456', Date.UTC(2024, 0, 2, 3, 4, 5, 123)],
    ['2024-01-02 03:04:05.5', Date.UTC(2024, 0, 2, 3, 4, 5, 500)],
    ['2024-01-02 03:04:05.07', Date.UTC(2024, 0, 2, 3, 4, 5, 70)],
    ['2024-12-31 23:59:59.999+00', Date.UTC(2024, 11, 31, 23, 59, 59, 999)],
    ['2024-01-02 03:04:05+05:30', Date.UTC(2024, 0, 1, 21, 34, 5)],
    ['2024-01-02 03:04:05+0530', Date.UTC(2024, 0, 1, 21, 34, 5)],
    ['2024-01-02 03:04:05-08', Date.UTC(2024, 0, 2, 11, 4, 5)],
    ['2024-01-02 03:04:05-03:30', Date.UTC(2024, 0, 2, 6, 34, 5)],
    ['2024-01-02 03:04:05+05:30:15', Date.UTC(2024, 0, 1, 21, 33, 50)],
    ['2024-01-02 03:04:05-05:30:15', Date.UTC(2024, 0, 2, 8, 34, 20)],
    ['12024-01-02 03:04:05', Date.UTC(12024, 0, 2, 3, 4, 5)],
  ])('%s is read', (text, expected) => {
    expect(parseUtcTimestamp(text).getTime()).toBe(expected);
  });

  test('years before 100 and BC are not taken for 19xx', () => {
    expect(parseUtcTimestamp('0099-12-31 23:59:59').getUTCFullYear()).toBe(99);
    expect(parseUtcTimestamp('0001-01-01 00:00:00').getUTCFullYear()).toBe(1);
    expect(parseUtcTimestamp('0100-01-01 00:00:00').getUTCFullYear()).toBe(100);
    const bc = parseUtcTimestamp('0044-03-15 12:00:00 BC');
    expect([bc.getUTCFullYear(), bc.getUTCMonth(), bc.getUTCDate(), bc.getUTCHours()]).toEqual([-43, 2, 15, 12]);
    expect(parseUtcTimestamp('0001-01-01 00:00:00 BC').getUTCFullYear()).toBe(0);
  });

  test('infinity and -infinity are the largest and smallest Dates', () => {
    expect(parseUtcTimestamp('infinity').getTime()).toBe(8.64e15);
    expect(parseUtcTimestamp('-infinity').getTime()).toBe(-8.64e15);
  });

  test.each([
    'x2024-01-02 03:04:05',
    '2024-01-02 03:04:05x',
    '2024-1-02 03:04:05',
    '24-01-02 03:04:05',
    '2024-01-02',
    '2024-01-02 03:04',
    '2024-01-02 03:04:05.',
    '2024-01-02 03:04:05+5',
    'Infinity',
    '',
  ])('%p is not a timestamp', (text) => {
    expect(() => parseUtcTimestamp(text)).toThrow(new TypeError(`Not a timestamp: ${text}`));
  });
});

describe('records read from the Data API', () => {
  const column = (typeName: string, label?: string, name?: string): ColumnMetadata => ({ typeName, label, name });
  const one = (field: Field, typeName: string) => decodeRecords([[field]], [column(typeName, 'v')])[0].v;

  test('no records, or none at all, are no rows', () => {
    expect(decodeRecords(undefined, [column('int4', 'v')])).toEqual([]);
    expect(decodeRecords([], [column('int4', 'v')])).toEqual([]);
  });

  test('keys are the label, else the name, else column<n>', () => {
    const fields: Field[] = [{ longValue: 1 }, { longValue: 2 }, { longValue: 3 }];
    expect(decodeRecords([fields, fields], [column('int4', 'a', 'x'), column('int4', undefined, 'b')])).toStrictEqual([
      { a: 1, b: 2, column3: 3 },
      { a: 1, b: 2, column3: 3 },
    ]);
    expect(decodeRecords([[{ stringValue: '7' }]], undefined)).toStrictEqual([{ column1: '7' }]);
  });

  test.each([
    ['null', { isNull: true }, 'int4', null],
    ['a boolean', { booleanValue: false }, 'bool', false],
    ['a double', { doubleValue: 2.5 }, 'float8', 2.5],
    ['an int4', { longValue: 7 }, 'int4', 7],
    ['an int8 as a bigint', { longValue: 7 }, 'int8', 7n],
    ['an INT8 (type names in any case)', { longValue: 7 }, 'INT8', 7n],
    ['a bigserial as a bigint', { longValue: 7 }, 'bigserial', 7n],
    ['an int8 sent as text', { stringValue: '9007199254740993' }, 'int8', 9007199254740993n],
    ['a bigserial sent as text', { stringValue: '12' }, 'bigserial', 12n],
    ['an int2 sent as text', { stringValue: '3' }, 'int2', 3],
    ['an int4 sent as text', { stringValue: '-4' }, 'int4', -4],
    ['a serial sent as text', { stringValue: '5' }, 'serial', 5],
    ['a float4 sent as text', { stringValue: '0.5' }, 'float4', 0.5],
    ['a float8 sent as text', { stringValue: '1e3' }, 'float8', 1000],
    ['t', { stringValue: 't' }, 'bool', true],
    ['true', { stringValue: 'true' }, 'bool', true],
    ['f', { stringValue: 'f' }, 'bool', false],
    ['json', { stringValue: '{"a":[1,null]}' }, 'json', { a: [1, null] }],
    ['jsonb', { stringValue: '"s"' }, 'jsonb', 's'],
    [
      'a timestamp',
      { stringValue: '2024-01-02 03:04:05.5' },
      'timestamp',
      new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 500)),
    ],
    [
      'a timestamptz',
      { stringValue: '2024-01-02 03:04:05+01' },
      'timestamptz',
      new Date(Date.UTC(2024, 0, 2, 2, 4, 5)),
    ],
    ['a numeric stays text', { stringValue: '1.50' }, 'numeric', '1.50'],
    ['a uuid stays text', { stringValue: 'u' }, 'uuid', 'u'],
    ['text that looks like JSON stays text', { stringValue: '{"a":1}' }, 'text', '{"a":1}'],
  ] as const)('%s', (_what, field, typeName, expected) => {
    expect(one(field as Field, typeName)).toStrictEqual(expected);
  });

  test('bytes are a Buffer', () => {
    const value = one({ blobValue: new Uint8Array([1, 2]) }, 'bytea');
    expect(Buffer.isBuffer(value)).toBe(true);
    expect(value).toEqual(Buffer.from([1, 2]));
  });

  test.each([
    ['text[]', { stringValues: ['a', null as unknown as string] }, '_text', ['a', null]],
    ['int4[]', { longValues: [1, 2] }, '_int4', [1, 2]],
    ['int8[] as bigints', { longValues: [1, null as unknown as number] }, '_int8', [1n, null]],
    ['INT8[] (any case)', { longValues: [3] }, '_INT8', [3n]],
    ['float8[]', { doubleValues: [0.5] }, '_float8', [0.5]],
    ['bool[]', { booleanValues: [true, false] }, '_bool', [true, false]],
    [
      'timestamptz[] sent as text',
      { stringValues: ['2024-01-02 03:04:05+00'] },
      '_timestamptz',
      [new Date(Date.UTC(2024, 0, 2, 3, 4, 5))],
    ],
    ['int8[] sent as text', { stringValues: ['5'] }, '_int8', [5n]],
    ['jsonb[] sent as text', { stringValues: ['{"a":1}'] }, '_jsonb', [{ a: 1 }]],
    [
      'int4[][]',
      { arrayValues: [{ longValues: [1, 2] }, null as never, { longValues: [3] }] },
      '_int4',
      [[1, 2], null, [3]],
    ],
    ['int8[][]', { arrayValues: [{ longValues: [1] }] }, '_int8', [[1n]]],
    ['an empty array', {}, '_int4', []],
  ] as const)('an array: %s', (_what, arrayValue, typeName, expected) => {
    expect(one({ arrayValue } as Field, typeName)).toStrictEqual(expected);
  });

  test('a field of no known kind is an error naming the column type', () => {
    const unknownKind = {} as Field;
    expect(() => one(unknownKind, 'tsvector')).toThrow(
      new DatabaseError('Unsupported Data API field for a tsvector column'),
    );
    expect(() => decodeRecords([[unknownKind]], [])).toThrow(
      new DatabaseError('Unsupported Data API field for a  column'),
    );
  });
});
