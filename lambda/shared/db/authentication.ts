import { DatabaseError } from './port';

/**
 * Rotation of a login's password (Secrets Manager, single user): the rotation function first
 * changes the password in the database (setSecret), tests it, and only then makes the new
 * version of the secret current (finishSecret). In between, a new connection made with the
 * secret's current (old) password is refused with SQLSTATE 28P01, for a few seconds each
 * month. Both adapters send such a call once more after a short pause: the Data API reads the
 * secret's current version on each call, and node-postgres asks the pool's `password` again
 * for each new connection (a function reading the secret when one is given). Never more than
 * once: a password that is still refused after the pause is a real failure.
 */
export const AUTHENTICATION_RETRY_DELAY_MS = 1_500;

/**
 * Whether the database refused the login's password: SQLSTATE 28P01 (node-postgres gives the
 * code), or the message as the Data API renders it (`…password authentication failed for
 * user "…"; SQLState: 28P01`, as DatabaseErrorException; BadRequestException from older
 * clusters). The statement never ran: the connection was refused before it.
 */
export function isAuthenticationFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = error instanceof DatabaseError ? error.code : (error as { code?: unknown }).code;
  return code === '28P01' || /password authentication failed|SQLState: 28P01/i.test(error.message);
}

export interface AuthenticationRetryOptions {
  /** The pause before the one retry; `false`: no retry. @default {@link AUTHENTICATION_RETRY_DELAY_MS} */
  readonly delayMs: number | false;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** How long waiting may still take (the caller's deadline); the pause must fit. @default - no limit */
  readonly waitBudgetMs?: () => number;
  /** Called before the pause. */
  readonly onRetry?: () => void;
}

/** Runs `call`; after a refused password, once more after the pause, if it fits the budget. */
export async function retryingAuthentication<T>(call: () => Promise<T>, o: AuthenticationRetryOptions): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (o.delayMs === false || !isAuthenticationFailure(error)) throw error;
    if (o.delayMs > (o.waitBudgetMs?.() ?? Infinity)) throw error;
    o.onRetry?.();
    await (o.sleep ?? ((ms) => new Promise<void>((resolve) => setTimeout(resolve, ms))))(o.delayMs);
    return call();
  }
}
