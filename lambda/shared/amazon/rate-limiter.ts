import { DeadlineExceededError, sleep as defaultSleep } from '../backoff';
import { ADAPTIVE_RATE, type LimiterClock } from './adaptive-rate';
import { BudgetGroup, RateBudgetStore, SharedRateBudget } from './rate-budget';
import type { AmazonEndpoint, AmazonRegion } from './regions';

export interface TokenBucketOptions extends LimiterClock {
  /** Sustained requests per second. */
  readonly ratePerSecond: number;
  /** Requests that may go at once after a quiet period. @default 1 */
  readonly burst?: number;
}

/**
 * A token bucket: callers take one token per request and wait, in arrival order, while the
 * bucket is empty or paused (a 429's Retry-After pauses it for everyone). A caller may say how
 * long it can wait at most: when its wait would be longer it gets {@link DeadlineExceededError}
 * at once instead of waiting (and the callers behind it get their turn).
 */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;
  private pausedUntil = 0;
  private rate: number;
  private queue: Promise<void> = Promise.resolve();
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly burst: number;

  constructor(options: TokenBucketOptions) {
    if (!(options.ratePerSecond > 0)) throw new RangeError('ratePerSecond must be positive');
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.burst = Math.max(1, options.burst ?? 1);
    this.rate = options.ratePerSecond;
    this.tokens = this.burst;
    this.updatedAt = this.now();
  }

  /**
   * Waits for a token (FIFO). With `maxWaitMs`, rejects with {@link DeadlineExceededError}
   * (taking no token) when the token would come later than that from now.
   */
  take(maxWaitMs: number = Infinity): Promise<void> {
    const notAfter = this.now() + maxWaitMs;
    const turn = this.queue.then(() => this.waitForToken(notAfter));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** Requests per second handed out now. */
  ratePerSecond(): number {
    return this.rate;
  }

  /**
   * Changes the pace. Below one request per second the bucket holds a single token, so a
   * reduced rate is never exceeded by a burst.
   */
  setRate(ratePerSecond: number): void {
    if (!(ratePerSecond > 0)) throw new RangeError('ratePerSecond must be positive');
    this.refill(this.now());
    this.rate = ratePerSecond;
    this.tokens = Math.min(this.tokens, this.capacity());
  }

  /** Empties the bucket (after a 429: nothing more goes out in a burst). */
  drain(): void {
    this.refill(this.now());
    this.tokens = Math.min(this.tokens, 0);
  }

  /** No token is handed out before `untilMs` (epoch ms); a later pause wins. */
  pauseUntil(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
  }

  /** Epoch ms until which the bucket is paused (0 when never paused). */
  pausedUntilMs(): number {
    return this.pausedUntil;
  }

  private capacity(): number {
    return Math.max(1, Math.min(this.burst, Math.floor(this.rate)));
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.capacity(), this.tokens + (Math.max(0, now - this.updatedAt) / 1000) * this.rate);
    this.updatedAt = now;
  }

  private async waitForToken(notAfter: number): Promise<void> {
    for (;;) {
      const now = this.now();
      if (now < this.pausedUntil) {
        if (this.pausedUntil > notAfter) throw new DeadlineExceededError(this.pausedUntil - now, notAfter - now);
        await this.sleep(this.pausedUntil - now);
        continue;
      }
      this.refill(now);
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      const wait = Math.ceil(((1 - this.tokens) / this.rate) * 1000);
      if (now + wait > notAfter) throw new DeadlineExceededError(wait, notAfter - now);
      await this.sleep(wait);
    }
  }
}

/** At most `max` calls in flight; the rest wait in arrival order. */
export class ConcurrencyLimiter {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(readonly max: number) {
    if (!(max >= 1)) throw new RangeError('max must be at least 1');
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.active += 1;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active -= 1;
    }
  }

  /** Calls in flight now. */
  inFlight(): number {
    return this.active;
  }
}

export interface EndpointLimits {
  /** The ceiling: requests per second when Amazon does not push back. */
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly maxConcurrency: number;
}

/** Longest pause that 429s in a row make (Retry-After doubled per 429). */
export const MAX_PAUSE_SECONDS = 900;

/**
 * The rate and concurrency limit of one endpoint in one region, adaptive:
 * - the rate starts at the configured ceiling, is cut by every 429 and grows back slowly with
 *   calls Amazon answers without one (additive increase, multiplicative decrease);
 * - every 429 pauses the endpoint for its Retry-After, doubled for each further 429 without a
 *   success in between (at most {@link MAX_PAUSE_SECONDS});
 * - until Amazon has answered without a 429 (at first, and again after each 429) one call at a
 *   time goes out, the probe: a throttled endpoint is never hit by a burst.
 */
export class EndpointLimiter {
  readonly bucket: TokenBucket;
  /**
   * The budget every invocation shares (in the database), when there is one: the pace then
   * comes from it instead of from {@link bucket}, and 429s are reported to it.
   */
  readonly shared: SharedRateBudget | undefined;
  readonly concurrency: ConcurrencyLimiter;
  /** The configured requests per second: the most the adaptive rate ever allows. */
  readonly ceiling: number;
  private probing = true;
  private probe: Promise<void> | undefined;
  private throttledInARow = 0;

  constructor(
    limits: EndpointLimits,
    private readonly clock: LimiterClock = {},
    shared?: SharedRateBudget,
  ) {
    this.ceiling = limits.ratePerSecond;
    this.bucket = new TokenBucket({ ratePerSecond: limits.ratePerSecond, burst: limits.burst, ...clock });
    this.concurrency = new ConcurrencyLimiter(limits.maxConcurrency);
    this.shared = shared;
  }

  /** One request's turn: a slot of the shared budget, or a token of this container's bucket. */
  private take(maxWaitMs: number): Promise<void> {
    return this.shared ? this.shared.take(maxWaitMs) : this.bucket.take(maxWaitMs);
  }

  /** The limiter's clock (epoch ms). */
  now(): number {
    return (this.clock.now ?? Date.now)();
  }

  /**
   * Runs `fn` holding a concurrency slot, after taking a rate token. With `maxWaitMs`, a wait
   * for the token longer than that rejects with DeadlineExceededError instead (fn not called).
   */
  run<T>(fn: () => Promise<T>, maxWaitMs: number = Infinity): Promise<T> {
    const notAfter = this.now() + maxWaitMs;
    return this.concurrency.run(async () => {
      // While probing, wait for the probe in flight; then go as the next probe, or freely.
      while (this.probing && this.probe) await this.probe;
      if (!this.probing) {
        await this.take(Math.max(0, notAfter - this.now()));
        return fn();
      }
      let done!: () => void;
      this.probe = new Promise<void>((resolve) => (done = resolve));
      try {
        await this.take(Math.max(0, notAfter - this.now()));
        return await fn();
      } finally {
        this.probe = undefined;
        done();
      }
    });
  }

  /** Backs the endpoint off for `seconds` (a 429's Retry-After). */
  pauseFor(seconds: number): void {
    this.bucket.pauseUntil(this.now() + seconds * 1000);
  }

  /**
   * Amazon answered 429 to a request sent at `sentAtMs`: pause for Retry-After (doubled per
   * 429 in a row), cut the allowed rate, and probe with one call at a time until a call
   * succeeds. With a shared budget, the pause and the cut go to it too (before this
   * container's next request), so every invocation slows down.
   */
  throttled(retryAfterSeconds: number, sentAtMs: number = this.now()): void {
    this.throttledInARow += 1;
    const pauseSeconds = Math.min(MAX_PAUSE_SECONDS, retryAfterSeconds * 2 ** Math.min(this.throttledInARow - 1, 20));
    this.pauseFor(pauseSeconds);
    this.shared?.reportThrottle(sentAtMs, pauseSeconds);
    this.bucket.setRate(
      Math.max(this.ceiling * ADAPTIVE_RATE.minFraction, this.allowedRate() * ADAPTIVE_RATE.decrease),
    );
    this.bucket.drain();
    this.probing = true;
  }

  /** Amazon answered without a 429: calls go out freely again, the rate grows back towards the ceiling. */
  succeeded(): void {
    this.throttledInARow = 0;
    this.probing = false;
    const rate = this.allowedRate();
    if (rate < this.ceiling)
      this.bucket.setRate(Math.min(this.ceiling, rate + this.ceiling * ADAPTIVE_RATE.increaseFraction));
  }

  /**
   * Until when (this container's clock, epoch ms) calls wait: the later of this container's own
   * pause and the shared budget's (every invocation's 429s, as last known: see
   * SharedRateBudget.pausedUntilMs). 0 when never paused.
   */
  pausedUntilMs(): number {
    return Math.max(this.bucket.pausedUntilMs(), this.shared?.pausedUntilMs() ?? 0);
  }

  /**
   * How many calls this limiter still has to make (e.g. the items left in a run): the shared
   * budget reserves no more than that ahead. `undefined`: not known.
   */
  expectRequests(count: number | undefined): void {
    this.shared?.expectRequests(count);
  }

  /** Gives the shared budget back the slots reserved and not needed (when the work is done). */
  release(): Promise<boolean> {
    return this.shared ? this.shared.release() : Promise.resolve(false);
  }

  /** Requests per second allowed now (the ceiling unless Amazon pushed back). */
  allowedRate(): number {
    return this.shared
      ? Math.min(this.shared.ratePerSecond(), this.bucket.ratePerSecond())
      : this.bucket.ratePerSecond();
  }

  /**
   * Takes over what an earlier invocation left (from `rate_limit_tracking`): a lower allowed
   * rate and a pause still in force. Never raises the rate or shortens a pause.
   */
  restore(state: { allowedRatePerSecond?: number; pausedUntilMs?: number }): void {
    const rate = state.allowedRatePerSecond;
    if (rate !== undefined && rate > 0 && rate < this.allowedRate())
      this.bucket.setRate(Math.max(this.ceiling * ADAPTIVE_RATE.minFraction, rate));
    if (state.pausedUntilMs !== undefined) this.bucket.pauseUntil(state.pausedUntilMs);
  }
}

/**
 * Conservative defaults (Amazon's limits are dynamic and undocumented): the LWA token endpoint
 * and the Ads profiles endpoint, per region. Override per registry.
 */
export const DEFAULT_ENDPOINT_LIMITS: Readonly<Record<AmazonEndpoint, EndpointLimits>> = {
  lwa: { ratePerSecond: 10, burst: 10, maxConcurrency: 10 },
  ads: { ratePerSecond: 5, burst: 5, maxConcurrency: 5 },
};

/**
 * Limits for the given rates (requests per second per region; absent ones keep the
 * defaults): burst one second's worth, and as many calls in flight as the rate allows.
 */
export function endpointLimitsFor(rates: {
  readonly lwa?: number;
  readonly ads?: number;
}): Record<AmazonEndpoint, EndpointLimits> {
  const limits = (endpoint: AmazonEndpoint): EndpointLimits => {
    const rate = rates[endpoint];
    if (rate === undefined) return DEFAULT_ENDPOINT_LIMITS[endpoint];
    const whole = Math.max(1, Math.ceil(rate));
    return { ratePerSecond: rate, burst: whole, maxConcurrency: Math.min(64, whole) };
  };
  return { lwa: limits('lwa'), ads: limits('ads') };
}

/** One {@link EndpointLimiter} per endpoint and region, created on first use. */
export class RateLimiterRegistry {
  private readonly limiters = new Map<string, EndpointLimiter>();
  /** The shared budgets of this registry reserve together (one database call tops up several). */
  private readonly group = new BudgetGroup();

  constructor(
    private readonly limits: Partial<Record<AmazonEndpoint, EndpointLimits>> = {},
    private readonly clock: LimiterClock = {},
    /**
     * Where the budgets every invocation shares are kept. With it, each limiter paces its
     * calls by the shared budget of its endpoint and region (the limits' `ratePerSecond` is
     * that budget's ceiling); without it, by its own token bucket (one container's limit).
     */
    private readonly sharedBudgets?: RateBudgetStore,
    /**
     * How late a shared slot may be used (see SharedBudgetOptions.toleranceMs): it must cover
     * how unevenly requests reach Amazon after they leave. @default 100
     */
    private readonly budgetToleranceMs?: number,
  ) {}

  /** Every limiter created so far, with its endpoint and region. */
  entries(): Array<{ endpoint: AmazonEndpoint; region: string; limiter: EndpointLimiter }> {
    return [...this.limiters].map(([key, limiter]) => {
      const [endpoint, region] = key.split(':') as [AmazonEndpoint, string];
      return { endpoint, region, limiter };
    });
  }

  /**
   * Gives every shared budget back the slots its limiter reserved and will not use (one
   * database call per budget holding any): for the end of a run. Never rejects.
   */
  async releaseUnused(): Promise<void> {
    await Promise.all([...this.limiters.values()].map((limiter) => limiter.release()));
  }

  for(endpoint: AmazonEndpoint, region: string): EndpointLimiter {
    const key = `${endpoint}:${region}`;
    let limiter = this.limiters.get(key);
    if (!limiter) {
      const limits = this.limits[endpoint] ?? DEFAULT_ENDPOINT_LIMITS[endpoint];
      const shared = this.sharedBudgets
        ? new SharedRateBudget(
            this.sharedBudgets,
            { endpoint, region: region as AmazonRegion },
            { ceiling: limits.ratePerSecond, toleranceMs: this.budgetToleranceMs, group: this.group, ...this.clock },
          )
        : undefined;
      limiter = new EndpointLimiter(limits, this.clock, shared);
      this.limiters.set(key, limiter);
    }
    return limiter;
  }
}

/** The process-wide registry: every client in one Lambda container shares these limits. */
export const sharedRateLimiters = new RateLimiterRegistry();
