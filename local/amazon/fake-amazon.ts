import { createServer } from 'node:http';
import { AddressInfo, Socket } from 'node:net';
import { AmazonRegion, isAmazonRegion } from '../../lambda/shared/amazon/regions';
import { adsEndpoint } from './ads';
import { Connections } from './connections';
import { consentPage } from './consent-page';
import { lwaEndpoint } from './lwa';
import { createMisbehaviour } from './misbehaviour';
import type { FakeAmazon, StartFakeAmazonOptions } from './types';

export type {
  FakeAmazon,
  FakeAmazonCounters,
  FakeAmazonKnobs,
  FakeEndpoint,
  FakeUser,
  RefreshTokenMode,
  StartFakeAmazonOptions,
} from './types';

/**
 * A fake Amazon on 127.0.0.1: the Login with Amazon token endpoint and the Ads API profiles
 * endpoint with the wire shapes of docs/architecture.md, for tests, `npm start` and the benchmark.
 *
 * One server serves every region. The region is the first path segment, or the default NA
 * when absent:
 *   POST {url}/{region}/auth/o2/token     GET {url}/{region}/v2/profiles
 * so clients are pointed at it with `{region}` templates:
 *   new LwaClient({ tokenUrl: fake.lwaTokenUrl, … })   // `${url}/{region}/auth/o2/token`
 *   new AdsClient({ baseUrl: fake.adsBaseUrl, … })      // `${url}/{region}`
 * (`LWA_TOKEN_URL` / `ADS_API_URL` take the same templates.) A Host header naming one of
 * Amazon's regional hosts (api.amazon.co.uk, advertising-api-fe.amazon.com…) also selects the region.
 *
 * Regions are kept apart as Amazon Ads keeps them: a region's host lists only that region's
 * profiles, and a user connected per region (FakeUser.region, one addUser per connection) has
 * a refresh token that only that region's token endpoint accepts (`invalid_grant` elsewhere)
 * and access tokens that only that region's Ads host accepts (401 elsewhere), so a job that
 * uses the wrong host fails loudly. A FakeUser without a region is one connection valid in
 * every region (its profiles still filtered by the host's region).
 *
 * Behaviour is deterministic for a given seed and request order.
 */
const REGION_HOSTS: Record<string, AmazonRegion> = {
  'api.amazon.com': 'NA',
  'api.amazon.co.uk': 'EU',
  'api.amazon.co.jp': 'FE',
  'advertising-api.amazon.com': 'NA',
  'advertising-api-eu.amazon.com': 'EU',
  'advertising-api-fe.amazon.com': 'FE',
};
export async function startFakeAmazon(options: StartFakeAmazonOptions = {}): Promise<FakeAmazon> {
  const clientId = options.clientId ?? 'amzn1.application-oa2-client.fake';
  let clientSecret = options.clientSecret ?? 'fake-client-secret';
  const registry = new Connections();
  const behaviour = createMisbehaviour(options.knobs, options.seed ?? 1);
  const lwa = lwaEndpoint({
    clientId,
    clientSecret: () => clientSecret,
    expiresIn: options.expiresInSeconds ?? 3600,
    registry,
    behaviour,
  });
  const ads = adsEndpoint({ clientId, registry, behaviour });
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = new URL(req.url ?? '/', 'http://fake').pathname;
      const segments = path.split('/').filter(Boolean);
      const host = (req.headers.host ?? '').split(':')[0];
      let region: AmazonRegion = REGION_HOSTS[host] ?? 'NA';
      if (isAmazonRegion(segments[0])) region = segments.shift() as AmazonRegion;
      const route = `/${segments.join('/')}`;
      const handled =
        route === '/auth/o2/token'
          ? lwa.handle(req, res, Buffer.concat(chunks).toString('utf8'), region)
          : route === '/v2/profiles'
            ? ads.handle(req, res, region)
            : route === '/ap/oa'
              ? Promise.resolve(
                  consentPage({ clientId, registry, lwa }, req, res, region, Buffer.concat(chunks).toString('utf8')),
                )
              : Promise.resolve(
                  void res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not Found"}'),
                );
      handled.catch(() => {
        if (!res.headersSent && !res.destroyed) res.writeHead(500).end();
      });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    lwaTokenUrl: `${url}/{region}/auth/o2/token`,
    adsBaseUrl: `${url}/{region}`,
    consentUrl: `${url}/{region}/ap/oa`,
    issueAuthorizationCode: (userId, redirectUri, region, codeChallenge) =>
      lwa.issueAuthorizationCode(userId, redirectUri, region, codeChallenge),
    clientId,
    get clientSecret() {
      return clientSecret;
    },
    rotateClientSecret(secret) {
      clientSecret = secret;
    },
    addUser: (input) => registry.add(input),
    addProfiles: (userId, profiles) => registry.addProfiles(userId, profiles),
    removeProfiles: (userId, profileIds) => registry.removeProfiles(userId, profileIds),
    currentRefreshToken: (userId, region) => registry.user(userId, region).refreshToken,
    accessTokens: (userId, region) => [...registry.user(userId, region).accessTokens],
    revoke: (userId, region) => registry.revoke(userId, region),
    reconnect: (userId, region) => registry.reconnect(userId, region),
    expireAccessTokens: (userId, region) => registry.expireAccessTokens(userId, region),
    setKnobs: (changes, endpoint) => behaviour.setKnobs(changes, endpoint),
    counters: {
      refreshCalls: (refreshToken) => lwa.refreshCalls.get(refreshToken) ?? 0,
      refreshSuccesses: (userId, region) => lwa.refreshSuccesses.get(userId, region),
      profileCalls: (userId, region) => ads.profileCalls.get(userId, region),
      total: (endpoint) => (endpoint === 'lwa' ? lwa.total() : ads.total()),
      authorizationCodeCalls: () => lwa.authorizationCodeCalls(),
      byStatus: (endpoint) => behaviour.byStatus(endpoint),
      arrivals: (endpoint, region) => behaviour.arrivals(endpoint, region),
      limitedAt: (endpoint, region) => behaviour.limitedAt(endpoint, region),
      busiestSecond: (endpoint, region) => behaviour.busiestSecond(endpoint, region),
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
