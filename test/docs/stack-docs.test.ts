import { resourcesOf, templateOf } from '../infra/support/stack';
import { codeSpans, read, section } from './markdown';

// The docs against the synthesized prod stack (the environment with every optional part:
// fan-out, alarm notifications). Synthesizing is the expensive part: once for the file.
const template = templateOf('prod');
const PREFIX = 'AmazonAccounts-prod-';

function propertiesOf(type: string): [string, Record<string, unknown>][] {
  return Object.entries(resourcesOf(template, type)).map(([id, r]) => [id, r.Properties ?? {}]);
}

test('every alarm the stack creates is in docs/operating.md, and the doc names no other', () => {
  const alarms = propertiesOf('AWS::CloudWatch::Alarm').map(([id, p]) => {
    const name = p.AlarmName;
    if (typeof name !== 'string' || !name.startsWith(PREFIX)) throw new Error(`alarm ${id} is named ${String(name)}`);
    return name.slice(PREFIX.length);
  });
  expect(alarms.length).toBeGreaterThan(10);
  const doc = read('docs/operating.md');
  const named = codeSpans(section(doc, 'The alarms'));
  expect(alarms.filter((alarm) => !named.has(alarm))).toEqual([]);
  const alarmLike = [...named].filter((s) => /-Critical$/.test(s));
  expect(alarmLike.filter((s) => !alarms.includes(s))).toEqual([]);
});

test('every environment variable the stack sets on a function is in docs/architecture.md', () => {
  const documented = codeSpans(section(read('docs/architecture.md'), 'Environment variables'));
  const set = new Map<string, string>();
  for (const [id, p] of propertiesOf('AWS::Lambda::Function')) {
    const variables = (p.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables ?? {};
    for (const name of Object.keys(variables)) set.set(name, id);
  }
  expect(set.has('DB_CLUSTER_ARN')).toBe(true);
  expect([...set].filter(([name]) => !documented.has(name)).map(([n, id]) => `${n} (${id})`)).toEqual([]);
});
