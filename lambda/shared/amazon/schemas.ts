import * as z from '../validation';

/**
 * Amazon's response shapes (docs/architecture.md, "Amazon's wire shapes"), validated on every response.
 * Unknown extra fields are allowed and dropped: Amazon adds fields without notice.
 */

/**
 * Bounds of `expires_in`. Amazon documents 3,600 s; anything outside these bounds is a
 * malformed answer for that one token (a huge value cannot be turned into a date, and a
 * lifetime of years would mean the token is never refreshed again).
 */
export const EXPIRES_IN_BOUNDS = { minSeconds: 60, maxSeconds: 86_400 } as const;

/** 200 from POST /auth/o2/token. `refresh_token` may be absent: keep the old one then. */
export const lwaTokenResponseSchema = z.object({
  access_token: z.string().check(z.minLength(1)),
  token_type: z.string().check(z.regex(/^bearer$/i, 'expected "bearer"')),
  expires_in: z.number().check(z.int(), z.gte(EXPIRES_IN_BOUNDS.minSeconds), z.lte(EXPIRES_IN_BOUNDS.maxSeconds)),
  refresh_token: z.optional(z.string().check(z.minLength(1))),
});
export type LwaTokenResponse = z.infer<typeof lwaTokenResponseSchema>;

/** 4xx from the token endpoint. */
export const lwaErrorResponseSchema = z.object({
  error: z.string().check(z.minLength(1)),
  error_description: z.optional(z.string()),
});

/**
 * Limits on what one profiles answer may hold: a larger answer is malformed for that user (it
 * fails alone, with backoff). An agency user with 9,000 profiles is well within them.
 */
export const PROFILE_LIMITS = {
  /** Profiles per user. */
  maxProfiles: 20_000,
  /** UTF-16 code units kept of any one text field (longer values are cut, see {@link cleanText}). */
  maxTextChars: 512,
} as const;

const UNPAIRED_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * A text field of Amazon's as it may be stored. PostgreSQL refuses NUL (`\u0000`) in `text`
 * and `jsonb`, and an unpaired UTF-16 surrogate cannot be encoded as UTF-8 at all: either one
 * in one profile used to make the whole batch's write-back fail on every run. Decision: the
 * profile is kept (its account is real; its id is digits, checked separately) with a cleaned
 * value: each NUL and each unpaired surrogate becomes U+FFFD (the replacement character), and
 * the value is cut to {@link PROFILE_LIMITS.maxTextChars}. Everything else is stored verbatim.
 */
export function cleanText(value: string): string {
  const cut = value.length > PROFILE_LIMITS.maxTextChars ? value.slice(0, PROFILE_LIMITS.maxTextChars) : value;
  return cut.replace(UNPAIRED_SURROGATE, '\uFFFD').replaceAll('\u0000', '\uFFFD');
}

const text = () => z.pipe(z.string(), z.transform(cleanText));

/** One advertising profile from GET /v2/profiles; its text fields cleaned ({@link cleanText}). */
export const adsProfileSchema = z.object({
  /** Read as text: profile ids can exceed 2^53, so they are never parsed as numbers. */
  profileId: z.string().check(z.regex(/^\d{1,30}$/, 'expected a numeric id')),
  countryCode: z.pipe(z.string().check(z.minLength(2)), z.transform(cleanText)),
  currencyCode: z.pipe(z.string().check(z.minLength(3)), z.transform(cleanText)),
  dailyBudget: z.optional(z.number()),
  timezone: z.pipe(z.string().check(z.minLength(1)), z.transform(cleanText)),
  accountInfo: z.object({
    marketplaceStringId: z.pipe(z.string().check(z.minLength(1)), z.transform(cleanText)),
    id: z.pipe(z.string().check(z.minLength(1)), z.transform(cleanText)),
    type: z.enum(['seller', 'vendor', 'agency']),
    name: text(),
    subType: z.optional(text()),
    validPaymentMethod: z.boolean(),
  }),
});
export type AdsProfile = z.output<typeof adsProfileSchema>;

export const adsProfilesResponseSchema = z
  .array(adsProfileSchema)
  .check(z.maxLength(PROFILE_LIMITS.maxProfiles, `more than ${PROFILE_LIMITS.maxProfiles} profiles`));

/**
 * Amazon: profiles whose `accountInfo.subType` is `AMAZON_ATTRIBUTION` are not advertising
 * accounts and are left out of advertising work: the account sync does not store them.
 */
export const ATTRIBUTION_SUB_TYPE = 'AMAZON_ATTRIBUTION';

/** Describes zod issues by path and rule only (values may be secrets). */
export function describeIssues(error: z.core.$ZodError): string[] {
  return error.issues.slice(0, 5).map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`);
}

/**
 * JSON.parse, except that numeric `"profileId"` values are kept as strings (exact digits), so
 * ids beyond Number.MAX_SAFE_INTEGER survive.
 */
export function parseJsonKeepingProfileIds(text: string): unknown {
  return JSON.parse(text.replace(/("profileId"\s*:\s*)(-?\d+)(?=\s*[,}])/g, '$1"$2"'));
}
