import { nextRetryAt } from '../../lambda/shared/jobs/runtime';

/** The jobs' retry schedule: capped, never straight away, never past the configured maximum. */
const now = new Date('2030-01-01T00:00:00Z');
/** The jitter's extremes: Math.random() returns values in [0, 1). */
const JITTER_EXTREMES = [0, 0.5, 1 - Number.EPSILON];
/** The jobs' settings: token refresh (60 s doubling to 3,600 s) and account sync (300 s to 21,600 s). */
const SCHEDULES = [
  { baseSeconds: 60, maxSeconds: 3600 },
  { baseSeconds: 300, maxSeconds: 21_600 },
];

describe('nextRetryAt', () => {
  test.each(SCHEDULES)(
    'never later than now plus the maximum, at any failure count and jitter ($baseSeconds s … $maxSeconds s)',
    ({ baseSeconds, maxSeconds }) => {
      for (const failures of [1, 5, 6, 7, 10, 20, 60, 1000])
        for (const r of JITTER_EXTREMES) {
          const at = nextRetryAt(now, failures, { baseSeconds, maxSeconds, random: () => r });
          expect(at.getTime() - now.getTime()).toBeLessThanOrEqual(maxSeconds * 1000);
        }
    },
  );

  test.each(SCHEDULES)(
    'reaches the cap at high failure counts: between half the maximum and the maximum ($maxSeconds s)',
    ({ baseSeconds, maxSeconds }) => {
      const delay = (failures: number, r: number) =>
        nextRetryAt(now, failures, { baseSeconds, maxSeconds, random: () => r }).getTime() - now.getTime();
      expect(delay(1000, 0)).toBe(maxSeconds * 500);
      expect(delay(1000, 1 - Number.EPSILON)).toBeGreaterThan(maxSeconds * 1000 - 1000);
      expect(delay(1000, 1 - Number.EPSILON)).toBeLessThanOrEqual(maxSeconds * 1000);
    },
  );

  test('grows with each failure below the cap and is never sooner than half its ceiling', () => {
    const o = { baseSeconds: 60, maxSeconds: 3600, random: () => 0 };
    const delays = [1, 2, 3, 4].map((f) => nextRetryAt(now, f, o).getTime() - now.getTime());
    expect(delays).toEqual([30_000, 60_000, 120_000, 240_000]);
  });

  test('a Retry-After longer than the backoff wins', () => {
    const at = nextRetryAt(now, 1, { baseSeconds: 60, maxSeconds: 3600, random: () => 0, atLeastSeconds: 900 });
    expect(at.getTime() - now.getTime()).toBe(900_000);
  });
});
