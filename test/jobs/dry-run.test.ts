import { runAccountSync } from '../../lambda/account-sync/core';
import { previewAccountSync } from '../../lambda/account-sync/preview';
import { handler as sync } from '../../lambda/account-sync/handler';
import { isDryRun } from '../../lambda/shared/jobs/dry-run';
import { endpointKey, RateLimitUsageRecorder, recordRateLimitUsage } from '../../lambda/shared/amazon/usage-store';
import { previewTokenRefresh, runTokenRefresh } from '../../lambda/token-refresh/core';
import { handler as refresh } from '../../lambda/token-refresh/handler';
import { JobWorld, runtime, seedUsers, useJobHandlerEnvironment, useJobWorld } from '../support/jobs';

// `{"dryRun": true}` against the real cores on the Data API path (as the jobs' login user):
// it reports what a run would start on, and claims nothing, writes nothing, calls no Amazon.
// A real run afterwards does exactly what the dry run announced.

let world: JobWorld;
useJobWorld((w) => (world = w));

const TABLES = ['users', 'oauth_tokens', 'user_accounts', 'account_sync_history', 'rate_limit_tracking'];

/** Every row of every table the jobs touch, for before/after comparisons. */
async function everything(): Promise<Record<string, unknown[]>> {
  const all: Record<string, unknown[]> = {};
  for (const table of TABLES)
    all[table] = (await world.admin.query(`SELECT to_jsonb(t) AS row FROM ${table} t ORDER BY 1::text`)).rows.map(
      (r) => r.row,
    );
  return all;
}
const amazonCalls = () => world.amazon.counters.total('lwa') + world.amazon.counters.total('ads');

/** 9 users: 6 whose token expires within the refresh window, 3 far later; all with accounts due for sync. */
async function seed() {
  return seedUsers(world, { count: 9, expiresInSeconds: (i) => (i < 6 ? 600 : 6 * 3600), accountsDueInSeconds: -60 });
}

test('only {"dryRun": true} is a dry run', () => {
  expect(isDryRun({ dryRun: true })).toBe(true);
  for (const event of [{}, { dryRun: 'true' }, { dryRun: 1 }, null, 'dryRun', { source: 'aws.events' }])
    expect(isDryRun(event)).toBe(false);
});

test('token refresh: the dry run counts the due tokens, and changes nothing', async () => {
  const users = await seed();
  const dueNow = users.length - 3;
  const before = await everything();
  const callsBefore = amazonCalls();

  const preview = await previewTokenRefresh({ db: world.dataApi(), ...runtime() });

  expect(preview).toMatchObject({
    job: 'token-refresh',
    dryRun: true,
    due: dueNow,
    pausedByRateLimit: 0,
    pausedRegions: [],
  });
  expect(await everything()).toEqual(before);
  expect(amazonCalls()).toBe(callsBefore);

  const run = await runTokenRefresh({ db: world.dataApi(), lwa: world.lwa(), cipher: world.cipher, ...runtime() });
  expect(run.claimed).toBe(preview.due);
});

test('token refresh: tokens of a region paused by a Retry-After are reported apart', async () => {
  const users = await seed();
  const region = users[0].region;
  const pausedDue = users.slice(0, 6).filter((u) => u.region === region).length;
  // What a run that got a 429 with Retry-After: 600 from the region's token endpoint records.
  const usage = new RateLimitUsageRecorder();
  usage.request(endpointKey('lwa', region));
  usage.limitHit(endpointKey('lwa', region), null, 600, new Date());
  await recordRateLimitUsage(world.admin, usage.drain());

  const preview = await previewTokenRefresh({ db: world.dataApi(), ...runtime() });

  expect(preview).toMatchObject({ due: 6 - pausedDue, pausedByRateLimit: pausedDue, pausedRegions: [region] });
});

test('account sync: the dry run counts the due users, those waiting for a token, and the accounts to flag; changes nothing', async () => {
  const users = await seed();
  // One user's token is about to expire (waits for the refresh), one user's refresh is off (re-authorisation).
  await world.admin.query(
    // About to expire while its refresh backs off after a failure: it waits (an expiring token
    // whose refresh is not backing off is due: the sync takes a new one on demand).
    `UPDATE oauth_tokens SET expires_at = now() + interval '30 seconds', next_refresh_attempt_at = now() + interval '5 minutes'
      WHERE user_id = :id::uuid`,
    { id: users[7].userId },
  );
  await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = FALSE WHERE user_id = :id::uuid`, {
    id: users[8].userId,
  });
  const accountsOfUser8 = Number(
    (
      await world.admin.query(`SELECT count(*)::int AS n FROM user_accounts WHERE user_id = :id::uuid`, {
        id: users[8].userId,
      })
    ).rows[0].n,
  );
  const before = await everything();
  const callsBefore = amazonCalls();

  const preview = await previewAccountSync({ db: world.dataApi(), ...runtime() });

  expect(preview).toMatchObject({
    job: 'account-sync',
    dryRun: true,
    due: users.length - 2,
    waitingForTokenRefresh: 1,
    accountsToFlagForReauth: accountsOfUser8,
  });
  expect(accountsOfUser8).toBeGreaterThan(0);
  expect(await everything()).toEqual(before);
  expect(amazonCalls()).toBe(callsBefore);

  const run = await runAccountSync({
    db: world.dataApi(),
    ads: world.ads(),
    lwa: world.lwa(),
    cipher: world.cipher,
    ...runtime(),
  });
  expect(run.connectionsClaimed).toBe(preview.due);
  expect(run.reauthFlagged).toBe(preview.accountsToFlagForReauth);
});

describe('the Lambda handlers take {"dryRun": true}', () => {
  useJobHandlerEnvironment(() => world);
  beforeEach(() => {
    // Powertools' JSON log lines and EMF metrics go to stdout; keep the test output clean.
    for (const stream of [process.stdout, process.stderr]) jest.spyOn(stream, 'write').mockImplementation(() => true);
    for (const level of ['log', 'info', 'warn', 'error'] as const)
      jest.spyOn(console, level).mockImplementation(() => undefined);
  });

  const context = { getRemainingTimeInMillis: () => 600_000, awsRequestId: 'verify-1' };

  test('each handler answers with its preview and leaves the database and Amazon alone', async () => {
    const users = await seed();
    const before = await everything();
    const callsBefore = amazonCalls();

    const refreshed = await refresh({ dryRun: true }, context);
    const synced = await sync({ dryRun: true }, context);

    expect(refreshed).toMatchObject({ job: 'token-refresh', dryRun: true, due: users.length - 3 });
    expect(synced).toMatchObject({ job: 'account-sync', dryRun: true, due: users.length });
    expect(await everything()).toEqual(before);
    expect(amazonCalls()).toBe(callsBefore);
  });
});
