import { sleep as defaultSleep } from '../backoff';
import type { AmazonEndpoint } from './regions';

/** Clock and sleep, injectable so tests move time instead of waiting. */
export interface LimiterClock {
  /** @default Date.now */
  readonly now?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface TokenBucketOptions extends LimiterClock {
  /** Sustained requests per second. */
  readonly ratePerSecond: number;
  /** Requests that may go at once after a quiet period. @default 1 */
  readonly burst?: number;
}

/**
 * A token bucket: callers take one token per request and wait, in arrival order, while the
 * bucket is empty or paused (a 429's Retry-After pauses it for everyone).
 */
export class TokenBucket {
  private tokens: number;
  private updatedAt: number;
  private pausedUntil = 0;
  private queue: Promise<void> = Promise.resolve();
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly burst: number;

  constructor(private readonly options: TokenBucketOptions) {
    if (!(options.ratePerSecond > 0)) throw new RangeError('ratePerSecond must be positive');
    this.now = options.now ?? Date.now;
    this.sleep = options.sleep ?? defaultSleep;
    this.burst = Math.max(1, options.burst ?? 1);
    this.tokens = this.burst;
    this.updatedAt = this.now();
  }

  /** Waits for a token (FIFO). */
  take(): Promise<void> {
    const turn = this.queue.then(() => this.waitForToken());
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** No token is handed out before `untilMs` (epoch ms); a later pause wins. */
  pauseUntil(untilMs: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, untilMs);
  }

  /** Epoch ms until which the bucket is paused (0 when never paused). */
  pausedUntilMs(): number {
    return this.pausedUntil;
  }

  private async waitForToken(): Promise<void> {
    for (;;) {
      const now = this.now();
      if (now < this.pausedUntil) {
        await this.sleep(this.pausedUntil - now);
        continue;
      }
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.options.ratePerSecond);
      this.updatedAt = now;
      if (this.tokens >= 1) {
        this.tokens -= 1;
        return;
      }
      await this.sleep(Math.ceil(((1 - this.tokens) / this.options.ratePerSecond) * 1000));
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
  readonly ratePerSecond: number;
  readonly burst: number;
  readonly maxConcurrency: number;
}

/** The rate and concurrency limit of one endpoint in one region. */
export class EndpointLimiter {
  readonly bucket: TokenBucket;
  readonly concurrency: ConcurrencyLimiter;

  constructor(
    limits: EndpointLimits,
    private readonly clock: LimiterClock = {},
  ) {
    this.bucket = new TokenBucket({ ratePerSecond: limits.ratePerSecond, burst: limits.burst, ...clock });
    this.concurrency = new ConcurrencyLimiter(limits.maxConcurrency);
  }

  /** Runs `fn` holding a concurrency slot, after taking a rate token. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    return this.concurrency.run(async () => {
      await this.bucket.take();
      return fn();
    });
  }

  /** Backs the endpoint off for `seconds` (a 429's Retry-After). */
  pauseFor(seconds: number): void {
    this.bucket.pauseUntil((this.clock.now ?? Date.now)() + seconds * 1000);
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

/** One {@link EndpointLimiter} per endpoint and region, created on first use. */
export class RateLimiterRegistry {
  private readonly limiters = new Map<string, EndpointLimiter>();

  constructor(
    private readonly limits: Partial<Record<AmazonEndpoint, EndpointLimits>> = {},
    private readonly clock: LimiterClock = {},
  ) {}

  for(endpoint: AmazonEndpoint, region: string): EndpointLimiter {
    const key = `${endpoint}:${region}`;
    let limiter = this.limiters.get(key);
    if (!limiter) {
      limiter = new EndpointLimiter(this.limits[endpoint] ?? DEFAULT_ENDPOINT_LIMITS[endpoint], this.clock);
      this.limiters.set(key, limiter);
    }
    return limiter;
  }
}

/** The process-wide registry: every client in one Lambda container shares these limits. */
export const sharedRateLimiters = new RateLimiterRegistry();
