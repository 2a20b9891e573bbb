import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CloudFormationCustomResourceEvent } from 'aws-lambda';
import { Client, type ClientConfig } from 'pg';
import {
  isRollback,
  MAX_APPLIED_LENGTH,
  onSchemaMigrationEvent,
  type SchemaMigrationDeps,
} from '../../../lambda/migrate/on-event';
import { runMigrations, type MigrationResult } from '../../../lambda/migrate/run-migrations';
import { freePort, startPostgres, TestPostgres } from '../../../local/postgres/embedded-postgres';
import { appliedMigrations, withClient } from '../../support/schema';

// The migration custom resource's decisions, on a small migrations folder of the test's own
// (the repository's full lifecycle is test/migrations/on-event/cloudformation-lifecycle.test.ts): what it
// answers, what it logs, when it touches the database, how it waits, when it reads the master
// password again.

let pg: TestPostgres;
let master: ClientConfig;
let dir: string;
const worker = { username: 'on_event_worker', password: 'worker-password-0123456789' };

beforeAll(async () => {
  pg = await startPostgres();
  const url = new URL(await pg.createDatabase());
  master = {
    host: url.hostname,
    port: Number(url.port),
    user: pg.user,
    password: pg.password,
    database: url.pathname.slice(1),
  };
  // The role the jobs' login user joins (the repository's migration 0006 creates it), here
  // both before any test and by the test's own migration.
  await withClient(pg.url(master.database), (c) => c.query('CREATE ROLE accounts_worker NOLOGIN'));
  dir = mkdtempSync(join(tmpdir(), 'on-event-'));
  writeFileSync(
    join(dir, '0001_worker-role.sql'),
    `-- Up Migration
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'accounts_worker') THEN CREATE ROLE accounts_worker NOLOGIN; END IF;
END $$;
`,
  );
});
afterAll(async () => {
  await pg?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const common = {
  ServiceToken: 'arn:aws:lambda:eu-west-1:111111111111:function:provider',
  ResponseURL: 'https://cloudformation-custom-resource-response.example/',
  StackId: 'arn:aws:cloudformation:eu-west-1:111111111111:stack/AmazonAccounts-dev/1',
  RequestId: 'request',
  LogicalResourceId: 'SchemaMigration',
  ResourceType: 'Custom::SchemaMigration',
};
const properties = (latest: string) => ({
  ServiceToken: common.ServiceToken,
  MigrationsHash: 'h',
  LatestMigration: latest,
});
const create: CloudFormationCustomResourceEvent = {
  ...common,
  RequestType: 'Create',
  ResourceProperties: properties('0001_worker-role'),
};
function update(latest: string, previous: string): CloudFormationCustomResourceEvent {
  return {
    ...common,
    RequestType: 'Update',
    PhysicalResourceId: 'physical-id-from-cloudformation',
    ResourceProperties: properties(latest),
    OldResourceProperties: properties(previous),
  };
}
const remove: CloudFormationCustomResourceEvent = {
  ...common,
  RequestType: 'Delete',
  PhysicalResourceId: 'physical-id-from-cloudformation',
  ResourceProperties: properties('0001_worker-role'),
};

function recording(overrides: Partial<SchemaMigrationDeps> = {}) {
  const lines: [string, string][] = [];
  const at = (level: string) => (message: string) => void lines.push([level, message]);
  const calls = { masterConnection: 0 };
  const deps: SchemaMigrationDeps = {
    masterConnection: async () => {
      calls.masterConnection += 1;
      return master;
    },
    workerCredentials: async () => worker,
    migrationsDir: dir,
    remainingTimeMs: () => 14 * 60_000,
    logger: { info: at('info'), warn: at('warn'), error: at('error') },
    sleep: async () => undefined,
    ...overrides,
  };
  return { deps, lines, calls };
}

const untouchable = {
  masterConnection: async (): Promise<ClientConfig> => {
    throw new Error('the database must not be touched');
  },
  migrate: async (): Promise<MigrationResult> => {
    throw new Error('the migrations must not run');
  },
};

/** An error as node-postgres reports a refused password, `depth` causes down. */
function refusedPassword(depth: number): Error {
  let error: Error = Object.assign(new Error('password authentication failed for user "postgres"'), {
    code: '28P01',
  });
  for (let i = 0; i < depth; i++) error = new Error(`wrapped ${i}`, { cause: error });
  return error;
}

test('Create migrates, creates the login user, and answers with what it applied; a second run changes nothing', async () => {
  const migrate = jest.fn(runMigrations);
  const first = recording({ migrate });
  expect(await onSchemaMigrationEvent(create, first.deps)).toEqual({
    PhysicalResourceId: 'schema-migrations',
    Data: { Applied: '0001_worker-role', AppliedCount: 1, Outcome: 'migrated' },
  });
  expect(migrate).toHaveBeenCalledWith({
    database: master,
    dir,
    logger: first.deps.logger,
    sleep: first.deps.sleep,
    remainingTimeMs: first.deps.remainingTimeMs,
  });
  expect(first.lines).toContainEqual(['info', 'Applied 1 migration(s) in 1 attempt(s): 0001_worker-role']);
  expect(first.lines).toContainEqual(['info', 'Worker login user created']);
  expect(await appliedMigrations(pg.url(master.database))).toEqual(['0001_worker-role']);
  const member = await withClient(
    pg.url(master.database),
    async (c) =>
      (
        await c.query(
          `SELECT rolcanlogin, pg_has_role(rolname, 'accounts_worker', 'USAGE') AS member FROM pg_roles WHERE rolname = $1`,
          [worker.username],
        )
      ).rows,
  );
  expect(member).toEqual([{ rolcanlogin: true, member: true }]);

  const again = recording();
  expect(await onSchemaMigrationEvent(update('0001_worker-role', '0001_worker-role'), again.deps)).toEqual({
    PhysicalResourceId: 'physical-id-from-cloudformation',
    Data: { Applied: '', AppliedCount: 0, Outcome: 'migrated' },
  });
  expect(again.lines).toContainEqual(['info', 'Applied 0 migration(s) in 1 attempt(s): none']);
  expect(again.lines).toContainEqual(['info', 'Worker login user unchanged']);
});

test('Delete answers at once and leaves the database alone', async () => {
  const { deps, lines } = recording(untouchable);
  expect(await onSchemaMigrationEvent(remove, deps)).toEqual({
    PhysicalResourceId: 'physical-id-from-cloudformation',
    Data: { Applied: '', AppliedCount: 0, Outcome: 'deleted' },
  });
  expect(lines).toEqual([['info', 'Delete: the database is left as it is']]);
});

test('an Update back to an earlier last migration is a rollback: skipped, with a warning', async () => {
  const { deps, lines } = recording(untouchable);
  expect(await onSchemaMigrationEvent(update('0001_a', '0002_b'), deps)).toEqual({
    PhysicalResourceId: 'physical-id-from-cloudformation',
    Data: { Applied: '', AppliedCount: 0, Outcome: 'rollback-skipped' },
  });
  expect(lines).toEqual([
    ['warn', 'Update back to 0001_a from 0002_b is a rollback: migrations are never undone on deploy, nothing to do'],
  ]);
});

test.each([
  ['an earlier last migration', '0001_a', '0002_b', true],
  ['the same last migration', '0002_b', '0002_b', false],
  ['a later last migration', '0003_c', '0002_b', false],
  ['no previous last migration', '0001_a', undefined, false],
  ['no new last migration', undefined, '0001_a', true],
])('isRollback: %s', (_what, next, previous, expected) => {
  expect(isRollback({ LatestMigration: next }, { LatestMigration: previous })).toBe(expected);
});

test('a long list of applied names is shortened to the first and the last', async () => {
  const names = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}_mig`);
  const { deps } = recording({ migrate: async () => ({ applied: names, attempts: 2 }) });
  const response = await onSchemaMigrationEvent(create, deps);
  expect(response.Data).toEqual({ Applied: '0000_mig,...,0199_mig', AppliedCount: 200, Outcome: 'migrated' });

  const fits = Array.from({ length: 100 }, (_, i) => `${String(i).padStart(5, '0')}_mig`); // 999 characters
  expect(fits.join(',').length).toBeLessThanOrEqual(MAX_APPLIED_LENGTH);
  const exactly = [...fits.slice(0, 99), `${fits[99]}x`]; // 1,000 characters
  expect(exactly.join(',')).toHaveLength(MAX_APPLIED_LENGTH);
  const { deps: deps2, lines } = recording({ migrate: async () => ({ applied: exactly, attempts: 3 }) });
  expect((await onSchemaMigrationEvent(create, deps2)).Data.Applied).toBe(exactly.join(','));
  expect(lines).toContainEqual(['info', `Applied 100 migration(s) in 3 attempt(s): ${exactly.join(', ')}`]);
});

describe('a refused master password', () => {
  test.each([0, 1, 4])('is read again once and the step run again (the code %i causes down)', async (depth) => {
    const rotated = { ...master, application_name: 'after-rotation' };
    const databases: unknown[] = [];
    let attempts = 0;
    const { deps, lines, calls } = recording({
      migrate: async (options) => {
        databases.push(options.database);
        attempts += 1;
        if (attempts === 1) throw refusedPassword(depth);
        return { applied: [], attempts: 1 };
      },
    });
    const connections = [master, rotated];
    const response = await onSchemaMigrationEvent(create, {
      ...deps,
      masterConnection: async () => {
        calls.masterConnection += 1;
        return connections[calls.masterConnection - 1];
      },
    });
    expect(response.Data.Outcome).toBe('migrated');
    expect(databases).toEqual([master, rotated]);
    expect(lines).toContainEqual([
      'warn',
      'The master password was refused (rotated meanwhile?): reading its secret again',
    ]);
  });

  test('refused twice, the deploy fails with the database’s error', async () => {
    let attempts = 0;
    const { deps, calls } = recording({
      migrate: async () => {
        attempts += 1;
        throw refusedPassword(0);
      },
    });
    await expect(onSchemaMigrationEvent(create, deps)).rejects.toThrow('password authentication failed');
    expect(attempts).toBe(2);
    expect(calls.masterConnection).toBe(2); // the wait's connection, then the one read again
  });

  test.each([
    ['another error', Object.assign(new Error('relation "x" does not exist'), { code: '42P01' })],
    ['a refused password more than four causes down', refusedPassword(5)],
  ])('%s is not a refused password: no second read', async (_what, error) => {
    let attempts = 0;
    const { deps, calls } = recording({
      migrate: async () => {
        attempts += 1;
        throw error;
      },
    });
    await expect(onSchemaMigrationEvent(create, deps)).rejects.toBe(error);
    expect(attempts).toBe(1);
    expect(calls.masterConnection).toBe(1);
  });
});

describe('waiting for the database', () => {
  async function waitFailure(remainingTimeMs: number) {
    const closedPort = await freePort();
    let clock = 0;
    const sleeps: number[] = [];
    const { deps, lines } = recording({
      masterConnection: async () => ({ ...master, port: closedPort }),
      remainingTimeMs: () => remainingTimeMs,
      now: () => clock,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock += ms;
      },
      ...{ migrate: untouchable.migrate },
    });
    const error = await onSchemaMigrationEvent(create, deps).then(
      () => new Error('the event succeeded'),
      (e: unknown) => e as Error,
    );
    return { error, sleeps, lines };
  }

  test('keeps 3 minutes for the migrations: 5 s beyond them allow sleeps of 1 s and 2 s', async () => {
    const { error, sleeps, lines } = await waitFailure(3 * 60_000 + 5_000);
    expect(error.message).toMatch(/^Database not reachable after 3 attempts over 3 s: .*ECONNREFUSED/);
    expect(sleeps).toEqual([1000, 2000]);
    expect(lines[0]).toEqual(['warn', expect.stringMatching(/^Database not ready \(attempt 1\): .*ECONNREFUSED/)]);
  });

  test('waits 5 minutes at most, however long the function has left', async () => {
    const { error, sleeps } = await waitFailure(14 * 60_000);
    expect(error.message).toMatch(/^Database not reachable after \d+ attempts over 300 s/);
    expect(sleeps.reduce((a, b) => a + b, 0)).toBe(300_000);
  });

  test('with less than the reserve left, one attempt and no wait', async () => {
    const { error, sleeps } = await waitFailure(60_000);
    expect(error.message).toMatch(/^Database not reachable after 1 attempts over 0 s/);
    expect(sleeps).toEqual([]);
  });
});

describe('the jobs’ login user, when its secret and the database disagree', () => {
  const noMigrations = { migrate: async () => ({ applied: [], attempts: 1 }) };
  const login = async (username: string, password: string) => {
    const client = new Client({ ...master, user: username, password });
    await client.connect();
    await client.end();
  };

  test('a password the secret no longer has is replaced; a working one is left alone', async () => {
    const user = { username: 'on_event_rotated', password: 'first-password-0123456789' };
    const rotated = { ...user, password: 'second-password-0123456789' };
    const first = recording({ ...noMigrations, workerCredentials: async () => user });
    await onSchemaMigrationEvent(create, first.deps);
    expect(first.lines).toContainEqual(['info', 'Worker login user created']);
    const second = recording({ ...noMigrations, workerCredentials: async () => rotated });
    await onSchemaMigrationEvent(create, second.deps);
    expect(second.lines).toContainEqual(['info', 'Worker login user updated']);
    await login(rotated.username, rotated.password);
    const third = recording({ ...noMigrations, workerCredentials: async () => rotated });
    await onSchemaMigrationEvent(create, third.deps);
    expect(third.lines).toContainEqual(['info', 'Worker login user unchanged']);
  });

  test('a user that may not log in (28000) is given its login back', async () => {
    const user = { username: 'on_event_nologin', password: 'nologin-password-0123456789' };
    await onSchemaMigrationEvent(create, recording({ ...noMigrations, workerCredentials: async () => user }).deps);
    await withClient(pg.url(master.database), (c) => c.query('ALTER ROLE on_event_nologin NOLOGIN'));
    const again = recording({ ...noMigrations, workerCredentials: async () => user });
    await onSchemaMigrationEvent(create, again.deps);
    expect(again.lines).toContainEqual(['info', 'Worker login user updated']);
    await login(user.username, user.password);
  });

  test('the master password is read again once per event, not once per step', async () => {
    const refused = { ...master, password: 'not-the-password' };
    let attempts = 0;
    const { deps, calls } = recording({
      migrate: async () => {
        attempts += 1;
        if (attempts === 1) throw refusedPassword(0);
        return { applied: [], attempts: 1 };
      },
    });
    const connections = [master, refused, master];
    const result = onSchemaMigrationEvent(create, {
      ...deps,
      masterConnection: async () => {
        calls.masterConnection += 1;
        return connections[calls.masterConnection - 1];
      },
    });
    // The migrations ran with the second read; the login step is refused with it, and fails.
    await expect(result).rejects.toMatchObject({ code: '28P01' });
    expect(calls.masterConnection).toBe(2);
  });
});
