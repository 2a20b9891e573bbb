/**
 * The one backoff function of the jobs (Data API retries, Amazon retries, the account sync's
 * retry schedule): capped exponential backoff with full jitter
 * (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
 */
export interface BackoffOptions {
  /** Delay ceiling of the first retry; doubles each attempt. */
  readonly baseDelayMs: number;
  /** Upper bound of any delay. */
  readonly maxDelayMs: number;
  /** Uniform random number in [0, 1). @default Math.random */
  readonly random?: () => number;
}

/**
 * Delay before retry number `attempt` (1 = the first retry): uniformly random in
 * [0, min(maxDelayMs, baseDelayMs × 2^(attempt−1))).
 */
export function backoffDelayMs(attempt: number, options: BackoffOptions): number {
  const exponent = Math.min(Math.max(attempt - 1, 0), 52);
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** exponent);
  return Math.floor((options.random ?? Math.random)() * ceiling);
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export interface RetryOptions extends BackoffOptions {
  /** Attempts in total, the first included. */
  readonly maxAttempts: number;
  /** Whether an error is worth another attempt. */
  readonly isRetryable: (error: unknown) => boolean;
  /** A lower bound for the next delay imposed by the error (e.g. Retry-After). @default - none */
  readonly minimumDelayMs?: (error: unknown) => number | undefined;
  /** Called before each retry's sleep. @default - nothing */
  readonly onRetry?: (error: unknown, attempt: number, delayMs: number) => void;
  /** @default setTimeout-based {@link sleep} */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * Milliseconds that waiting may still take (the invocation's remaining time minus its
   * reserve): a retry whose delay would not fit is not made, {@link DeadlineExceededError}
   * is thrown instead. @default - no limit
   */
  readonly waitBudgetMs?: () => number;
}

/**
 * A wait (a limiter's pause or pace, a retry's backoff) would outlast the time the invocation
 * has left: the item is given back instead of waiting. Not a failure of the item.
 */
export class DeadlineExceededError extends Error {
  constructor(
    /** How long the wait would have been. */
    readonly waitMs: number,
    /** How long waiting could still take. */
    readonly budgetMs: number,
    options?: { cause?: unknown },
  ) {
    super(
      `A wait of ${Math.round(waitMs)} ms would outlast the invocation (${Math.round(budgetMs)} ms left to wait)`,
      options,
    );
    this.name = 'DeadlineExceededError';
  }
}

/** Thrown by {@link retry} when every attempt failed with a retryable error. */
export class RetriesExhaustedError extends Error {
  constructor(
    readonly attempts: number,
    cause: unknown,
  ) {
    super(`Gave up after ${attempts} attempts: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'RetriesExhaustedError';
  }
}

/**
 * Calls `fn` until it succeeds, fails with a non-retryable error (rethrown as is), or
 * `maxAttempts` is reached (the last error is wrapped in {@link RetriesExhaustedError}), or
 * the next delay would exceed `waitBudgetMs` ({@link DeadlineExceededError}, the last error as cause).
 */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const wait = options.sleep ?? sleep;
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await fn(attempt);
    } catch (error) {
      if (!options.isRetryable(error)) throw error;
      if (attempt >= options.maxAttempts) throw new RetriesExhaustedError(attempt, error);
      const delay = Math.max(backoffDelayMs(attempt, options), options.minimumDelayMs?.(error) ?? 0);
      const budget = options.waitBudgetMs?.() ?? Infinity;
      if (delay > budget) throw new DeadlineExceededError(delay, budget, { cause: error });
      options.onRetry?.(error, attempt, delay);
      await wait(delay);
    }
  }
}
