/**
 * The most of `times` (epoch ms, in any order) within any one second, a sliding window
 * (t - 999 … t ms): what Amazon's limit per second counts, for the fake Amazon's arrivals, a
 * budget's slots or a client's sends.
 */
export function busiestSecond(times: readonly number[]): number {
  const sorted = [...times].sort((a, b) => a - b);
  let most = 0;
  for (let i = 0, j = 0; i < sorted.length; i += 1) {
    while (sorted[i] - sorted[j] >= 1000) j += 1;
    most = Math.max(most, i - j + 1);
  }
  return most;
}
