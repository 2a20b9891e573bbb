/**
 * The jobs' business metrics (CloudWatch Embedded Metric Format via Powertools Metrics).
 * The dashboards and alarms in lib/ read exactly these names, so both sides import them.
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

/** Environment variable names the CDK stack sets on the job Lambdas and the handlers read. */
export const JOB_ENV = {
  environment: 'APP_ENVIRONMENT',
  clusterArn: 'DB_CLUSTER_ARN',
  databaseSecretArn: 'DB_SECRET_ARN',
  databaseName: 'DB_NAME',
  lwaClientSecretArn: 'LWA_CLIENT_SECRET_ARN',
  tokenKeySecretArn: 'TOKEN_ENCRYPTION_KEY_SECRET_ARN',
} as const;

/**
 * Environment variables of `npm run job` and `npm start` (local runs on node-postgres, no
 * Secrets Manager): read by `readLocalJobConfig` in lambda/shared/config.ts.
 */
export const LOCAL_JOB_ENV = {
  databaseUrl: 'DATABASE_URL',
  lwaTokenUrl: 'LWA_TOKEN_URL',
  adsApiUrl: 'ADS_API_URL',
  lwaClientId: 'LWA_CLIENT_ID',
  lwaClientSecret: 'LWA_CLIENT_SECRET',
  tokenEncryptionKey: 'TOKEN_ENCRYPTION_KEY',
} as const;
