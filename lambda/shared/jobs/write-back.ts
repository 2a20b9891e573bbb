import { DeadlineExceededError, retry } from '../backoff';
import { isTransientDatabaseError } from '../db/transient';
import { DatabaseUnavailableError } from '../db/port';
import type { AppLogger } from '../logger';
import { describeError } from './runtime';

export interface ResilientWriteOptions<O> {
  /** Writes a set of outcomes in one go (idempotent: guarded by the run's lease). */
  readonly write: (outcomes: O[]) => Promise<void>;
  /** Attempts of one set on a transient error, the first included. @default 3 */
  readonly attempts?: number;
  /** @default 200 */
  readonly baseDelayMs?: number;
  /** @default 2000 */
  readonly maxDelayMs?: number;
  /** Time that waiting between attempts may still take (the invocation's remaining time). */
  readonly waitBudgetMs: () => number;
  /** What identifies an outcome in the log (ids only: never a token). */
  readonly describe: (outcome: O) => Record<string, unknown>;
  readonly logger: AppLogger;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** @default Math.random */
  readonly random?: () => number;
}

/**
 * Writes outcomes back so that a failing statement loses as little as possible:
 * 1. a transient failure (serialization failure, deadlock, timeout, reset connection) is
 *    retried with backoff, as long as the invocation has time for the wait;
 * 2. a set that still fails is written in halves, down to single outcomes, so that one row
 *    the database refuses (or a statement too big for the time left) fails alone;
 * 3. what could not be written is logged (one error line per outcome, ids only) and returned.
 * A database that stays unavailable (the adapter has already retried it) is not split: every
 * smaller statement would fail the same way. Unwritten outcomes keep their lease, which
 * expires, and are done again by a later run.
 */
export async function writeResiliently<O>(
  outcomes: readonly O[],
  o: ResilientWriteOptions<O>,
): Promise<{ written: O[]; unwritten: O[] }> {
  const written: O[] = [];
  const unwritten: O[] = [];
  const giveUp = (set: readonly O[], error: unknown) => {
    for (const outcome of set) {
      unwritten.push(outcome);
      o.logger.error('Could not write an outcome back', { ...o.describe(outcome), error: describeError(error) });
    }
  };
  const attempt = async (set: readonly O[]): Promise<void> => {
    try {
      await retry(() => o.write([...set]), {
        maxAttempts: o.attempts ?? 3,
        baseDelayMs: o.baseDelayMs ?? 200,
        maxDelayMs: o.maxDelayMs ?? 2000,
        random: o.random,
        sleep: o.sleep,
        waitBudgetMs: o.waitBudgetMs,
        isRetryable: isTransientDatabaseError,
      });
      written.push(...set);
    } catch (error) {
      const cause = error instanceof DeadlineExceededError ? error.cause : error;
      const last = (cause as { name?: string })?.name === 'RetriesExhaustedError' ? (cause as Error).cause : cause;
      if (set.length === 1 || last instanceof DatabaseUnavailableError || o.waitBudgetMs() <= 0) {
        giveUp(set, last);
        return;
      }
      const half = Math.ceil(set.length / 2);
      await attempt(set.slice(0, half));
      await attempt(set.slice(half));
    }
  };
  if (outcomes.length > 0) await attempt(outcomes);
  return { written, unwritten };
}
