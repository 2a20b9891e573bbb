import type { AmazonRegion } from '../../lambda/shared/amazon/regions';

/** One advertising profile as the fake serves it (DESIGN.md wire shape, plus its region). */
export interface FakeProfile {
  /** Digits; written to the wire as a JSON number with exactly these digits. */
  readonly profileId: string;
  readonly region: AmazonRegion;
  readonly countryCode: string;
  readonly currencyCode: string;
  readonly dailyBudget: number;
  readonly timezone: string;
  readonly accountInfo: {
    readonly marketplaceStringId: string;
    readonly id: string;
    readonly type: 'seller' | 'vendor' | 'agency';
    readonly name: string;
    readonly subType?: string;
    readonly validPaymentMethod: boolean;
  };
}

const MARKETPLACES: Record<
  AmazonRegion,
  { countryCode: string; currencyCode: string; timezone: string; marketplaceStringId: string }
> = {
  NA: { countryCode: 'US', currencyCode: 'USD', timezone: 'America/Los_Angeles', marketplaceStringId: 'ATVPDKIKX0DER' },
  EU: { countryCode: 'UK', currencyCode: 'GBP', timezone: 'Europe/London', marketplaceStringId: 'A1F83G8C2ARO7P' },
  FE: { countryCode: 'JP', currencyCode: 'JPY', timezone: 'Asia/Tokyo', marketplaceStringId: 'A1VC38T7YXB528' },
};

let nextProfileNumber = 1;

/**
 * A plausible profile in `region` (marketplace, currency and timezone of the region's main
 * country), with a fresh id unless given. Override any field.
 */
export function fakeProfile(
  region: AmazonRegion,
  overrides: Partial<Omit<FakeProfile, 'accountInfo'>> & { accountInfo?: Partial<FakeProfile['accountInfo']> } = {},
): FakeProfile {
  const n = nextProfileNumber++;
  const market = MARKETPLACES[region];
  const { accountInfo, ...rest } = overrides;
  return {
    profileId: String(3_000_000_000_000 + n),
    region,
    countryCode: market.countryCode,
    currencyCode: market.currencyCode,
    dailyBudget: 100,
    timezone: market.timezone,
    ...rest,
    accountInfo: {
      marketplaceStringId: market.marketplaceStringId,
      id: `A${(1_000_000 + n).toString(36).toUpperCase()}`,
      type: 'seller',
      name: `Seller ${n}`,
      validPaymentMethod: true,
      ...accountInfo,
    },
  };
}

/** The JSON array Amazon sends, with numeric profile ids written digit for digit. */
export function profilesToWireJson(profiles: readonly FakeProfile[]): string {
  const wire = profiles.map(({ region: _region, ...profile }) => profile);
  return JSON.stringify(wire).replace(/"profileId":"(\d+)"/g, '"profileId":$1');
}
