import { AdsClient, AmazonApiError, LwaClient } from '../../../lambda/shared/amazon';
import { RateLimiterRegistry } from '../../../lambda/shared/amazon/rate-limiter';
import { FakeAmazon, startFakeAmazon } from '../../../local/amazon/fake-amazon';

/**
 * What the Amazon clients' tests share: a fake Amazon per test (`fake`, `limiters`, started
 * and closed by useFakeAmazon's hooks), clients pointed at it, users added to it, and
 * `failure`, which also checks that no token or secret the test has seen reaches the error.
 * `fake` and `limiters` are live bindings: read them inside a test, not at load time.
 */
export let fake: FakeAmazon;
export let limiters: RateLimiterRegistry;
/** Every token and secret a test has seen; `failure` checks that none reaches an error. */
export const SECRETS: string[] = [];
let userCount = 0;

/** Starts a fake Amazon (seed 42) and fresh limiters before each test of the file, closes it after. */
export function useFakeAmazon(): void {
  beforeEach(async () => {
    fake = await startFakeAmazon({ seed: 42 });
    limiters = new RateLimiterRegistry({
      lwa: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 50 },
      ads: { ratePerSecond: 1000, burst: 1000, maxConcurrency: 50 },
    });
    SECRETS.push(fake.clientSecret);
  });
  afterEach(async () => {
    await fake.close();
  });
}

export function lwa(overrides: Partial<ConstructorParameters<typeof LwaClient>[0]> = {}) {
  return new LwaClient({
    clientId: fake.clientId,
    clientSecret: fake.clientSecret,
    tokenUrl: fake.lwaTokenUrl,
    limiters,
    timeoutMs: 2000,
    ...overrides,
  });
}
export function ads(overrides: Partial<ConstructorParameters<typeof AdsClient>[0]> = {}) {
  return new AdsClient({
    clientId: fake.clientId,
    baseUrl: fake.adsBaseUrl,
    limiters,
    timeoutMs: 2000,
    retry: { sleep: async () => undefined },
    ...overrides,
  });
}
export function newUser(options: Partial<Parameters<FakeAmazon['addUser']>[0]> = {}) {
  userCount += 1;
  const user = { userId: `user-${userCount}`, refreshToken: `Atzr|secret-refresh-${userCount}`, ...options };
  fake.addUser(user);
  SECRETS.push(user.refreshToken, `Atza|fake-initial-${user.userId}`);
  return user;
}
export async function failure(promise: Promise<unknown>): Promise<AmazonApiError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AmazonApiError);
  // No token, secret or header ever reaches an error (message, fields or cause chain).
  const seen = new Set<unknown>();
  let text = '';
  for (let e: unknown = error; e && !seen.has(e); e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    text += `${String((e as Error).message)} ${JSON.stringify(e)} `;
  }
  for (const secret of SECRETS) expect(text).not.toContain(secret);
  expect(text).not.toMatch(/Bearer|Atza\||Atzr\|/);
  return error as AmazonApiError;
}
