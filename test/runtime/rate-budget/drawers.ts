import { LwaClient } from '../../../lambda/shared/amazon';
import {
  BudgetKey,
  DatabaseRateBudgetStore,
  RateBudgetStore,
  Reservation,
  ReserveRequest,
  ReleaseRequest,
  ThrottleReport,
  ThrottleResult,
} from '../../../lambda/shared/amazon/rate-budget';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import type { AmazonRegion } from '../../../lambda/shared/amazon/regions';
import type { Database } from '../../../lambda/shared/db';
import type { JobWorld } from '../../support/jobs';
import { stampingSentAt } from '../../../local/amazon/types';

// Drawers: stand-ins for job invocations, each with its own database connection, its own
// limiter registry drawing from the shared budget (as a Lambda container has them) and an LWA
// client calling the fake Amazon, which records when each request arrived.

/** The budget store, with every 429 report's answer kept (which of them cut the rate). */
export class RecordingStore implements RateBudgetStore {
  readonly reports: ThrottleResult[] = [];
  /** Every slot granted, database clock, epoch ms. */
  readonly slots: number[] = [];
  /** Every reservation's answer, in order. */
  readonly answers: Reservation[] = [];
  /** Settles when a reservation first grants this store a slot. */
  readonly holdsSlots: Promise<void>;
  private granted!: () => void;
  private reportsWaitFor: Promise<unknown> = Promise.resolve();
  constructor(private readonly inner: DatabaseRateBudgetStore) {
    this.holdsSlots = new Promise((resolve) => (this.granted = resolve));
  }
  /**
   * Holds every 429 report until `gate` settles: a test orders the interleaving instead of
   * hoping a busy machine does (the limiter sends its reports without waiting for them).
   */
  holdReportsUntil(gate: Promise<unknown>): void {
    this.reportsWaitFor = gate;
  }
  async reserve(key: BudgetKey, request: ReserveRequest): Promise<Reservation> {
    const r = await this.inner.reserve(key, request);
    this.answers.push(r);
    for (let i = 0; i < r.granted; i += 1) this.slots.push(r.firstSlotAtMs + i * r.intervalMs);
    if (r.granted > 0) this.granted();
    return r;
  }
  async throttled(key: BudgetKey, report: ThrottleReport): Promise<ThrottleResult> {
    await this.reportsWaitFor;
    const result = await this.inner.throttled(key, report);
    this.reports.push(result);
    return result;
  }
  release(key: BudgetKey, request: ReleaseRequest): Promise<boolean> {
    return this.inner.release(key, request);
  }
}

export interface Drawer {
  /** When each request left (the limiter let it go), epoch ms. */
  readonly sentAt: number[];
  readonly db: Database;
  readonly store: RecordingStore;
  readonly registry: RateLimiterRegistry;
  readonly lwa: LwaClient;
}

export function drawer(world: JobWorld, db: Database, ratePerSecond: number, toleranceMs = 300): Drawer {
  const store = new RecordingStore(new DatabaseRateBudgetStore(db));
  const registry = new RateLimiterRegistry(
    { lwa: { ratePerSecond, burst: ratePerSecond, maxConcurrency: 8 } },
    {},
    store,
    // The fake Amazon shares this process with the drawers and the Data API emulator: on a busy
    // machine a request can reach it a few hundred ms after it left. The tolerance covers that
    // spread (as in test/jobs/shared-budget.test.ts), as in production it covers the network's.
    toleranceMs,
  );
  const sentAt: number[] = [];
  const lwa = new LwaClient({
    // Each send recorded, and stamped so that the fake Amazon counts it when it left, not when its
    // handler (sharing this busy process's event loop) got to it.
    fetch: stampingSentAt((input, init) => {
      sentAt.push(Date.now());
      return fetch(input, init);
    }),
    clientId: world.amazon.clientId,
    clientSecret: world.amazon.clientSecret,
    tokenUrl: world.amazon.lwaTokenUrl,
    timeoutMs: 15_000,
    limiters: registry,
    retry: { maxAttempts: 1 },
  });
  return { sentAt, db, store, registry, lwa };
}

/**
 * Sends `count` token requests through the drawer, 8 at a time, each waiting at most
 * `maxWaitMs` for its slot; says how many it will send first, gives back what it did not use
 * at the end. Returns how many were refused for the deadline or by Amazon (429).
 */
export async function draw(
  d: Drawer,
  region: AmazonRegion,
  count: number,
  maxWaitMs = 60_000,
): Promise<{ sent: number; refused: number; limited: number }> {
  const limiter = d.registry.for('lwa', region);
  limiter.expectRequests(count);
  let left = count;
  let sent = 0;
  let refused = 0;
  let limited = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (left > 0) {
        left -= 1;
        try {
          // An unknown refresh token: Amazon answers invalid_grant (not throttled), which is all a drawer needs.
          await d.lwa.refresh({ itemId: `item-${left}`, region, refreshToken: `Atzr|drawer-${left}`, maxWaitMs });
          sent += 1;
        } catch (error) {
          const name = (error as Error).name;
          if (name === 'RateLimitedError') limited += 1;
          if (name === 'DeadlineExceededError' || name === 'RateLimitedError') refused += 1;
          else sent += 1;
        }
      }
    }),
  );
  await d.registry.releaseUnused();
  return { sent, refused, limited };
}
