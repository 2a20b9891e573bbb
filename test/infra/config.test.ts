import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  EnvironmentConfigError,
  proactiveRefreshUsedWithinSeconds,
  resolveEnvironment,
  stackNameOf,
} from '../../lib/config';
import { cdkJsonContext, ROOT as PROJECT_ROOT } from '../../bin/environment-stack';

const run = promisify(execFile);
const environments = cdkJsonContext().environments as Record<string, any>;

/** A copy of cdk.json's dev environment with some fields changed. */
function devWith(change: (dev: any) => void): Record<string, unknown> {
  const dev = structuredClone(environments.dev);
  change(dev);
  return { dev };
}

test('cdk.json defines dev, staging and prod, and each is valid', () => {
  expect(Object.keys(environments)).toEqual(['dev', 'staging', 'prod']);
  for (const name of Object.keys(environments)) expect(resolveEnvironment(name, environments).name).toBe(name);
});

test('prod keeps deletion protection, snapshots, a week of backups and alarm notifications', () => {
  const prod = resolveEnvironment('prod', environments);
  expect(prod.database).toMatchObject({ deletionProtection: true, removalPolicy: 'snapshot' });
  expect(prod.database.backupRetentionDays).toBeGreaterThanOrEqual(7);
  expect(prod.alarms.notify).toBe(true);
});

test('an unknown or missing environment fails with the list of valid ones', () => {
  expect(() => resolveEnvironment('qa', environments)).toThrow(
    'Unknown environment "qa". Pass -c env=<name> with one of: dev, staging, prod',
  );
  expect(() => resolveEnvironment(undefined, environments)).toThrow(
    'No environment given. Pass -c env=<name> with one of: dev, staging, prod',
  );
  expect(() => resolveEnvironment('toString', environments)).toThrow(EnvironmentConfigError);
  expect(() => resolveEnvironment('dev', undefined)).toThrow('cdk.json has no "environments" object');
});

test.each([
  [
    'minimum above maximum',
    (d: any) => (d.database.minCapacityAcu = 4),
    'minCapacityAcu must not exceed maxCapacityAcu',
  ],
  ['ACUs not in steps of 0.5', (d: any) => (d.database.maxCapacityAcu = 2.3), 'must be a multiple of 0.5'],
  [
    'a schedule that is not an EventBridge expression',
    (d: any) => (d.schedules.tokenRefresh = 'every 5 minutes'),
    'schedules.tokenRefresh',
  ],
  ['a log retention CloudWatch does not offer', (d: any) => (d.logRetentionDays = 10), 'must be one of 1, 3, 5'],
  ['an unknown removal policy', (d: any) => (d.database.removalPolicy = 'keep'), 'database.removalPolicy'],
  ['an account without a region', (d: any) => (d.account = '123456789012'), 'give both account and region'],
  ['a misspelt field', (d: any) => (d.database.backupRetention = 7), 'backupRetention'],
  ['a malformed e-mail address', (d: any) => (d.alarms.email = 'ops'), 'alarms.email'],
  ['no sign-in configuration', (d: any) => delete d.api, 'api'],
  ['an issuer over plain http', (d: any) => (d.api.jwtIssuer = 'http://auth.example.com'), 'api.jwtIssuer'],
  ['a JWKS URL that is not a URL', (d: any) => (d.api.jwksUrl = 'keys.json'), 'api.jwksUrl'],
  ['an empty audience list', (d: any) => (d.api.jwtAudience = []), 'api.jwtAudience'],
  ['an audience written as a comma-separated string', (d: any) => (d.api.jwtAudience = 'a,b'), 'api.jwtAudience'],
  ['no CORS origin', (d: any) => (d.api.corsAllowedOrigins = []), 'api.corsAllowedOrigins'],
  ['no connect redirect URI', (d: any) => (d.api.connectRedirectUris = []), 'api.connectRedirectUris'],
  [
    'a connect redirect URI over http that is not localhost',
    (d: any) => (d.api.connectRedirectUris = ['http://app.example.com/cb']),
    'api.connectRedirectUris',
  ],
  [
    'a connect redirect URI with a fragment',
    (d: any) => (d.api.connectRedirectUris = ['https://app.example.com/cb#x']),
    'api.connectRedirectUris',
  ],
  ['a CORS wildcard', (d: any) => (d.api.corsAllowedOrigins = ['*']), 'api.corsAllowedOrigins'],
  [
    'a CORS origin with a path',
    (d: any) => (d.api.corsAllowedOrigins = ['https://app.example.com/']),
    'api.corsAllowedOrigins',
  ],
  [
    'a CORS origin over http that is not localhost',
    (d: any) => (d.api.corsAllowedOrigins = ['http://app.example.com']),
    'api.corsAllowedOrigins',
  ],
  ['a throttle rate of 0', (d: any) => (d.api.throttle.rateLimit = 0), 'api.throttle.rateLimit'],
  ['a burst below the rate', (d: any) => (d.api.throttle.burstLimit = 1), 'burstLimit should be at least rateLimit'],
  ['a misspelt API field', (d: any) => (d.api.issuer = 'https://auth.example.com'), 'issuer'],
  ['no Amazon request rates', (d: any) => delete d.amazonLimits, 'amazonLimits'],
  ['an LWA rate of 0', (d: any) => (d.amazonLimits.lwaRequestsPerSecond = 0), 'amazonLimits.lwaRequestsPerSecond'],
  [
    'an Ads API rate given as text',
    (d: any) => (d.amazonLimits.adsRequestsPerSecond = '5'),
    'amazonLimits.adsRequestsPerSecond',
  ],
])('a config with %s is rejected, naming the field', (_name, change, message) => {
  expect(() => resolveEnvironment('dev', devWith(change))).toThrow(message);
});

test('each environment names its identity provider, its web origins and its throttling', () => {
  for (const name of Object.keys(environments)) {
    const { api } = resolveEnvironment(name, environments);
    expect(api.jwtIssuer).toMatch(/^https:\/\//);
    expect([api.jwtAudience].flat().length).toBeGreaterThan(0);
    expect(api.corsAllowedOrigins.length).toBeGreaterThan(0);
    expect(api.throttle.burstLimit).toBeGreaterThanOrEqual(api.throttle.rateLimit);
  }
  // Only dev lets a local web app on http://localhost call it.
  expect(resolveEnvironment('dev', environments).api.corsAllowedOrigins).toContain('http://localhost:3000');
  for (const name of ['staging', 'prod'])
    for (const origin of resolveEnvironment(name, environments).api.corsAllowedOrigins)
      expect(origin).toMatch(/^https:\/\//);
});

test('an audience may be a list, and the JWKS URL is optional', () => {
  const config = resolveEnvironment(
    'dev',
    devWith((d) => {
      d.api.jwtAudience = ['authenticated', 'mobile'];
      d.api.jwksUrl = 'https://keys.example.com/jwks.json';
    }),
  );
  expect(config.api).toMatchObject({
    jwtAudience: ['authenticated', 'mobile'],
    jwksUrl: 'https://keys.example.com/jwks.json',
  });
});

describe('jobs.proactiveRefreshUsedWithinHours', () => {
  test('cdk.json: one hour in staging and prod (what the scale model supports, docs/scale.md), absent in dev', () => {
    expect(
      Object.keys(environments).map((name) => [
        name,
        proactiveRefreshUsedWithinSeconds(resolveEnvironment(name, environments)),
      ]),
    ).toEqual([
      ['dev', undefined],
      ['staging', 3600],
      ['prod', 3600],
    ]);
  });

  test('absent: every connection is refreshed, no window', () => {
    expect(
      proactiveRefreshUsedWithinSeconds(
        resolveEnvironment(
          'dev',
          devWith((d) => (d.jobs = {})),
        ),
      ),
    ).toBeUndefined();
  });

  test('hours become the seconds the token refresh reads', () => {
    const config = (hours: number) =>
      resolveEnvironment(
        'dev',
        devWith((d) => (d.jobs = { proactiveRefreshUsedWithinHours: hours })),
      );
    expect(proactiveRefreshUsedWithinSeconds(config(24))).toBe(86_400);
    expect(proactiveRefreshUsedWithinSeconds(config(1.5))).toBe(5400);
  });

  test.each([
    ['less than an hour', { proactiveRefreshUsedWithinHours: 0.5 }, 'must be at least 1'],
    ['zero', { proactiveRefreshUsedWithinHours: 0 }, 'must be at least 1'],
    ['more than a year', { proactiveRefreshUsedWithinHours: 10_000 }, 'must be at most 8760'],
    ['a string', { proactiveRefreshUsedWithinHours: '24' }, 'jobs.proactiveRefreshUsedWithinHours'],
    ['a misspelt field', { proactiveRefreshUsedWithinHour: 24 }, 'proactiveRefreshUsedWithinHour'],
  ])('%s is rejected, naming the field', (_name, jobs, message) => {
    expect(() =>
      resolveEnvironment(
        'dev',
        devWith((d) => (d.jobs = jobs)),
      ),
    ).toThrow(message);
  });
});

describe('jobs.fanOut', () => {
  test('cdk.json: staging and prod fan out, dev runs the jobs directly', () => {
    expect(resolveEnvironment('dev', environments).jobs?.fanOut).toBeUndefined();
    for (const name of ['staging', 'prod'])
      expect(resolveEnvironment(name, environments).jobs?.fanOut?.maxConcurrency).toBeGreaterThanOrEqual(2);
  });

  test.each([
    [
      'a concurrency of 1 (SQS event source mappings start at 2)',
      { fanOut: { maxConcurrency: 1 } },
      'must be at least 2',
    ],
    ['more than 1000', { fanOut: { maxConcurrency: 1001 } }, 'jobs.fanOut.maxConcurrency'],
    ['a fraction', { fanOut: { maxConcurrency: 2.5 } }, 'jobs.fanOut.maxConcurrency'],
    ['no concurrency', { fanOut: {} }, 'jobs.fanOut.maxConcurrency'],
    ['a misspelt field', { fanOut: { maxConcurency: 4 } }, 'maxConcurency'],
  ])('%s is rejected, naming the field', (_name, jobs, message) => {
    expect(() =>
      resolveEnvironment(
        'dev',
        devWith((d) => (d.jobs = jobs)),
      ),
    ).toThrow(message);
  });
});

test('an environment named prod cannot drop its protections', () => {
  const prod = structuredClone(environments.prod);
  prod.database.deletionProtection = false;
  prod.database.removalPolicy = 'destroy';
  prod.database.backupRetentionDays = 1;
  prod.alarms.notify = false;
  prod.api.corsAllowedOrigins = ['http://localhost:3000'];
  prod.api.connectRedirectUris = ['http://localhost:3000/amazon/callback'];
  prod.schedules.enabled = false;
  expect(() => resolveEnvironment('prod', { prod })).toThrow(
    /deletionProtection must be true\n✖ database.removalPolicy must be snapshot or retain\n✖ database.backupRetentionDays must be at least 7\n✖ alarms.notify must be true\n✖ api.corsAllowedOrigins must all be https origins\n✖ api.connectRedirectUris must all be https URLs\n✖ schedules.enabled must not be false/,
  );
});

test('account and region are passed through when both are given', () => {
  const config = resolveEnvironment(
    'dev',
    devWith((d) => Object.assign(d, { account: '123456789012', region: 'eu-west-1' })),
  );
  expect(config).toMatchObject({ account: '123456789012', region: 'eu-west-1' });
  expect(stackNameOf(config.name)).toBe('AmazonAccounts-dev');
});

test('the CDK app exits with the list of environments when -c env is wrong', async () => {
  const outdir = mkdtempSync(join(tmpdir(), 'cdk-out-'));
  try {
    const failure = run(
      process.execPath,
      [join(PROJECT_ROOT, 'node_modules', 'tsx', 'dist', 'cli.mjs'), 'bin/app.ts'],
      {
        cwd: PROJECT_ROOT,
        // What the CDK CLI hands the app for `cdk synth -c env=qa`.
        env: {
          ...process.env,
          CDK_OUTDIR: outdir,
          CDK_CONTEXT_JSON: JSON.stringify({ ...cdkJsonContext(), env: 'qa' }),
        },
      },
    );
    await expect(failure).rejects.toMatchObject({
      stderr: expect.stringContaining('Unknown environment "qa". Pass -c env=<name> with one of: dev, staging, prod'),
    });
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
});

describe('GitHub Actions workflows', () => {
  const workflow = (name: string) => readFileSync(join(PROJECT_ROOT, '.github', 'workflows', name), 'utf8');
  const listAfter = (text: string, key: string) => {
    const match = new RegExp(`${key}: \\[([^\\]]*)\\]`).exec(text);
    return match ? match[1].split(',').map((s) => s.trim()) : [];
  };

  test('CI installs from the lock file, runs npm test and synthesizes every environment of cdk.json', () => {
    const ci = workflow('ci.yml');
    expect(ci).toMatch(/^ {2}pull_request:/m);
    expect(ci).toContain('run: npm ci');
    expect(ci).toContain('run: npm test');
    expect(ci).toContain('npx cdk synth --quiet -c env=${{ matrix.environment }}');
    expect(listAfter(ci, 'environment')).toEqual(Object.keys(environments));
  });

  test('the manual deploy offers every environment and assumes a role through OIDC', () => {
    const deploy = workflow('deploy.yml');
    expect(deploy).toMatch(/^ {2}workflow_dispatch:/m);
    expect(listAfter(deploy, 'options')).toEqual(Object.keys(environments));
    expect(deploy).toContain('id-token: write');
    expect(deploy).toContain('role-to-assume: ${{ vars.AWS_DEPLOY_ROLE_ARN }}');
    expect(deploy).toContain('npx cdk deploy -c env=${{ inputs.environment }}');
  });
});
