import { ATTRIBUTION_SUB_TYPE, type AdsProfile } from '../shared/amazon/schemas';
import type { AmazonRegion } from '../shared/amazon/regions';
import type { AccountRecord } from './store';

/**
 * The profiles to store as accounts, and the ids of those that are not advertising accounts
 * (Amazon Attribution, see ATTRIBUTION_SUB_TYPE): those are never stored, and any stored
 * earlier are set inactive. A profile listed twice is stored once (the last one wins).
 */
export function accountsFromProfiles(
  profiles: readonly AdsProfile[],
  region: AmazonRegion,
): { accounts: AccountRecord[]; excludedProfileIds: string[] } {
  const isAttribution = (p: AdsProfile) => p.accountInfo.subType === ATTRIBUTION_SUB_TYPE;
  const accounts = dedupe(profiles.filter((p) => !isAttribution(p)).map((p) => toAccountRecord(p, region)));
  const kept = new Set(accounts.map((a) => a.amazonAccountId));
  const excludedProfileIds = [
    ...new Set(profiles.filter((p) => isAttribution(p) && !kept.has(p.profileId)).map((p) => p.profileId)),
  ];
  return { accounts, excludedProfileIds };
}

/** Maps a profile to its stored form: `amazon_account_id` and the metadata keys docs/architecture.md fixes. */
export function toAccountRecord(profile: AdsProfile, region: AmazonRegion): AccountRecord {
  const info = profile.accountInfo;
  return {
    amazonAccountId: String(profile.profileId),
    metadata: {
      marketplaceStringId: info.marketplaceStringId,
      countryCode: profile.countryCode,
      currencyCode: profile.currencyCode,
      timezone: profile.timezone,
      accountType: info.type,
      accountSubType: info.subType ?? null,
      accountId: info.id,
      accountName: info.name,
      validPaymentMethod: info.validPaymentMethod,
      dailyBudget: profile.dailyBudget ?? null,
      region,
    },
  };
}

/** Amazon should not list a profile twice; if it does, the last one wins (one row per profile). */
function dedupe(accounts: AccountRecord[]): AccountRecord[] {
  return [...new Map(accounts.map((a) => [a.amazonAccountId, a])).values()];
}
