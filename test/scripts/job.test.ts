import { JOB_TIMING } from '../../lambda/shared/jobs/timing';
import { defaultTimeLimitSeconds } from '../../scripts/job';

/**
 * `npm run job` without `--time-limit` plays the deployed function: its deadline is the
 * function's timeout (JOB_TIMING, from which lib/scheduled-jobs.ts sets it), so the leases a run
 * takes (timeout + margin) outlast it, as in AWS.
 */
test.each([
  ['token-refresh', JOB_TIMING.tokenRefresh],
  ['account-sync', JOB_TIMING.accountSync],
] as const)("%s: the default deadline is the deployed function's timeout, inside the lease", (job, timing) => {
  expect(defaultTimeLimitSeconds(job)).toBe(timing.timeoutSeconds);
  expect(defaultTimeLimitSeconds(job)).toBeLessThan(timing.leaseSeconds);
});
