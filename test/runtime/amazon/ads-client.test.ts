import { AccessTokenRejectedError, MalformedResponseError, TransientError } from '../../../lambda/shared/amazon';
import { fakeProfile } from '../../../local/amazon/profiles';
import { ads, failure, fake, lwa, newUser, SECRETS, useFakeAmazon } from './fixture';

/** The Ads client (lambda/shared/amazon/ads-client.ts) against the fake Amazon: wire shapes, regions and every error class. */
useFakeAmazon();

describe('Ads client', () => {
  test('lists the user’s profiles of the requested region only, with exact profile ids', async () => {
    const na = fakeProfile('NA', { profileId: '9007199254740993' });
    const eu = fakeProfile('EU', { accountInfo: { type: 'vendor', subType: 'KDP_AUTHOR' } });
    const user = newUser({ profiles: [na, eu, fakeProfile('FE')] });
    const access = fake.accessTokens(user.userId)[0];
    const naProfiles = await ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: access });
    const euProfiles = await ads().listProfiles({ itemId: user.userId, region: 'EU', accessToken: access });
    const { region: _na, ...naWire } = na;
    const { region: _eu, ...euWire } = eu;
    expect(naProfiles).toEqual([naWire]);
    expect(naProfiles[0].profileId).toBe('9007199254740993');
    expect(euProfiles).toEqual([euWire]);
    expect(fake.counters.profileCalls(user.userId)).toBe(2);
  });

  test('a user without profiles gets an empty list', async () => {
    const user = newUser();
    await expect(
      ads().listProfiles({ itemId: user.userId, region: 'FE', accessToken: fake.accessTokens(user.userId)[0] }),
    ).resolves.toEqual([]);
  });

  test('a refreshed access token is accepted; a rejected one is AccessTokenRejectedError', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    const { accessToken } = await lwa().refresh({ itemId: 't', region: 'NA', refreshToken: user.refreshToken });
    SECRETS.push(accessToken);
    await expect(ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken })).resolves.toHaveLength(1);
    fake.expireAccessTokens(user.userId);
    const error = await failure(ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken }));
    expect(error).toBeInstanceOf(AccessTokenRejectedError);
    expect(error).toMatchObject({ itemId: user.userId, status: 401 });
  });

  test('the client id header is required', async () => {
    const user = newUser();
    const error = await failure(
      ads({ clientId: 'someone-else' }).listProfiles({
        itemId: user.userId,
        region: 'NA',
        accessToken: fake.accessTokens(user.userId)[0],
      }),
    );
    expect(error).toBeInstanceOf(AccessTokenRejectedError);
  });

  test('transient failures are retried with backoff (listing is idempotent)', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    const delays: number[] = [];
    fake.setKnobs({ failFirstN: 2 }, 'ads');
    const profiles = await ads({
      retry: {
        maxAttempts: 3,
        baseDelayMs: 100,
        maxDelayMs: 150,
        random: () => 0.5,
        sleep: async (ms) => void delays.push(ms),
      },
    }).listProfiles({
      itemId: user.userId,
      region: 'NA',
      accessToken: fake.accessTokens(user.userId)[0],
    });
    expect(profiles).toHaveLength(1);
    expect(fake.counters.profileCalls(user.userId)).toBe(3);
    expect(delays).toEqual([50, 75]);
  });

  test('retries spent: the last TransientError surfaces', async () => {
    const user = newUser();
    fake.setKnobs({ rate5xx: 1 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toBeInstanceOf(TransientError);
    expect([500, 503]).toContain(error.status);
    expect(fake.counters.profileCalls(user.userId)).toBe(3);
  });

  test('429 is RateLimitedError and is not retried', async () => {
    const user = newUser();
    fake.setKnobs({ rate429: 1, retryAfterSeconds: 3 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'FE', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toMatchObject({ retryAfterSeconds: 3, endpoint: 'ads', region: 'FE' });
    expect(fake.counters.profileCalls(user.userId)).toBe(1);
  });

  test.each([1, 2, 3, 4])('malformed bodies are MalformedResponseError (sample %i)', async () => {
    const user = newUser({ profiles: [fakeProfile('NA')] });
    fake.setKnobs({ malformedRate: 1 }, 'ads');
    const error = await failure(
      ads().listProfiles({ itemId: user.userId, region: 'NA', accessToken: fake.accessTokens(user.userId)[0] }),
    );
    expect(error).toBeInstanceOf(MalformedResponseError);
  });

  test('a hanging endpoint times out as a TransientError after the retries', async () => {
    const user = newUser();
    fake.setKnobs({ hangRate: 1 }, 'ads');
    const error = await failure(
      ads({ timeoutMs: 100, retry: { maxAttempts: 2, sleep: async () => undefined } }).listProfiles({
        itemId: user.userId,
        region: 'NA',
        accessToken: fake.accessTokens(user.userId)[0],
      }),
    );
    expect(error).toMatchObject({ reason: 'timeout' });
    expect(fake.counters.byStatus('ads')[0]).toBe(2);
  });
});
