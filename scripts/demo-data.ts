import type { Client } from 'pg';
import { oauthTokenBinding, type TokenCipher } from '../lambda/shared/token-crypto';
import { AMAZON_REGIONS as REGIONS, type AmazonRegion } from '../lambda/shared/amazon/regions';
import type { FakeUser } from '../local/amazon/fake-amazon';
import { FakeProfile, fakeProfile } from '../local/amazon/profiles';

/**
 * Demo data for `npm start`: users as the web app would have stored them after the OAuth
 * callback, most connected in one Amazon region, one in ten in two and one in twenty-five in
 * all three (a connection, with its own tokens, per region). Everything is derived from the
 * user's number, so the fake Amazon (which forgets everything between runs) can be given the
 * same users, connections and profiles again on every run.
 */
export const DEMO_USERS = 300;

/** Marketplaces per region (Amazon Ads), so accounts spread over several countries. */
const MARKETPLACES = {
  NA: [
    { countryCode: 'US', currencyCode: 'USD', timezone: 'America/Los_Angeles', marketplaceStringId: 'ATVPDKIKX0DER' },
    { countryCode: 'CA', currencyCode: 'CAD', timezone: 'America/Los_Angeles', marketplaceStringId: 'A2EUQ1WTGCTBG2' },
    { countryCode: 'MX', currencyCode: 'MXN', timezone: 'America/Los_Angeles', marketplaceStringId: 'A1AM78C64UM0Y8' },
  ],
  EU: [
    { countryCode: 'UK', currencyCode: 'GBP', timezone: 'Europe/London', marketplaceStringId: 'A1F83G8C2ARO7P' },
    { countryCode: 'DE', currencyCode: 'EUR', timezone: 'Europe/Paris', marketplaceStringId: 'A1PA6795UKMFR9' },
    { countryCode: 'FR', currencyCode: 'EUR', timezone: 'Europe/Paris', marketplaceStringId: 'A13V1IB3VIYZZH' },
  ],
  FE: [
    { countryCode: 'JP', currencyCode: 'JPY', timezone: 'Asia/Tokyo', marketplaceStringId: 'A1VC38T7YXB528' },
    { countryCode: 'AU', currencyCode: 'AUD', timezone: 'Australia/Sydney', marketplaceStringId: 'A39IBJ37TRP1C6' },
  ],
} as const;

const TYPES = ['seller', 'vendor', 'agency'] as const;

type Region = AmazonRegion;

interface DemoConnection {
  readonly region: Region;
  /** Revoked at Amazon: the token refresh meets invalid_grant (for this region only). */
  readonly revoked: boolean;
  /** Profiles Amazon lists for the user in this region. */
  readonly profiles: FakeProfile[];
}

interface DemoUser {
  readonly n: number;
  readonly email: string;
  readonly connections: readonly DemoConnection[];
}

/** The regions a demo user connected: one, or two (one user in ten), or all three (one in 25). */
function demoRegions(n: number): Region[] {
  const first = REGIONS[n % 3];
  if (n % 25 === 7) return [first, ...REGIONS.filter((r) => r !== first)];
  if (n % 10 === 3) return [first, REGIONS[(n + 1) % 3]];
  return [first];
}

function demoUser(n: number): DemoUser {
  let k = 0; // profile number across the user's regions (at most 9: ids stay unique)
  const connections = demoRegions(n).map((region, i) => ({
    region,
    // Some users revoked their first region's consent, some two-region users their second's.
    revoked: i === 0 ? n % 23 === 5 : i === 1 && n % 20 === 13,
    profiles: Array.from({ length: [1, 2, 3, 0, 2][(n + i) % 5] }, () => demoProfile(n, region, k++)),
  }));
  return { n, email: `demo-${String(n).padStart(3, '0')}@example.com`, connections };
}

function demoProfile(n: number, region: Region, k: number): FakeProfile {
  const market = MARKETPLACES[region][(n + k) % MARKETPLACES[region].length];
  return fakeProfile(region, {
    profileId: String(4_000_000_000_000 + n * 10 + k),
    ...market,
    dailyBudget: 50 + ((n * 37 + k * 11) % 450),
    accountInfo: {
      marketplaceStringId: market.marketplaceStringId,
      id: `A${(n * 10 + k).toString(36).toUpperCase().padStart(6, '0')}`,
      type: TYPES[(n + k) % 3],
      name: `Demo brand ${n}${k ? ` (${market.countryCode})` : ''}`,
      validPaymentMethod: (n + k) % 7 !== 0,
    },
  });
}

/** Seeds the demo users once (returns false when they exist already). */
export async function seedDemoData(c: Client, cipher: TokenCipher): Promise<boolean> {
  const existing = Number(
    (await c.query<{ n: string }>(`SELECT count(*) AS n FROM users WHERE email LIKE 'demo-%@example.com'`)).rows[0].n,
  );
  if (existing > 0) return false;
  const users = Array.from({ length: DEMO_USERS }, (_, n) => demoUser(n));
  await c.query('BEGIN');
  try {
    for (const u of users) {
      const { rows } = await c.query<{ id: string }>('INSERT INTO users (email) VALUES ($1) RETURNING id', [u.email]);
      const userId = rows[0].id;
      // Tokens expiring from 20 minutes ago to 3.5 hours from now: some due at once, most later.
      const expiresInMinutes = ((u.n * 7919) % 230) - 20;
      // Every tenth user still has tokens from before encryption: read as is, written back encrypted.
      const legacy = u.n % 10 === 0;
      const store = (token: string, region: Region, column: 'access_token' | 'refresh_token') =>
        legacy ? token : cipher.encrypt(token, oauthTokenBinding({ userId, region }, column));
      for (const [i, connection] of u.connections.entries()) {
        const { region } = connection;
        await c.query(
          `INSERT INTO oauth_tokens (user_id, access_token, refresh_token, expires_at, region)
           VALUES ($1, $2, $3, now() + make_interval(mins => $4), $5)`,
          [
            userId,
            store(initialAccessToken(u.n, i, region), region, 'access_token'),
            store(initialRefreshToken(u.n, i, region), region, 'refresh_token'),
            expiresInMinutes + i * 25,
            region,
          ],
        );
        // Two users in three were synced before; one in three connected Amazon but has no
        // account rows yet (the first sync finds them). Some known accounts are due now.
        if (u.n % 3 === 0) continue;
        const known = [
          ...connection.profiles.map((p) => p.profileId),
          ...(u.n % 11 === 1 && i === 0 ? [String(4_900_000_000_000 + u.n)] : []),
        ];
        const dueInMinutes = ((u.n * 131 + i * 97) % 360) - 60;
        for (const profileId of known) {
          await c.query(
            `INSERT INTO user_accounts (user_id, amazon_account_id, region, status, sync_status, next_sync_at, metadata)
             VALUES ($1, $2, $3, 'active', 'completed', now() + make_interval(mins => $4), '{}'::jsonb)`,
            [userId, profileId, region, dueInMinutes],
          );
        }
        await c.query(
          `UPDATE oauth_tokens SET sync_next_attempt_at = now() + make_interval(mins => $3)
            WHERE user_id = $1 AND region = $2`,
          [userId, region, dueInMinutes],
        );
      }
    }
    await c.query('COMMIT');
  } catch (error) {
    await c.query('ROLLBACK');
    throw error;
  }
  return true;
}

/** The first connection's tokens keep the names they had before connections per region. */
function initialAccessToken(n: number, i: number, region: Region): string {
  return `Atza|demo-access-${n}${i === 0 ? '' : `-${region}`}`;
}

function initialRefreshToken(n: number, i: number, region: Region): string {
  return `Atzr|demo-refresh-${n}${i === 0 ? '' : `-${region}`}`;
}

/**
 * The demo users' connections as the fake Amazon must know them on this run: their current
 * tokens (read back from the database, so refreshes of earlier runs carry over), their region
 * and that region's profiles.
 */
export async function demoAmazonUsers(
  c: Client,
  cipher: TokenCipher,
): Promise<Array<FakeUser & { region: Region; revoked: boolean }>> {
  const { rows } = await c.query<{
    user_id: string;
    email: string;
    region: Region;
    access_token: string;
    refresh_token: string;
  }>(
    `SELECT t.user_id, u.email, t.region, t.access_token, t.refresh_token
       FROM oauth_tokens t JOIN users u ON u.id = t.user_id
      WHERE u.email LIKE 'demo-%@example.com'`,
  );
  return Promise.all(
    rows.map(async (r) => {
      const demo = demoUser(Number(/^demo-(\d+)@/.exec(r.email)![1]));
      const connection = demo.connections.find((x) => x.region === r.region);
      return {
        userId: r.user_id,
        region: r.region,
        refreshToken: await cipher.decrypt(
          r.refresh_token,
          oauthTokenBinding({ userId: r.user_id, region: r.region }, 'refresh_token'),
        ),
        accessToken: await cipher.decrypt(
          r.access_token,
          oauthTokenBinding({ userId: r.user_id, region: r.region }, 'access_token'),
        ),
        profiles: connection?.profiles ?? [],
        revoked: connection?.revoked ?? false,
      };
    }),
  );
}
