/** The database port and its adapters: see port.ts for the parameter and row conventions. */
export * from './port';
export { createDataApiClient, DataApiDatabase, isRetryableDataApiError } from './data-api-database';
export type { DataApiDatabaseOptions, DataApiRetryOptions } from './data-api-database';
export { PgDatabase } from './pg-database';
export { AUTHENTICATION_RETRY_DELAY_MS, isAuthenticationFailure } from './authentication';
export type { PgDatabaseOptions } from './pg-database';
export { readAllPages, readPages } from './paging';
export type { PagedQuery } from './paging';
export { rewriteNamedParameters } from './named-parameters';
export type { NamedSql } from './named-parameters';
export { CLAIM_TOKEN_CHARS } from './limits';
export { isDatabaseBusy } from './busy';
