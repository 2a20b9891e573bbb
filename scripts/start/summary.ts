import { relative } from 'node:path';
import type { Client } from 'pg';
import type { AccountSyncSummary } from '../../lambda/account-sync/core';
import type { TokenRefreshSummary } from '../../lambda/token-refresh/core';
import { LOG_FILE, ROOT } from './local-state';

/** What `npm start` prints after its jobs ran: the summary table and where to look next. */
export interface Overview {
  users: number;
  /** Connections (oauth_tokens rows) per region, and users by how many regions they connected. */
  connectionsByRegion: Record<string, number>;
  usersByRegionCount: Record<string, number>;
  tokensActive: number;
  tokensNeedReauth: number;
  tokensDueSoon: number;
  accounts: Record<string, number>;
  history: Record<string, number>;
}

export async function databaseOverview(c: Client): Promise<Overview> {
  const one = async (sql: string) => Number((await c.query<{ n: string }>(sql)).rows[0].n);
  const grouped = async (sql: string) =>
    Object.fromEntries((await c.query<{ k: string; n: string }>(sql)).rows.map((r) => [r.k, Number(r.n)]));
  return {
    users: await one('SELECT count(*) AS n FROM users'),
    connectionsByRegion: await grouped(
      `SELECT region AS k, count(*) AS n FROM oauth_tokens GROUP BY 1 ORDER BY array_position(ARRAY['NA','EU','FE'], region)`,
    ),
    usersByRegionCount: await grouped(
      'SELECT regions AS k, count(*) AS n FROM (SELECT count(*) AS regions FROM oauth_tokens GROUP BY user_id) r GROUP BY 1 ORDER BY 1',
    ),
    tokensActive: await one('SELECT count(*) AS n FROM oauth_tokens WHERE proactive_refresh_enabled'),
    tokensNeedReauth: await one('SELECT count(*) AS n FROM oauth_tokens WHERE NOT proactive_refresh_enabled'),
    tokensDueSoon: await one(
      `SELECT count(*) AS n FROM oauth_tokens WHERE proactive_refresh_enabled AND expires_at < now() + interval '30 minutes'`,
    ),
    accounts: await grouped('SELECT sync_status AS k, count(*) AS n FROM user_accounts GROUP BY 1 ORDER BY 1'),
    history: await grouped('SELECT sync_status AS k, count(*) AS n FROM account_sync_history GROUP BY 1 ORDER BY 1'),
  };
}

export function summaryText(o: {
  refresh: TokenRefreshSummary;
  sync: AccountSyncSummary;
  seeded: boolean;
  users: number;
  applied: string;
  overview: Overview;
  dataApiCalls: unknown;
}): string {
  const { refresh, sync, overview } = o;
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const rows: Array<[string, string]> = [
    ['migrations applied this run', o.applied ? o.applied.split(',').length.toString() : '0 (schema up to date)'],
    ['demo users', `${o.users}${o.seeded ? ' (created now)' : ' (from earlier runs)'}`],
    ['tokens refreshed', `${refresh.refreshed} of ${refresh.claimed} due`],
    ['token refreshes failed (will retry)', `${refresh.failed}`],
    ['tokens needing re-authorisation (this run)', `${refresh.reauthRequired}`],
    ['rate-limit hits (LWA / Ads)', `${refresh.rateLimited} / ${sync.rateLimited}`],
    ['connections synced / failed', `${sync.connectionsSynced} / ${sync.connectionsFailed}`],
    [
      'accounts synced / failed / no longer at Amazon',
      `${sync.accountsSynced} / ${sync.accountsFailed} / ${sync.accountsMissing}`,
    ],
    ['Data API calls (refresh / sync)', `${refresh.databaseCalls} / ${sync.databaseCalls}`],
    ['time (refresh / sync)', `${seconds(refresh.durationMs)} / ${seconds(sync.durationMs)}`],
    [
      'database now',
      `${overview.users} users, ${overview.tokensActive} tokens refreshing (${overview.tokensDueSoon} due within 30 min), ${overview.tokensNeedReauth} needing re-authorisation`,
    ],
    [
      'connections by region',
      `${Object.entries(overview.connectionsByRegion)
        .map(([k, n]) => `${k} ${n}`)
        .join(
          ', ',
        )} (users in 1 / 2 / 3 regions: ${[1, 2, 3].map((r) => overview.usersByRegionCount[r] ?? 0).join(' / ')})`,
    ],
    [
      'accounts by sync status',
      Object.entries(overview.accounts)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none',
    ],
    [
      'sync history',
      Object.entries(overview.history)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ') || 'none',
    ],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return ['Summary', ...rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`)].join('\n');
}

export function whereNext(adminUrl: string, watch: boolean): string {
  return [
    'Where to look next',
    `  job logs and EMF metrics (Powertools JSON)   ${relative(ROOT, LOG_FILE)}`,
    watch
      ? `  the database, while this runs               psql ${adminUrl}`
      : '  the database                                npm start -- --watch   (keeps it running; prints a psql URL)',
    '  one job against any PostgreSQL              npm run job -- token-refresh|account-sync   (see README)',
    '  the CloudFormation templates                npx cdk synth -c env=dev',
    '  start over                                  npm start -- --fresh',
  ].join('\n');
}
