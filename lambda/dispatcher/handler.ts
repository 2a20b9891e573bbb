import { SQSClient } from '@aws-sdk/client-sqs';
import type { Context } from 'aws-lambda';
import { createDataApiClient, DataApiDatabase } from '../shared/db/data-api-database';
import { DISPATCH_MARK_SECONDS } from '../shared/jobs/fan-out';
import { createObservability } from '../shared/jobs/observability';
import { readDispatcherConfig } from './config';
import { dispatchCap, DispatchSelection, DispatchSummary, QueueSender, runDispatch } from './core';
import { accountSyncSelection, tokenRefreshSelection } from './selections';
import { sqsQueueSender } from './sqs-sender';

/** The service name (log key, `service` metric dimension) of a job's dispatcher. */
export function dispatcherService(job: string): string {
  return `${job}-dispatcher`;
}

interface DispatcherContainer {
  readonly selection: DispatchSelection;
  readonly queue: QueueSender;
  readonly maxIds: number;
  readonly observability: ReturnType<typeof createObservability>;
}

let container: DispatcherContainer | undefined;
let current: Pick<Context, 'getRemainingTimeInMillis'> | undefined;

function build(): DispatcherContainer {
  const config = readDispatcherConfig();
  const db = new DataApiDatabase({
    client: createDataApiClient(),
    resourceArn: config.clusterArn,
    secretArn: config.databaseSecretArn,
    database: config.databaseName,
    retry: { waitBudgetMs: () => (current ? current.getRemainingTimeInMillis() - 2_000 : Number.POSITIVE_INFINITY) },
  });
  return {
    selection:
      config.job === 'token-refresh'
        ? tokenRefreshSelection(db, {
            usedWithinSeconds: config.usedWithinSeconds,
            windowSeconds: config.windowSeconds,
          })
        : accountSyncSelection(db),
    queue: sqsQueueSender(new SQSClient({}), config.queueUrl),
    maxIds: dispatchCap(config.requestsPerSecond, DISPATCH_MARK_SECONDS[config.job]),
    observability: createObservability(dispatcherService(config.job), config.environment),
  };
}

/**
 * EventBridge schedule of a job that fans out: one tick of its dispatcher (lambda/dispatcher/core.ts).
 * Any failure is logged and thrown (the function's Errors alarm); the next tick starts over.
 */
export async function handler(_event: unknown, context: Context): Promise<DispatchSummary> {
  container ??= build();
  const { selection, queue, maxIds, observability } = container;
  current = context;
  observability.logger.addContext(context);
  try {
    return await runDispatch({
      selection,
      queue,
      logger: observability.jobLogger,
      metrics: observability.jobMetrics,
      remainingTimeMs: () => context.getRemainingTimeInMillis(),
      settings: { maxIds },
    });
  } catch (error) {
    observability.logger.error('Dispatch failed', error as Error);
    throw error;
  } finally {
    current = undefined;
    observability.metrics.publishStoredMetrics();
  }
}
