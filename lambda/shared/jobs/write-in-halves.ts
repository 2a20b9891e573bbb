import { DatabaseError, DatabaseUnavailableError, TransactionExpiredError } from '../db/port';

/**
 * Whether a failed write-back statement may have failed because of the data it carried (a
 * value PostgreSQL refuses, a request over the Data API's size limit), so that writing
 * fewer rows at a time can succeed. SQLSTATE classes 22 (data exception), 23 (integrity) and
 * 54 (program limit exceeded) when the adapter knows the code (node-postgres); the Data API
 * reports no code, so any statement error it answers counts. An unavailable database or a lost
 * transaction never does: halving would only multiply the calls.
 */
export function mayBeDataError(error: unknown): boolean {
  if (!(error instanceof DatabaseError)) return false;
  if (error instanceof DatabaseUnavailableError || error instanceof TransactionExpiredError) return false;
  return error.code === undefined || /^(22|23|54)/.test(error.code);
}

export interface RejectedItem<T> {
  readonly item: T;
  readonly error: unknown;
}

/**
 * Writes `items` with `write`; when that fails with what may be a data error
 * ({@link mayBeDataError}), writes each half on its own, down to single items, so one row the
 * database refuses fails only itself. Returns the single items that were still refused (the
 * caller records them some other way); any other error is thrown as it is.
 */
export async function writeInHalves<T>(
  items: readonly T[],
  write: (items: readonly T[]) => Promise<void>,
): Promise<Array<RejectedItem<T>>> {
  if (items.length === 0) return [];
  try {
    await write(items);
    return [];
  } catch (error) {
    if (!mayBeDataError(error)) throw error;
    if (items.length === 1) return [{ item: items[0], error }];
    const middle = Math.ceil(items.length / 2);
    const first = await writeInHalves(items.slice(0, middle), write);
    const second = await writeInHalves(items.slice(middle), write);
    return [...first, ...second];
  }
}

/** The first line of a database error's message, at most 200 characters: never the rows' values. */
export function databaseErrorSummary(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n', 1)[0].slice(0, 200);
}
