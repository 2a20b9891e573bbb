/**
 * The jobs' business metrics (CloudWatch Embedded Metric Format via Powertools Metrics).
 * The dashboards and alarms in lib/ read exactly these names, so both sides import them.
 * (Environment variable names live in ../config.ts.)
 */
export const METRICS_NAMESPACE = 'AmazonAccounts';

/** Powertools' default `service` dimension of each job. */
export const SERVICE_NAMES = {
  tokenRefresh: 'token-refresh',
  accountSync: 'account-sync',
} as const;

export const METRIC_NAMES = {
  tokensRefreshed: 'TokensRefreshed',
  refreshFailures: 'RefreshFailures',
  reauthRequired: 'ReauthorisationsNeeded',
  accountsSynced: 'AccountsSynced',
  accountsFailed: 'AccountsFailed',
  rateLimitHits: 'RateLimitHits',
  dataApiCalls: 'DataApiCalls',
  batchDurationMs: 'BatchDurationMs',
} as const;
