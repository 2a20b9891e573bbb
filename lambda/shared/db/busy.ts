import { DatabaseError, DatabaseUnavailableError } from './port';

/**
 * SQLSTATEs of a database that is busy, not of a wrong request: a statement timeout (57014),
 * too many connections (53300), a lock not had in time (55P03), a serialization failure or
 * deadlock (40001, 40P01), a database starting or shutting down (57P03).
 */
const BUSY_SQLSTATES = ['57014', '53300', '55P03', '40001', '40P01', '57P03'];
const BUSY_MESSAGE = new RegExp(
  `SQLState: (${BUSY_SQLSTATES.join('|')})\\b|canceling statement due to statement timeout`,
);

/**
 * The database could not serve the request now (still resuming after every retry, or one of
 * BUSY_SQLSTATES): the caller may try again shortly. The answer of the accounts API and of the
 * token route is then 503 `database-busy` with Retry-After, not 500. node-postgres reports the
 * SQLSTATE; the Data API reports only the message (the emulator sends PostgreSQL's own message;
 * the service adds `SQLState: …` to it), so the message is matched too.
 */
export function isDatabaseBusy(error: unknown): boolean {
  if (error instanceof DatabaseUnavailableError) return true;
  if (!(error instanceof DatabaseError)) return false;
  if (error.code !== undefined) return BUSY_SQLSTATES.includes(error.code);
  return BUSY_MESSAGE.test(error.message);
}
