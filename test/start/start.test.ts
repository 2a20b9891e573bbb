import { ChildProcess, execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

import { ensureWorkerLogin } from '../../lambda/migrate/worker-login';
import { startPostgres } from '../../local/postgres/embedded-postgres';
import { withClient } from '../support/schema';

const ROOT = resolve(__dirname, '..', '..');
const TSX = join(ROOT, 'node_modules', '.bin', 'tsx');
const run = promisify(execFile);

let local: string;
beforeAll(() => {
  local = mkdtempSync(join(tmpdir(), 'npm-start-'));
  chmodSync(local, 0o755);
});
afterAll(() => rmSync(local, { recursive: true, force: true }));

const env = () => ({ ...process.env, ACCOUNTS_LOCAL_DIR: local });

function portOpen(port: number): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(false));
  });
}

test('npm start runs the whole system, prints the summary and exits 0; a second run continues', async () => {
  const first = await run(TSX, ['scripts/start.ts', '--fresh'], { cwd: ROOT, env: env() });
  expect(first.stdout).toMatch(/first run/);
  expect(first.stdout).toMatch(/migrations applied this run\s+\d+/);
  expect(first.stdout).toMatch(/demo users\s+300 \(created now\)/);
  const refreshed = Number(/tokens refreshed\s+(\d+) of (\d+) due/.exec(first.stdout)![1]);
  expect(refreshed).toBeGreaterThan(20);
  expect(first.stdout).toMatch(/tokens needing re-authorisation \(this run\)\s+[1-9]/);
  expect(Number(/connections synced \/ failed\s+(\d+)/.exec(first.stdout)![1])).toBeGreaterThan(50);
  // Demo users connected in one, two and three regions; connections counted per region.
  const [, na, eu, fe, one, two, three] =
    /connections by region\s+NA (\d+), EU (\d+), FE (\d+) \(users in 1 \/ 2 \/ 3 regions: (\d+) \/ (\d+) \/ (\d+)\)/
      .exec(first.stdout)!
      .map(Number);
  expect(one + two + three).toBe(300);
  expect(two).toBeGreaterThan(0);
  expect(three).toBeGreaterThan(0);
  expect(na + eu + fe).toBe(one + 2 * two + 3 * three);
  expect(first.stdout).toMatch(/Where to look next/);
  expect(existsSync(join(local, 'logs', 'jobs.log'))).toBe(true);
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(first.stdout)![1]);
  expect(await portOpen(port)).toBe(false); // everything it started is stopped

  // A .local/ folder from before the jobs' login was named as in AWS also has `jobs_worker`.
  const pg = await startPostgres({ dataDir: join(local, 'postgres') });
  try {
    await withClient(pg.url('accounts'), (c) =>
      ensureWorkerLogin(c, { username: 'jobs_worker', password: 'old-login' }),
    );
  } finally {
    await pg.stop();
  }

  const second = await run(TSX, ['scripts/start.ts'], { cwd: ROOT, env: env() });
  expect(second.stdout).toMatch(/continuing from the last run/);
  expect(second.stdout).toMatch(/migrations applied this run\s+0/);
  expect(second.stdout).toMatch(/demo users\s+300 \(from earlier runs\)/);
  expect(second.stdout).toMatch(/the jobs' login is now accounts_jobs, as in AWS; jobs_worker removed/);
});

test('npm start -- --watch keeps running until Ctrl-C, then stops every process it started', async () => {
  const child: ChildProcess = spawn(TSX, ['scripts/start.ts', '--watch'], {
    cwd: ROOT,
    env: env(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((done, fail) => {
    const timer = setInterval(() => {
      if (out.includes('Ctrl-C stops everything')) {
        clearInterval(timer);
        done();
      }
    }, 100);
    child.once('exit', (code) => fail(new Error(`exited early with ${code}: ${out}`)));
  });
  const port = Number(/listening on 127\.0\.0\.1:(\d+)/.exec(out)![1]);
  expect(await portOpen(port)).toBe(true);
  expect(out).toMatch(/psql postgres:\/\//);
  const exit = new Promise<number | null>((done) => child.once('exit', (code) => done(code)));
  child.kill('SIGINT');
  expect(await exit).toBe(0);
  expect(out).toMatch(/Stopping/);
  expect(await portOpen(port)).toBe(false);
});
