/**
 * `npm run job -- token-refresh|account-sync`: one run of a job's real core against
 * DATABASE_URL (node-postgres), with Amazon at LWA_TOKEN_URL / ADS_API_URL (default: Amazon's
 * regional hosts) and credentials from LWA_CLIENT_ID, LWA_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY.
 * Logs go to stderr; the last line on stdout is the run's JSON summary.
 *
 *   npm run job -- account-sync --user <uuid>     # a manual sync of one user
 */
import { runAccountSync } from '../lambda/account-sync/core';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { readLocalJobConfig } from '../lambda/shared/config';
import { PgDatabase } from '../lambda/shared/db';
import { MetricTotals } from '../lambda/shared/jobs/runtime';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import type { AppLogger } from '../lambda/shared/logger';

const JOBS = ['token-refresh', 'account-sync'] as const;
type JobName = (typeof JOBS)[number];

const stderrLogger: AppLogger = {
  info: (message, attributes) => console.error(JSON.stringify({ level: 'INFO', message, ...attributes })),
  warn: (message, attributes) => console.error(JSON.stringify({ level: 'WARN', message, ...attributes })),
  error: (message, attributes) => console.error(JSON.stringify({ level: 'ERROR', message, ...attributes })),
};

export async function runJobOnce(
  job: JobName,
  env: NodeJS.ProcessEnv,
  options: { userId?: string; logger?: AppLogger } = {},
) {
  const config = readLocalJobConfig(env);
  const db = new PgDatabase({ connection: config.databaseUrl });
  const cipher = new TokenCipher(config.tokenKey);
  const common = {
    db,
    cipher,
    logger: options.logger ?? stderrLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => 14 * 60_000,
  };
  try {
    if (job === 'token-refresh') {
      return await runTokenRefresh({
        ...common,
        lwa: new LwaClient({
          clientId: config.lwaClientId,
          clientSecret: config.lwaClientSecret,
          tokenUrl: config.lwaTokenUrl,
        }),
      });
    }
    return await runAccountSync(
      { ...common, ads: new AdsClient({ clientId: config.lwaClientId, baseUrl: config.adsApiUrl }) },
      options.userId ? { syncType: 'manual', userId: options.userId } : { syncType: 'scheduled' },
    );
  } finally {
    await db.close();
  }
}

async function main() {
  const [job, ...rest] = process.argv.slice(2);
  if (!JOBS.includes(job as JobName)) {
    console.error(`Usage: npm run job -- <${JOBS.join('|')}> [--user <uuid>]`);
    process.exit(2);
  }
  const userFlag = rest.indexOf('--user');
  const summary = await runJobOnce(job as JobName, process.env, {
    userId: userFlag >= 0 ? rest[userFlag + 1] : undefined,
  });
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

if (require.main === module) {
  main().catch((error: Error) => {
    console.error(`${error.name}: ${error.message}`);
    process.exit(1);
  });
}
