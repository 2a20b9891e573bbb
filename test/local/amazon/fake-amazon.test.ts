import { get } from 'node:http';
import { LwaClient } from '../../../lambda/shared/amazon';
import { startFakeAmazon } from '../../../local/amazon/fake-amazon';
import { fakeProfile } from '../../../local/amazon/profiles';
import { SENT_AT_HEADER } from '../../../local/amazon/types';
import { fake, limiters, newUser, useFakeAmazon } from '../../runtime/amazon/fixture';

/** The fake Amazon (local/amazon/fake-amazon.ts) itself: what the clients' tests rely on it for. */
useFakeAmazon();

describe('fake Amazon', () => {
  test('knob randomness is deterministic for a seed', async () => {
    const sequence = async (seed: number) => {
      const f = await startFakeAmazon({ seed, knobs: { rate429: 0.3, retryAfterSeconds: 0, rate5xx: 0.3 } });
      f.addUser({ userId: 'u', refreshToken: 'r' });
      const client = new LwaClient({
        clientId: f.clientId,
        clientSecret: f.clientSecret,
        tokenUrl: f.lwaTokenUrl,
        limiters,
        defaultRetryAfterSeconds: 0,
      });
      const outcomes: string[] = [];
      for (let i = 0; i < 20; i++) {
        outcomes.push(
          await client.refresh({ itemId: 'i', region: 'NA', refreshToken: 'r' }).then(
            () => 'ok',
            (e: Error) => e.name,
          ),
        );
      }
      await f.close();
      return outcomes;
    };
    const a = await sequence(7);
    expect(await sequence(7)).toEqual(a);
    expect(new Set(a)).toEqual(new Set(['ok', 'RateLimitedError', 'TransientError']));
  });

  test('Amazon host names select the region too', async () => {
    const user = newUser({ profiles: [fakeProfile('EU')] });
    // fetch cannot set Host; node:http can, as a client resolving Amazon's host to the fake would.
    const [status, body] = await new Promise<[number | undefined, string]>((resolve, reject) => {
      const headers = {
        host: 'advertising-api-eu.amazon.com',
        authorization: `Bearer ${fake.accessTokens(user.userId)[0]}`,
        'amazon-advertising-api-clientid': fake.clientId,
      };
      get(`${fake.url}/v2/profiles`, { headers }, (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => resolve([res.statusCode, text]));
      }).on('error', reject);
    });
    expect(status).toBe(200);
    expect(JSON.parse(body)).toHaveLength(1);
  });

  test("Amazon's own limit: its 429 comes after the latency like any answer, and setting the limit again starts the count afresh", async () => {
    const post = async () => {
      const sent = Date.now();
      const r = await fetch(fake.lwaTokenUrl.replace('{region}', 'NA'), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `grant_type=refresh_token&refresh_token=unknown&client_id=${fake.clientId}&client_secret=${fake.clientSecret}`,
      });
      await r.text();
      return { status: r.status, tookMs: Date.now() - sent };
    };
    fake.setKnobs({ limitPerSecond: 2, latencyMs: 200 }, 'lwa');
    const first = await Promise.all([post(), post(), post()]);
    expect(first.map((a) => a.status).sort()).toEqual([400, 400, 429]);
    // Timers may fire a millisecond early; the answer is never far earlier than the latency.
    for (const answer of first) expect(answer.tookMs).toBeGreaterThanOrEqual(190);
    expect(fake.counters.limitedAt('lwa', 'NA')).toHaveLength(1);
    // Within the same second: still over the limit, until the limit is set again.
    expect((await post()).status).toBe(429);
    fake.setKnobs({ limitPerSecond: 2 }, 'lwa');
    expect((await Promise.all([post(), post()])).map((a) => a.status)).toEqual([400, 400]);
  });

  test("a client's sent-at stamp is when a call counts: for the limit and the arrivals, out of order or not; a bad stamp counts on arrival", async () => {
    const post = async (sentAt?: string) => {
      const r = await fetch(fake.lwaTokenUrl.replace('{region}', 'EU'), {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...(sentAt === undefined ? {} : { [SENT_AT_HEADER]: sentAt }),
        },
        body: `grant_type=refresh_token&refresh_token=unknown&client_id=${fake.clientId}&client_secret=${fake.clientSecret}`,
      });
      await r.text();
      return r.status;
    };
    fake.setKnobs({ limitPerSecond: 2, latencyMs: 0 }, 'lwa');
    const now = Date.now();
    const before = fake.counters.arrivals('lwa', 'EU').length;
    // Two calls stamped 3 s and 1.5 s ago reach the fake now, the later first: each is alone in its second.
    expect(await post(String(now - 1500))).toBe(400);
    expect(await post(String(now - 3000))).toBe(400);
    expect(await post(String(now - 2900))).toBe(400);
    // A third in the second of the first two is over the limit, though it arrives well after them.
    expect(await post(String(now - 2950))).toBe(429);
    expect(fake.counters.limitedAt('lwa', 'EU')).toEqual([now - 2950]);
    // Arrivals are the stamps, ascending.
    expect(fake.counters.arrivals('lwa', 'EU').slice(before)).toEqual([now - 3000, now - 2950, now - 2900, now - 1500]);
    // A second that starts at the new call's stamp counts the later calls too: 2 in [now - 1600, now - 600).
    expect(await post(String(now - 1600))).toBe(400);
    expect(await post(String(now - 1550))).toBe(429);
    // Stamps that are not 13 digits, or are in the future, count on arrival.
    const arrivedFrom = Date.now();
    for (const bad of ['soon', '-1', String(now + 60_000)]) {
      fake.setKnobs({ limitPerSecond: 1000 }, 'lwa');
      expect(await post(bad)).toBe(400);
    }
    expect(
      fake.counters
        .arrivals('lwa', 'EU')
        .slice(-3)
        .every((t) => t >= arrivedFrom),
    ).toBe(true);
  });

  test('the token endpoint answers the documented error shapes', async () => {
    const post = (body: string) =>
      fetch(`${fake.url}/auth/o2/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body,
      }).then(async (r) => [r.status, await r.json()]);
    expect(await post('grant_type=password')).toEqual([
      400,
      { error: 'unsupported_grant_type', error_description: expect.any(String) },
    ]);
    expect(await post('grant_type=refresh_token')).toEqual([
      400,
      { error: 'invalid_request', error_description: expect.any(String) },
    ]);
    expect(
      await post(`grant_type=refresh_token&refresh_token=x&client_id=${fake.clientId}&client_secret=nope`),
    ).toEqual([401, { error: 'invalid_client', error_description: expect.any(String) }]);
  });
});
