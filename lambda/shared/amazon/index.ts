/** Amazon clients (Login with Amazon, Ads API), their errors and wire schemas. */
export { AdsClient } from './ads-client';
export type { AdsClientOptions, ListProfilesRequest } from './ads-client';
export { LwaClient } from './lwa-client';
export type {
  AuthorizationCodeRequest,
  AuthorizedTokens,
  LwaClientOptions,
  LwaCredentials,
  LwaCredentialsProvider,
  RefreshedTokens,
  RefreshRequest,
} from './lwa-client';
export { parseRetryAfterSeconds } from './call';
export type { AmazonRetryOptions } from './call';
export * from './errors';
export * from './regions';
export { adsProfileSchema, lwaTokenResponseSchema } from './schemas';
export type { AdsProfile, LwaTokenResponse } from './schemas';
