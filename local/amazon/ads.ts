import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import { Connections, PerUserCounts } from './connections';
import { sentAtOf, type Misbehaviour } from './misbehaviour';
import { profilesToWireJson } from './profiles';

/** The Ads API's profiles endpoint (`GET /{region}/v2/profiles`): a connection's profiles in the host's region. */
export interface AdsEndpoint {
  handle(req: IncomingMessage, res: ServerResponse, region: AmazonRegion): Promise<void>;
  readonly profileCalls: PerUserCounts;
  total(): number;
}

export function adsEndpoint(options: {
  clientId: string;
  registry: Connections;
  behaviour: Misbehaviour;
}): AdsEndpoint {
  const { clientId, registry, behaviour } = options;
  let total = 0;
  const profileCalls = new PerUserCounts();
  async function profilesEndpoint(req: IncomingMessage, res: ServerResponse, region: AmazonRegion): Promise<void> {
    total += 1;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const state = token ? registry.byAccessToken.get(token) : undefined;
    if (state) profileCalls.bump(state.userId, region);
    if (await behaviour.misbehave(res, 'ads', region, sentAtOf(req.headers))) return;
    const unauthorized = () =>
      behaviour.answer(
        res,
        'ads',
        401,
        JSON.stringify({ code: '401', details: 'Authentication failed', requestId: randomUUID() }),
      );
    if (req.method !== 'GET') return behaviour.answer(res, 'ads', 405, '{"code":"405","details":"Method Not Allowed"}');
    if (!state || req.headers['amazon-advertising-api-clientid'] !== clientId) return unauthorized();
    // A connection's access token is good only on its own region's host.
    if (state.region && state.region !== region) return unauthorized();
    const bad = behaviour.malformed('ads');
    if (bad !== undefined) return behaviour.answer(res, 'ads', 200, bad);
    behaviour.answer(res, 'ads', 200, profilesToWireJson(state.profiles.filter((p) => p.region === region)));
  }

  return { handle: profilesEndpoint, profileCalls, total: () => total };
}
