import { budgetLimiters } from '../amazon/api-share';
import { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Logger } from '@aws-lambda-powertools/logger';
import type { Metrics } from '@aws-lambda-powertools/metrics';
import type { Context } from 'aws-lambda';
import { AdsClient, LwaClient } from '../amazon';
import { jobConfig, LOCAL_JOB_ENV } from '../config';
import { createDataApiClient, DataApiDatabase } from '../db/data-api-database';
import type { AppLogger } from '../logger';
import { loadJobSecrets, lwaCredentialsFromSecret, SecretsCache, tokenCipherFromSecret } from '../secrets';
import { TokenCipher } from '../token-crypto';
import { createObservability } from './observability';
import type { JobMetrics, JobRuntime } from './runtime';

/** Everything a job handler builds from its environment, once per container. */
export interface JobContainer {
  readonly db: DataApiDatabase;
  readonly lwa: LwaClient;
  readonly ads: AdsClient;
  /** The cipher for the token key as it is now (re-read through the secrets' time to live). */
  readonly tokenCipher: () => Promise<TokenCipher>;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly jobLogger: AppLogger;
  readonly jobMetrics: JobMetrics;
}

/** How a function of the jobs' container draws from Amazon's shared rate budget. */
export interface JobContainerOptions {
  /**
   * Someone waits for this function's Amazon calls (the token route): they draw from the
   * interactive lane and the API's share (lambda/shared/amazon/api-share.ts), not from the
   * jobs' schedule, and 429s are still recorded in rate_limit_tracking (the jobs' login).
   * @default false: a job, drawing at the ceiling less the interactive lane
   */
  readonly interactive?: boolean;
}

const containers = new Map<string, Promise<JobContainer>>();

/**
 * Builds (once per container and service) the real clients from the environment the CDK stack
 * sets: configuration validated, secrets read once and cached, the Data API on the cluster with
 * the jobs' login (its secret, `WORKER_SECRET_ARN`). `LWA_TOKEN_URL` / `ADS_API_URL` (and the SDK's own
 * `AWS_ENDPOINT_URL_*`) point it at local stand-ins for `npm start`; the stack sets none of them.
 * A failed build is not cached: the next invocation tries again.
 */
export function jobContainer(service: string, options: JobContainerOptions = {}): Promise<JobContainer> {
  let container = containers.get(service);
  if (!container) {
    container = build(service, options);
    containers.set(service, container);
    container.catch(() => containers.delete(service));
  }
  return container;
}

/**
 * The invocation running now (a Lambda container runs one at a time): the Data API adapter,
 * built once per container, bounds its retries by this invocation's remaining time.
 */
let current: JobInvocationContext | undefined;

/** What one Data API request may take at most, kept back from the retries' waiting time. */
export const DATA_API_REQUEST_RESERVE_MS = 2_000;

async function build(service: string, options: JobContainerOptions): Promise<JobContainer> {
  const config = jobConfig();
  const observability = createObservability(service, config.environment);
  const cache = new SecretsCache(new SecretsManagerClient({}));
  const secrets = await loadJobSecrets(config, cache);
  const db = new DataApiDatabase({
    client: createDataApiClient(),
    resourceArn: config.clusterArn,
    secretArn: config.databaseSecretArn,
    database: config.databaseName,
    retry: {
      waitBudgetMs: () =>
        current ? current.getRemainingTimeInMillis() - DATA_API_REQUEST_RESERVE_MS : Number.POSITIVE_INFINITY,
    },
  });
  // The jobs' login may record a 429 in rate_limit_tracking, the token route's too.
  const limiters = budgetLimiters(db, config.amazonLimits, { interactive: options.interactive, recordThrottles: true });
  return {
    db,
    lwa: new LwaClient({
      // Read through the cache on every call (time to live), again at once on invalid_client.
      credentials: lwaCredentialsFromSecret(cache, config.lwaClientSecretArn),
      tokenUrl: optional(LOCAL_JOB_ENV.lwaTokenUrl),
      limiters,
    }),
    ads: new AdsClient({ clientId: secrets.lwaClientId, baseUrl: optional(LOCAL_JOB_ENV.adsApiUrl), limiters }),
    tokenCipher: tokenCipherFromSecret(cache, config.tokenKeySecretArn),
    ...observability,
  };
}

function optional(name: string): string | undefined {
  const value = process.env[name]?.trim();
  return value ? value : undefined;
}

/** What a handler receives from Lambda that the run uses. */
export type JobInvocationContext = Pick<Context, 'getRemainingTimeInMillis' | 'awsRequestId'> & Partial<Context>;

/**
 * One invocation of a job, the same for every job handler: the container (built once), the
 * Lambda context on every log line, a ColdStart metric on a container's first invocation, the
 * run itself with the invocation's deadline, its failure logged, and the metrics published
 * whatever happens.
 */
export async function runJobInvocation<R>(
  service: string,
  context: JobInvocationContext,
  run: (container: JobContainer & { readonly cipher: TokenCipher }, runtime: JobRuntime) => Promise<R>,
  logKeys: Record<string, string> = {},
  options: JobContainerOptions = {},
): Promise<R> {
  const c = await jobContainer(service, options);
  current = context;
  c.logger.addContext(context as Context);
  c.logger.appendKeys(logKeys);
  c.metrics.captureColdStartMetric(context.functionName);
  try {
    // The token key as it is now: a key replaced in Secrets Manager is used within the cache's
    // time to live, without waiting for a cold start.
    const cipher = await c.tokenCipher();
    return await run(
      { ...c, cipher },
      {
        logger: c.jobLogger,
        metrics: c.jobMetrics,
        remainingTimeMs: () => context.getRemainingTimeInMillis(),
      },
    );
  } catch (error) {
    c.logger.error(`${service} run failed`, error as Error);
    throw error;
  } finally {
    current = undefined;
    c.metrics.publishStoredMetrics();
  }
}
