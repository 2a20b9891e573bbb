import * as z from '../validation';

/**
 * Amazon's response shapes (docs/architecture.md, "Amazon's wire shapes"), validated on every response.
 * Unknown extra fields are allowed and dropped: Amazon adds fields without notice.
 */

/** 200 from POST /auth/o2/token. `refresh_token` may be absent: keep the old one then. */
export const lwaTokenResponseSchema = z.object({
  access_token: z.string().check(z.minLength(1)),
  token_type: z.string().check(z.regex(/^bearer$/i, 'expected "bearer"')),
  expires_in: z.number().check(z.int(), z.positive()),
  refresh_token: z.optional(z.string().check(z.minLength(1))),
});
export type LwaTokenResponse = z.infer<typeof lwaTokenResponseSchema>;

/** 4xx from the token endpoint. */
export const lwaErrorResponseSchema = z.object({
  error: z.string().check(z.minLength(1)),
  error_description: z.optional(z.string()),
});

/** One advertising profile from GET /v2/profiles. */
export const adsProfileSchema = z.object({
  /** Read as text: profile ids can exceed 2^53, so they are never parsed as numbers. */
  profileId: z.string().check(z.regex(/^\d+$/, 'expected a numeric id')),
  countryCode: z.string().check(z.minLength(2)),
  currencyCode: z.string().check(z.minLength(3)),
  dailyBudget: z.optional(z.number()),
  timezone: z.string().check(z.minLength(1)),
  accountInfo: z.object({
    marketplaceStringId: z.string().check(z.minLength(1)),
    id: z.string().check(z.minLength(1)),
    type: z.enum(['seller', 'vendor', 'agency']),
    name: z.string(),
    subType: z.optional(z.string()),
    validPaymentMethod: z.boolean(),
  }),
});
export type AdsProfile = z.infer<typeof adsProfileSchema>;

export const adsProfilesResponseSchema = z.array(adsProfileSchema);

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
