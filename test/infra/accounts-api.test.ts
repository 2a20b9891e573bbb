import type { Template } from 'aws-cdk-lib/assertions';
import { JOB_ENV } from '../../lambda/shared/config';
import { accessLogFields, API_ROUTES, INTERNAL_TOKEN_ROUTE } from '../../lib/accounts-api';
import { resolveEnvironment } from '../../lib/config';
import { cdkJsonContext, onlyResource, resourcesOf, templateOf } from './support/stack';

// The internal token route in the synthesized stack (dev; the other environments differ only in
// names and limits): IAM authorisation on that route alone, its own function with the jobs'
// database login, and a managed policy that allows invoking exactly that route.

const template = () => templateOf('dev');

function functionWithDescription(t: Template, prefix: string) {
  const [[id, fn]] = Object.entries(resourcesOf(t, 'AWS::Lambda::Function')).filter(([, r]) =>
    String(r.Properties?.Description).startsWith(prefix),
  );
  return { id, properties: fn.Properties as Record<string, any> };
}
const tokenFunction = (t: Template) => functionWithDescription(t, 'Internal route:');
const apiFunction = (t: Template) => functionWithDescription(t, 'Accounts API:');

function statementsOf(t: Template, fn: { properties: Record<string, any> }): Array<Record<string, any>> {
  const role = fn.properties.Role['Fn::GetAtt'][0];
  return Object.values(resourcesOf(t, 'AWS::IAM::Policy'))
    .filter((p) => (p.Properties?.Roles as unknown[]).some((r) => JSON.stringify(r) === JSON.stringify({ Ref: role })))
    .flatMap((p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement);
}

const routes = () =>
  Object.values(resourcesOf(template(), 'AWS::ApiGatewayV2::Route')).map((r) => r.Properties as Record<string, any>);

test('the token route is authorised by AWS IAM; the user routes are not (their function verifies the JWT)', () => {
  const token = routes().filter((r) => r.RouteKey === INTERNAL_TOKEN_ROUTE);
  expect(token).toHaveLength(1);
  expect(token[0].AuthorizationType).toBe('AWS_IAM');
  const users = routes().filter((r) => r.RouteKey !== INTERNAL_TOKEN_ROUTE);
  expect(users.map((r) => r.RouteKey).sort()).toEqual([...API_ROUTES].sort());
  for (const r of users) expect(r.AuthorizationType).toBe('NONE');
});

test('the token route goes to its own function, not to the user-facing one', () => {
  const [route] = routes().filter((r) => r.RouteKey === INTERNAL_TOKEN_ROUTE);
  const integrationId = (route.Target as { 'Fn::Join': [string, Array<{ Ref: string }>] })['Fn::Join'][1][1].Ref;
  const integration = resourcesOf(template(), 'AWS::ApiGatewayV2::Integration')[integrationId];
  expect(integration.Properties?.IntegrationUri).toEqual({ 'Fn::GetAtt': [tokenFunction(template()).id, 'Arn'] });
  expect(integration.Properties?.PayloadFormatVersion).toBe('2.0');
});

test('the function logs in as the jobs’ login (its secret) with the shared Amazon limits, and may do nothing else', () => {
  const t = template();
  const fn = tokenFunction(t);
  const limits = resolveEnvironment('dev', cdkJsonContext().environments).amazonLimits;
  const variables = fn.properties.Environment.Variables as Record<string, unknown>;
  expect(variables[JOB_ENV.databaseSecretArn]).toEqual({ Ref: 'DatabaseWorkerSecretFF17536B' });
  expect(variables[JOB_ENV.lwaRequestsPerSecond]).toBe(String(limits.lwaRequestsPerSecond));
  expect(fn.properties.Timeout).toBeLessThan(30);
  const statements = statementsOf(t, fn);
  const actions = statements.flatMap((s) => [s.Action].flat()).sort();
  expect([...new Set(actions)]).toEqual([
    'rds-data:BatchExecuteStatement',
    'rds-data:BeginTransaction',
    'rds-data:CommitTransaction',
    'rds-data:ExecuteStatement',
    'rds-data:RollbackTransaction',
    'secretsmanager:DescribeSecret',
    'secretsmanager:GetSecretValue',
  ]);
  const secrets = statements
    .filter((s) => [s.Action].flat().includes('secretsmanager:GetSecretValue'))
    .flatMap((s) => [s.Resource].flat());
  expect(secrets.sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual([
    { Ref: 'DatabaseWorkerSecretFF17536B' },
    { Ref: 'SecretsLwaClient81E48E60' },
    { Ref: 'SecretsTokenEncryptionKey16D2D7BA' },
  ]);
  // The user-facing function does not get the jobs' login.
  const apiSecrets = statementsOf(t, apiFunction(t)).flatMap((s) => [s.Resource].flat());
  expect(apiSecrets).not.toContainEqual({ Ref: 'DatabaseWorkerSecretFF17536B' });
});

test('a managed policy allows execute-api:Invoke on exactly that route of the $default stage; its ARN is an output', () => {
  const t = template();
  const { id, resource } = onlyResource(t, 'AWS::IAM::ManagedPolicy');
  const statements = (resource.Properties?.PolicyDocument as { Statement: Array<Record<string, any>> }).Statement;
  expect(statements).toHaveLength(1);
  expect(statements[0].Action).toBe('execute-api:Invoke');
  expect(statements[0].Effect).toBe('Allow');
  const parts = (statements[0].Resource as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
  expect(parts).toContainEqual({ Ref: onlyResource(t, 'AWS::ApiGatewayV2::Api').id });
  expect(parts.at(-1)).toBe('/$default/POST/internal/v1/access-tokens');
  // Attached to nobody here: the product's roles attach it.
  expect(resource.Properties?.Roles).toBeUndefined();
  const outputs = t.toJSON().Outputs as Record<string, { Value: unknown }>;
  expect(outputs.TokenRoutePolicyArn.Value).toEqual({ Ref: id });
});

test('the access log carries no body, header or query string', () => {
  const stage = onlyResource(template(), 'AWS::ApiGatewayV2::Stage').resource.Properties as Record<string, any>;
  const format = String(stage.AccessLogSettings.Format);
  expect(JSON.parse(format)).toEqual(accessLogFields('dev'));
  expect(format).not.toMatch(/body|header|querystring|authorizer/i);
});

test('alarms on the token function’s errors and throttles', () => {
  const names = Object.values(resourcesOf(template(), 'AWS::CloudWatch::Alarm')).map((a) =>
    String(a.Properties?.AlarmName),
  );
  expect(names).toEqual(
    expect.arrayContaining([
      'AmazonAccounts-dev-token-route-lambda-Fault-Count-Critical',
      'AmazonAccounts-dev-token-route-lambda-Throttled-Count-Critical',
    ]),
  );
  const dashboard = JSON.stringify(resourcesOf(template(), 'AWS::CloudWatch::Dashboard'));
  expect(dashboard).toContain('Internal token route Lambda');
});
