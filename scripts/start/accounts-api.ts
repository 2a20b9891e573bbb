import { join } from 'node:path';
import type { Client } from 'pg';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import type { TokenCipher } from '../../lambda/shared/token-crypto';
import { DEFAULT_API_PORT, startLocalApi } from '../api';
import { LOCAL } from './local-state';

/**
 * The accounts API (scripts/api.ts) on the database under RLS, trusting the local issuer; a
 * ready-to-paste curl with a demo user's token (on port 8787 with --watch, while it runs).
 */
export async function serveAccountsApi(
  admin: Client,
  adminUrl: string,
  amazon: { clientId: string; clientSecret: string; lwaTokenUrl: string; adsBaseUrl: string; consentUrl: string },
  cipher: TokenCipher,
  watch: boolean,
  cleanups: Array<() => Promise<unknown>>,
): Promise<string> {
  const options = {
    databaseUrl: adminUrl,
    lwa: new LwaClient({ clientId: amazon.clientId, clientSecret: amazon.clientSecret, tokenUrl: amazon.lwaTokenUrl }),
    ads: new AdsClient({ clientId: amazon.clientId, baseUrl: amazon.adsBaseUrl }),
    cipher,
    identityDir: join(LOCAL, 'identity'),
    // Connect sessions send the browser to the fake Amazon's consent page.
    consentUrl: amazon.consentUrl,
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined },
  };
  const api = await startLocalApi({ ...options, port: watch ? DEFAULT_API_PORT : 0 }).catch(() =>
    startLocalApi({ ...options, port: 0 }),
  );
  cleanups.push(() => api.close());
  const { rows } = await admin.query<{ user_id: string }>(
    `SELECT user_id FROM user_accounts GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1`,
  );
  if (!rows[0]) return `Accounts API on ${api.url} (no demo user with accounts yet)`;
  const token = api.localIssuer!.token({ sub: rows[0].user_id, expiresInSeconds: 12 * 3600 });
  const response = await fetch(`${api.url}/v1/accounts?limit=100`, { headers: { authorization: `Bearer ${token}` } });
  const listed = response.ok ? ((await response.json()) as { items: unknown[] }).items.length : 0;
  return [
    `Accounts API on ${api.url} (GET /v1/accounts for demo user ${rows[0].user_id}: HTTP ${response.status}, ${listed} accounts)`,
    `  curl -H 'Authorization: Bearer ${token}' ${api.url}/v1/accounts`,
    watch ? '' : '  (the API runs while npm start -- --watch does; npm run api serves it alone)',
  ]
    .filter(Boolean)
    .join('\n');
}
