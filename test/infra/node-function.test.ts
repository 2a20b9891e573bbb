import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Template } from 'aws-cdk-lib/assertions';
import { fingerprintMigrations } from '../../lambda/migrate/migrations-hash';
import { DEFAULT_MIGRATIONS_DIR } from '../../lambda/migrate/run-migrations';
import { startPostgres, type TestPostgres } from '../../local/postgres/embedded-postgres';
import { appliedMigrations, withClient } from '../support/schema';
import { LAMBDA_BUNDLES, LambdaBundle, synthesizeBundles } from '../../bench/lambda-bundles';
import { onlyResource } from './support/stack';

// One real synth with esbuild bundling (no Docker), then the migration Lambda's bundle, copied
// away from the repository's node_modules, runs its real `handler` in a plain Node.js process
// against PostgreSQL 17, with a stand-in for Secrets Manager. This proves the bundle carries
// node-pg-migrate (ESM), its migration loader and the migrations folder, and that it runs
// without jiti (node-pg-migrate's TypeScript loader, aliased to a stand-in). The same synth
// gives every function's bundle, whose size is checked here too.

const run = promisify(execFile);
let pg: TestPostgres;
let work: string;
let bundleDir: string;
let template: Template;
let bundles: LambdaBundle[];
let secretsServer: Server;
let secretsUrl: string;
const secrets: Record<string, string> = {};

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'bundle-'));
  ({ template, bundles } = synthesizeBundles('dev', join(work, 'cdk.out')));
  bundleDir = join(work, 'lambda-task');
  cpSync(bundles.find((b) => b.name === 'migration')!.dir, bundleDir, { recursive: true });

  pg = await startPostgres({ authMethod: 'scram-sha-256' });
  secretsServer = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      const { SecretId } = JSON.parse(body) as { SecretId: string };
      const target = request.headers['x-amz-target'];
      if (target !== 'secretsmanager.GetSecretValue' || !(SecretId in secrets)) {
        response.writeHead(400, { 'content-type': 'application/x-amz-json-1.1' });
        response.end(JSON.stringify({ __type: 'ResourceNotFoundException', message: `no secret ${SecretId}` }));
        return;
      }
      response.writeHead(200, { 'content-type': 'application/x-amz-json-1.1' });
      response.end(JSON.stringify({ ARN: SecretId, Name: SecretId, SecretString: secrets[SecretId], VersionId: 'v1' }));
    });
  });
  await new Promise<void>((resolve) => secretsServer.listen(0, '127.0.0.1', resolve));
  const address = secretsServer.address();
  secretsUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}, 180_000);

afterAll(async () => {
  await pg?.stop();
  await new Promise((resolve) => secretsServer?.close(resolve));
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Invokes the bundle's `handler` as Lambda would, in a fresh Node.js process. */
async function invoke(
  event: Record<string, unknown>,
  database: string,
  dir = bundleDir,
): Promise<Record<string, unknown>> {
  const script = `
    const { handler } = require(${JSON.stringify(join(dir, 'index.js'))});
    handler(JSON.parse(process.env.EVENT), { getRemainingTimeInMillis: () => 14 * 60 * 1000 })
      .then((r) => process.stdout.write('RESULT ' + JSON.stringify(r) + '\\n'))
      .catch((e) => { process.stdout.write('ERROR ' + e.message + '\\n'); process.exitCode = 1; });`;
  const { stdout } = await run(process.execPath, ['--enable-source-maps', '-e', script], {
    cwd: dir,
    env: {
      PATH: process.env.PATH,
      EVENT: JSON.stringify(event),
      MASTER_SECRET_ARN: 'master',
      WORKER_SECRET_ARN: 'worker',
      API_SECRET_ARN: 'api',
      DB_NAME: database,
      DB_TLS: 'disable',
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_ENDPOINT_URL_SECRETS_MANAGER: secretsUrl,
    },
  });
  const line = stdout.split('\n').find((l) => l.startsWith('RESULT '));
  return JSON.parse(line!.slice('RESULT '.length));
}

test('the bundle ships the same migrations the custom resource\u2019s properties fingerprint', () => {
  const { resource } = onlyResource(template, 'Custom::SchemaMigration');
  const bundled = fingerprintMigrations(join(bundleDir, 'migrations'));
  expect(bundled).toEqual(fingerprintMigrations(DEFAULT_MIGRATIONS_DIR));
  expect(resource.Properties).toMatchObject({ MigrationsHash: bundled.hash, LatestMigration: bundled.latest });
  expect(existsSync(join(bundleDir, 'node_modules'))).toBe(false);
});

test('the bundle ships the RDS CA certificates at the path the function\u2019s DB_CA_FILE names', () => {
  const fn = Object.values(template.findResources('AWS::Lambda::Function')).find((r) =>
    String(r.Properties.Description).startsWith('Applies node-pg-migrate'),
  );
  const caFile = String(fn?.Properties.Environment.Variables.DB_CA_FILE);
  expect(caFile.startsWith('/var/task/')).toBe(true);
  const bundled = readFileSync(join(bundleDir, caFile.slice('/var/task/'.length)), 'utf8');
  // scripts/rds-ca-bundle.js is the CommonJS file the bundling command runs; the test reads the same.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { rdsCaCertificates } = require('../../scripts/rds-ca-bundle.js') as { rdsCaCertificates: () => string[] };
  expect(bundled).toBe(`${rdsCaCertificates().join('\n')}\n`);
  expect(new X509Certificate(bundled).subject).toMatch(/CN=Amazon RDS /);
});

test('the bundled handler migrates a new database and creates the jobs\u2019 and the API\u2019s login users', async () => {
  const url = await pg.createDatabase();
  const database = new URL(url).pathname.slice(1);
  secrets.master = JSON.stringify({
    host: '127.0.0.1',
    port: pg.port,
    username: pg.user,
    password: pg.password,
    dbname: database,
    engine: 'postgres',
  });
  secrets.worker = JSON.stringify({ username: 'accounts_jobs', password: 'bundle-test-password-1234567890' });
  secrets.api = JSON.stringify({ username: 'accounts_api', password: 'bundle-test-api-password-1234567890' });
  const { resource } = onlyResource(template, 'Custom::SchemaMigration');
  const event = {
    RequestType: 'Create',
    ServiceToken: 'token',
    ResponseURL: 'https://example.invalid/',
    StackId: 'stack',
    RequestId: 'request',
    LogicalResourceId: 'SchemaMigration',
    ResourceType: 'Custom::SchemaMigration',
    ResourceProperties: resource.Properties,
  };

  const created = await invoke(event, database);

  const all = fingerprintMigrations(DEFAULT_MIGRATIONS_DIR);
  expect(created).toMatchObject({
    PhysicalResourceId: 'schema-migrations',
    Data: { AppliedCount: all.count, Outcome: 'migrated' },
  });
  expect((await appliedMigrations(url)).at(-1)).toBe(all.latest);
  const logins = await withClient(
    url,
    async (c) =>
      (
        await c.query(
          `SELECT rolname, rolcanlogin,
                  ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                         WHERE m.member = r.oid ORDER BY 1) AS groups
             FROM pg_roles r WHERE rolname IN ('accounts_jobs', 'accounts_api') ORDER BY rolname`,
        )
      ).rows,
  );
  expect(logins).toEqual([
    // accounts_api_caller: the api functions (migration 0019); amazon_rate_budget_user: the
    // shared Amazon rate budget only (migration 0018).
    {
      rolname: 'accounts_api',
      rolcanlogin: true,
      groups: ['accounts_api_caller', 'amazon_rate_budget_user', 'authenticated'],
    },
    { rolname: 'accounts_jobs', rolcanlogin: true, groups: ['accounts_worker'] },
  ]);

  const again = await invoke(
    {
      ...event,
      RequestType: 'Update',
      PhysicalResourceId: 'schema-migrations',
      OldResourceProperties: resource.Properties,
    },
    database,
  );
  expect(again).toMatchObject({ Data: { AppliedCount: 0, Outcome: 'migrated' } });
});

test('every bundle is minified with its source map beside it, and within its size limit', () => {
  // dev: no fan-out, so no dispatcher bundle (the prod stack has one; npm run bench measures it).
  expect(bundles.map((b) => b.name).sort()).toEqual([
    'account-sync',
    'accounts-api',
    'event-publisher',
    'migration',
    'token-reencrypt',
    'token-refresh',
    'token-route',
  ]);
  for (const bundle of bundles) {
    const code = readFileSync(join(bundle.dir, 'index.js'), 'utf8');
    // A separate map (not an inline data: URL), found by --enable-source-maps.
    expect(code.trimEnd().endsWith('//# sourceMappingURL=index.js.map')).toBe(true);
    const map = JSON.parse(readFileSync(join(bundle.dir, 'index.js.map'), 'utf8')) as { sources: string[] };
    expect(
      map.sources.some((s) => s.endsWith(`lambda/${bundle.name === 'migration' ? 'migrate' : bundle.name}/handler.ts`)),
    ).toBe(true);
    // Minified: long lines (unminified, these bundles average under 50 characters a line).
    expect(code.length / code.split('\n').length).toBeGreaterThan(200);
    expect(bundle.bytes).toBeGreaterThan(0);
  }
  const oversized = bundles
    .filter((b) => b.bytes > b.maxBytes)
    .map((b) => `${b.name}: index.js is ${b.bytes} bytes, limit ${b.maxBytes}`);
  expect(oversized).toEqual([]);
  const ours = Object.values(template.findResources('AWS::Lambda::Function')).filter((fn) =>
    LAMBDA_BUNDLES.some((b) => String(fn.Properties.Description ?? '').startsWith(b.description)),
  );
  expect(ours).toHaveLength(bundles.length);
  for (const fn of ours) expect(fn.Properties.Environment.Variables.NODE_OPTIONS).toBe('--enable-source-maps');
  // Every function of ours (Node.js, an asset of its own) is measured, except the second
  // dispatcher, which deploys the same bundle as the first.
  const nodeFunctions = Object.values(template.findResources('AWS::Lambda::Function')).filter(
    (fn) =>
      String(fn.Properties.Runtime ?? '').startsWith('nodejs') &&
      fn.Properties.Environment?.Variables?.NODE_OPTIONS === '--enable-source-maps',
  );
  const keys = new Set(nodeFunctions.map((fn) => JSON.stringify(fn.Properties.Code.S3Key)));
  expect(keys.size).toBe(bundles.length);
});

test('the job bundles carry zod/mini, not all of zod; the migration bundle carries no jiti', () => {
  const sources = (name: string) =>
    (
      JSON.parse(readFileSync(join(bundles.find((b) => b.name === name)!.dir, 'index.js.map'), 'utf8')) as {
        sources: string[];
      }
    ).sources;
  for (const job of ['token-refresh', 'account-sync']) {
    expect(sources(job).some((s) => s.includes('node_modules/zod/v4/mini/'))).toBe(true);
    expect(sources(job).filter((s) => s.includes('node_modules/zod/v4/classic/'))).toEqual([]);
  }
  expect(sources('migration').filter((s) => s.includes('node_modules/jiti/'))).toEqual([]);
  expect(sources('migration')).toContainEqual(expect.stringMatching(/lambda\/migrate\/jiti-unavailable\.ts$/));
});

test('a TypeScript migration fails the bundled handler with a clear message, before anything is applied', async () => {
  const url = await pg.createDatabase();
  const database = new URL(url).pathname.slice(1);
  secrets.master = JSON.stringify({
    host: '127.0.0.1',
    port: pg.port,
    username: pg.user,
    password: pg.password,
    dbname: database,
    engine: 'postgres',
  });
  secrets.worker = JSON.stringify({ username: 'accounts_jobs', password: 'bundle-test-password-1234567890' });
  const dir = join(work, 'lambda-task-ts');
  cpSync(bundleDir, dir, { recursive: true });
  writeFileSync(join(dir, 'migrations', '9999_typescript.ts'), 'export const up = () => undefined;\n');
  const { resource } = onlyResource(template, 'Custom::SchemaMigration');
  const event = {
    RequestType: 'Create',
    ServiceToken: 'token',
    ResponseURL: 'https://example.invalid/',
    StackId: 'stack',
    RequestId: 'request',
    LogicalResourceId: 'SchemaMigration',
    ResourceType: 'Custom::SchemaMigration',
    ResourceProperties: resource.Properties,
  };

  const failure = await invoke(event, database, dir).then(
    () => undefined,
    (error: { stdout?: string }) => error.stdout ?? '',
  );

  expect(failure).toContain('9999_typescript.ts: migrations must be .sql or CommonJS .js files');
  expect(await appliedMigrations(url)).toEqual([]);
});
