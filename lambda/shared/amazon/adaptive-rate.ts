// What the per-container limiter (rate-limiter.ts) and the budget every invocation shares
// (rate-budget.ts) agree on: how the rate follows Amazon's answers, and the injectable clock.
// Its own module so that neither of the two imports the other for it.

/** Clock and sleep, injectable so tests move time instead of waiting. */
export interface LimiterClock {
  /** @default Date.now */
  readonly now?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * How the allowed rate follows Amazon's answers (additive increase, multiplicative decrease):
 * each 429 multiplies it by `decrease`, each call Amazon answers without a 429 adds
 * `increaseFraction` of the ceiling, and it stays between `minFraction` of the ceiling and the
 * ceiling.
 */
export const ADAPTIVE_RATE = { decrease: 0.5, increaseFraction: 0.02, minFraction: 0.01 } as const;
