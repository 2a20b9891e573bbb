import { join } from 'node:path';
import type { Client } from 'pg';
import { AdsClient, LwaClient } from '../../lambda/shared/amazon';
import type { TokenCipher } from '../../lambda/shared/token-crypto';
import { LOCAL_CONNECT_REDIRECT_URIS } from '../../lambda/shared/api-env';
import { DEFAULT_WEB_PORT, localWebConfig, startWebExample } from '../../examples/web/server';
import { LOCAL_CORS_ALLOWED_ORIGINS } from '../../local/api-gateway/cors';
import { DEFAULT_API_PORT, startLocalApi } from '../api';
import { LOCAL } from './local-state';

/**
 * The accounts API (scripts/api.ts) on the database under RLS, trusting the local issuer; a
 * ready-to-paste curl with a demo user's token (on port 8787 with --watch, while it runs);
 * the example web app (examples/web) on its own origin (port 3000 with --watch), allowed by
 * the API's CORS and as a connect redirect URI.
 */
export async function serveAccountsApi(
  admin: Client,
  adminUrl: string,
  amazon: { clientId: string; clientSecret: string; lwaTokenUrl: string; adsBaseUrl: string; consentUrl: string },
  cipher: TokenCipher,
  watch: boolean,
  cleanups: Array<() => Promise<unknown>>,
): Promise<string> {
  let apiUrl = '';
  const webOptions = { config: (origin: string) => localWebConfig(apiUrl)(origin) };
  const web = await startWebExample({ ...webOptions, port: watch ? DEFAULT_WEB_PORT : 0 }).catch(() =>
    startWebExample({ ...webOptions, port: 0 }),
  );
  cleanups.push(() => web.close());
  const options = {
    databaseUrl: adminUrl,
    connectRedirectUris: [...LOCAL_CONNECT_REDIRECT_URIS, `${web.url}/amazon/callback`],
    corsAllowedOrigins: [...LOCAL_CORS_ALLOWED_ORIGINS, web.url],
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
  apiUrl = api.url;
  const webLine = `Example web app on ${web.url} (sign in as any user, connect a region at the fake Amazon's consent page; docs/web-example.md)`;
  const { rows } = await admin.query<{ user_id: string }>(
    `SELECT user_id FROM user_accounts GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1`,
  );
  if (!rows[0]) return `Accounts API on ${api.url} (no demo user with accounts yet)\n${webLine}`;
  const token = api.localIssuer!.token({ sub: rows[0].user_id, expiresInSeconds: 12 * 3600 });
  const response = await fetch(`${api.url}/v1/accounts?limit=100`, { headers: { authorization: `Bearer ${token}` } });
  const listed = response.ok ? ((await response.json()) as { items: unknown[] }).items.length : 0;
  return [
    `Accounts API on ${api.url} (GET /v1/accounts for demo user ${rows[0].user_id}: HTTP ${response.status}, ${listed} accounts)`,
    `  curl -H 'Authorization: Bearer ${token}' ${api.url}/v1/accounts`,
    webLine,
    watch ? '' : '  (the API and the web app run while npm start -- --watch does; npm run api serves them alone)',
  ]
    .filter(Boolean)
    .join('\n');
}
