/**
 * How early the proactive token refresh renews a used connection's access token: just in time.
 *
 * Amazon's access tokens live 60 minutes; a used connection needs one refresh per lifetime, and
 * each minute it is renewed early costs a share of a refresh more. The on-demand token route
 * returns a stored token only while it has more than {@link ON_DEMAND_FRESH_SECONDS} left (else it
 * refreshes it there and then); so the scheduled refresh must renew a token before the next
 * scheduled run could come too late for that, and no earlier: a token is due when it would
 * expire before the next run plus the route's threshold plus a margin for the next run to reach
 * it. On the 5-minute schedule that is 11 minutes: each used token is renewed 5 to 11 minutes
 * before it expires, about 1.2 times an hour (a 30-minute window renewed it 1.7 times).
 *
 * The stack derives the window from the token refresh's schedule in cdk.json
 * (`schedules.tokenRefresh`, see {@link scheduleSeconds}) and passes it to the function and its
 * dispatcher (PROACTIVE_REFRESH_WINDOW_SECONDS); runs without it (tests, `npm run job`) take the
 * window of the default 5-minute schedule.
 */

/** The on-demand route returns a stored token with more than this left (its default `minRemainingSeconds`). */
export const ON_DEMAND_FRESH_SECONDS = 300;

/** Time the next run may take to reach a due token (its claim, the budget's queue). */
export const JUST_IN_TIME_MARGIN_SECONDS = 60;

/** The default schedule (cdk.json's `rate(5 minutes)`): the window of runs not given the stack's. */
export const TOKEN_REFRESH_SCHEDULE_SECONDS = 300;

/**
 * Seconds between two runs of an EventBridge `rate(…)` expression (`rate(5 minutes)` → 300);
 * undefined for a `cron(…)` expression, whose runs need not be evenly spaced.
 */
export function scheduleSeconds(expression: string): number | undefined {
  const rate = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/.exec(expression.trim());
  if (!rate) return undefined;
  const unit = { minute: 60, minutes: 60, hour: 3600, hours: 3600, day: 86_400, days: 86_400 }[rate[2]]!;
  return Number(rate[1]) * unit;
}

/** The proactive refresh's window for a schedule of one run every `scheduleSeconds`. */
export function proactiveRefreshWindowSeconds(scheduleSeconds: number): number {
  return scheduleSeconds + ON_DEMAND_FRESH_SECONDS + JUST_IN_TIME_MARGIN_SECONDS;
}
