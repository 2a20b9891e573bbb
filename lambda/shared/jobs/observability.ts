import { Logger } from '@aws-lambda-powertools/logger';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import type { JobMetrics, MetricUnitName } from './runtime';
import { METRIC_DIMENSIONS, METRICS_NAMESPACE } from './metrics';
import type { AppLogger } from '../logger';

/**
 * The one place that configures Powertools for the job Lambdas: service name (the `service`
 * dimension and log key), the metrics namespace, and the `environment` default dimension the
 * dashboards and alarms in lib/monitoring.ts read. Create once per container.
 */
export function createObservability(
  service: string,
  environment: string,
): { logger: Logger; metrics: Metrics; jobLogger: AppLogger; jobMetrics: JobMetrics } {
  const logger = new Logger({ serviceName: service, persistentKeys: { environment } });
  const metrics = new Metrics({
    namespace: METRICS_NAMESPACE,
    serviceName: service,
    defaultDimensions: { environment },
  });
  const units: Record<MetricUnitName, (typeof MetricUnit)[keyof typeof MetricUnit]> = {
    Count: MetricUnit.Count,
    Milliseconds: MetricUnit.Milliseconds,
  };
  return {
    logger,
    metrics,
    jobLogger: {
      info: (message, attributes) => logger.info(message, attributes ?? {}),
      warn: (message, attributes) => logger.warn(message, attributes ?? {}),
      error: (message, attributes) => logger.error(message, attributes ?? {}),
    },
    jobMetrics: {
      addMetric: (name, unit, value) => metrics.addMetric(name, units[unit], value),
      // A metric of its own (emitted at once) with the default dimensions plus `region`.
      addRegionalMetric: (name, region, unit, value) => {
        const single = metrics.singleMetric();
        single.addDimension(METRIC_DIMENSIONS.region, region);
        single.addMetric(name, units[unit], value);
      },
    },
  };
}
