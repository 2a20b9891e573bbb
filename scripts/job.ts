/**
 * `npm run job -- token-refresh|account-sync|reencrypt-tokens`: one run of a job's real core against
 * DATABASE_URL (node-postgres), with Amazon at LWA_TOKEN_URL / ADS_API_URL (default: Amazon's
 * regional hosts) and credentials from LWA_CLIENT_ID, LWA_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY.
 * PROACTIVE_REFRESH_USED_WITHIN_SECONDS (optional) limits the token refresh to connections used
 * within that many seconds, as in AWS.
 * Logs go to stderr; the last line on stdout is the run's JSON summary.
 *
 *   npm run job -- account-sync --user <uuid>     # a manual sync of one user
 *   npm run job -- token-refresh --time-limit 60  # plays a 60-second Lambda timeout
 *   npm run job -- reencrypt-tokens               # the token keys' function's re-encryption
 *
 * `reencrypt-tokens` (docs/token-encryption.md) needs only DATABASE_URL and TOKEN_ENCRYPTION_KEY
 * (the key ring's JSON, or one base64 key): it rewrites every value not `enc:v2` under the
 * ring's current key, as the deployed token keys' function does (15 minutes by default).
 *
 * `--time-limit <seconds>` is the invocation's deadline, as Lambda's timeout: the core sees
 * its remaining time count down from it (and stops claiming, gives back what it cannot
 * finish), and a run still going at the deadline is killed (exit code 124), as Lambda would.
 * Without it the deadline is the deployed function's timeout (JOB_TIMING, which the stack
 * sets the functions' timeouts from: 4 minutes for the token refresh, 10 for the account
 * sync), so a run never outlives the leases it takes, and the run is not killed.
 */
import { runAccountSync } from '../lambda/account-sync/core';
import { AdsClient, LwaClient } from '../lambda/shared/amazon';
import { readLocalJobConfig, readLocalReencryptionConfig } from '../lambda/shared/config';
import { jobsLimits } from '../lambda/shared/amazon/api-share';
import { DatabaseRateBudgetStore } from '../lambda/shared/amazon/rate-budget';
import { endpointLimitsFor, RateLimiterRegistry } from '../lambda/shared/amazon/rate-limiter';
import { PgDatabase } from '../lambda/shared/db';
import { MetricTotals } from '../lambda/shared/jobs/runtime';
import { JOB_TIMING, REENCRYPTION_TIMEOUT_SECONDS } from '../lambda/shared/jobs/timing';
import { TokenCipher } from '../lambda/shared/token-crypto';
import { runTokenRefresh } from '../lambda/token-refresh/core';
import { runTokenReencryption } from '../lambda/token-reencrypt/core';
import type { AppLogger } from '../lambda/shared/logger';

const JOBS = ['token-refresh', 'account-sync', 'reencrypt-tokens'] as const;
type JobName = (typeof JOBS)[number];

/**
 * What a run sees as its remaining time without `--time-limit`: the deployed function's
 * timeout (the same JOB_TIMING lib/scheduled-jobs.ts sets it from), so its leases outlast it.
 */
export function defaultTimeLimitSeconds(job: JobName): number {
  if (job === 'reencrypt-tokens') return REENCRYPTION_TIMEOUT_SECONDS;
  return (job === 'token-refresh' ? JOB_TIMING.tokenRefresh : JOB_TIMING.accountSync).timeoutSeconds;
}

const stderrLogger: AppLogger = {
  info: (message, attributes) => console.error(JSON.stringify({ level: 'INFO', message, ...attributes })),
  warn: (message, attributes) => console.error(JSON.stringify({ level: 'WARN', message, ...attributes })),
  error: (message, attributes) => console.error(JSON.stringify({ level: 'ERROR', message, ...attributes })),
};

export async function runJobOnce(
  job: JobName,
  env: NodeJS.ProcessEnv,
  options: { userId?: string; logger?: AppLogger; timeLimitSeconds?: number } = {},
) {
  const deadline = Date.now() + (options.timeLimitSeconds ?? defaultTimeLimitSeconds(job)) * 1000;
  if (job === 'reencrypt-tokens') return reencryptTokens(env, deadline, options.logger ?? stderrLogger);
  const config = readLocalJobConfig(env);
  const db = new PgDatabase({ connection: config.databaseUrl });
  const cipher = new TokenCipher(config.tokenKeys);
  // The same shared budgets as the Lambdas: concurrent `npm run job` processes on one database
  // together stay under LWA_REQUESTS_PER_SECOND / ADS_REQUESTS_PER_SECOND per region, leaving
  // the interactive lane free for `npm run api`'s token route and connects (api-share.ts).
  const limiters = new RateLimiterRegistry(
    jobsLimits(endpointLimitsFor(config.amazonLimits)),
    {},
    new DatabaseRateBudgetStore(db),
  );
  const lwa = new LwaClient({
    clientId: config.lwaClientId,
    clientSecret: config.lwaClientSecret,
    tokenUrl: config.lwaTokenUrl,
    limiters,
  });
  const common = {
    db,
    cipher,
    logger: options.logger ?? stderrLogger,
    metrics: new MetricTotals(),
    remainingTimeMs: () => Math.max(0, deadline - Date.now()),
  };
  try {
    if (job === 'token-refresh') {
      return await runTokenRefresh({
        ...common,
        lwa,
        settings: { usedWithinSeconds: config.proactiveRefreshUsedWithinSeconds },
      });
    }
    return await runAccountSync(
      { ...common, ads: new AdsClient({ clientId: config.lwaClientId, baseUrl: config.adsApiUrl, limiters }), lwa },
      options.userId ? { syncType: 'manual', userId: options.userId } : { syncType: 'scheduled' },
    );
  } finally {
    await db.close();
  }
}

/** The re-encryption needs the database and the key ring only (no Amazon credentials). */
async function reencryptTokens(env: NodeJS.ProcessEnv, deadline: number, logger: AppLogger) {
  const config = readLocalReencryptionConfig(env);
  const db = new PgDatabase({ connection: config.databaseUrl });
  try {
    return await runTokenReencryption({
      db,
      cipher: new TokenCipher(config.tokenKeys),
      logger,
      metrics: new MetricTotals(),
      remainingTimeMs: () => Math.max(0, deadline - Date.now()),
    });
  } finally {
    await db.close();
  }
}

async function main() {
  const [job, ...rest] = process.argv.slice(2);
  const limitFlag = rest.indexOf('--time-limit');
  const timeLimitSeconds = limitFlag >= 0 ? Number(rest[limitFlag + 1]) : undefined;
  if (!JOBS.includes(job as JobName) || (timeLimitSeconds !== undefined && !(timeLimitSeconds > 0))) {
    console.error(`Usage: npm run job -- <${JOBS.join('|')}> [--user <uuid>] [--time-limit <seconds>]`);
    process.exit(2);
  }
  const userFlag = rest.indexOf('--user');
  // Lambda ends an invocation at its timeout whatever it is doing; so does this.
  const kill =
    timeLimitSeconds === undefined
      ? undefined
      : setTimeout(() => {
          console.error(`Time limit of ${timeLimitSeconds} s reached: the run is killed, as Lambda would kill it`);
          process.exit(124);
        }, timeLimitSeconds * 1000);
  const summary = await runJobOnce(job as JobName, process.env, {
    userId: userFlag >= 0 ? rest[userFlag + 1] : undefined,
    timeLimitSeconds,
  });
  clearTimeout(kill);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

if (require.main === module) {
  main().catch((error: Error) => {
    console.error(`${error.name}: ${error.message}`);
    process.exit(1);
  });
}
