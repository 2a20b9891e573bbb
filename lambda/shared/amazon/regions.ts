/** Amazon's advertising regions: each has its own LWA and Ads API host. */
export type AmazonRegion = 'NA' | 'EU' | 'FE';

export const AMAZON_REGIONS: readonly AmazonRegion[] = ['NA', 'EU', 'FE'];

/**
 * The Amazon endpoints the jobs call: `lwa` the Login with Amazon token endpoint, `ads` the
 * Ads API's profiles. One name each everywhere: limiters, errors, usage rows, metrics.
 */
export type AmazonEndpoint = 'lwa' | 'ads';

/** Login with Amazon token endpoints. */
export const LWA_TOKEN_URLS: Readonly<Record<AmazonRegion, string>> = {
  NA: 'https://api.amazon.com/auth/o2/token',
  EU: 'https://api.amazon.co.uk/auth/o2/token',
  FE: 'https://api.amazon.co.jp/auth/o2/token',
};

/**
 * Login with Amazon's consent pages for Amazon Ads, per region (Amazon Ads API docs, "Create
 * an authorization grant"): where the user is sent to authorise the application.
 */
export const LWA_CONSENT_URLS: Readonly<Record<AmazonRegion, string>> = {
  NA: 'https://www.amazon.com/ap/oa',
  EU: 'https://eu.account.amazon.com/ap/oa',
  FE: 'https://apac.account.amazon.com/ap/oa',
};

/** Amazon Ads API base URLs. */
export const ADS_API_BASE_URLS: Readonly<Record<AmazonRegion, string>> = {
  NA: 'https://advertising-api.amazon.com',
  EU: 'https://advertising-api-eu.amazon.com',
  FE: 'https://advertising-api-fe.amazon.com',
};

export function isAmazonRegion(value: unknown): value is AmazonRegion {
  return value === 'NA' || value === 'EU' || value === 'FE';
}

/**
 * The URL for `region`: the override with `{region}` replaced (so one fake server can serve
 * every region, e.g. `http://127.0.0.1:4010/{region}/auth/o2/token`), else Amazon's own.
 */
export function regionalUrl(
  override: string | undefined,
  defaults: Readonly<Record<AmazonRegion, string>>,
  region: AmazonRegion,
): string {
  return override ? override.replace(/\{region\}/g, region) : defaults[region];
}
