/**
 * Polling until a condition holds, for what a test cannot be told about (a report sent in the
 * background, another session reaching a lock wait): `probe` is called until `done` holds for
 * its value, `intervalMs` apart, against a deadline. Returns the last value either way, so the
 * test's own assertion on it shows what was there when the deadline passed.
 *
 * `abort` is checked before each probe: a reason it returns ends the wait with that error (for
 * example, the work the test waits to see waiting has already finished).
 */
export async function pollUntil<T>(
  probe: () => Promise<T>,
  done: (value: T) => boolean,
  options: { timeoutMs?: number; intervalMs?: number; abort?: () => string | undefined } = {},
): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 50, abort } = options;
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const reason = abort?.();
    if (reason !== undefined) throw new Error(reason);
    const value = await probe();
    if (done(value) || performance.now() >= deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
