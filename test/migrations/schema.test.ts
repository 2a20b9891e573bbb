import { runMigrations } from '../../lambda/migrate/run-migrations';
import { startPostgres, TestPostgres } from '../../local/postgres/embedded-postgres';
import { SchemaSnapshot, snapshotSchema } from '../support/schema';

// Schema conformance: every column, index, foreign key, constraint, policy and RLS flag that
// the original schema specification (docs/schema-spec.md) and the baseline contract (docs/architecture.md) ask for, on a real PostgreSQL 17.

let pg: TestPostgres;
let schema: SchemaSnapshot;

beforeAll(async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase();
  await runMigrations({ database: url });
  schema = await snapshotSchema(url);
});
afterAll(async () => {
  await pg?.stop();
});

const TIMESTAMPTZ = 'timestamp with time zone';

describe('columns', () => {
  test.each([
    // table.column, type, nullable, default
    ['users.id', 'uuid', false, 'gen_random_uuid()'],
    ['users.email', 'text', false, null],
    ['oauth_tokens.user_id', 'uuid', false, null],
    ['oauth_tokens.access_token', 'text', false, null],
    ['oauth_tokens.refresh_token', 'text', false, null],
    ['oauth_tokens.expires_at', TIMESTAMPTZ, false, null],
    ['oauth_tokens.region', 'text', false, "'NA'::text"],
    ['oauth_tokens.refresh_failure_count', 'integer', false, '0'],
    ['oauth_tokens.last_refresh_error', 'text', true, null],
    ['oauth_tokens.proactive_refresh_enabled', 'boolean', false, 'true'],
    ['user_accounts.amazon_account_id', 'text', false, null],
    ['user_accounts.status', 'text', false, "'pending'::text"],
    ['user_accounts.metadata', 'jsonb', false, "'{}'::jsonb"],
    ['user_accounts.sync_status', 'character varying(50)', false, "'pending'::character varying"],
    ['user_accounts.sync_error_message', 'text', true, null],
    ['user_accounts.sync_retry_count', 'integer', false, '0'],
    ['user_accounts.next_sync_at', TIMESTAMPTZ, false, 'now()'],
    ['account_sync_history.id', 'uuid', false, 'gen_random_uuid()'],
    ['account_sync_history.user_account_id', 'uuid', true, null],
    ['account_sync_history.sync_type', 'character varying(50)', false, null],
    ['account_sync_history.sync_status', 'character varying(50)', false, null],
    ['account_sync_history.started_at', TIMESTAMPTZ, false, 'now()'],
    ['account_sync_history.completed_at', TIMESTAMPTZ, true, null],
    ['account_sync_history.accounts_synced', 'integer', false, '0'],
    ['account_sync_history.accounts_failed', 'integer', false, '0'],
    ['account_sync_history.error_details', 'jsonb', true, null],
    ['account_sync_history.metadata', 'jsonb', false, "'{}'::jsonb"],
    ['account_sync_history.created_at', TIMESTAMPTZ, false, 'now()'],
    ['rate_limit_tracking.id', 'uuid', false, 'gen_random_uuid()'],
    ['rate_limit_tracking.user_id', 'uuid', true, null],
    ['rate_limit_tracking.endpoint', 'character varying(255)', false, null],
    ['rate_limit_tracking.request_count', 'integer', false, '0'],
    ['rate_limit_tracking.limit_hit_count', 'integer', false, '0'],
    ['rate_limit_tracking.last_limit_hit', TIMESTAMPTZ, true, null],
    ['rate_limit_tracking.retry_after_seconds', 'integer', true, null],
    ['rate_limit_tracking.window_start', TIMESTAMPTZ, false, 'now()'],
    // 0010: the allowed rate 429s cut an endpoint to (NULL: at the configured ceiling).
    ['rate_limit_tracking.allowed_rate_per_second', 'numeric', true, null],
    ['rate_limit_tracking.created_at', TIMESTAMPTZ, false, 'now()'],
    ['rate_limit_tracking.updated_at', TIMESTAMPTZ, false, 'now()'],
  ])('%s is %s, nullable=%s, default %s', (column, type, nullable, defaultValue) => {
    expect(schema.columns[column]).toEqual({ type, nullable, default: defaultValue });
  });

  test('the OAuth token backup holds no token values', () => {
    const backupColumns = Object.keys(schema.columns).filter((c) => c.startsWith('oauth_tokens_backup.'));
    expect(backupColumns.sort()).toEqual(
      ['created_at', 'expires_at', 'id', 'region', 'updated_at', 'user_id'].map((c) => `oauth_tokens_backup.${c}`),
    );
  });

  test('the user_accounts backup has every pre-spec column', () => {
    const backupColumns = Object.keys(schema.columns).filter((c) => c.startsWith('user_accounts_backup.'));
    expect(backupColumns.map((c) => c.split('.')[1]).sort()).toEqual([
      'amazon_account_id',
      'created_at',
      'id',
      'metadata',
      'status',
      'updated_at',
      'user_id',
    ]);
  });
});

describe('indexes', () => {
  test.each([
    [
      'idx_oauth_tokens_expires_at',
      'CREATE INDEX idx_oauth_tokens_expires_at ON public.oauth_tokens USING btree (expires_at) WHERE (proactive_refresh_enabled = true)',
    ],
    [
      'idx_user_accounts_user_amazon',
      'CREATE UNIQUE INDEX idx_user_accounts_user_amazon ON public.user_accounts USING btree (user_id, amazon_account_id)',
    ],
    [
      'idx_user_accounts_metadata',
      'CREATE INDEX idx_user_accounts_metadata ON public.user_accounts USING gin (metadata)',
    ],
    [
      'idx_user_accounts_next_sync_at',
      'CREATE INDEX idx_user_accounts_next_sync_at ON public.user_accounts USING btree (next_sync_at)',
    ],
    [
      'idx_sync_history_account',
      'CREATE INDEX idx_sync_history_account ON public.account_sync_history USING btree (user_account_id)',
    ],
    [
      'idx_sync_history_status',
      'CREATE INDEX idx_sync_history_status ON public.account_sync_history USING btree (sync_status)',
    ],
    [
      'idx_sync_history_started',
      'CREATE INDEX idx_sync_history_started ON public.account_sync_history USING btree (started_at DESC)',
    ],
    ['idx_rate_limit_user', 'CREATE INDEX idx_rate_limit_user ON public.rate_limit_tracking USING btree (user_id)'],
    [
      'idx_rate_limit_endpoint',
      'CREATE INDEX idx_rate_limit_endpoint ON public.rate_limit_tracking USING btree (endpoint)',
    ],
    [
      'idx_rate_limit_window',
      'CREATE INDEX idx_rate_limit_window ON public.rate_limit_tracking USING btree (window_start)',
    ],
  ])('%s', (name, definition) => {
    expect(schema.indexes[name]).toBe(definition);
  });
});

describe('constraints', () => {
  test.each([
    ['oauth_tokens.oauth_tokens_user_id_fkey', 'FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE'],
    // 0012: one connection per user and region.
    ['oauth_tokens.oauth_tokens_user_id_region_key', 'UNIQUE (user_id, region)'],
    ['user_accounts.user_accounts_user_id_fkey', 'FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE'],
    [
      'account_sync_history.account_sync_history_user_account_id_fkey',
      'FOREIGN KEY (user_account_id) REFERENCES user_accounts(id) ON DELETE CASCADE',
    ],
    [
      'rate_limit_tracking.rate_limit_tracking_user_id_fkey',
      'FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE',
    ],
    ['rate_limit_tracking.rate_limit_tracking_endpoint_user_key', 'UNIQUE NULLS NOT DISTINCT (endpoint, user_id)'],
    ['oauth_tokens.oauth_tokens_refresh_failure_count_check', 'CHECK ((refresh_failure_count >= 0))'],
    ['user_accounts.user_accounts_sync_retry_count_check', 'CHECK ((sync_retry_count >= 0))'],
    ['account_sync_history.account_sync_history_accounts_synced_check', 'CHECK ((accounts_synced >= 0))'],
    ['account_sync_history.account_sync_history_accounts_failed_check', 'CHECK ((accounts_failed >= 0))'],
  ])('%s', (name, definition) => {
    expect(schema.constraints[name]).toBe(definition);
  });

  test('status columns only take their documented values, and every check is validated', () => {
    expect(schema.constraints['user_accounts.user_accounts_sync_status_check']).toMatch(
      /^CHECK \(\(\(sync_status\)::text = ANY \(\(ARRAY\['pending'.*'in_progress'.*'completed'.*'failed'.*'reauth_required'.*\]\)::text\[\]\)\)\)$/,
    );
    expect(schema.constraints['account_sync_history.account_sync_history_sync_type_check']).toMatch(
      /'manual'.*'scheduled'.*'webhook'/,
    );
    expect(schema.constraints['account_sync_history.account_sync_history_sync_status_check']).toMatch(
      /'started'.*'success'.*'failed'/,
    );
    expect(Object.values(schema.constraints).filter((d) => d.includes('NOT VALID'))).toEqual([]);
  });

  test('the NOT NULL helper checks are gone once the columns are NOT NULL', () => {
    expect(Object.keys(schema.constraints).filter((n) => n.includes('not_null'))).toEqual([]);
  });
});

describe('row level security', () => {
  test('is on for the new tables, the tables their policies read, the tokens and the backups', () => {
    expect(schema.rls).toEqual(
      expect.objectContaining({
        account_sync_history: true,
        rate_limit_tracking: true,
        user_accounts: true,
        oauth_tokens: true,
        oauth_tokens_backup: true,
        user_accounts_backup: true,
      }),
    );
  });

  test('the spec policies exist as written', () => {
    expect(schema.policies['account_sync_history.account_sync_history_policy']).toEqual({
      command: 'ALL',
      roles: ['authenticated'],
      using: expect.stringMatching(
        /user_account_id IN \( SELECT user_accounts\.id\s+FROM user_accounts\s+WHERE \(user_accounts\.user_id = auth\.uid\(\)\)\)/,
      ),
      // 0009: the same condition for new rows.
      check: expect.stringMatching(
        /user_account_id IN \( SELECT user_accounts\.id\s+FROM user_accounts\s+WHERE \(user_accounts\.user_id = auth\.uid\(\)\)\)/,
      ),
    });
    expect(schema.policies['rate_limit_tracking.rate_limit_tracking_policy']).toEqual({
      command: 'ALL',
      roles: ['authenticated'],
      using: '(user_id = auth.uid())',
      check: '(user_id = auth.uid())',
    });
  });

  test('users, oauth_tokens and user_accounts: own rows only, for reading (0003, 0009)', () => {
    for (const [name, using] of [
      ['users.users_owner_read_policy', '(id = auth.uid())'],
      ['oauth_tokens.oauth_tokens_owner_read_policy', '(user_id = auth.uid())'],
      ['user_accounts.user_accounts_owner_read_policy', '(user_id = auth.uid())'],
    ]) {
      expect(schema.policies[name]).toEqual({ command: 'SELECT', roles: ['authenticated'], using, check: null });
    }
    expect(schema.rls.users).toBe(true);
  });

  test('authenticated gets exactly what the policies need, never a token column (0009), and writes nothing (0027)', () => {
    const forAuthenticated = schema.grants.filter((g) => g.startsWith('authenticated ')).sort();
    const columns = (privilege: string, table: string, names: string[]) =>
      names.map((n) => `authenticated ${privilege} (${n}) ON ${table}`);
    expect(forAuthenticated).toEqual(
      [
        'authenticated SELECT ON account_sync_history',
        'authenticated SELECT ON connection_health', // 0023: its own connections' health
        'authenticated SELECT ON rate_limit_tracking',
        ...columns('SELECT', 'users', ['id', 'email', 'created_at']),
        // 0013 (accounts API): region and last refresh shown. The writes of connect and
        // disconnect are accounts_api_caller's since 0019, not every signed-in user's.
        ...columns('SELECT', 'oauth_tokens', ['last_refreshed_at']),
        ...columns('SELECT', 'oauth_tokens', [
          'id',
          'user_id',
          'region',
          'expires_at',
          'refresh_failure_count',
          'last_refresh_error',
          'proactive_refresh_enabled',
          'created_at',
          'updated_at',
        ]),
        ...columns('SELECT', 'user_accounts', [
          'id',
          'user_id',
          'amazon_account_id',
          'status',
          'metadata',
          'sync_status',
          'sync_error_message',
          'sync_retry_count',
          'next_sync_at',
          'created_at',
          'updated_at',
          'region',
        ]),
      ].sort(),
    );
  });

  test('the rate-limit counters are written by the API’s role only, per column (0027)', () => {
    const counters = schema.grants.filter((g) => / (INSERT|UPDATE|DELETE)( |\().* ON rate_limit_tracking$/.test(g));
    const columns = (role: string, privilege: string, names: string[]) =>
      names.map((n) => `${role} ${privilege} (${n}) ON rate_limit_tracking`);
    const counterColumns = [
      'request_count',
      'limit_hit_count',
      'last_limit_hit',
      'retry_after_seconds',
      'window_start',
    ];
    expect(counters.filter((g) => !g.startsWith('accounts_worker ')).sort()).toEqual(
      [
        ...columns('accounts_api_caller', 'INSERT', ['user_id', 'endpoint', ...counterColumns]),
        ...columns('accounts_api_caller', 'UPDATE', [...counterColumns, 'updated_at']),
      ].sort(),
    );
  });
});
