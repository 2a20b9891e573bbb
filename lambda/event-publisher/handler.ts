import { EventBridgeClient } from '@aws-sdk/client-eventbridge';
import type { Context } from 'aws-lambda';
import { createDataApiClient, DataApiDatabase } from '../shared/db/data-api-database';
import { DATA_API_REQUEST_RESERVE_MS } from '../shared/jobs/container';
import { createObservability } from '../shared/jobs/observability';
import { eventBridgeBus } from './bus';
import { readEventPublisherConfig } from './config';
import { EVENT_PUBLISHER_SERVICE, EventBus, EventPublisherSummary, runEventPublisher } from './core';

interface PublisherContainer {
  readonly db: DataApiDatabase;
  readonly bus: EventBus;
  readonly retentionSeconds?: number;
  readonly observability: ReturnType<typeof createObservability>;
}

let container: PublisherContainer | undefined;
let current: Pick<Context, 'getRemainingTimeInMillis'> | undefined;

function build(): PublisherContainer {
  const config = readEventPublisherConfig();
  return {
    db: new DataApiDatabase({
      client: createDataApiClient(),
      resourceArn: config.clusterArn,
      secretArn: config.databaseSecretArn,
      database: config.databaseName,
      retry: {
        waitBudgetMs: () =>
          current ? current.getRemainingTimeInMillis() - DATA_API_REQUEST_RESERVE_MS : Number.POSITIVE_INFINITY,
      },
    }),
    bus: eventBridgeBus(new EventBridgeClient({}), config.eventBusName),
    ...(config.retentionDays === undefined ? {} : { retentionSeconds: config.retentionDays * 24 * 3600 }),
    observability: createObservability(EVENT_PUBLISHER_SERVICE, config.environment),
  };
}

/**
 * EventBridge schedule (every minute): one run of the event publisher (core.ts) as the jobs'
 * database user. Any failure is logged and thrown (the function's Errors alarm); the rows it
 * leased are claimed again once their lease expires.
 */
export async function handler(_event: unknown, context: Context): Promise<EventPublisherSummary> {
  container ??= build();
  const { db, bus, retentionSeconds, observability } = container;
  current = context;
  observability.logger.addContext(context);
  try {
    return await runEventPublisher({
      db,
      bus,
      logger: observability.jobLogger,
      metrics: observability.jobMetrics,
      remainingTimeMs: () => context.getRemainingTimeInMillis(),
      settings: retentionSeconds === undefined ? {} : { retentionSeconds },
    });
  } catch (error) {
    observability.logger.error('Event publisher run failed', error as Error);
    throw error;
  } finally {
    current = undefined;
    observability.metrics.publishStoredMetrics();
  }
}
