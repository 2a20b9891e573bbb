import type { Template } from 'aws-cdk-lib/assertions';
import { NODE_RUNTIME } from '../../lib/node-function';
import { resourcesOf, templateOf } from './support/stack';

// lib/token-keys.ts in the synthesized stack: the token keys' function (re-encryption, usage per
// key, key removal) runs on demand only, on the newest Node runtime, as the jobs' database user,
// and holds nothing of Amazon: the Data API, the database secret, the token key secret (read,
// and PutSecretValue for remove-key), and nothing else.

function tokenKeysFunction(t: Template) {
  const entries = Object.entries(resourcesOf(t, 'AWS::Lambda::Function')).filter(([id]) =>
    id.startsWith('TokenKeysHandlerFunction'),
  );
  expect(entries).toHaveLength(1);
  return { id: entries[0][0], props: entries[0][1].Properties! };
}

/** Every IAM statement granted to the function's role. */
function statements(t: Template): Array<Record<string, unknown>> {
  const role = (tokenKeysFunction(t).props.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
  const attached = Object.values(resourcesOf(t, 'AWS::IAM::Policy')).filter((p) =>
    JSON.stringify(p.Properties?.Roles).includes(role),
  );
  expect(attached.length).toBeGreaterThan(0);
  return attached.flatMap(
    (p) => (p.Properties?.PolicyDocument as { Statement: Array<Record<string, unknown>> }).Statement,
  );
}

const actionsOf = (s: Record<string, unknown>) => [s.Action].flat() as string[];
const logicalId = (t: Template, type: string, prefix: string) =>
  Object.keys(resourcesOf(t, type)).find((id) => id.startsWith(prefix))!;

describe.each(['dev', 'staging', 'prod'])('%s', (env) => {
  const t = () => templateOf(env);

  test('newest Node runtime, ARM64, 15 minutes, the jobs’ database user and the key secret in its environment, no Amazon', () => {
    const { props } = tokenKeysFunction(t());
    expect(props.Runtime).toBe(NODE_RUNTIME.name);
    expect(props.Architectures).toEqual(['arm64']);
    expect(props.Timeout).toBe(900);
    const variables = (props.Environment as { Variables: Record<string, unknown> }).Variables;
    expect(variables).toMatchObject({ APP_ENVIRONMENT: env, POWERTOOLS_SERVICE_NAME: 'token-reencrypt' });
    expect(JSON.stringify(variables.DB_SECRET_ARN)).toContain('WorkerSecret');
    expect(variables.TOKEN_ENCRYPTION_KEY_SECRET_ARN).toEqual({
      Ref: logicalId(t(), 'AWS::SecretsManager::Secret', 'SecretsTokenEncryptionKey'),
    });
    expect(Object.keys(variables).filter((k) => /LWA|ADS|AMAZON/.test(k))).toEqual([]);
    expect(props.VpcConfig).toBeUndefined();
  });

  test('on demand only: no schedule, queue or permission lets anything else invoke it', () => {
    const { id } = tokenKeysFunction(t());
    const rules = Object.values(resourcesOf(t(), 'AWS::Events::Rule')).filter((r) =>
      JSON.stringify(r.Properties?.Targets).includes(id),
    );
    expect(rules).toEqual([]);
    expect(
      Object.values(resourcesOf(t(), 'AWS::Lambda::Permission')).filter((p) =>
        JSON.stringify(p.Properties?.FunctionName).includes(id),
      ),
    ).toEqual([]);
    expect(
      Object.values(resourcesOf(t(), 'AWS::Lambda::EventSourceMapping')).filter((m) =>
        JSON.stringify(m.Properties?.FunctionName).includes(id),
      ),
    ).toEqual([]);
  });

  test('IAM: the Data API on the cluster, read of the database user’s secret, read and PutSecretValue of the key secret, nothing else', () => {
    const secret = logicalId(t(), 'AWS::SecretsManager::Secret', 'SecretsTokenEncryptionKey');
    const worker = logicalId(t(), 'AWS::SecretsManager::Secret', 'DatabaseWorkerSecret');
    const cluster = logicalId(t(), 'AWS::RDS::DBCluster', 'DatabaseCluster');
    // Every (action, resource) pair granted, the resource named by the logical id it refers to.
    const pairs = statements(t()).flatMap((s) =>
      actionsOf(s).flatMap((action) =>
        [s.Resource]
          .flat()
          .map((r) => `${action} ${/"Ref":"([A-Za-z0-9]+)"\}\]*\]*\}*$/.exec(JSON.stringify(r))?.[1]}`),
      ),
    );
    expect(pairs.sort()).toEqual(
      [
        ...[
          'BatchExecuteStatement',
          'BeginTransaction',
          'CommitTransaction',
          'ExecuteStatement',
          'RollbackTransaction',
        ].map((a) => `rds-data:${a} ${cluster}`),
        `secretsmanager:DescribeSecret ${worker}`,
        `secretsmanager:GetSecretValue ${worker}`,
        `secretsmanager:DescribeSecret ${secret}`,
        `secretsmanager:GetSecretValue ${secret}`,
        `secretsmanager:PutSecretValue ${secret}`,
      ].sort(),
    );
  });

  test('its name is an output, for the rotation runbook', () => {
    const outputs = t().toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.TokenKeysFunctionName.Value).toEqual({ Ref: tokenKeysFunction(t()).id });
  });
});
