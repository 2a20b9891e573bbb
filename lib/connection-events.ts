import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct, IDependable } from 'constructs';
import {
  EVENT_PUBLISHER_ENV,
  EVENT_PUBLISHER_SERVICE,
  EVENT_PUBLISHER_TIMING,
} from '../lambda/event-publisher/contract';
import { JOB_ENV } from '../lambda/shared/config';
import { METRICS_NAMESPACE } from '../lambda/shared/jobs/metrics';
import type { Database } from './database';
import { NodeFunction } from './node-function';
import type { ScheduledJob } from './scheduled-jobs';

export interface ConnectionEventsProps {
  /** The environment's name (APP_ENVIRONMENT, the `environment` metric dimension, the bus's name). */
  readonly environmentName: string;
  /** The cluster (Data API) and the jobs' database user (the publisher runs as it). */
  readonly database: Database;
  /**
   * An existing bus to publish to, by name.
   * @default - a bus of its own: `amazon-accounts-<environment>-events`
   */
  readonly eventBusName?: string;
  /** EventBridge schedule expression of the publisher. @default rate(1 minute) */
  readonly schedule?: string;
  /** Whether the schedule runs. @default true */
  readonly scheduleEnabled?: boolean;
  /** Published events are deleted after this many days. @default 7 (the publisher's default) */
  readonly retentionDays?: number;
  /** The publisher is created only after this (the schema migration) succeeded. */
  readonly after: IDependable;
  readonly logRetention: logs.RetentionDays;
  readonly logRemovalPolicy: RemovalPolicy;
}

/** The bus's name when the stack creates it. */
export function defaultEventBusName(environmentName: string): string {
  return `amazon-accounts-${environmentName}-events`;
}

/**
 * Connection events (docs/events.md): the environment's EventBridge bus (created, or taken by
 * name) and the event publisher that drains the outbox of migration 0023 to it on a schedule,
 * built like the scheduled jobs (same function construct, retries and dead-letter queue),
 * holding exactly `events:PutEvents` on that bus.
 */
export class ConnectionEvents extends Construct {
  readonly bus: events.IEventBus;
  readonly publisher: ScheduledJob;

  constructor(scope: Construct, id: string, props: ConnectionEventsProps) {
    super(scope, id);
    this.bus = props.eventBusName
      ? events.EventBus.fromEventBusName(this, 'Bus', props.eventBusName)
      : new events.EventBus(this, 'Bus', { eventBusName: defaultEventBusName(props.environmentName) });

    const deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      retentionPeriod: Duration.days(14),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
    });
    Validations.of(deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This queue is itself the dead-letter queue of the event publisher; its depth is alarmed.',
    });

    const description = 'Publishes connection events from the outbox to EventBridge';
    const fn = new NodeFunction(this, 'Publisher', {
      entry: 'lambda/event-publisher/handler.ts',
      description,
      timeout: Duration.seconds(EVENT_PUBLISHER_TIMING.timeoutSeconds),
      memorySizeMb: 256,
      logRetention: props.logRetention,
      logRemovalPolicy: props.logRemovalPolicy,
      onFailureQueue: deadLetterQueue,
      environment: {
        [JOB_ENV.environment]: props.environmentName,
        [JOB_ENV.clusterArn]: props.database.cluster.clusterArn,
        [JOB_ENV.databaseSecretArn]: props.database.workerSecret.secretArn,
        [JOB_ENV.databaseName]: props.database.databaseName,
        [EVENT_PUBLISHER_ENV.eventBusName]: this.bus.eventBusName,
        ...(props.retentionDays === undefined
          ? {}
          : { [EVENT_PUBLISHER_ENV.retentionDays]: String(props.retentionDays) }),
        POWERTOOLS_SERVICE_NAME: EVENT_PUBLISHER_SERVICE,
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
      },
    }).function;
    props.database.grantDataApiAccessAsWorker(fn);
    // events:PutEvents on this bus, nothing else.
    this.bus.grantPutEventsTo(fn);
    fn.node.addDependency(props.after);

    const schedule = props.schedule ?? 'rate(1 minute)';
    const rule = new events.Rule(this, 'Schedule', {
      description: `${description} (${schedule})`,
      schedule: events.Schedule.expression(schedule),
      enabled: props.scheduleEnabled ?? true,
      targets: [
        new targets.LambdaFunction(fn, {
          retryAttempts: 3,
          maxEventAge: Duration.hours(1),
          deadLetterQueue,
        }),
      ],
    });
    this.publisher = { service: EVENT_PUBLISHER_SERVICE, function: fn, rule, deadLetterQueue };
  }
}
