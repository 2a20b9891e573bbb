import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { DETAIL_TYPES, EVENT_SCHEMAS, EVENT_SOURCE, EVENT_VERSION } from '../../lambda/event-publisher/catalogue';
import { read, ROOT } from './markdown';

// docs/events.md and docs/events/*.schema.json against the catalogue the publisher uses
// (lambda/event-publisher/catalogue.ts): every detail-type documented with its schema file,
// each file the module's schema, each a valid draft-07 schema that ajv compiles strictly.

const slug = (type: string) => type.toLowerCase().replace(/ /g, '-');
const fileOf = (type: string) => `docs/events/${slug(type)}.v${EVENT_VERSION}.schema.json`;

test('each detail-type has its schema file, equal to the catalogue’s schema, and no other file is there', () => {
  const files = readdirSync(join(ROOT, 'docs/events')).sort();
  expect(files).toEqual(
    Object.values(DETAIL_TYPES)
      .map((t) => fileOf(t).slice('docs/events/'.length))
      .sort(),
  );
  for (const type of Object.values(DETAIL_TYPES)) {
    const file = JSON.parse(read(fileOf(type))) as Record<string, unknown>;
    expect(file).toEqual({ $schema: 'http://json-schema.org/draft-07/schema#', ...EVENT_SCHEMAS[type] });
  }
});

test('every schema compiles strictly; none lets a token, an e-mail or free text through', () => {
  const ajv = new Ajv({ strict: true, allowUnionTypes: true });
  addFormats(ajv);
  for (const [type, schema] of Object.entries(EVENT_SCHEMAS)) {
    expect(() => ajv.compile(schema)).not.toThrow();
    // Closed objects only: an unknown field (say, an e-mail) is invalid.
    const validate = ajv.compile(schema);
    expect(validate({ email: 'a@example.com' })).toBe(false);
    // No field for a token, an address or an error's text.
    const fields = [...JSON.stringify(schema).matchAll(/"([A-Za-z]+)":\{/g)].map((m) => m[1]);
    expect(fields.filter((f) => /token|email|message|text/i.test(f))).toEqual([]);
    expect(type).toMatch(/^Connection [A-Z][a-z]+( [A-Z][a-z]+)*$/);
  }
});

test('docs/events.md names the source, every detail-type and links each schema file', () => {
  const doc = read('docs/events.md');
  expect(doc).toContain(`\`${EVENT_SOURCE}\``);
  for (const type of Object.values(DETAIL_TYPES)) {
    expect(doc).toContain(`\`${type}\``);
    expect(doc).toContain(`(${fileOf(type).slice('docs/'.length)})`);
  }
});
