import { randomUUID } from 'node:crypto';
import type { LocalWorld } from '../../local/world';
import { oauthTokenBinding } from '../../lambda/shared/token-crypto';

/** Seeded data of one user, to compare responses against. */
export interface SeededUser {
  readonly userId: string;
  readonly email: string;
  readonly regions: readonly string[];
  readonly accountIds: readonly string[];
  readonly historyIds: readonly string[];
}

const MARKETS: Record<string, Array<{ marketplace: string; country: string; currency: string }>> = {
  NA: [
    { marketplace: 'ATVPDKIKX0DER', country: 'US', currency: 'USD' },
    { marketplace: 'A2EUQ1WTGCTBG2', country: 'CA', currency: 'CAD' },
  ],
  EU: [
    { marketplace: 'A1F83G8C2ARO7P', country: 'UK', currency: 'GBP' },
    { marketplace: 'A1PA6795UKMFR9', country: 'DE', currency: 'EUR' },
  ],
  FE: [{ marketplace: 'A1VC38T7YXB528', country: 'JP', currency: 'JPY' }],
};
const TYPES = ['seller', 'vendor', 'agency'];
const STATUSES = ['active', 'active', 'pending', 'inactive'];
const SYNC = ['completed', 'pending', 'failed', 'reauth_required', 'completed'];

let profileCounter = 0;

/**
 * Users with a connection per listed region, accounts in each region (metadata as the account
 * sync writes it), sync history on some accounts and a rate-limit row each; written as the
 * owner. Profile ids are unique across users.
 */
export async function seedApiUsers(
  world: LocalWorld,
  specs: ReadonlyArray<{ regions: readonly string[]; accountsPerRegion: number; historyPerAccount?: number }>,
): Promise<SeededUser[]> {
  const out: SeededUser[] = [];
  for (const [i, spec] of specs.entries()) {
    const email = `api-${randomUUID().slice(0, 8)}-${i}@example.com`;
    const { rows } = await world.admin.query<{ id: string }>(`INSERT INTO users (email) VALUES (:email) RETURNING id`, {
      email,
    });
    const userId = rows[0].id;
    const accounts: Array<Record<string, unknown>> = [];
    for (const region of spec.regions) {
      await world.admin.query(
        `INSERT INTO oauth_tokens (user_id, region, access_token, refresh_token, expires_at, refresh_failure_count, proactive_refresh_enabled, last_refresh_error)
         VALUES (:user::uuid, :region, :access, :refresh, now() + interval '50 minutes', :failures, :enabled, :error)`,
        {
          user: { sqlType: 'uuid', value: userId },
          region,
          access: world.cipher.encrypt(
            `Atza|seed-${userId}-${region}`,
            oauthTokenBinding({ userId, region }, 'access_token'),
          ),
          refresh: world.cipher.encrypt(
            `Atzr|seed-${userId}-${region}`,
            oauthTokenBinding({ userId, region }, 'refresh_token'),
          ),
          failures: region === 'EU' ? 2 : 0,
          enabled: region !== 'FE',
          error: region === 'EU' ? 'TransientError: HTTP 503' : null,
        },
      );
      for (let a = 0; a < spec.accountsPerRegion; a++) {
        const market = MARKETS[region][a % MARKETS[region].length];
        profileCounter += 1;
        accounts.push({
          user_id: userId,
          region,
          amazon_account_id: String(4_000_000_000_000 + profileCounter * 7 + i),
          status: STATUSES[a % STATUSES.length],
          sync_status: SYNC[(a + i) % SYNC.length],
          metadata: {
            marketplaceStringId: market.marketplace,
            countryCode: market.country,
            currencyCode: market.currency,
            timezone: 'UTC',
            accountType: TYPES[(a + i) % TYPES.length],
            accountSubType: null,
            accountId: `A${profileCounter}`,
            accountName: `Account ${i}-${region}-${a}`,
            validPaymentMethod: a % 2 === 0,
            dailyBudget: null,
            region,
          },
        });
      }
    }
    const { rows: accountRows } = await world.admin.query<{ id: string }>(
      `INSERT INTO user_accounts (user_id, region, amazon_account_id, status, sync_status, metadata)
       SELECT user_id, region, amazon_account_id, status, sync_status, metadata
         FROM jsonb_to_recordset(:rows::jsonb) AS x(user_id uuid, region text, amazon_account_id text, status text, sync_status text, metadata jsonb)
       RETURNING id`,
      { rows: { sqlType: 'json', value: JSON.stringify(accounts) } },
    );
    const accountIds = accountRows.map((r) => r.id);
    const { rows: historyRows } = await world.admin.query<{ id: string }>(
      `INSERT INTO account_sync_history (user_account_id, sync_type, sync_status, started_at, completed_at, accounts_synced, accounts_failed, error_details, metadata)
       SELECT a.id, (ARRAY['scheduled','manual','webhook'])[1 + (n % 3)],
              CASE WHEN n % 4 = 3 THEN 'failed' ELSE 'success' END,
              now() - make_interval(mins => (n * 7 + ord)::int), now() - make_interval(mins => (n * 7 + ord)::int) + interval '3 seconds',
              2, CASE WHEN n % 4 = 3 THEN 1 ELSE 0 END,
              CASE WHEN n % 4 = 3 THEN '{"reason":"TransientError"}'::jsonb END, '{}'::jsonb
         FROM jsonb_array_elements_text(:ids::jsonb) WITH ORDINALITY AS x(id_text, ord)
         JOIN user_accounts a ON a.id = x.id_text::uuid
         CROSS JOIN generate_series(0, :perAccount - 1) AS n
       RETURNING id`,
      { ids: { sqlType: 'json', value: JSON.stringify(accountIds) }, perAccount: spec.historyPerAccount ?? 2 },
    );
    await world.admin.query(
      `INSERT INTO rate_limit_tracking (user_id, endpoint, request_count, limit_hit_count)
       VALUES (:user::uuid, 'ads:NA', 3, 1)`,
      { user: { sqlType: 'uuid', value: userId } },
    );
    out.push({ userId, email, regions: spec.regions, accountIds, historyIds: historyRows.map((r) => r.id) });
  }
  return out;
}
