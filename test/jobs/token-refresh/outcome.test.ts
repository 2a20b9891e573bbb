import { randomBytes } from 'node:crypto';
import { LwaClient } from '../../../lambda/shared/amazon';
import type { ApiRequestEvent } from '../../../lambda/shared/http';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import {
  needsReauthorisation,
  REFRESH_OUTCOME_DEFAULTS,
  refreshFailureOutcome,
  REVOKED_MESSAGE,
  unreadableTokenOutcome,
} from '../../../lambda/token-refresh/outcome';
import type { ClaimedToken, TokenResult } from '../../../lambda/token-refresh/store';
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

describe('the policy, outcome by outcome', () => {
  const token: ClaimedToken = {
    id: '00000000-0000-4000-8000-000000000001',
    userId: '00000000-0000-4000-8000-000000000002',
    storedRefreshToken: 'enc:v2:stored',
    region: 'EU',
    refreshFailureCount: 0,
    refreshRefusalCount: 0,
  };
  const at = new Date('2026-12-07T12:00:00Z');
  /** The clock held still, no jitter: each backoff is its floor (half the doubled base). */
  const clock = { now: at, random: () => 0 };
  const after = (result: TokenResult) => {
    if (result.kind !== 'failure') throw new Error(`not a failure: ${result.kind}`);
    return { ...result.result, inSeconds: (result.result.nextAttemptAt.getTime() - at.getTime()) / 1000 };
  };

  test('a 429 is retried after its Retry-After, at least the base delay; no failure, no refusal, accounts untouched', () => {
    const short = refreshFailureOutcome(
      token,
      { kind: 'rate_limited', retryAfterSeconds: 1 },
      REFRESH_OUTCOME_DEFAULTS,
      clock,
    );
    expect(after(short)).toMatchObject({
      inSeconds: 60,
      countsAsFailure: false,
      countsAsRefusal: false,
      disable: false,
      error: 'rate_limited: Login with Amazon answered 429, retry after 1 s',
    });
    expect(short).toMatchObject({ reauth: undefined });
    expect(needsReauthorisation(short)).toBe(false);
    // Even after failures in a row: the 429's time, not the failures' backoff.
    const long = refreshFailureOutcome(
      { ...token, refreshFailureCount: 6 },
      { kind: 'rate_limited', retryAfterSeconds: 120 },
      REFRESH_OUTCOME_DEFAULTS,
      clock,
    );
    expect(after(long).inSeconds).toBe(120);
  });

  test('a failure backs off from the failures in a row (this one counted): 1, 2, 5 in a row: 30 s, 60 s, 480 s at the least; capped by half the maximum', () => {
    const backoff = (failuresBefore: number, policy = REFRESH_OUTCOME_DEFAULTS) =>
      after(
        refreshFailureOutcome(
          { ...token, refreshFailureCount: failuresBefore },
          { kind: 'transient', reason: 'http_5xx (HTTP 503)' },
          policy,
          clock,
        ),
      );
    expect(backoff(0)).toMatchObject({
      inSeconds: 30,
      error: 'transient: http_5xx (HTTP 503)',
      countsAsFailure: true,
      countsAsRefusal: false,
      disable: false,
    });
    expect(backoff(1).inSeconds).toBe(60);
    expect(backoff(4).inSeconds).toBe(480);
    expect(backoff(20).inSeconds).toBe(1800);
    expect(backoff(0, { ...REFRESH_OUTCOME_DEFAULTS, retryBaseSeconds: 10 }).inSeconds).toBe(5);
    expect(backoff(20, { ...REFRESH_OUTCOME_DEFAULTS, retryMaxSeconds: 100 }).inSeconds).toBe(50);
    // With full jitter: up to twice the floor.
    const jittered = refreshFailureOutcome(
      { ...token, refreshFailureCount: 4 },
      { kind: 'malformed', reason: 'no access_token' },
      REFRESH_OUTCOME_DEFAULTS,
      { now: at, random: () => 0.999 },
    );
    expect(after(jittered).inSeconds).toBeGreaterThan(950);
    expect(after(jittered).inSeconds).toBeLessThan(960);
    expect(after(jittered).error).toBe('malformed: no access_token');
  });

  test('definite refusals: counted; the message says so only when they turn refresh off; a token read without a count starts at one', () => {
    const refused = (refusalsBefore: number | undefined, max = 5) =>
      refreshFailureOutcome(
        { ...token, refreshRefusalCount: refusalsBefore },
        { kind: 'permanent', code: 'invalid_client' },
        { ...REFRESH_OUTCOME_DEFAULTS, maxConsecutiveRefusals: max },
        clock,
      );
    const fourth = refused(3);
    expect(after(fourth)).toMatchObject({
      error: 'invalid_client: Login with Amazon refused the refresh',
      countsAsFailure: true,
      countsAsRefusal: true,
      disable: false,
    });
    expect(fourth).toMatchObject({ reauth: undefined });
    expect(needsReauthorisation(fourth)).toBe(false);
    const fifth = refused(4);
    const message =
      'invalid_client: Login with Amazon refused the refresh (5 refusals in a row: proactive refresh turned off)';
    expect(after(fifth)).toMatchObject({ error: message, disable: true });
    expect(fifth).toMatchObject({ reauth: message });
    expect(needsReauthorisation(fifth)).toBe(true);
    expect(after(refused(undefined, 1))).toMatchObject({
      error:
        'invalid_client: Login with Amazon refused the refresh (1 refusals in a row: proactive refresh turned off)',
      disable: true,
    });
    expect(after(refused(undefined, 2)).disable).toBe(false);
  });

  test('invalid_grant and an unreadable refresh token: refresh off at once, the accounts told why', () => {
    const revoked = refreshFailureOutcome(
      token,
      { kind: 'permanent', code: 'invalid_grant' },
      REFRESH_OUTCOME_DEFAULTS,
      clock,
    );
    expect(after(revoked)).toMatchObject({
      error: REVOKED_MESSAGE,
      countsAsRefusal: true,
      disable: true,
      inSeconds: 30,
    });
    expect(revoked).toMatchObject({ reauth: REVOKED_MESSAGE });
    const unreadable = unreadableTokenOutcome(token, 'bad tag', REFRESH_OUTCOME_DEFAULTS, clock);
    const reason = 'Stored refresh token is unreadable (bad tag); the user must reconnect Amazon';
    expect(after(unreadable)).toMatchObject({
      error: reason,
      countsAsFailure: true,
      countsAsRefusal: true,
      disable: true,
      inSeconds: 30,
    });
    expect(unreadable).toMatchObject({ reauth: reason });
    expect(needsReauthorisation(unreadable)).toBe(true);
  });

  test('only a failure that turned refresh off asks for re-authorisation: a result given back does not', () => {
    expect(needsReauthorisation({ kind: 'released', token })).toBe(false);
  });
});
