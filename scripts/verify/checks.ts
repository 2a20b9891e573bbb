import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import {
  CloudWatchClient,
  DescribeAlarmHistoryCommand,
  DescribeAlarmsCommand,
  GetMetricStatisticsCommand,
  SetAlarmStateCommand,
} from '@aws-sdk/client-cloudwatch';
import { GetTopicAttributesCommand, ListSubscriptionsByTopicCommand, SNSClient } from '@aws-sdk/client-sns';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { ExecuteStatementCommand, RDSDataClient } from '@aws-sdk/client-rds-data';
import { DescribeSecretCommand, RotateSecretCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';

/**
 * `npm run verify`: checks a deployed environment from outside, with the caller's AWS
 * credentials, and says what passed and where to look when something did not. Every AWS call
 * goes through the clients passed in (tests pass mocked ones).
 */

export type CheckStatus = 'pass' | 'fail' | 'skip';

export interface CheckResult {
  readonly name: string;
  readonly status: CheckStatus;
  /** What was seen. */
  readonly detail: string;
  /** Where to look when it failed. */
  readonly hint?: string;
}

export interface VerifyClients {
  readonly cloudFormation: CloudFormationClient;
  readonly lambda: LambdaClient;
  readonly rdsData: RDSDataClient;
  readonly secretsManager: SecretsManagerClient;
  readonly cloudWatch: CloudWatchClient;
  readonly sns: SNSClient;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Date.now */
  readonly now?: () => number;
}

export interface VerifyOptions {
  readonly stackName: string;
  /** Start a rotation of the jobs' database password and wait for it. @default true */
  readonly rotate?: boolean;
  /** How long to wait for the rotation. @default 5 minutes */
  readonly rotationTimeoutMs?: number;
  /** Between two looks at the rotation. @default 5 s */
  readonly pollMs?: number;
  /** How long to wait for CloudWatch to run the delivery-check alarm's action. @default 2 minutes */
  readonly alarmTimeoutMs?: number;
  /** How long to wait for a cluster paused at 0 ACU to resume. @default 2 minutes */
  readonly resumeTimeoutMs?: number;
  /** Receives each result as it is known (the CLI prints it). */
  readonly onResult?: (result: CheckResult) => void;
}

/** Stack outputs the checks read (lib/accounts-platform-stack.ts). */
export const REQUIRED_OUTPUTS = [
  'ClusterArn',
  'WorkerSecretArn',
  'DatabaseName',
  'LatestMigration',
  'TokenRefreshFunctionName',
  'AccountSyncFunctionName',
  'AlarmTopicArn',
  'AlarmDeliveryCheckAlarmName',
] as const;
type Outputs = Record<(typeof REQUIRED_OUTPUTS)[number], string> & Record<string, string>;

/** An output holding the HTTP API's base URL (added with the API; none yet). */
export const API_OUTPUT = /^(Http)?Api(Url|Endpoint)/i;

const COMPLETE = /_COMPLETE$/;
const NOT_COMPLETE = /ROLLBACK|FAILED|IN_PROGRESS|DELETE/;

export async function verifyDeploy(clients: VerifyClients, options: VerifyOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  const record = (result: CheckResult) => {
    results.push(result);
    options.onResult?.(result);
    return result;
  };
  const sleep = clients.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = clients.now ?? Date.now;

  const outputs = await readOutputs(clients, options.stackName, record);
  if (!outputs) return results;

  const dataApi = (sql: string) =>
    executeWhenResumed(clients, sleep, now, options.resumeTimeoutMs ?? 120_000, {
      resourceArn: outputs.ClusterArn,
      secretArn: outputs.WorkerSecretArn,
      database: outputs.DatabaseName,
      sql,
      formatRecordsAs: 'JSON',
    });

  record(await checkSchemaVersion(dataApi, outputs));
  record(await checkJob(clients, 'token-refresh', outputs.TokenRefreshFunctionName, describeTokenRefresh));
  record(await checkJob(clients, 'account-sync', outputs.AccountSyncFunctionName, describeAccountSync));
  record(await checkTokenKeys(clients, outputs));
  record(await checkApiHealth(clients.fetch ?? fetch, outputs));
  record(await checkAlarmDelivery(clients, outputs, sleep, now, options));
  if (options.rotate === false) {
    record({ name: 'password rotation', status: 'skip', detail: 'skipped (--no-rotation)' });
  } else {
    record(await checkRotation(clients, dataApi, outputs, sleep, now, options));
  }
  return results;
}

async function readOutputs(
  clients: VerifyClients,
  stackName: string,
  record: (r: CheckResult) => CheckResult,
): Promise<Outputs | undefined> {
  let stack;
  try {
    stack = (await clients.cloudFormation.send(new DescribeStacksCommand({ StackName: stackName }))).Stacks?.[0];
  } catch (error) {
    record({
      name: 'stack',
      status: 'fail',
      detail: `cannot read stack ${stackName}: ${messageOf(error)}`,
      hint: 'Deploy it first (npx cdk deploy -c env=<name>); check the AWS credentials and region (AWS_PROFILE, AWS_REGION).',
    });
    return undefined;
  }
  if (!stack) {
    record({
      name: 'stack',
      status: 'fail',
      detail: `stack ${stackName} not found`,
      hint: 'Deploy it first (npx cdk deploy -c env=<name>).',
    });
    return undefined;
  }
  const status = String(stack.StackStatus);
  const outputs: Record<string, string> = {};
  for (const o of stack.Outputs ?? [])
    if (o.OutputKey && o.OutputValue !== undefined) outputs[o.OutputKey] = o.OutputValue;
  const missing = REQUIRED_OUTPUTS.filter((key) => !outputs[key]);
  if (!COMPLETE.test(status) || NOT_COMPLETE.test(status) || missing.length > 0) {
    record({
      name: 'stack',
      status: 'fail',
      detail: `${stackName} is ${status}${missing.length ? `; outputs missing: ${missing.join(', ')}` : ''}`,
      hint: missing.length
        ? 'The stack predates these outputs: deploy the current code (npx cdk deploy -c env=<name>).'
        : "CloudFormation console → the stack's Events tab: the first FAILED event names the resource and the reason.",
    });
    return undefined;
  }
  record({
    name: 'stack',
    status: 'pass',
    detail: `${stackName} is ${status}, ${Object.keys(outputs).length} outputs`,
  });
  return outputs as Outputs;
}

type DataApi = (sql: string) => Promise<Array<Record<string, unknown>>>;

/** Runs a statement, waiting while a cluster paused at 0 ACU resumes. */
async function executeWhenResumed(
  clients: VerifyClients,
  sleep: (ms: number) => Promise<void>,
  now: () => number,
  timeoutMs: number,
  input: ConstructorParameters<typeof ExecuteStatementCommand>[0],
): Promise<Array<Record<string, unknown>>> {
  const started = now();
  for (let attempt = 1; ; attempt++) {
    try {
      const { formattedRecords } = await clients.rdsData.send(new ExecuteStatementCommand(input));
      return formattedRecords ? (JSON.parse(formattedRecords) as Array<Record<string, unknown>>) : [];
    } catch (error) {
      const name = (error as { name?: string }).name;
      if (name !== 'DatabaseResumingException' || now() - started >= timeoutMs) throw error;
      await sleep(Math.min(10_000, 1000 * 2 ** (attempt - 1)));
    }
  }
}

async function checkSchemaVersion(dataApi: DataApi, outputs: Outputs): Promise<CheckResult> {
  const name = 'schema version';
  try {
    const rows = await dataApi('SELECT max(name) AS latest FROM pgmigrations');
    const value = rows[0]?.latest;
    const latest = typeof value === 'string' ? value : null;
    if (latest === outputs.LatestMigration) {
      return { name, status: 'pass', detail: `${latest} (read through the Data API as the jobs' login)` };
    }
    return {
      name,
      status: 'fail',
      detail: `the database is at ${latest ?? 'no migration'}, the deploy brought ${outputs.LatestMigration}`,
      hint: 'The schema migration log group (/aws/lambda/…SchemaMigrationHandler…) says what the custom resource did; the stack events show whether it ran.',
    };
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `the Data API refused: ${messageOf(error)}`,
      hint:
        "The jobs' login (WorkerSecretArn) is created by the schema migration: check its log group. " +
        'A wrong password means the secret and the database disagree: the migration sets it again on the next deploy that changes migrations/.',
    };
  }
}

async function checkJob(
  clients: VerifyClients,
  name: string,
  functionName: string,
  describe: (preview: Record<string, unknown>) => string,
): Promise<CheckResult> {
  const logs = `the function's log group /aws/lambda/${functionName}`;
  let response;
  try {
    response = await clients.lambda.send(
      new InvokeCommand({
        FunctionName: functionName,
        InvocationType: 'RequestResponse',
        Payload: new TextEncoder().encode(JSON.stringify({ dryRun: true })),
      }),
    );
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `could not invoke ${functionName}: ${messageOf(error)}`,
      hint: 'Your credentials need lambda:InvokeFunction on it.',
    };
  }
  const text = response.Payload ? new TextDecoder().decode(response.Payload) : '';
  let payload: Record<string, unknown>;
  try {
    payload = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    payload = {};
  }
  if (response.FunctionError) {
    const message = (typeof payload.errorMessage === 'string' ? payload.errorMessage : text).slice(0, 300);
    const secrets = /secret|client id|key/i.test(message);
    return {
      name,
      status: 'fail',
      detail: `dry run failed: ${message}`,
      hint: secrets
        ? `Fill in the LwaClientSecretArn and TokenEncryptionKeySecretArn secrets (see "Secrets to fill in"), then look at ${logs}.`
        : `Look at ${logs}.`,
    };
  }
  if (payload.dryRun !== true) {
    return {
      name,
      status: 'fail',
      detail: `the function did not answer as a dry run: ${text.slice(0, 200)}`,
      hint: `The deployed code predates dry runs: deploy the current code. ${logs}`,
    };
  }
  return { name, status: 'pass', detail: `dry run: ${describe(payload)}` };
}

const describeTokenRefresh = (p: Record<string, unknown>) => {
  const paused =
    Array.isArray(p.pausedRegions) && p.pausedRegions.length > 0
      ? `, ${String(p.pausedByRateLimit)} more paused by Amazon's rate limit (${p.pausedRegions.join(', ')})`
      : '';
  return `${String(p.due)} tokens due now${paused}`;
};
const describeAccountSync = (p: Record<string, unknown>) =>
  `${String(p.due)} users due now, ${String(p.waitingForTokenRefresh)} waiting for a token refresh, ${String(p.accountsToFlagForReauth)} accounts to flag for re-authorisation`;

/** What the token keys' function answers to `{"action": "usage"}` (lambda/token-reencrypt/keys.ts). */
interface KeyUsageAnswer {
  readonly currentKeyId: string;
  readonly byKey: Record<string, number>;
  readonly unknownKeys: Record<string, number>;
  readonly v1: number;
  readonly plaintext: number;
  readonly connectionsToReencrypt: number;
}

/**
 * How many stored token values use each key of the ring (the token keys' function's usage
 * report, TokenKeysFunctionName): passes with the counts; fails when values name a key the
 * ring lacks (they cannot be read). Skipped for a stack without the function.
 */
async function checkTokenKeys(clients: VerifyClients, outputs: Outputs): Promise<CheckResult> {
  const name = 'token keys';
  const functionName = outputs.TokenKeysFunctionName;
  if (!functionName) return { name, status: 'skip', detail: 'skipped: no TokenKeysFunctionName output in this stack' };
  const logs = `the function's log group /aws/lambda/${functionName}`;
  let response;
  try {
    response = await clients.lambda.send(
      new InvokeCommand({
        FunctionName: functionName,
        InvocationType: 'RequestResponse',
        Payload: new TextEncoder().encode(JSON.stringify({ action: 'usage' })),
      }),
    );
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `could not invoke ${functionName}: ${messageOf(error)}`,
      hint: 'Your credentials need lambda:InvokeFunction on it.',
    };
  }
  const text = response.Payload ? new TextDecoder().decode(response.Payload) : '';
  let usage: KeyUsageAnswer | undefined;
  try {
    usage = JSON.parse(text) as KeyUsageAnswer;
  } catch {
    usage = undefined;
  }
  if (response.FunctionError || !usage || typeof usage.byKey !== 'object' || usage.byKey === null) {
    const message = (usage as { errorMessage?: unknown } | undefined)?.errorMessage;
    return {
      name,
      status: 'fail',
      detail: `usage report failed: ${(typeof message === 'string' ? message : text).slice(0, 300)}`,
      hint: `Fill in the TokenEncryptionKeySecretArn secret (docs/token-encryption.md, "The key ring"), then look at ${logs}.`,
    };
  }
  const keys = Object.entries(usage.byKey)
    .map(([id, n]) => `${id}${id === usage.currentKeyId ? ' (current)' : ''} ${n}`)
    .join(', ');
  const detail =
    `values per key: ${keys}; enc:v1 ${usage.v1}, plaintext ${usage.plaintext}; ` +
    `${usage.connectionsToReencrypt} connections to re-encrypt`;
  const unknown = Object.entries(usage.unknownKeys ?? {});
  if (unknown.length > 0)
    return {
      name,
      status: 'fail',
      detail: `${detail}; values under keys not in the ring: ${unknown.map(([id, n]) => `${id} ${n}`).join(', ')}`,
      hint: 'Put the missing keys back into the ring (the secret), then run the re-encryption (docs/operating.md, "Rotating the token key").',
    };
  return { name, status: 'pass', detail };
}

/**
 * The API answers and checks sign-in: `GET /v1/accounts` without a token must be 401 (the route,
 * the Lambda and its JWT check are live; nothing is read without a user).
 */
async function checkApiHealth(fetchImpl: typeof fetch, outputs: Outputs): Promise<CheckResult> {
  const name = 'API sign-in';
  const key = Object.keys(outputs).find((k) => API_OUTPUT.test(k));
  if (!key) return { name, status: 'skip', detail: 'skipped: no API output in this stack' };
  const url = `${outputs[key].replace(/\/+$/, '')}/v1/accounts`;
  try {
    const response = await fetchImpl(url, { signal: AbortSignal.timeout(15_000) });
    if (response.status === 401) return { name, status: 'pass', detail: `GET ${url} without a token → 401` };
    return {
      name,
      status: 'fail',
      detail: `GET ${url} without a token → ${response.status} (expected 401)`,
      hint: "The API function's log group; API Gateway's access log.",
    };
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `GET ${url} failed: ${messageOf(error)}`,
      hint: `Is ${key} the API's public URL?`,
    };
  }
}

/** The principal every CloudWatch alarm publishes as. */
const CLOUDWATCH_PRINCIPAL = 'cloudwatch.amazonaws.com';

interface PolicyStatement {
  readonly Effect?: string;
  readonly Principal?: string | { readonly Service?: string | string[]; readonly AWS?: string | string[] };
  readonly Action?: string | string[];
  readonly Condition?: unknown;
}

/** Whether the topic's policy has an Allow of sns:Publish for CloudWatch's alarms. */
export function topicPolicyAllowsCloudWatch(policy: string | undefined): boolean {
  if (!policy) return false;
  let statements: PolicyStatement[];
  try {
    const document = JSON.parse(policy) as { Statement?: PolicyStatement | PolicyStatement[] };
    statements = [document.Statement ?? []].flat();
  } catch {
    return false;
  }
  return statements.some((s) => {
    if (s.Effect !== 'Allow' || typeof s.Principal !== 'object') return false;
    const services = [s.Principal.Service ?? []].flat();
    const actions = [s.Action ?? []].flat().map((a) => a.toLowerCase());
    return services.includes(CLOUDWATCH_PRINCIPAL) && (actions.includes('sns:publish') || actions.includes('sns:*'));
  });
}

/**
 * Alarms reach someone: the topic lets CloudWatch publish, at least one subscription is
 * confirmed, no notification failed delivery in the last day, and CloudWatch really publishes:
 * the delivery-check alarm (whose notifications the e-mail subscription filters out, so nobody
 * is paged) is set to ALARM, and its history must show the action on the topic succeeded. It
 * is set back to OK whatever happens.
 */
async function checkAlarmDelivery(
  clients: VerifyClients,
  outputs: Outputs,
  sleep: (ms: number) => Promise<void>,
  now: () => number,
  options: VerifyOptions,
): Promise<CheckResult> {
  const name = 'alarm delivery';
  const topicArn = outputs.AlarmTopicArn;
  const alarmName = outputs.AlarmDeliveryCheckAlarmName;
  try {
    const alarm = (await clients.cloudWatch.send(new DescribeAlarmsCommand({ AlarmNames: [alarmName] })))
      .MetricAlarms?.[0];
    if (!alarm) {
      return {
        name,
        status: 'fail',
        detail: `the delivery-check alarm ${alarmName} does not exist`,
        hint: 'Deploy the current code (npx cdk deploy -c env=<name>).',
      };
    }
    if (alarm.ActionsEnabled === false) {
      return { name, status: 'skip', detail: 'skipped: alarm actions are off in this environment (alarms.notify)' };
    }

    const { Attributes } = await clients.sns.send(new GetTopicAttributesCommand({ TopicArn: topicArn }));
    if (!topicPolicyAllowsCloudWatch(Attributes?.Policy)) {
      return {
        name,
        status: 'fail',
        detail: `the alarm topic's policy does not allow ${CLOUDWATCH_PRINCIPAL} to publish: no alarm reaches anyone`,
        hint: "Deploy the current code (lib/monitoring.ts adds the statement); someone may have replaced the topic's policy by hand.",
      };
    }

    const subscriptions = [];
    let nextToken: string | undefined;
    do {
      const page = await clients.sns.send(
        new ListSubscriptionsByTopicCommand({ TopicArn: topicArn, NextToken: nextToken }),
      );
      subscriptions.push(...(page.Subscriptions ?? []));
      nextToken = page.NextToken;
    } while (nextToken);
    const confirmed = subscriptions.filter((s) => s.SubscriptionArn?.startsWith('arn:'));
    if (confirmed.length === 0) {
      const pending = subscriptions.filter((s) => s.SubscriptionArn === 'PendingConfirmation');
      return {
        name,
        status: 'fail',
        detail: `the alarm topic has no confirmed subscription${pending.length ? ` (${pending.length} pending confirmation)` : ''}`,
        hint: pending.length
          ? 'AWS e-mailed a confirmation link to alarms.email when the stack created the subscription: follow it (SNS console → the topic → Subscriptions → "Request confirmation" sends it again).'
          : 'Set alarms.email in cdk.json and deploy.',
      };
    }

    const end = new Date(now());
    const failed = await clients.cloudWatch.send(
      new GetMetricStatisticsCommand({
        Namespace: 'AWS/SNS',
        MetricName: 'NumberOfNotificationsFailed',
        Dimensions: [{ Name: 'TopicName', Value: topicArn.split(':').at(-1)! }],
        StartTime: new Date(end.getTime() - 24 * 3600_000),
        EndTime: end,
        Period: 24 * 3600,
        Statistics: ['Sum'],
      }),
    );
    const failures = (failed.Datapoints ?? []).reduce((n, d) => n + (d.Sum ?? 0), 0);
    if (failures > 0) {
      return {
        name,
        status: 'fail',
        detail: `${failures} notifications of the alarm topic failed delivery in the last 24 h`,
        hint: "A subscription's endpoint refuses them (a bouncing address?): the SNS console's topic metrics and the subscriptions' endpoints.",
      };
    }

    return await setAndWatch(clients, alarmName, topicArn, confirmed.length, sleep, now, options);
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `could not check the alarm topic: ${messageOf(error)}`,
      hint: 'Your credentials need cloudwatch:DescribeAlarms, SetAlarmState, DescribeAlarmHistory, GetMetricStatistics and sns:GetTopicAttributes, ListSubscriptionsByTopic.',
    };
  }
}

async function setAndWatch(
  clients: VerifyClients,
  alarmName: string,
  topicArn: string,
  confirmed: number,
  sleep: (ms: number) => Promise<void>,
  now: () => number,
  options: VerifyOptions,
): Promise<CheckResult> {
  const name = 'alarm delivery';
  const reason = 'npm run verify: alarm delivery check (not an incident)';
  // From OK, so the change to ALARM is a transition and its action runs.
  await clients.cloudWatch.send(
    new SetAlarmStateCommand({ AlarmName: alarmName, StateValue: 'OK', StateReason: reason }),
  );
  try {
    await clients.cloudWatch.send(
      new SetAlarmStateCommand({ AlarmName: alarmName, StateValue: 'ALARM', StateReason: reason }),
    );
    // CloudWatch's own clock: the action comes at or after the state change it records.
    const alarm = (await clients.cloudWatch.send(new DescribeAlarmsCommand({ AlarmNames: [alarmName] })))
      .MetricAlarms?.[0];
    const since = alarm?.StateUpdatedTimestamp ?? new Date(now() - 60_000);
    const started = now();
    const timeoutMs = options.alarmTimeoutMs ?? 120_000;
    for (;;) {
      const history = await clients.cloudWatch.send(
        new DescribeAlarmHistoryCommand({ AlarmName: alarmName, HistoryItemType: 'Action', StartDate: since }),
      );
      const action = (history.AlarmHistoryItems ?? []).find(
        (item) => item.Timestamp && item.Timestamp.getTime() >= since.getTime(),
      );
      if (action) {
        const outcome = actionOutcome(action.HistoryData, action.HistorySummary);
        if (outcome === 'succeeded') {
          return {
            name,
            status: 'pass',
            detail: `CloudWatch published ${alarmName} to the alarm topic (not e-mailed: filtered out); ${confirmed} confirmed subscription${confirmed === 1 ? '' : 's'}; no failed notification in 24 h`,
          };
        }
        return {
          name,
          status: 'fail',
          detail: `CloudWatch could not publish to the alarm topic: ${action.HistorySummary ?? 'action failed'}`,
          hint: `The topic's policy (${topicArn}) must allow ${CLOUDWATCH_PRINCIPAL} sns:Publish for this account's alarms.`,
        };
      }
      if (now() - started >= timeoutMs) {
        return {
          name,
          status: 'fail',
          detail: `CloudWatch recorded no action of ${alarmName} within ${Math.round(timeoutMs / 1000)} s of setting it to ALARM`,
          hint: 'CloudWatch console → the alarm → History.',
        };
      }
      await sleep(options.pollMs ?? 5000);
    }
  } finally {
    await clients.cloudWatch.send(
      new SetAlarmStateCommand({ AlarmName: alarmName, StateValue: 'OK', StateReason: reason }),
    );
  }
}

/** An alarm action history item's outcome: its HistoryData's actionState, else its summary. */
function actionOutcome(data: string | undefined, summary: string | undefined): 'succeeded' | 'failed' {
  try {
    const state = (JSON.parse(data ?? '') as { actionState?: unknown }).actionState;
    if (state === 'Succeeded') return 'succeeded';
    if (state === 'Failed') return 'failed';
  } catch {
    // Not JSON: the summary says.
  }
  return /^Successfully executed action/i.test(summary ?? '') ? 'succeeded' : 'failed';
}

async function checkRotation(
  clients: VerifyClients,
  dataApi: DataApi,
  outputs: Outputs,
  sleep: (ms: number) => Promise<void>,
  now: () => number,
  options: VerifyOptions,
): Promise<CheckResult> {
  const name = 'password rotation';
  const secretId = outputs.WorkerSecretArn;
  const rotationLogs = "the rotation function's log group (/aws/lambda/…DatabaseWorkerRotation…)";
  let versionId: string | undefined;
  const started = now();
  try {
    versionId = (await clients.secretsManager.send(new RotateSecretCommand({ SecretId: secretId }))).VersionId;
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `could not start a rotation of the jobs' secret: ${messageOf(error)}`,
      hint: `A rotation still pending (AWSPENDING) blocks new ones: ${rotationLogs} says why it stopped.`,
    };
  }
  if (!versionId)
    return { name, status: 'fail', detail: 'Secrets Manager started no rotation (no version id)', hint: rotationLogs };

  const timeoutMs = options.rotationTimeoutMs ?? 5 * 60_000;
  const pollMs = options.pollMs ?? 5000;
  for (;;) {
    const secret = await clients.secretsManager.send(new DescribeSecretCommand({ SecretId: secretId }));
    const stages = secret.VersionIdsToStages?.[versionId] ?? [];
    if (stages.includes('AWSCURRENT')) break;
    if (now() - started >= timeoutMs) {
      return {
        name,
        status: 'fail',
        detail: `the rotation (version ${versionId}) did not finish within ${Math.round(timeoutMs / 1000)} s; its stages: ${stages.join(', ') || 'none'}`,
        hint: `${rotationLogs}: createSecret/setSecret/testSecret/finishSecret and the error. It must reach the cluster and the Secrets Manager endpoint.`,
      };
    }
    await sleep(pollMs);
  }
  const seconds = Math.round((now() - started) / 1000);
  try {
    const rows = await dataApi('SELECT current_user AS login');
    return {
      name,
      status: 'pass',
      detail: `the jobs' password was rotated (version ${versionId}, ${seconds} s); the Data API logs in with the new one as ${String(rows[0]?.login)}`,
    };
  } catch (error) {
    return {
      name,
      status: 'fail',
      detail: `rotated (version ${versionId}), but the Data API cannot log in with the new password: ${messageOf(error)}`,
      hint: `${rotationLogs}; the jobs fail the same way until this is fixed.`,
    };
  }
}

/** The checklist as the CLI prints it. */
export function formatChecklist(stackName: string, results: readonly CheckResult[]): string {
  const mark = { pass: '✓', fail: '✗', skip: '–' } as const;
  const width = Math.max(...results.map((r) => r.name.length));
  const lines = [`Deploy check of ${stackName}`];
  for (const r of results) {
    lines.push(`  ${mark[r.status]} ${r.name.padEnd(width)}  ${r.detail}`);
    if (r.status === 'fail' && r.hint) lines.push(`    ${' '.repeat(width)}  → ${r.hint}`);
  }
  const failed = results.filter((r) => r.status === 'fail').length;
  const skipped = results.filter((r) => r.status === 'skip').length;
  const passed = results.filter((r) => r.status === 'pass').length;
  lines.push(
    failed === 0
      ? `All ${passed} checks passed${skipped ? ` (${skipped} skipped)` : ''}.`
      : `${failed} of ${results.length} checks failed${skipped ? `, ${skipped} skipped` : ''}: see the → lines.`,
  );
  return lines.join('\n');
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return `${error.name === 'Error' ? '' : `${error.name}: `}${error.message}`;
  return String(error);
}
