import { runAccountSync } from '../../lambda/account-sync/core';
import { JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from './fixture';

/**
 * Account sync core paths its mutation run (docs/mutation.md) found unasserted by the group's
 * other test files.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

describe.each(PATHS)('%s path', (_path, database) => {
  test('a stored access token that cannot be decrypted fails only its user, counted once, with the reason and no token in the log', async () => {
    const [broken, fine] = await seedUsers(world, { count: 2 });
    const corrupt = `enc:v1:${Buffer.from('not a ciphertext of this key, at all').toString('base64')}`;
    await world.admin.query(`UPDATE oauth_tokens SET access_token = :token WHERE user_id = :id::uuid`, {
      token: corrupt,
      id: broken.userId,
    });
    const rt = runtime();
    const before = Date.now();

    const summary = await runAccountSync({ db: database(), ads: world.ads(), cipher: world.cipher, ...rt });

    expect(summary).toMatchObject({ usersClaimed: 2, usersSynced: 1, usersFailed: 1 });
    expect(world.amazon.counters.profileCalls(broken.userId)).toBe(0);
    expect(world.amazon.counters.profileCalls(fine.userId)).toBe(1);
    const { rows } = await world.admin.query<{
      sync_status: string;
      error_details: { class?: string; reason?: string } | null;
    }>(`SELECT sync_status, error_details FROM account_sync_history WHERE metadata->>'userId' = :id`, {
      id: broken.userId,
    });
    expect(rows).toHaveLength(1);
    expect(rows[0].sync_status).toBe('failed');
    expect(rows[0].error_details?.class).toBe('token');
    expect(rows[0].error_details?.reason).toBeTruthy();
    const { rows: tokens } = await world.admin.query<{
      sync_retry_count: number;
      sync_next_attempt_at: Date;
      sync_lease_owner: string | null;
      sync_last_error: string | null;
    }>(
      `SELECT sync_retry_count, sync_next_attempt_at, sync_lease_owner, sync_last_error FROM oauth_tokens WHERE user_id = :id::uuid`,
      {
        id: broken.userId,
      },
    );
    expect(tokens[0]).toMatchObject({ sync_retry_count: 1, sync_lease_owner: null });
    expect(tokens[0].sync_last_error).toMatch(/^Stored access token is unreadable \(.+\)$/);
    expect(tokens[0].sync_next_attempt_at.getTime()).toBeGreaterThan(before);
    expect(rt.logger.text()).not.toContain(corrupt);
  });
});
