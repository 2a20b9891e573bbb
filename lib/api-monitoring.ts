import { Duration } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { LatencyType } from 'cdk-monitoring-constructs';
import type { AccountsApi } from './accounts-api';
import type { Monitoring } from './monitoring';

export interface ApiMonitoringProps {
  /** The accounts API: its HTTP API, stage, function and access-log metric. */
  readonly api: AccountsApi;
  /**
   * Share of requests answered 5xx (in percent, over 5 minutes, with at least
   * `minRequestsForErrorRate` requests) above which the 5xx alarm fires.
   * @default 5
   */
  readonly max5xxRatePercent?: number;
  /** @default 10 */
  readonly minRequestsForErrorRate?: number;
  /** p95 of API Gateway's latency above which, for 15 minutes, the latency alarm fires. @default 2 s */
  readonly maxP95Latency?: Duration;
}

/**
 * The accounts API's row of the environment's dashboard and its alarms, on the same facade (so
 * the same alarm name prefix, topic and `notify` switch as the jobs'):
 *
 * - the HTTP API: requests, 4xx and 5xx (counts and rates), p50/p95 latency; alarms on the 5xx
 *   rate and on p95 latency;
 * - the function: invocations, errors, duration, throttles; alarm on any throttle (the account's
 *   Lambda concurrency is exhausted: callers get 5xx);
 * - the internal token route's function (POST /internal/v1/access-tokens): the same graphs;
 *   alarms on any error and any throttle;
 * - requests the stage's throttling refused (429 before the function, counted from the access
 *   logs, since HTTP APIs publish no throttling metric and count these 429s among the 4xx);
 *   alarm when that lasts (2 of 3 periods), i.e. the configured rate is too low or someone is
 *   hammering the API. The function's own 429 (a second manual sync within 60 s) is expected
 *   behaviour and not counted.
 */
export function addApiMonitoring(monitoring: Monitoring, props: ApiMonitoringProps): void {
  const { api } = props;
  monitoring.facade.monitorApiGatewayV2HttpApi({
    api: api.httpApi,
    apiStage: api.stage.stageName,
    humanReadableName: 'Accounts API',
    alarmFriendlyName: 'accounts-api',
    latencyTypesToRender: [LatencyType.P50, LatencyType.P95],
    add5xxRateAlarm: {
      Critical: {
        // The rate is 5xx's average per request (0 to 1).
        maxErrorRate: (props.max5xxRatePercent ?? 5) / 100,
        minSampleCountToEvaluateDatapoint: props.minRequestsForErrorRate ?? 10,
      },
    },
    addLatencyP95Alarm: {
      Critical: {
        maxLatency: props.maxP95Latency ?? Duration.seconds(2),
        datapointsToAlarm: 3,
        evaluationPeriods: 3,
      },
    },
  });
  monitoring.facade.monitorLambdaFunction({
    lambdaFunction: api.function,
    humanReadableName: 'Accounts API Lambda',
    alarmFriendlyName: 'accounts-api-lambda',
    addThrottlesCountAlarm: { Critical: { maxErrorCount: 0 } },
  });
  // The internal token route's function answers every request itself (problem+json, a 5xx when
  // Amazon fails): an invocation error is a container that could not be built (configuration,
  // secrets, the token key), so the product's servers get no token at all. Alarm on any, and on
  // any throttle (they would get API Gateway's 5xx).
  monitoring.facade.monitorLambdaFunction({
    lambdaFunction: api.tokenFunction,
    humanReadableName: 'Internal token route Lambda',
    alarmFriendlyName: 'token-route-lambda',
    addFaultCountAlarm: { Critical: { maxErrorCount: 0 } },
    addThrottlesCountAlarm: { Critical: { maxErrorCount: 0 } },
  });
  monitoring.facade.monitorCustom({
    humanReadableName: 'Accounts API throttling',
    alarmFriendlyName: 'accounts-api',
    metricGroups: [
      {
        title: 'Requests throttled by API Gateway (429)',
        metrics: [
          {
            metric: api.metricThrottledRequests(),
            alarmFriendlyName: 'gateway-throttled',
            addAlarm: {
              Critical: {
                threshold: 0,
                comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                datapointsToAlarm: 2,
                evaluationPeriods: 3,
                // The metric has data only when a request was throttled.
                treatMissingDataOverride: cloudwatch.TreatMissingData.NOT_BREACHING,
                additionalDescription:
                  'API Gateway refused requests with 429 (stage throttling) in 2 of 3 five-minute periods.',
              },
            },
          },
        ],
      },
    ],
  });
}
