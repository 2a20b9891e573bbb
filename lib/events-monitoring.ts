import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { EVENT_PUBLISHER_METRICS } from '../lambda/event-publisher/contract';
import { METRICS_NAMESPACE } from '../lambda/shared/jobs/metrics';
import type { ConnectionEvents } from './connection-events';
import { jobMetricDimensions, type Monitoring } from './monitoring';

export interface EventsMonitoringProps {
  readonly environmentName: string;
  /** The bus and the event publisher. */
  readonly events: ConnectionEvents;
  /** Age of the oldest unpublished event above which the backlog alarm fires. @default 15 minutes */
  readonly maxUnpublishedAge?: Duration;
}

/** Alarm friendly names (the alarms are `<prefix>-<name>-…`). */
export const EVENTS_ALARM_NAMES = { publisher: 'event-publisher', backlog: 'event-publisher-backlog' } as const;

/**
 * The event publisher's row of the environment's dashboard and its alarms, on the same facade
 * as the jobs' (same alarm name prefix, topic and `notify` switch):
 *
 * - the function: invocations, errors, duration, throttles; alarm on errors in 2 of 3 periods
 *   (a run that fails leaves its rows leased; the next ones take them over);
 * - its own metrics: events published, not published (refused in every attempt of a run),
 *   PutEvents calls, pruned rows, Data API calls; and the age of the oldest unpublished event,
 *   alarmed above `maxUnpublishedAge` (events stuck: the bus refuses them, or no run succeeds);
 * - the dead-letter queue (schedule deliveries and invocations that failed): alarm on any message.
 */
export function addEventsMonitoring(monitoring: Monitoring, props: EventsMonitoringProps): void {
  const { publisher } = props.events;
  const dimensions = jobMetricDimensions(publisher.service, props.environmentName);
  const metric = (metricName: string, statistic: string, label: string) =>
    new cloudwatch.Metric({
      namespace: METRICS_NAMESPACE,
      metricName,
      dimensionsMap: dimensions,
      statistic,
      period: Duration.minutes(5),
      label,
    });
  monitoring.facade.addLargeHeader('Connection events');
  monitoring.facade.monitorLambdaFunction({
    lambdaFunction: publisher.function,
    humanReadableName: 'Event publisher Lambda',
    alarmFriendlyName: EVENTS_ALARM_NAMES.publisher,
    addFaultCountAlarm: { Critical: { maxErrorCount: 0, datapointsToAlarm: 2, evaluationPeriods: 3 } },
  });
  const maxAge = props.maxUnpublishedAge ?? Duration.minutes(15);
  monitoring.facade.monitorCustom({
    humanReadableName: 'Event publisher',
    alarmFriendlyName: EVENTS_ALARM_NAMES.backlog,
    metricGroups: [
      {
        title: 'Events',
        metrics: [
          metric(EVENT_PUBLISHER_METRICS.published, 'Sum', 'Published'),
          metric(EVENT_PUBLISHER_METRICS.failed, 'Sum', 'Not published (given back)'),
          metric(EVENT_PUBLISHER_METRICS.putEventsCalls, 'Sum', 'PutEvents calls'),
          metric(EVENT_PUBLISHER_METRICS.pruned, 'Sum', 'Pruned'),
          metric(EVENT_PUBLISHER_METRICS.dataApiCalls, 'Sum', 'Data API calls'),
        ],
      },
      {
        title: 'Oldest unpublished event (s)',
        metrics: [
          {
            metric: metric(EVENT_PUBLISHER_METRICS.oldestUnpublishedAgeSeconds, 'Maximum', 'Oldest unpublished (s)'),
            alarmFriendlyName: 'oldest-unpublished',
            addAlarm: {
              Critical: {
                threshold: maxAge.toSeconds(),
                comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                datapointsToAlarm: 2,
                evaluationPeriods: 3,
                // No data: no run published its metrics (the function's own alarm covers that).
                treatMissingDataOverride: cloudwatch.TreatMissingData.NOT_BREACHING,
                additionalDescription: `An event has waited in the outbox for more than ${maxAge.toMinutes()} minutes: the bus refuses it or no publisher run succeeds (docs/operating.md).`,
              },
            },
          },
        ],
      },
    ],
  });
  monitoring.facade.monitorSqsQueue({
    queue: publisher.deadLetterQueue,
    humanReadableName: 'Event publisher dead-letter queue',
    alarmFriendlyName: `${EVENTS_ALARM_NAMES.publisher}-dlq`,
    addQueueMaxSizeAlarm: { Critical: { maxMessageCount: 0 } },
  });
}
