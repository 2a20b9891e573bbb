/**
 * Wrappers that time what a job core waits for: every database call and every Amazon call,
 * so a run can say where its time went (used by the scale simulation and by diagnostics).
 */
import { performance } from 'node:perf_hooks';
import type { Database, DatabaseCallCounts, QueryResult, Row, SqlParams } from '../lambda/shared/db/port';

export interface CallTimes {
  calls: number;
  totalMs: number;
  maxMs: number;
}

export const emptyTimes = (): CallTimes => ({ calls: 0, totalMs: 0, maxMs: 0 });

async function timed<T>(times: CallTimes, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await fn();
  } finally {
    const ms = performance.now() - started;
    times.calls += 1;
    times.totalMs += ms;
    times.maxMs = Math.max(times.maxMs, ms);
  }
}

/** A short name for a statement: its first words, whitespace collapsed. */
export function statementLabel(sql: string): string {
  return sql.replace(/\s+/g, ' ').trim().slice(0, 60);
}

/**
 * A database port that delegates every call and records how long each took (wall clock), in
 * total and per statement.
 */
export class TimedDatabase implements Database {
  readonly times: CallTimes = emptyTimes();
  readonly byStatement = new Map<string, CallTimes>();
  constructor(private readonly inner: Database) {}
  query<T extends object = Row>(sql: string, params?: SqlParams): Promise<QueryResult<T>> {
    return timed(this.times, () => timed(this.statement(sql), () => this.inner.query<T>(sql, params)));
  }
  batch(sql: string, paramSets: readonly SqlParams[]): Promise<void> {
    return timed(this.times, () => timed(this.statement(`[batch] ${sql}`), () => this.inner.batch(sql, paramSets)));
  }
  private statement(sql: string): CallTimes {
    const label = statementLabel(sql);
    let times = this.byStatement.get(label);
    if (!times) this.byStatement.set(label, (times = emptyTimes()));
    return times;
  }
  transaction<T>(fn: (tx: Database) => Promise<T>): Promise<T> {
    return timed(this.times, () => this.inner.transaction(fn));
  }
  callCounts(): DatabaseCallCounts {
    return this.inner.callCounts();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Wraps every method of an Amazon client so each call's duration is recorded. */
export function timeCalls<T extends object>(client: T, times: CallTimes): T {
  return new Proxy(client, {
    get(target, key, receiver) {
      const value = Reflect.get(target, key, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) =>
        timed(times, () => (value as (...a: unknown[]) => Promise<unknown>).apply(target, args));
    },
  });
}
