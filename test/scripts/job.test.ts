import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { jobsCeiling } from '../../lambda/shared/amazon/api-share';
import { DatabaseRateBudgetStore, SharedRateBudget } from '../../lambda/shared/amazon/rate-budget';
import { JobWorld, seedUsers, useJobWorld } from '../support/jobs';
import { ROOT } from '../support/root';
import { JOB_TIMING, REENCRYPTION_TIMEOUT_SECONDS } from '../../lambda/shared/jobs/timing';
import { defaultTimeLimitSeconds } from '../../scripts/job';
import { oauthTokenBinding, TokenCipher, TokenKeyRing } from '../../lambda/shared/token-crypto';

// `npm run job` (scripts/job.ts): both jobs on DATABASE_URL against the fake Amazon, as a
// developer runs them.

const run = promisify(execFile);

let world: JobWorld;
useJobWorld((w) => (world = w));

function localEnv(): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: world.url,
    LWA_TOKEN_URL: world.amazon.lwaTokenUrl,
    ADS_API_URL: world.amazon.adsBaseUrl,
    LWA_CLIENT_ID: world.amazon.clientId,
    LWA_CLIENT_SECRET: world.amazon.clientSecret,
    TOKEN_ENCRYPTION_KEY: world.keyBase64,
  };
}

describe('npm run job', () => {
  test.each(['token-refresh', 'account-sync'] as const)(
    '%s runs the real core once and prints one JSON summary line last',
    async (job) => {
      const users = await seedUsers(world, { count: 5 });
      const { stdout, stderr } = await run('npm', ['run', '--silent', 'job', '--', job], {
        cwd: ROOT,
        env: localEnv(),
      });
      const last = stdout.trim().split('\n').at(-1)!;
      const summary = JSON.parse(last);
      expect(summary.job).toBe(job);
      if (job === 'token-refresh') expect(summary.refreshed).toBe(5);
      else expect(summary).toMatchObject({ connectionsSynced: 5, accountsSynced: 10 });
      for (const u of users) expect(stdout + stderr).not.toContain(u.refreshToken);
    },
  );

  test('draws from the shared budget in the database: with another process taking the same budget, together they stay under LWA_REQUESTS_PER_SECOND', async () => {
    await seedUsers(world, { count: 12, regions: () => ['NA'] });
    const start = Date.now();
    const job = run('npm', ['run', '--silent', 'job', '--', 'token-refresh'], {
      cwd: ROOT,
      env: { ...localEnv(), LWA_REQUESTS_PER_SECOND: '6' },
    });
    // Another job process on the same database sends 12 requests of its own through the same
    // budget: the jobs' schedule, paced at the limit less the interactive lane (1/s of the 6).
    const jobsPerSecond = jobsCeiling('lwa', 6);
    expect(jobsPerSecond).toBe(5);
    const budget = new DatabaseRateBudgetStore(world.admin);
    const other = new SharedRateBudget(budget, { endpoint: 'lwa', region: 'NA' }, { ceiling: jobsPerSecond });
    for (let i = 0; i < 12; i += 1) {
      await other.take();
      await fetch(world.amazon.lwaTokenUrl.replace('{region}', 'NA'), { method: 'POST' }).then((r) => r.text());
    }
    const { stdout } = await job;
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({ refreshed: 12 });
    // Amazon saw both processes' requests, 24 in all.
    expect(world.amazon.counters.arrivals('lwa', 'NA').filter((t) => t >= start)).toHaveLength(24);
    // Each request used its own slot of the one schedule in the database: slots start no
    // earlier than `start`, never overlap and are at least 1/5 s apart (the jobs' pace), so the
    // schedule has moved at least 24 slots past `start` (the test's 12 alone move it about half
    // as far).
    // The budget's record, not arrival times: a busy test process timestamps the requests it
    // receives late and in bunches.
    const { rows } = await world.admin.query<{ ceiling_per_second: number; scheduled_ms: number }>(
      `SELECT ceiling_per_second, extract(epoch FROM next_slot_at) * 1000 - :start::float8 AS scheduled_ms
         FROM amazon_rate_budget WHERE endpoint = 'lwa-token' AND region = 'NA'`,
      { start },
    );
    expect(rows).toEqual([{ ceiling_per_second: jobsPerSecond, scheduled_ms: expect.any(Number) }]);
    expect(Number(rows[0].scheduled_ms)).toBeGreaterThanOrEqual((24 * 1000) / jobsPerSecond - 1);
  });

  test('--time-limit plays the Lambda deadline: with less time than the reserve nothing is claimed', async () => {
    await seedUsers(world, { count: 5 });
    const { stdout } = await run('npm', ['run', '--silent', 'job', '--', 'token-refresh', '--time-limit', '20'], {
      cwd: ROOT,
      env: localEnv(),
    });
    // 20 s left is less than the 30 s the run keeps in reserve: it stops before claiming.
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({ claimed: 0, refreshed: 0 });
    const leased = await world.admin.query(`SELECT id FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL`);
    expect(leased.rows).toHaveLength(0);
  });

  test('reencrypt-tokens: with the database and the key ring only, every value becomes enc:v2 under the current key', async () => {
    const users = await seedUsers(world, {
      count: 6,
      v1Encrypted: (i) => i % 2 === 0,
      legacyPlaintext: (i) => i === 1,
    });
    const ring = JSON.stringify({
      current: 'k2',
      keys: { legacy: world.keyBase64, k2: randomBytes(32).toString('base64') },
    });
    const { stdout, stderr } = await run('npm', ['run', '--silent', 'job', '--', 'reencrypt-tokens'], {
      cwd: ROOT,
      // No Amazon: neither the LWA client nor Amazon's URLs.
      env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: world.url, TOKEN_ENCRYPTION_KEY: ring },
    });
    expect(JSON.parse(stdout.trim().split('\n').at(-1)!)).toMatchObject({
      job: 'token-reencrypt',
      currentKeyId: 'k2',
      reencrypted: 6,
      remaining: 0,
      complete: true,
    });
    const cipher = new TokenCipher(TokenKeyRing.parse(ring));
    const { rows } = await world.admin.query<{ user_id: string; region: string; refresh_token: string }>(
      'SELECT user_id, region, refresh_token FROM oauth_tokens',
    );
    expect(rows).toHaveLength(6);
    for (const r of rows) {
      expect(r.refresh_token).toMatch(/^enc:v2:k2:/);
      const user = users.find((u) => u.userId === r.user_id)!;
      expect(
        await cipher.decrypt(
          r.refresh_token,
          oauthTokenBinding({ userId: r.user_id, region: r.region }, 'refresh_token'),
        ),
      ).toBe(user.refreshToken);
    }
    for (const u of users) expect(stdout + stderr).not.toContain(u.refreshToken);
    expect(stdout + stderr).not.toContain(world.keyBase64);
  });

  test('names every missing variable and exits non-zero', async () => {
    const env = { PATH: process.env.PATH, HOME: process.env.HOME };
    const error = await run('npm', ['run', '--silent', 'job', '--', 'token-refresh'], { cwd: ROOT, env }).catch(
      (e) => e,
    );
    expect(error.code).toBe(1);
    expect(error.stderr).toMatch(/missing DATABASE_URL, LWA_CLIENT_ID, LWA_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY/);
  });
});

// Without `--time-limit` a run plays the deployed function: its deadline is the function's
// timeout (JOB_TIMING, from which lib/scheduled-jobs.ts sets it), so its leases outlast it.
test.each([
  ['token-refresh', JOB_TIMING.tokenRefresh],
  ['account-sync', JOB_TIMING.accountSync],
] as const)("%s: the default deadline is the deployed function's timeout, inside the lease", (job, timing) => {
  expect(defaultTimeLimitSeconds(job)).toBe(timing.timeoutSeconds);
  expect(defaultTimeLimitSeconds(job)).toBeLessThan(timing.leaseSeconds);
});

// The re-encryption's deadline is the token keys' function's timeout (lib/token-keys.ts).
test('reencrypt-tokens: the default deadline is the token keys function’s timeout', () => {
  expect(defaultTimeLimitSeconds('reencrypt-tokens')).toBe(REENCRYPTION_TIMEOUT_SECONDS);
});
