import { randomUUID } from 'node:crypto';
import { AccountSyncDeps, ProfileLister, runAccountSync } from '../../lambda/account-sync/core';
import {
  ABANDONED_ATTEMPT_REASON,
  ATTRIBUTION_PROFILE_MESSAGE,
  claimConnections,
  saveOutcomes,
  ConnectionSyncOutcome,
} from '../../lambda/account-sync/store';
import { Database } from '../../lambda/shared/db';
import { JOB_TIMING, LEASE_MARGIN_SECONDS } from '../../lambda/shared/jobs/timing';
import { fakeProfile } from '../../local/amazon/profiles';
import { JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/** Account sync against poison data, lost leases, dead runs and very large users. */
let world: JobWorld;
useJobWorld((w) => (world = w));

/** Both database paths, as the jobs' own login: the Data API (emulator) and node-postgres. */
const PATHS = useBothDatabasePaths(() => world);

function deps(db: Database, extra: Partial<AccountSyncDeps> = {}): AccountSyncDeps {
  return { db, ads: world.ads(), cipher: world.cipher, ...runtime(), settings: { concurrency: 8 }, ...extra };
}

interface AccountRow {
  amazon_account_id: string;
  status: string;
  metadata: Record<string, unknown>;
  sync_status: string;
  sync_error_message: string | null;
}

async function accounts(userId: string): Promise<AccountRow[]> {
  const { rows } = await world.admin.query<AccountRow>(
    `SELECT * FROM user_accounts WHERE user_id = :id::uuid ORDER BY amazon_account_id`,
    { id: userId },
  );
  return rows;
}

interface HistoryRow {
  sync_status: string;
  error_details: Record<string, unknown> | null;
  completed_at: Date | null;
  metadata: { userId: string };
}

async function history(userId: string): Promise<HistoryRow[]> {
  const { rows } = await world.admin.query<HistoryRow>(
    `SELECT * FROM account_sync_history WHERE metadata->>'userId' = :id ORDER BY started_at`,
    { id: userId },
  );
  return rows;
}

async function syncLease(userId: string): Promise<{ sync_lease_owner: string | null; sync_retry_count: number }> {
  const { rows } = await world.admin.query<{ sync_lease_owner: string | null; sync_retry_count: number }>(
    `SELECT sync_lease_owner, sync_retry_count FROM oauth_tokens WHERE user_id = :id::uuid`,
    { id: userId },
  );
  return rows[0];
}

async function makeDue(userId: string): Promise<void> {
  await world.admin.query(
    `UPDATE user_accounts SET next_sync_at = now() - interval '1 minute' WHERE user_id = :id::uuid`,
    { id: userId },
  );
}

describe.each(PATHS)('%s path', (_name, database) => {
  test('a NUL or an unpaired surrogate in a profile blocks nobody: the value is stored cleaned', async () => {
    const users = await seedUsers(world, { count: 20, profilesPerUser: 1 });
    const [evil, lone] = users;
    const evilProfile = fakeProfile(evil.region, { accountInfo: { name: 'Evil\u0000Corp' } });
    const loneProfile = fakeProfile(lone.region, {
      timezone: 'Europe/\ud800London',
      countryCode: 'U\udc00S',
      accountInfo: { name: 'ok \ud83d\ude80 then \ud83d', id: 'A\u0000B' },
    });
    world.amazon.addProfiles(evil.userId, [evilProfile]);
    world.amazon.addProfiles(lone.userId, [loneProfile]);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({
      connectionsClaimed: 20,
      connectionsSynced: 20,
      connectionsFailed: 0,
      accountsSynced: 22,
    });
    const e = (await accounts(evil.userId)).find((a) => a.amazon_account_id === evilProfile.profileId)!;
    expect(e.metadata.accountName).toBe('Evil\uFFFDCorp');
    const l = (await accounts(lone.userId)).find((a) => a.amazon_account_id === loneProfile.profileId)!;
    expect(l.metadata).toMatchObject({
      timezone: 'Europe/\uFFFDLondon',
      countryCode: 'U\uFFFDS',
      accountName: 'ok \ud83d\ude80 then \uFFFD', // a valid pair is kept
      accountId: 'A\uFFFDB',
    });
    for (const u of users) {
      expect((await syncLease(u.userId)).sync_lease_owner).toBeNull();
      expect((await history(u.userId)).map((h) => h.sync_status)).toEqual(['success']);
    }
  });

  test('an outcome the database refuses fails only its own user', async () => {
    const users = await seedUsers(world, { count: 20, profilesPerUser: 1 });
    const owner = randomUUID();
    const claimed = await claimConnections(world.admin, {
      owner,
      leaseSeconds: 60,
      limit: 20,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(claimed).toHaveLength(20);
    const poisoned = claimed[11];
    const outcomes: ConnectionSyncOutcome[] = claimed.map((user) => ({
      kind: 'success',
      connection: user,
      accounts: [
        {
          amazonAccountId: `${user === poisoned ? 9 : 1}${user.userId.replace(/\D/g, '').slice(0, 12)}`,
          // A value that reached SQL uncleaned: PostgreSQL refuses NUL in jsonb.
          metadata: { accountName: user === poisoned ? 'bad\u0000name' : 'fine' },
        },
      ],
      nextSyncAt: new Date(Date.now() + 6 * 3600_000),
    }));
    const { rejected } = await saveOutcomes(database(), owner, outcomes, {
      onRefused: (outcome, error) => ({
        kind: 'failure',
        connection: outcome.connection,
        error: `write_back: ${error}`,
        errorDetails: { class: 'write_back' },
        nextAttemptAt: new Date(Date.now() + 600_000),
      }),
    });
    expect(rejected.map((r) => r.connection.userId)).toEqual([poisoned.userId]);
    for (const u of users) {
      expect((await syncLease(u.userId)).sync_lease_owner).toBeNull();
      const [h] = await history(u.userId);
      if (u.userId === poisoned.userId) {
        expect(await accounts(u.userId)).toEqual([]);
        expect(h).toMatchObject({ sync_status: 'failed', error_details: { class: 'write_back' } });
        expect((await syncLease(u.userId)).sync_retry_count).toBe(1);
      } else {
        expect((await accounts(u.userId)).map((a) => a.metadata.accountName)).toEqual(['fine']);
        expect(h.sync_status).toBe('success');
      }
    }
  });

  test('Amazon Attribution profiles are not stored as accounts, and stored ones are set inactive', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 2 });
    await runAccountSync(deps(database()));
    expect(await accounts(u.userId)).toHaveLength(2);
    // Amazon now says the second profile is an Attribution one, and lists a new Attribution profile.
    const [kept, turned] = u.profiles;
    const attribution = { ...turned, accountInfo: { ...turned.accountInfo, subType: 'AMAZON_ATTRIBUTION' } };
    const added = fakeProfile(u.region, { accountInfo: { subType: 'AMAZON_ATTRIBUTION' } });
    world.amazon.removeProfiles(u.userId, [turned.profileId]);
    world.amazon.addProfiles(u.userId, [attribution, added]);
    await makeDue(u.userId);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsSynced: 1, accountsSynced: 1, accountsMissing: 0 });
    const rows = await accounts(u.userId);
    expect(rows.map((r) => r.amazon_account_id)).toEqual([kept.profileId, turned.profileId].sort());
    expect(rows.find((r) => r.amazon_account_id === kept.profileId)).toMatchObject({ status: 'active' });
    expect(rows.find((r) => r.amazon_account_id === turned.profileId)).toMatchObject({
      status: 'inactive',
      sync_status: 'completed',
      sync_error_message: ATTRIBUTION_PROFILE_MESSAGE,
    });
  });

  test('a run whose lease was taken over writes no account, history or schedule', async () => {
    const [u] = await seedUsers(world, { count: 1, profilesPerUser: 3 });
    const other = randomUUID();
    const ads = world.ads();
    // While Amazon answers, the lease expires and another run claims the user.
    const overtaken: ProfileLister = {
      listProfiles: async (request) => {
        await world.admin.query(
          `UPDATE oauth_tokens SET sync_lease_owner = :o::uuid, sync_lease_expires_at = now() + interval '10 minutes' WHERE user_id = :id::uuid`,
          { o: other, id: u.userId },
        );
        return ads.listProfiles(request);
      },
    };
    const summary = await runAccountSync(deps(database(), { ads: overtaken }));
    expect(summary.connectionsClaimed).toBe(1);
    expect(await accounts(u.userId)).toEqual([]);
    expect((await history(u.userId)).map((h) => h.sync_status)).toEqual(['started']);
    expect(await syncLease(u.userId)).toEqual({ sync_lease_owner: other, sync_retry_count: 0 });
  });

  test('history rows of a run that died are closed as abandoned when their user is next claimed', async () => {
    const users = await seedUsers(world, { count: 5, profilesPerUser: 1 });
    // A run claims three users and dies: leases and 'started' rows are all that is left of it.
    const dead = await claimConnections(world.admin, {
      owner: randomUUID(),
      leaseSeconds: 60,
      limit: 3,
      syncType: 'scheduled',
      minTokenValiditySeconds: 0,
    });
    expect(dead).toHaveLength(3);
    await world.admin.query(`UPDATE oauth_tokens SET sync_lease_expires_at = now() - interval '1 second'`);

    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsClaimed: 5, connectionsSynced: 5 });
    for (const u of users) {
      const rows = await history(u.userId);
      if (dead.some((d) => d.userId === u.userId)) {
        expect(rows).toHaveLength(2);
        expect(rows[0]).toMatchObject({
          sync_status: 'failed',
          error_details: { reason: ABANDONED_ATTEMPT_REASON, abandoned: true },
        });
        expect(rows[0].completed_at).not.toBeNull();
        expect(rows[1].sync_status).toBe('success');
      } else {
        expect(rows.map((r) => r.sync_status)).toEqual(['success']);
      }
    }
  });

  test('9,000 profiles of one agency user are written within the Data API’s request limit', async () => {
    const [agency, small] = await seedUsers(world, { count: 2, profilesPerUser: 1 });
    const many = Array.from({ length: 9000 }, (_, i) =>
      fakeProfile(agency.region, { accountInfo: { type: 'agency', name: `Client brand ${i} ${'x'.repeat(120)}` } }),
    );
    world.amazon.addProfiles(agency.userId, many);
    const summary = await runAccountSync(deps(database()));
    expect(summary).toMatchObject({ connectionsSynced: 2, connectionsFailed: 0, accountsSynced: 9002 });
    expect(await accounts(agency.userId)).toHaveLength(9001);
    expect(await accounts(small.userId)).toHaveLength(1);
    expect((await syncLease(agency.userId)).sync_lease_owner).toBeNull();
  }, 120_000);
});

test('leases outlast their function’s timeout by the margin (the sync lease measured in a run)', async () => {
  const [u] = await seedUsers(world, { count: 1 });
  let leaseSeconds = 0;
  const ads = world.ads();
  const measuring: ProfileLister = {
    listProfiles: async (request) => {
      const { rows } = await world.admin.query<{ s: number }>(
        `SELECT extract(epoch FROM sync_lease_expires_at - now())::float8 AS s FROM oauth_tokens WHERE user_id = :id::uuid`,
        { id: u.userId },
      );
      leaseSeconds = rows[0].s;
      return ads.listProfiles(request);
    },
  };
  await runAccountSync(deps(world.dataApi(), { ads: measuring }));
  expect(leaseSeconds).toBeGreaterThan(JOB_TIMING.accountSync.timeoutSeconds + LEASE_MARGIN_SECONDS - 30);
  for (const job of [JOB_TIMING.accountSync, JOB_TIMING.tokenRefresh])
    expect(job.leaseSeconds).toBeGreaterThanOrEqual(job.timeoutSeconds + LEASE_MARGIN_SECONDS);
});
