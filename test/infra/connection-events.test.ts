import { Template } from 'aws-cdk-lib/assertions';
import { EVENT_PUBLISHER_ENV } from '../../lambda/event-publisher/config';
import { EVENT_PUBLISHER_METRICS, EVENT_PUBLISHER_TIMING } from '../../lambda/event-publisher/core';
import { NODE_RUNTIME } from '../../lib/node-function';
import { buildStack, cdkJsonContext, resourcesOf, templateOf } from './support/stack';

// lib/connection-events.ts and lib/events-monitoring.ts in the synthesized stack: the bus
// (created, or taken by name from cdk.json), the publisher on its schedule with exactly
// events:PutEvents on that bus, its alarms and its dashboard row.

/** The publisher function's logical id and properties. */
function publisher(t: Template) {
  const [entry] = Object.entries(resourcesOf(t, 'AWS::Lambda::Function')).filter(([id]) =>
    id.startsWith('EventsPublisherFunction'),
  );
  expect(entry).toBeDefined();
  return { id: entry[0], props: entry[1].Properties! };
}

/** Every IAM statement granted to the publisher's role. */
function publisherStatements(t: Template): Array<Record<string, unknown>> {
  const role = (publisher(t).props.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
  return Object.values(resourcesOf(t, 'AWS::IAM::Policy'))
    .filter((p) => JSON.stringify(p.Properties?.Roles).includes(role))
    .flatMap((p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, unknown>> }).Statement);
}

const actionsOf = (s: Record<string, unknown>) => [s.Action].flat() as string[];

describe.each(['dev', 'staging', 'prod'])('%s', (env) => {
  const t = () => templateOf(env);

  test('a bus of its own, named after the environment', () => {
    t().resourceCountIs('AWS::Events::EventBus', 1);
    t().hasResourceProperties('AWS::Events::EventBus', { Name: `amazon-accounts-${env}-events` });
  });

  test('the publisher: newest Node runtime, its timeout, the bus and the jobs’ database user in its environment', () => {
    const { props } = publisher(t());
    expect(props.Runtime).toBe(NODE_RUNTIME.name);
    expect(props.Timeout).toBe(EVENT_PUBLISHER_TIMING.timeoutSeconds);
    const variables = (props.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(variables).toMatchObject({ APP_ENVIRONMENT: env, POWERTOOLS_SERVICE_NAME: 'event-publisher' });
    const bus = Object.keys(resourcesOf(t(), 'AWS::Events::EventBus'))[0];
    expect(variables[EVENT_PUBLISHER_ENV.eventBusName]).toEqual({ Ref: bus });
    expect(JSON.stringify(variables.DB_SECRET_ARN)).toContain('WorkerSecret');
  });

  test('the publisher may put events on that bus only: exactly events:PutEvents on its ARN', () => {
    const bus = Object.keys(resourcesOf(t(), 'AWS::Events::EventBus'))[0];
    const events = publisherStatements(t()).filter((s) => actionsOf(s).some((a) => a.startsWith('events:')));
    expect(events).toEqual([{ Action: 'events:PutEvents', Effect: 'Allow', Resource: { 'Fn::GetAtt': [bus, 'Arn'] } }]);
    // Nothing else of EventBridge, and no wildcard anywhere in its policy.
    for (const s of publisherStatements(t())) expect(actionsOf(s).some((a) => a.includes('*'))).toBe(false);
  });

  test('a schedule every minute (off where the environment’s schedules are off), retried, with a dead-letter queue', () => {
    const { id } = publisher(t());
    const [rule] = Object.values(resourcesOf(t(), 'AWS::Events::Rule')).filter((r) =>
      JSON.stringify(r.Properties?.Targets).includes(id),
    );
    expect(rule.Properties).toMatchObject({
      ScheduleExpression: 'rate(1 minute)',
      State: env === 'dev' ? 'DISABLED' : 'ENABLED',
    });
    const [target] = rule.Properties!.Targets as Array<Record<string, unknown>>;
    expect(target).toMatchObject({ RetryPolicy: { MaximumRetryAttempts: 3, MaximumEventAgeInSeconds: 3600 } });
    expect(JSON.stringify(target.DeadLetterConfig)).toContain('EventsDeadLetterQueue');
  });

  test('alarms: the publisher’s errors, its dead-letter queue, and events waiting over 15 minutes', () => {
    const alarms = Object.values(resourcesOf(t(), 'AWS::CloudWatch::Alarm')).filter((a) =>
      String(a.Properties?.AlarmName).includes('event-publisher'),
    );
    expect(alarms.map((a) => a.Properties?.AlarmName).sort()).toEqual(
      [
        `AmazonAccounts-${env}-event-publisher-Fault-Count-Critical`,
        `AmazonAccounts-${env}-event-publisher-backlog-oldest-unpublished-Critical`,
        `AmazonAccounts-${env}-event-publisher-dlq-Queue-Message-Count-Max-Critical`,
      ].sort(),
    );
    const backlog = alarms.find((a) => String(a.Properties?.AlarmName).includes('oldest-unpublished'))!;
    expect(backlog.Properties).toMatchObject({
      Threshold: 900,
      ComparisonOperator: 'GreaterThanThreshold',
      DatapointsToAlarm: 2,
      EvaluationPeriods: 3,
      TreatMissingData: 'notBreaching',
    });
    expect(JSON.stringify(backlog.Properties)).toContain(EVENT_PUBLISHER_METRICS.oldestUnpublishedAgeSeconds);
    expect(JSON.stringify(backlog.Properties)).toContain('{"Name":"service","Value":"event-publisher"}');
  });

  test('a dashboard row: the publisher’s function and its metrics', () => {
    const body = JSON.stringify(
      Object.values(resourcesOf(t(), 'AWS::CloudWatch::Dashboard')).map((d) => d.Properties?.DashboardBody),
    );
    expect(body).toContain('Connection events');
    for (const name of Object.values(EVENT_PUBLISHER_METRICS)) expect(body).toContain(name);
  });
});

test('an environment that names a bus in cdk.json gets no bus of its own; the grant is on that bus', () => {
  const prod = structuredClone((cdkJsonContext().environments as Record<string, any>).prod);
  prod.events = { eventBusName: 'product-events', retentionDays: 30 };
  const t = Template.fromStack(buildStack('prod', { environments: { prod } }).stack);
  t.resourceCountIs('AWS::Events::EventBus', 0);
  const { props } = publisher(t);
  const variables = (props.Environment as { Variables: Record<string, unknown> }).Variables;
  expect(variables).toMatchObject({
    [EVENT_PUBLISHER_ENV.eventBusName]: 'product-events',
    [EVENT_PUBLISHER_ENV.retentionDays]: '30',
  });
  const events = publisherStatements(t).filter((s) => actionsOf(s).some((a) => a.startsWith('events:')));
  expect(events).toHaveLength(1);
  expect(events[0].Action).toBe('events:PutEvents');
  expect(JSON.stringify(events[0].Resource)).toContain(':event-bus/product-events');
});
