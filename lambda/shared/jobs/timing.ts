/**
 * The jobs' time limits, in one place: the CDK stack sets each function's timeout from here
 * (lib/scheduled-jobs.ts) and each job core derives its lease from the same number, so a lease
 * can never run out while the invocation that holds it is still alive. (A lease shorter than
 * the function's timeout lets a second invocation claim and call Amazon for an item the first
 * one is still working on.)
 */

/** Time after the function's timeout before a lease expires: clock skew, the last write-back's latency. */
export const LEASE_MARGIN_SECONDS = 60;

export interface JobTiming {
  /** The Lambda function's timeout. */
  readonly timeoutSeconds: number;
  /** How long a claim holds: the timeout plus {@link LEASE_MARGIN_SECONDS}. */
  readonly leaseSeconds: number;
}

function timing(timeoutSeconds: number): JobTiming {
  return { timeoutSeconds, leaseSeconds: timeoutSeconds + LEASE_MARGIN_SECONDS };
}

export const JOB_TIMING = {
  tokenRefresh: timing(4 * 60),
  accountSync: timing(10 * 60),
} as const satisfies Record<string, JobTiming>;

/**
 * The token keys' function's timeout (lib/token-keys.ts), and `npm run job -- reencrypt-tokens`'
 * default deadline. The re-encryption stops before it; its leases cover one batch each
 * (lambda/token-reencrypt/core.ts), so they need no margin over it.
 */
export const REENCRYPTION_TIMEOUT_SECONDS = 15 * 60;
