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
  tokenReencrypt: 'token-reencrypt',
} as const;

/**
 * The dimension some metrics also carry per Amazon region (besides `service` and
 * `environment`): the dashboard graphs them by region; the alarms read the metrics without it.
 */
export const METRIC_DIMENSIONS = { region: 'region' } as const;

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

/** Metric names of the token re-encryption (service `token-reencrypt`), besides DataApiCalls. */
export const REENCRYPTION_METRICS = {
  reencrypted: 'ConnectionsReencrypted',
  unreadable: 'ConnectionsUnreadable',
  remaining: 'ConnectionsToReencrypt',
} as const;

/** Metric names of the dispatchers (service `<job>-dispatcher`). */
export const DISPATCH_METRICS = { dispatched: 'IdsDispatched', notSent: 'IdsNotDispatched' } as const;

/** The metrics also emitted per region (with the `region` dimension), by job. */
export const REGIONAL_METRICS = {
  tokenRefresh: [METRIC_NAMES.refreshFailures, METRIC_NAMES.rateLimitHits],
  accountSync: [METRIC_NAMES.accountsFailed, METRIC_NAMES.rateLimitHits],
} as const;
