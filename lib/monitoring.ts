import { Duration, Stack, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { DefaultDashboardFactory, MonitoringFacade, SnsAlarmActionStrategy } from 'cdk-monitoring-constructs';
import { Construct } from 'constructs';
import { AMAZON_REGIONS } from '../lambda/shared/amazon/regions';
import {
  DISPATCH_METRICS,
  METRIC_DIMENSIONS,
  METRIC_NAMES,
  METRICS_NAMESPACE,
  REGIONAL_METRICS,
  SERVICE_NAMES,
} from '../lambda/shared/jobs/metrics';
import type { ScheduledJob } from './scheduled-jobs';

export interface MonitoringProps {
  /** The environment's name: dashboard and alarm names, and the `environment` metric dimension. */
  readonly environmentName: string;
  /** The Aurora cluster (capacity, connections, CPU). */
  readonly cluster: rds.IDatabaseCluster;
  /** The token refresh job: function, dead-letter queue, and with fan-out its dispatcher and queue. */
  readonly tokenRefresh: ScheduledJob;
  /** The account sync job: function, dead-letter queue, and with fan-out its dispatcher and queue. */
  readonly accountSync: ScheduledJob;
  /** The migration Lambda: any error means a failed deploy. */
  readonly migrationHandler: lambda.IFunction;
  /** Whether alarms notify the topic. */
  readonly notify: boolean;
  /** @default - no e-mail subscription */
  readonly alarmEmail?: string;
  /**
   * Share of token refreshes that failed, in percent, above which (over 15 minutes) the
   * refresh-failure-rate alarm fires.
   * @default 20
   */
  readonly refreshFailureRateThresholdPercent?: number;
}

/**
 * Name of the environment's delivery-check alarm: an alarm on a metric nothing publishes, whose
 * only use is `npm run verify` setting it to ALARM to prove CloudWatch can publish to the alarm
 * topic. The e-mail subscription filters its notifications out, so nobody is paged by it.
 */
export function deliveryCheckAlarmName(environmentName: string): string {
  return `AmazonAccounts-${environmentName}-alarm-delivery-check`;
}

/** The metric of the delivery-check alarm: never published, so the alarm rests in OK. */
export const DELIVERY_CHECK_METRIC = 'AlarmDeliveryCheck';

/** Dimensions every job metric carries: Powertools' `service` and the environment. */
export function jobMetricDimensions(service: string, environmentName: string): Record<string, string> {
  return { service, environment: environmentName };
}

/**
 * The environment's dashboard and alarms, declared through cdk-monitoring-constructs:
 * each Lambda's invocations, errors, duration and throttles; the jobs' own metrics; Aurora
 * capacity, connections and CPU; the dead-letter queues; with fan-out, the dispatchers (errors,
 * ids sent) and the job queues (depth, age of the oldest message). Alarms go to one SNS topic.
 */
export class Monitoring extends Construct {
  readonly alarmTopic: sns.Topic;
  readonly facade: MonitoringFacade;
  /** The alarm `npm run verify` sets to prove the alarm topic accepts CloudWatch's notifications. */
  readonly deliveryCheckAlarm: cloudwatch.Alarm;

  constructor(scope: Construct, id: string, props: MonitoringProps) {
    super(scope, id);
    const prefix = `AmazonAccounts-${props.environmentName}`;
    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', { displayName: `${prefix} alarms`, enforceSSL: true });
    // enforceSSL writes an AWS::SNS::TopicPolicy, and a topic policy replaces SNS's default one
    // (the one that lets this account's services publish): without this statement CloudWatch may
    // not publish and no alarm would reach anyone. Scoped to this account's alarms in this
    // region (aws:SourceArn, aws:SourceAccount: the confused-deputy guard AWS recommends for
    // service principals).
    const { account, region, partition } = Stack.of(this);
    this.alarmTopic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchAlarmsOfThisAccount',
        effect: iam.Effect.ALLOW,
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.alarmTopic.topicArn],
        conditions: {
          ArnLike: { 'aws:SourceArn': `arn:${partition}:cloudwatch:${region}:${account}:alarm:*` },
          StringEquals: { 'aws:SourceAccount': account },
        },
      }),
    );
    const checkAlarmName = deliveryCheckAlarmName(props.environmentName);
    if (props.alarmEmail)
      this.alarmTopic.addSubscription(
        new subscriptions.EmailSubscription(props.alarmEmail, {
          // Every alarm's notification but the delivery check's (CloudWatch's message body is JSON
          // with its AlarmName): `npm run verify` proves delivery without paging anyone.
          filterPolicyWithMessageBody: {
            AlarmName: sns.FilterOrPolicy.filter(sns.SubscriptionFilter.stringFilter({ denylist: [checkAlarmName] })),
          },
        }),
      );
    this.deliveryCheckAlarm = new cloudwatch.Alarm(this, 'DeliveryCheckAlarm', {
      alarmName: checkAlarmName,
      alarmDescription:
        'Not an incident: `npm run verify` sets this alarm to ALARM to prove CloudWatch can publish to the alarm topic (the e-mail subscription filters it out). Nothing publishes its metric, so it returns to OK by itself.',
      metric: new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: DELIVERY_CHECK_METRIC,
        dimensionsMap: { environment: props.environmentName },
        statistic: 'Sum',
        period: Duration.minutes(1),
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      // Like every alarm of the environment: no notification where alarms notify nobody (dev).
      actionsEnabled: props.notify,
    });
    this.deliveryCheckAlarm.addAlarmAction(new cloudwatchActions.SnsAction(this.alarmTopic));
    Validations.of(this.alarmTopic).acknowledge({
      id: 'AwsSolutions-SNS2',
      reason:
        'Alarm notifications carry no sensitive data, and CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key.',
    });

    this.facade = new MonitoringFacade(this, 'Facade', {
      alarmFactoryDefaults: {
        alarmNamePrefix: prefix,
        actionsEnabled: props.notify,
        action: new SnsAlarmActionStrategy({ onAlarmTopic: this.alarmTopic }),
        datapointsToAlarm: 1,
      },
      metricFactoryDefaults: { period: Duration.minutes(5) },
      dashboardFactory: new DefaultDashboardFactory(this, 'Dashboards', {
        dashboardNamePrefix: prefix,
        createDashboard: true,
        createSummaryDashboard: false,
        createAlarmDashboard: false,
      }),
    });

    const jobs = [
      { job: props.tokenRefresh, name: 'Token refresh' },
      { job: props.accountSync, name: 'Account sync' },
    ];
    for (const { job, name } of jobs) {
      this.facade.monitorLambdaFunction({
        lambdaFunction: job.function,
        humanReadableName: `${name} Lambda`,
        alarmFriendlyName: `${job.service}-lambda`,
        // Two failed runs within three periods: one transient failure is retried by the schedule.
        addFaultCountAlarm: { Critical: { maxErrorCount: 0, datapointsToAlarm: 2, evaluationPeriods: 3 } },
      });
    }
    this.facade.monitorLambdaFunction({
      lambdaFunction: props.migrationHandler,
      humanReadableName: 'Schema migration Lambda',
      alarmFriendlyName: 'schema-migration',
      // Any failed migration is an incident (the deploy rolled back).
      addFaultCountAlarm: { Critical: { maxErrorCount: 0 } },
    });

    const metric = (service: string, metricName: string, label: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName,
        dimensionsMap: jobMetricDimensions(service, props.environmentName),
        statistic: 'Sum',
        period: Duration.minutes(5),
        label,
      });
    // One graph per regional metric, a line per Amazon region (no alarms: those read the totals,
    // so connections per region add graphs, not alarms).
    const byRegion = (service: string, metricNames: readonly string[], titles: Record<string, string>) =>
      metricNames.map((metricName) => ({
        title: `${titles[metricName]} by region`,
        metrics: AMAZON_REGIONS.map(
          (region) =>
            new cloudwatch.Metric({
              namespace: METRICS_NAMESPACE,
              metricName,
              dimensionsMap: {
                ...jobMetricDimensions(service, props.environmentName),
                [METRIC_DIMENSIONS.region]: region,
              },
              statistic: 'Sum',
              period: Duration.minutes(5),
              label: region,
            }),
        ),
      }));
    const refreshed = metric(SERVICE_NAMES.tokenRefresh, METRIC_NAMES.tokensRefreshed, 'Tokens refreshed');
    const refreshFailed = metric(SERVICE_NAMES.tokenRefresh, METRIC_NAMES.refreshFailures, 'Refresh failures');
    const failureRate = new cloudwatch.MathExpression({
      expression: 'IF(refreshed + failed > 0, 100 * failed / (refreshed + failed), 0)',
      usingMetrics: {
        refreshed: refreshed.with({ period: Duration.minutes(15) }),
        failed: refreshFailed.with({ period: Duration.minutes(15) }),
      },
      period: Duration.minutes(15),
      label: 'Refresh failure rate (%)',
    });

    this.facade.monitorCustom({
      humanReadableName: 'Token refresh job',
      alarmFriendlyName: SERVICE_NAMES.tokenRefresh,
      metricGroups: [
        {
          title: 'Tokens',
          metrics: [
            refreshed,
            refreshFailed,
            metric(SERVICE_NAMES.tokenRefresh, METRIC_NAMES.reauthRequired, 'Re-authorisations needed'),
          ],
        },
        {
          title: 'Refresh failure rate',
          metrics: [
            {
              metric: failureRate,
              alarmFriendlyName: 'refresh-failure-rate',
              addAlarm: {
                Critical: {
                  threshold: props.refreshFailureRateThresholdPercent ?? 20,
                  comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                  additionalDescription: 'Share of token refreshes that failed over 15 minutes.',
                },
              },
            },
          ],
        },
        {
          title: 'Amazon and database calls',
          metrics: [
            metric(SERVICE_NAMES.tokenRefresh, METRIC_NAMES.rateLimitHits, 'Rate-limit hits'),
            metric(SERVICE_NAMES.tokenRefresh, METRIC_NAMES.dataApiCalls, 'Data API calls'),
          ],
        },
        ...byRegion(SERVICE_NAMES.tokenRefresh, REGIONAL_METRICS.tokenRefresh, {
          [METRIC_NAMES.refreshFailures]: 'Refresh failures',
          [METRIC_NAMES.rateLimitHits]: 'LWA rate-limit hits',
        }),
      ],
    });
    this.facade.monitorCustom({
      humanReadableName: 'Account sync job',
      alarmFriendlyName: SERVICE_NAMES.accountSync,
      metricGroups: [
        {
          title: 'Accounts',
          metrics: [
            metric(SERVICE_NAMES.accountSync, METRIC_NAMES.accountsSynced, 'Accounts synced'),
            metric(SERVICE_NAMES.accountSync, METRIC_NAMES.accountsFailed, 'Accounts failed'),
            metric(SERVICE_NAMES.accountSync, METRIC_NAMES.reauthRequired, 'Re-authorisations needed'),
          ],
        },
        {
          title: 'Amazon and database calls',
          metrics: [
            metric(SERVICE_NAMES.accountSync, METRIC_NAMES.rateLimitHits, 'Rate-limit hits'),
            metric(SERVICE_NAMES.accountSync, METRIC_NAMES.dataApiCalls, 'Data API calls'),
          ],
        },
        ...byRegion(SERVICE_NAMES.accountSync, REGIONAL_METRICS.accountSync, {
          [METRIC_NAMES.accountsFailed]: 'Accounts failed',
          [METRIC_NAMES.rateLimitHits]: 'Ads rate-limit hits',
        }),
      ],
    });

    for (const { job, name } of jobs) {
      this.facade.monitorSqsQueue({
        queue: job.deadLetterQueue,
        humanReadableName: `${name} dead-letter queue`,
        alarmFriendlyName: `${job.service}-dlq`,
        addQueueMaxSizeAlarm: { Critical: { maxMessageCount: 0 } },
      });
    }

    // Fan-out: each dispatcher's errors and the ids it sent, each queue's depth and age.
    for (const { job, name } of jobs) {
      if (!job.fanOut) continue;
      const fanOut = job.fanOut;
      this.facade.monitorLambdaFunction({
        lambdaFunction: fanOut.dispatcher,
        humanReadableName: `${name} dispatcher Lambda`,
        alarmFriendlyName: `${fanOut.dispatcherService}-lambda`,
        // Two failed ticks within three periods: one is made good by the next tick.
        addFaultCountAlarm: { Critical: { maxErrorCount: 0, datapointsToAlarm: 2, evaluationPeriods: 3 } },
      });
      this.facade.monitorCustom({
        humanReadableName: `${name} dispatcher`,
        alarmFriendlyName: fanOut.dispatcherService,
        metricGroups: [
          {
            title: 'Ids sent to the queue',
            metrics: [
              metric(fanOut.dispatcherService, DISPATCH_METRICS.dispatched, 'Ids dispatched'),
              metric(fanOut.dispatcherService, DISPATCH_METRICS.notSent, 'Ids SQS refused'),
            ],
          },
        ],
      });
      this.facade.monitorSqsQueue({
        queue: fanOut.queue,
        humanReadableName: `${name} queue`,
        alarmFriendlyName: `${job.service}-queue`,
        // Messages older than the dispatch mark: the job falls behind, and their ids are sent again.
        addQueueMaxMessageAgeAlarm: {
          Critical: { maxAgeInSeconds: fanOut.maxMessageAgeSeconds, datapointsToAlarm: 2, evaluationPeriods: 3 },
        },
      });
    }

    this.facade.monitorAuroraCluster({
      cluster: props.cluster,
      humanReadableName: 'Aurora PostgreSQL',
      alarmFriendlyName: 'aurora',
    });
  }
}
