import type { AmazonRegion } from '../../lambda/shared/amazon/regions';
import type { FakeProfile } from './profiles';
import type { FakeUser, RefreshTokenMode } from './types';

/**
 * The fake Amazon's users and their connections (one per region, or one for every region):
 * the refresh and access tokens each connection holds now, and the lookups the endpoints use.
 */
export interface UserState {
  readonly userId: string;
  readonly region?: AmazonRegion;
  refreshToken: string;
  revoked: boolean;
  readonly mode: RefreshTokenMode;
  readonly accessTokens: string[];
  readonly profiles: FakeProfile[];
  issued: number;
}

/** Counters per user, and per user and region of the host called. */
export class PerUserCounts {
  private readonly counts = new Map<string, number>();
  bump(userId: string, region: AmazonRegion): void {
    for (const key of [userId, `${userId}/${region}`]) this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  get(userId: string, region?: AmazonRegion): number {
    return this.counts.get(region ? `${userId}/${region}` : userId) ?? 0;
  }
}

export class Connections {
  /** Each user's connections. */
  readonly users = new Map<string, UserState[]>();
  readonly byRefreshToken = new Map<string, UserState>();
  readonly byAccessToken = new Map<string, UserState>();

  /** The user's connections, or the one in `region` (a connection for every region counts too). */
  connections(userId: string, region?: AmazonRegion): UserState[] {
    const all = this.users.get(userId) ?? [];
    const found = region === undefined ? all : all.filter((c) => c.region === region || c.region === undefined);
    if (found.length === 0) throw new Error(`Fake Amazon: unknown user ${userId}${region ? ` in ${region}` : ''}`);
    return found;
  }

  user(userId: string, region?: AmazonRegion): UserState {
    const found = this.connections(userId, region);
    if (found.length > 1) throw new Error(`Fake Amazon: user ${userId} has several connections; name the region`);
    return found[0];
  }

  add(input: FakeUser): void {
    const existing = this.users.get(input.userId) ?? [];
    if (existing.some((c) => c.region === undefined || input.region === undefined || c.region === input.region))
      throw new Error(`Fake Amazon: user ${input.userId} exists${input.region ? ` in ${input.region}` : ''}`);
    const accessToken =
      input.accessToken ?? `Atza|fake-initial-${input.userId}${input.region ? `-${input.region}` : ''}`;
    const state: UserState = {
      userId: input.userId,
      region: input.region,
      refreshToken: input.refreshToken,
      revoked: false,
      mode: input.refreshTokenMode ?? 'echo',
      accessTokens: [accessToken],
      // One list per user, shared by the user's connections (each host lists its region's).
      profiles: existing[0]?.profiles ?? [],
      issued: 0,
    };
    state.profiles.push(...(input.profiles ?? []));
    this.users.set(input.userId, [...existing, state]);
    this.byRefreshToken.set(input.refreshToken, state);
    this.byAccessToken.set(accessToken, state);
  }

  addProfiles(userId: string, profiles: readonly FakeProfile[]): void {
    this.connections(userId)[0].profiles.push(...profiles);
  }

  removeProfiles(userId: string, profileIds: readonly string[]): void {
    const shared = this.connections(userId)[0].profiles;
    shared.splice(0, shared.length, ...shared.filter((p) => !profileIds.includes(p.profileId)));
  }

  revoke(userId: string, region?: AmazonRegion): void {
    for (const state of this.connections(userId, region)) state.revoked = true;
  }

  reconnect(userId: string, region?: AmazonRegion): string {
    const state = this.user(userId, region);
    state.issued += 1;
    this.byRefreshToken.delete(state.refreshToken);
    state.refreshToken = `Atzr|fake-${userId}${state.region ? `-${state.region}` : ''}-reconnected-${state.issued}`;
    state.revoked = false;
    this.byRefreshToken.set(state.refreshToken, state);
    return state.refreshToken;
  }

  expireAccessTokens(userId: string, region?: AmazonRegion): void {
    for (const state of this.connections(userId, region))
      for (const token of state.accessTokens) this.byAccessToken.delete(token);
  }
}
