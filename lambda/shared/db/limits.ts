/**
 * Limits of the RDS Data API that shape how the jobs size their statements.
 * A response over 1 MiB is refused (ExecuteStatement); the claims cap the token text they return.
 */

/**
 * The claim's response budget for token text: 600,000 characters, leaving ample room under
 * 1 MiB for ids, regions and the Data API's JSON framing. The claim is an UPDATE … RETURNING,
 * so a response the Data API refused would leave leases taken for tokens nobody got.
 */
export const CLAIM_TOKEN_CHARS = 600_000;
