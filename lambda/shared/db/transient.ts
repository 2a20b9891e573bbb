import { DatabaseError, DatabaseUnavailableError } from './port';

/**
 * SQLSTATEs after which the same statement, sent again, may well succeed: serialization
 * failure, deadlock, lock or statement timeout, the server shutting the session down,
 * connection failures, too many connections.
 */
const TRANSIENT_SQLSTATES = new Set([
  '40001',
  '40P01',
  '55P03',
  '57014',
  '57P01',
  '57P02',
  '57P03',
  '08000',
  '08001',
  '08003',
  '08004',
  '08006',
  '53300',
]);
/** node-postgres' network errors (their `code`). */
const TRANSIENT_CODES = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT']);
/**
 * The same conditions as the Data API reports them (it gives PostgreSQL's message, no
 * SQLSTATE), and its own statement timeout.
 */
const TRANSIENT_MESSAGES =
  /could not serialize access|deadlock detected|canceling statement due to (statement|lock) timeout|could not obtain lock|terminating connection|connection (was )?(reset|terminated|closed)|server closed the connection/i;
const TRANSIENT_NAMES = new Set(['StatementTimeoutException']);

/**
 * Whether a failed statement is worth sending again as it is. Not {@link DatabaseUnavailableError}:
 * the adapter has already retried that one for as long as it takes a cluster to resume.
 */
export function isTransientDatabaseError(error: unknown): boolean {
  if (!(error instanceof DatabaseError) || error instanceof DatabaseUnavailableError) return false;
  const cause = error.cause as { name?: string; code?: string } | undefined;
  return (
    (error.code !== undefined && (TRANSIENT_SQLSTATES.has(error.code) || TRANSIENT_CODES.has(error.code))) ||
    TRANSIENT_NAMES.has(cause?.name ?? '') ||
    TRANSIENT_CODES.has(cause?.code ?? '') ||
    TRANSIENT_MESSAGES.test(error.message)
  );
}
