import { randomBytes } from 'node:crypto';
import { LwaClient } from '../../../lambda/shared/amazon';
import type { ApiRequestEvent } from '../../../lambda/shared/http';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { createTokenRoute } from '../../../lambda/token-route/core';
import {
  FakeAmazonKnobs,
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';

/**
 * One outcome policy (lambda/token-refresh/outcome.ts) for the scheduled token refresh and the
 * on-demand token route: whichever of them meets a failure, the connection ends up the same.
 * Each case refreshes one connection with the job and another with the route, against the
 * same answer from the fake Amazon, and compares what each left in the database.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

interface Case {
  readonly name: string;
  readonly knobs?: Partial<FakeAmazonKnobs>;
  readonly revoke?: boolean;
  readonly wrongCredentials?: boolean;
  /** Failures and refusals in a row before this one. */
  readonly before?: { failures: number; refusals: number };
  readonly expected: {
    readonly enabled: boolean;
    readonly failures: number;
    readonly refusals: number;
    readonly error: RegExp;
    readonly accounts: string;
  };
}

const CASES: readonly Case[] = [
  {
    name: 'a 5xx, after four failures in a row: backed off, never turned off',
    knobs: { rate5xx: 1 },
    before: { failures: 4, refusals: 0 },
    expected: { enabled: true, failures: 5, refusals: 0, error: /^transient: /, accounts: 'completed' },
  },
  {
    name: 'a malformed answer, after four failures in a row: backed off, never turned off',
    knobs: { malformedRate: 1 },
    before: { failures: 4, refusals: 0 },
    expected: { enabled: true, failures: 5, refusals: 0, error: /^malformed: /, accounts: 'completed' },
  },
  {
    name: 'a 429: not a failure',
    knobs: { rate429: 1, retryAfterSeconds: 1 },
    expected: { enabled: true, failures: 0, refusals: 0, error: /^rate_limited: /, accounts: 'completed' },
  },
  {
    name: 'invalid_grant: refresh off at once, the accounts flagged',
    revoke: true,
    expected: { enabled: false, failures: 1, refusals: 1, error: /^invalid_grant: /, accounts: 'reauth_required' },
  },
  {
    name: 'a fourth refusal (invalid_client): counted, still on',
    wrongCredentials: true,
    before: { failures: 3, refusals: 3 },
    expected: { enabled: true, failures: 4, refusals: 4, error: /^invalid_client: /, accounts: 'completed' },
  },
  {
    name: 'a fifth refusal in a row (invalid_client): refresh off, the accounts flagged',
    wrongCredentials: true,
    before: { failures: 4, refusals: 4 },
    expected: {
      enabled: false,
      failures: 5,
      refusals: 5,
      error: /^invalid_client: .*\(5 refusals in a row: proactive refresh turned off\)$/,
      accounts: 'reauth_required',
    },
  },
];

function tokenRequest(user: SeedUser): ApiRequestEvent {
  return {
    rawPath: '/internal/v1/access-tokens',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ userId: user.userId, region: user.region }),
    isBase64Encoded: false,
    requestContext: {
      requestId: randomBytes(8).toString('hex'),
      http: { method: 'POST', path: '/internal/v1/access-tokens' },
      authorizer: { iam: { userArn: 'arn:aws:iam::123456789012:role/product', accountId: '123456789012' } },
    },
  } as ApiRequestEvent;
}

async function state(user: SeedUser) {
  const { rows } = await world.admin.query<{
    enabled: boolean;
    failures: number;
    refusals: number;
    error: string | null;
    backing_off: boolean;
    lease: string | null;
    accounts: string;
  }>(
    `SELECT t.proactive_refresh_enabled AS enabled, t.refresh_failure_count AS failures,
            t.refresh_refusal_count AS refusals, t.last_refresh_error AS error,
            t.next_refresh_attempt_at > now() AS backing_off, t.refresh_lease_owner::text AS lease,
            (SELECT string_agg(DISTINCT ua.sync_status, ',') FROM user_accounts ua
              WHERE ua.user_id = t.user_id AND ua.region = t.region) AS accounts
       FROM oauth_tokens t WHERE t.user_id = :userId::uuid`,
    { userId: user.userId },
  );
  return rows[0];
}

describe.each(PATHS)('%s path', (_path, database) => {
  test.each(CASES)('$name: the job and the route leave the connection alike', async (c) => {
    const [byJob, byRoute] = await seedUsers(world, {
      count: 2,
      expiresInSeconds: 30,
      regions: () => ['NA'],
      accountsDueInSeconds: 3600,
    });
    if (c.before)
      await world.admin.query(
        `UPDATE oauth_tokens SET refresh_failure_count = :failures, refresh_refusal_count = :refusals`,
        c.before,
      );
    if (c.revoke) for (const u of [byJob, byRoute]) world.amazon.revoke(u.userId, 'NA');
    if (c.knobs) world.amazon.setKnobs(c.knobs, 'lwa');
    const lwa = () =>
      c.wrongCredentials
        ? new LwaClient({ clientId: world.amazon.clientId, clientSecret: 'wrong', tokenUrl: world.amazon.lwaTokenUrl })
        : world.lwa();
    const db = database();

    // The job first, with the route's connection out of its reach (leased by nobody alive yet).
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = gen_random_uuid(), refresh_lease_expires_at = now() + interval '1 hour'
        WHERE user_id = :userId::uuid`,
      { userId: byRoute.userId },
    );
    await runTokenRefresh({ db, lwa: lwa(), cipher: world.cipher, ...runtime() });
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = NULL, refresh_lease_expires_at = NULL WHERE user_id = :userId::uuid`,
      { userId: byRoute.userId },
    );
    await world.admin.query('DELETE FROM amazon_rate_budget');
    const result = await createTokenRoute({ db, lwa: lwa(), cipher: world.cipher, logger: runtime().logger })(
      tokenRequest(byRoute),
    );
    expect(result.statusCode).toBe(c.expected.enabled ? (c.knobs?.rate429 ? 503 : 502) : 409);

    const job = await state(byJob);
    const route = await state(byRoute);
    for (const s of [job, route]) {
      expect(s).toMatchObject({
        enabled: c.expected.enabled,
        failures: c.expected.failures,
        refusals: c.expected.refusals,
        backing_off: true,
        lease: null,
        accounts: c.expected.accounts,
      });
      expect(s.error).toMatch(c.expected.error);
    }
    // Amazon's definite answers are recorded word for word alike (the fake varies its 5xx
    // statuses and malformed bodies, so those only match in kind).
    if (c.revoke || c.wrongCredentials) expect(route.error).toBe(job.error);
  });
});
