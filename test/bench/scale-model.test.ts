import { MODEL_DEFAULTS, runModel } from '../../bench/scale-model';
import { refreshVerdict } from '../../bench/simulate-scale';

/**
 * The scale model's Login with Amazon refreshes against the minimum: one per used connection per
 * token lifetime, one per idle connection per sync cycle (the sync takes the token on demand
 * instead of marking the connection used; the proactive window is just in time).
 */
test('an idle connection is refreshed about once per sync cycle, a used one about once per token lifetime', () => {
  const m = runModel({ ...MODEL_DEFAULTS, connections: 3_000, lwaPerSecond: 5, adsPerSecond: 5, hours: 12 });
  const r = m.refreshes;
  expect(r.minimumPerUsedConnectionHour).toBe(1);
  expect(r.minimumPerIdleConnectionCycle).toBe(1);
  expect(r.perIdleConnectionCycle).toBeGreaterThan(0.9);
  expect(r.perIdleConnectionCycle).toBeLessThanOrEqual(1.05);
  expect(r.perUsedConnectionHour).toBeGreaterThan(0.95);
  expect(r.perUsedConnectionHour).toBeLessThan(1.25);
  expect(refreshVerdict('m', m).ok).toBe(true);
  expect(m.usesWithExpiredToken).toBe(0);
});

test('the 30-minute window the stack had renewed a used connection about 1.7 times an hour: past the 10 % the verdict allows', () => {
  const m = runModel({
    ...MODEL_DEFAULTS,
    connections: 3_000,
    usedShare: 1,
    lwaPerSecond: 5,
    adsPerSecond: 5,
    hours: 6,
    refreshWindowSeconds: 1800,
  });
  expect(m.refreshes.perUsedConnectionHour).toBeGreaterThan(1.5);
  expect(refreshVerdict('m', m).ok).toBe(false);
});
