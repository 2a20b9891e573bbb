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

/** The mermaid block under "The picture" in docs/architecture.md. */
function picture(): string {
  const block = /```mermaid\n([\s\S]*?)```/.exec(section(read('docs/architecture.md'), 'The picture'));
  if (!block) throw new Error('docs/architecture.md has no mermaid picture under "The picture"');
  return block[1];
}

/** A logical ID without CDK's 8-character hash: the picture's name for the resource. */
function pictureName(logicalId: string): string {
  return logicalId.replace(/[0-9A-F]{8}$/, '');
}

/** Whether the picture defines a node of that id (`id["label"]`, `id[("label")]`, `id("label")`…). */
function hasNode(mermaid: string, id: string): boolean {
  return new RegExp(`(^|[\\s&>|])${id}[[({>]`, 'm').test(mermaid);
}

const PICTURED = [
  'AWS::Lambda::Function',
  'AWS::SQS::Queue',
  'AWS::Events::Rule',
  'AWS::Scheduler::Schedule',
  'AWS::ApiGatewayV2::Api',
];

test.each(PICTURED)('every %s of the prod stack is a node of the architecture picture', (type) => {
  const mermaid = picture();
  const ids = Object.keys(resourcesOf(template, type)).map(pictureName);
  if (type !== 'AWS::Scheduler::Schedule') expect(ids.length).toBeGreaterThan(0);
  expect(ids.filter((id) => !hasNode(mermaid, id))).toEqual([]);
});

test('every route of the HTTP API is named in the architecture picture', () => {
  const mermaid = picture();
  const routes = propertiesOf('AWS::ApiGatewayV2::Route').map(([, p]) => String(p.RouteKey));
  expect(routes).toContain('POST /internal/v1/access-tokens');
  expect(routes.filter((route) => !mermaid.includes(route))).toEqual([]);
});

test('the picture names no resource the prod stack lacks', () => {
  // Nodes named like the stack's constructs (Jobs…, Api…, SchemaMigration…) must exist in it.
  const all = new Set(Object.keys(resourcesOf(template)).map(pictureName));
  const nodes = [...picture().matchAll(/(?:^|[\s&>|])([A-Za-z][A-Za-z0-9]*)[[({]/gm)].map((m) => m[1]);
  const constructLike = nodes.filter((id) =>
    /^(Jobs|Api|SchemaMigration|LogRetention|CustomVpc|AWS[0-9a-f]{32})/.test(id),
  );
  expect(constructLike.length).toBeGreaterThan(10);
  expect(constructLike.filter((id) => !all.has(id))).toEqual([]);
});
