import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct, IDependable } from 'constructs';
import { JOB_ENV } from '../lambda/shared/config';
import { DISPATCHER_ENV } from '../lambda/dispatcher/config';
import { DISPATCH_MARK_SECONDS, FAN_OUT_QUEUE_URL_ENV, type FanOutJob } from '../lambda/shared/jobs/fan-out';
import { METRICS_NAMESPACE, SERVICE_NAMES } from '../lambda/shared/jobs/metrics';
import { JOB_TIMING } from '../lambda/shared/jobs/timing';
import { proactiveRefreshWindowSeconds, scheduleSeconds } from '../lambda/token-refresh/window';
import type { FanOutConfig } from './config';
import type { Database } from './database';
import { NodeFunction } from './node-function';

export interface ScheduledJobsProps {
  /** The environment's name, passed to the jobs (APP_ENVIRONMENT, the `environment` metric dimension). */
  readonly environmentName: string;
  /** The cluster (Data API) and the jobs' login. */
  readonly database: Database;
  /** LWA client id/secret (JSON). */
  readonly lwaClientSecret: secretsmanager.ISecret;
  /** Token encryption key (base64 of 32 bytes). */
  readonly tokenEncryptionKeySecret: secretsmanager.ISecret;
  /** EventBridge schedule expression of the token refresh job. */
  readonly tokenRefreshSchedule: string;
  /** EventBridge schedule expression of the account sync job. */
  readonly accountSyncSchedule: string;
  /** Whether the schedules run (off: the rules exist, disabled; the jobs run when invoked). @default true */
  readonly schedulesEnabled?: boolean;
  /** Amazon's request rates per region, shared by every invocation of both jobs. */
  readonly amazonLimits: { readonly lwaRequestsPerSecond: number; readonly adsRequestsPerSecond: number };
  /**
   * Proactive token refresh covers only connections used within this many seconds
   * (PROACTIVE_REFRESH_USED_WITHIN_SECONDS, on the token refresh function only).
   * @default - every connection
   */
  readonly proactiveRefreshUsedWithinSeconds?: number;
  /**
   * Fan-out: the schedules invoke a dispatcher per job that sends the due ids to the job's queue,
   * consumed by the job function with at most `maxConcurrency` invocations at once.
   * @default - the schedules invoke the job functions directly
   */
  readonly fanOut?: FanOutConfig;
  /** The jobs are created only after this (the schema migration) succeeded. */
  readonly after: IDependable;
  /** Retention of the jobs' logs. */
  readonly logRetention: logs.RetentionDays;
  /** What happens to those log groups when they leave the stack. */
  readonly logRemovalPolicy: RemovalPolicy;
}

/** One scheduled job: its function, rule and dead-letter queue. */
export interface ScheduledJob {
  readonly service: string;
  readonly function: lambda.IFunction;
  readonly rule: events.Rule;
  /**
   * Events EventBridge could not deliver (its dead-letter queue) and invocations that failed
   * (the function's on-failure destination: the record carries the error).
   */
  readonly deadLetterQueue: sqs.Queue;
  /** With fan-out: the dispatcher the schedule invokes and the queue the function consumes. @default - none */
  readonly fanOut?: JobFanOut;
}

/** One job's fan-out: its dispatcher and queue. */
export interface JobFanOut {
  readonly dispatcher: lambda.IFunction;
  /** Due ids waiting for the job function; after a few receives a message goes to the job's dead-letter queue. */
  readonly queue: sqs.Queue;
  /** The dispatcher's `service` (its metrics and logs). */
  readonly dispatcherService: string;
  /** Age of the oldest message past which the job is falling behind (the dispatch mark: then its ids are sent again). */
  readonly maxMessageAgeSeconds: number;
}

/** Messages per invocation of a job function consuming its queue (processed one after the other). */
export const FAN_OUT_BATCH_SIZE = 5;

/**
 * Receives of a message before it goes to the dead-letter queue: AWS's Lambda guidance for an
 * SQS event source asks for at least 5. Only real failures spend them: a message the function
 * had no time to start is sent back as a new message (lambda/shared/jobs/fan-out.ts).
 */
export const FAN_OUT_MAX_RECEIVE_COUNT = 5;

interface JobDefinition {
  readonly id: string;
  readonly service: string;
  readonly entry: string;
  readonly description: string;
  readonly schedule: string;
  readonly timeout: Duration;
  /** The job's name in fan-out messages. */
  readonly fanOutJob: FanOutJob;
  /** Requests per second per region of the job's Amazon endpoint (the dispatcher's cap per tick). */
  readonly requestsPerSecond: number;
  /** Variables of this job only, added to the ones every job gets. @default - none */
  readonly environment?: Record<string, string>;
}

/**
 * The token refresh and account sync Lambdas (logic in lambda/, wiring here): outside the VPC,
 * Data API access to this cluster as the jobs' user, read access to exactly the secrets they use,
 * triggered by EventBridge on the environment's schedules with retries and a dead-letter queue.
 */
/**
 * The token refresh's window, derived from its schedule (window.ts: one interval, the token
 * route's threshold and a margin), for the function and its dispatcher; none for a `cron(…)`
 * schedule (the core's default then applies).
 */
export function refreshWindowEnvironment(tokenRefreshSchedule: string): Record<string, string> {
  const seconds = scheduleSeconds(tokenRefreshSchedule);
  return seconds === undefined
    ? {}
    : { [JOB_ENV.proactiveRefreshWindowSeconds]: String(proactiveRefreshWindowSeconds(seconds)) };
}

export class ScheduledJobs extends Construct {
  readonly tokenRefresh: ScheduledJob;
  readonly accountSync: ScheduledJob;

  constructor(scope: Construct, id: string, props: ScheduledJobsProps) {
    super(scope, id);
    this.tokenRefresh = this.job(props, {
      id: 'TokenRefresh',
      service: SERVICE_NAMES.tokenRefresh,
      entry: 'lambda/token-refresh/handler.ts',
      description: 'Refreshes Login with Amazon tokens before they expire',
      schedule: props.tokenRefreshSchedule,
      timeout: Duration.seconds(JOB_TIMING.tokenRefresh.timeoutSeconds),
      fanOutJob: 'token-refresh',
      requestsPerSecond: props.amazonLimits.lwaRequestsPerSecond,
      environment: {
        ...refreshWindowEnvironment(props.tokenRefreshSchedule),
        ...(props.proactiveRefreshUsedWithinSeconds === undefined
          ? {}
          : { [JOB_ENV.proactiveRefreshUsedWithinSeconds]: String(props.proactiveRefreshUsedWithinSeconds) }),
      },
    });
    this.accountSync = this.job(props, {
      id: 'AccountSync',
      service: SERVICE_NAMES.accountSync,
      entry: 'lambda/account-sync/handler.ts',
      description: "Syncs users' Amazon Advertising accounts",
      schedule: props.accountSyncSchedule,
      timeout: Duration.seconds(JOB_TIMING.accountSync.timeoutSeconds),
      fanOutJob: 'account-sync',
      requestsPerSecond: props.amazonLimits.adsRequestsPerSecond,
    });
  }

  private job(props: ScheduledJobsProps, definition: JobDefinition): ScheduledJob {
    const scope = new Construct(this, definition.id);
    const deadLetterQueue = new sqs.Queue(scope, 'DeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    Validations.of(deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the job; its depth is alarmed.',
    });

    const fn = new NodeFunction(scope, 'Handler', {
      entry: definition.entry,
      description: definition.description,
      timeout: definition.timeout,
      memorySizeMb: 512,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      onFailureQueue: deadLetterQueue,
      environment: {
        [JOB_ENV.environment]: props.environmentName,
        [JOB_ENV.clusterArn]: props.database.cluster.clusterArn,
        [JOB_ENV.databaseSecretArn]: props.database.workerSecret.secretArn,
        [JOB_ENV.databaseName]: props.database.databaseName,
        [JOB_ENV.lwaClientSecretArn]: props.lwaClientSecret.secretArn,
        [JOB_ENV.tokenKeySecretArn]: props.tokenEncryptionKeySecret.secretArn,
        [JOB_ENV.lwaRequestsPerSecond]: String(props.amazonLimits.lwaRequestsPerSecond),
        [JOB_ENV.adsRequestsPerSecond]: String(props.amazonLimits.adsRequestsPerSecond),
        POWERTOOLS_SERVICE_NAME: definition.service,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        ...definition.environment,
      },
    }).function;
    props.database.grantDataApiAccessAsWorker(fn);
    props.lwaClientSecret.grantRead(fn);
    props.tokenEncryptionKeySecret.grantRead(fn);
    fn.node.addDependency(props.after);

    const fanOut = props.fanOut ? this.fanOut(scope, props, definition, fn, deadLetterQueue, props.fanOut) : undefined;

    const rule = new events.Rule(scope, 'Schedule', {
      description: `${definition.description} (${definition.schedule})`,
      schedule: events.Schedule.expression(definition.schedule),
      enabled: props.schedulesEnabled ?? true,
      targets: [
        new targets.LambdaFunction(fanOut?.dispatcher ?? fn, {
          // Delivery retries (throttling, service errors) before the event goes to the queue.
          retryAttempts: 3,
          maxEventAge: Duration.hours(1),
          deadLetterQueue,
        }),
      ],
    });
    return { service: definition.service, function: fn, rule, deadLetterQueue, fanOut };
  }

  /**
   * The job's queue (the function consumes it: at most `maxConcurrency` invocations, failed
   * messages reported one by one, a message received {@link FAN_OUT_MAX_RECEIVE_COUNT} times moved
   * to the job's dead-letter queue) and its dispatcher (the schedule's target: marks due ids and
   * sends them to the queue; its failed invocations go to the same dead-letter queue).
   */
  private fanOut(
    scope: Construct,
    props: ScheduledJobsProps,
    definition: JobDefinition,
    fn: lambda.Function,
    deadLetterQueue: sqs.Queue,
    config: FanOutConfig,
  ): JobFanOut {
    const queue = new sqs.Queue(scope, 'Queue', {
      // AWS's advice for an event source mapping: at least six times the function's timeout, so
      // a batch being retried after throttling is not delivered again meanwhile.
      visibilityTimeout: Duration.seconds(6 * definition.timeout.toSeconds()),
      // A message older than a day is stale: its ids' dispatch mark expired long ago.
      retentionPeriod: Duration.days(1),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deadLetterQueue: { queue: deadLetterQueue, maxReceiveCount: FAN_OUT_MAX_RECEIVE_COUNT },
    });
    // Unstarted messages go back to the queue (consumeBatch's requeue).
    fn.addEnvironment(FAN_OUT_QUEUE_URL_ENV, queue.queueUrl);
    queue.grantSendMessages(fn);
    fn.addEventSource(
      new SqsEventSource(queue, {
        batchSize: FAN_OUT_BATCH_SIZE,
        maxConcurrency: config.maxConcurrency,
        reportBatchItemFailures: true,
      }),
    );

    const dispatcherService = `${definition.service}-dispatcher`;
    const dispatcher = new NodeFunction(scope, 'Dispatcher', {
      entry: 'lambda/dispatcher/handler.ts',
      description: `Dispatches due ids to the queue of: ${definition.description}`,
      timeout: Duration.minutes(2),
      memorySizeMb: 256,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      onFailureQueue: deadLetterQueue,
      environment: {
        [JOB_ENV.environment]: props.environmentName,
        [JOB_ENV.clusterArn]: props.database.cluster.clusterArn,
        [JOB_ENV.databaseSecretArn]: props.database.workerSecret.secretArn,
        [JOB_ENV.databaseName]: props.database.databaseName,
        [DISPATCHER_ENV.job]: definition.fanOutJob,
        [DISPATCHER_ENV.queueUrl]: queue.queueUrl,
        [DISPATCHER_ENV.requestsPerSecond]: String(definition.requestsPerSecond),
        POWERTOOLS_SERVICE_NAME: dispatcherService,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        ...definition.environment,
      },
    }).function;
    props.database.grantDataApiAccessAsWorker(dispatcher);
    queue.grantSendMessages(dispatcher);
    dispatcher.node.addDependency(props.after);
    return {
      dispatcher,
      queue,
      dispatcherService,
      maxMessageAgeSeconds: DISPATCH_MARK_SECONDS[definition.fanOutJob],
    };
  }
}
