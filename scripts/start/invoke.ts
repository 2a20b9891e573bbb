import { appendFileSync } from 'node:fs';
import { LOG_FILE } from './local-state';

export interface LocalContext {
  readonly awsRequestId: string;
  getRemainingTimeInMillis(): number;
}

/**
 * Runs a Lambda handler in this process, as Lambda would: a context with a deadline, and the
 * function's stdout/stderr (Powertools' JSON logs and EMF metrics) going to the log file.
 */
export async function invoke<T>(
  name: string,
  handler: (event: unknown, context: LocalContext) => Promise<T>,
  event: unknown,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const context = {
    awsRequestId: `local-${name}-${Date.now()}`,
    getRemainingTimeInMillis: () => deadline - Date.now(),
  };
  const original = { out: process.stdout.write.bind(process.stdout), err: process.stderr.write.bind(process.stderr) };
  const toLog = ((chunk: string | Uint8Array) => {
    appendFileSync(LOG_FILE, chunk);
    return true;
  }) as typeof process.stdout.write;
  process.stdout.write = toLog;
  process.stderr.write = toLog;
  try {
    return await handler(event, context);
  } finally {
    process.stdout.write = original.out;
    process.stderr.write = original.err;
  }
}
