import { randomBytes, randomUUID } from 'node:crypto';
import { claimDueTokens, saveResults, TokenResult } from '../../../../lambda/token-refresh/store';
import { JobWorld, seedUsers, useJobWorld } from '../../fixture';

/**
 * The write-back's own size limit: the Data API refuses a request over 4 MiB (the emulator
 * does too), so results are written in statements of at most ~1.5 MB each. A normal batch
 * never comes near it (claims stop at ~1 MiB of tokens); this one is built to.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));

test('results over the Data API’s 4 MiB request limit are written in several statements, and every one lands', async () => {
  const users = await seedUsers(world, { count: 800, tokenChars: 2048 });
  const owner = randomUUID();
  // Claimed through node-postgres, which has no response limit: all 800 at once.
  const claimed = await claimDueTokens(world.admin, {
    owner,
    windowSeconds: 1800,
    leaseSeconds: 600,
    limit: 800,
    pausedRegions: [],
    maxTokenChars: 100_000_000,
  });
  expect(claimed).toHaveLength(800);
  // Ciphertext-sized values (an `enc:v1:` token of Amazon's 2,048 characters is ~2,800).
  const value = () => `enc:v1:${randomBytes(2100).toString('base64')}`;
  const expiresAt = new Date(Date.now() + 3600_000);
  const results: TokenResult[] = claimed.map((token) => ({
    kind: 'success',
    result: { token, accessToken: value(), refreshToken: value(), expiresAt },
  }));
  expect(JSON.stringify(results).length).toBeGreaterThan(4 * 1024 * 1024);

  // Every statement the write-back sends, and the ones refused: a statement over 4 MiB would be
  // refused and then written in halves (write-in-halves), so only the refusals tell.
  const db = world.dataApi();
  const refused: unknown[] = [];
  const watched = new Proxy(db, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      if (property !== 'query') return (value as (...a: unknown[]) => unknown).bind(target);
      return async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } catch (error) {
          refused.push(error);
          throw error;
        }
      };
    },
  });
  const { rejected } = await saveResults(watched, owner, results);
  expect(rejected).toEqual([]);
  expect(refused).toEqual([]);
  expect(db.callCounts().total).toBeGreaterThanOrEqual(3);

  const { rows } = await world.admin.query<{
    user_id: string;
    refresh_token: string;
    refresh_lease_owner: string | null;
  }>('SELECT user_id, refresh_token, refresh_lease_owner FROM oauth_tokens');
  const written = new Map(results.map((r) => [r.kind === 'success' ? r.result.token.userId : '', r]));
  expect(rows).toHaveLength(users.length);
  for (const row of rows) {
    const result = written.get(row.user_id);
    expect(result?.kind === 'success' && result.result.refreshToken).toBe(row.refresh_token);
    expect(row.refresh_lease_owner).toBeNull();
  }
});
