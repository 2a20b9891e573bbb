import { ADAPTIVE_RATE } from '../../../lambda/shared/amazon/adaptive-rate';
import { EndpointLimiter } from '../../../lambda/shared/amazon/rate-limiter';

// What an endpoint limiter takes over from an earlier invocation (lambda/shared/amazon/rate-limiter.ts,
// `restore`, fed from rate_limit_tracking by lambda/shared/jobs/throttling.ts): a lower rate and a
// pause in force, never a rate above today's ceiling or above a cut made since, never a shorter
// pause. Written to hold however the limiter is built inside (a clamp or a refusal of the value).

const CEILING = 10;
const limits = { ratePerSecond: CEILING, burst: CEILING, maxConcurrency: 4 };

function limiter(now = 1_000_000) {
  const clock = { now };
  return { clock, limiter: new EndpointLimiter(limits, { now: () => clock.now, sleep: () => Promise.resolve() }) };
}

test('a restored rate above the ceiling (a run under a higher ceiling) is not taken over', () => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: 50 });
  expect(l.allowedRate()).toBeLessThanOrEqual(CEILING);
  expect(l.bucket.ratePerSecond()).toBeLessThanOrEqual(CEILING);
});

test('a restored rate above a cut made since is not taken over: the cut stands', () => {
  const { limiter: l } = limiter();
  l.throttled(1);
  const cut = l.allowedRate();
  expect(cut).toBe(CEILING * ADAPTIVE_RATE.decrease);
  l.restore({ allowedRatePerSecond: 8 });
  expect(l.allowedRate()).toBe(cut);
});

test('a lower restored rate is taken over, but never below the floor', () => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: 2 });
  expect(l.allowedRate()).toBe(2);
  const { limiter: m } = limiter();
  m.restore({ allowedRatePerSecond: CEILING * ADAPTIVE_RATE.minFraction * 0.01 });
  expect(m.allowedRate()).toBe(CEILING * ADAPTIVE_RATE.minFraction);
});

test.each([[0], [-3], [Number.NaN]])('a restored rate of %p changes nothing', (rate) => {
  const { limiter: l } = limiter();
  l.restore({ allowedRatePerSecond: rate });
  expect(l.allowedRate()).toBe(CEILING);
});

test('a restored pause never shortens the pause in force', () => {
  const { clock, limiter: l } = limiter();
  l.pauseFor(60);
  const until = l.bucket.pausedUntilMs();
  expect(until).toBe(clock.now + 60_000);
  l.restore({ pausedUntilMs: clock.now + 5_000 });
  expect(l.bucket.pausedUntilMs()).toBe(until);
  l.restore({ pausedUntilMs: clock.now + 120_000 });
  expect(l.bucket.pausedUntilMs()).toBe(clock.now + 120_000);
});
