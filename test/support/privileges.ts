import { Client, escapeIdentifier, escapeLiteral, QueryResult } from 'pg';

/**
 * The privilege matrix: what `anon` and `authenticated` can reach in a database, found from
 * the catalogue (every schema but PostgreSQL's own, every relation, column and function in
 * them that no extension owns), checked two ways:
 *
 * 1. The catalogue. Every table has Row Level Security on; `anon` holds no privilege on any
 *    relation, column or sequence; `authenticated` holds none that bypasses or sidesteps RLS
 *    (TRUNCATE, REFERENCES, TRIGGER; anything on a table without RLS, a sequence, a
 *    materialized view, a foreign table or a view that is not security_invoker); nobody but
 *    the owners of the data holds anything on a token column; a SECURITY DEFINER function is
 *    executable by its owner and the roles named for it only.
 * 2. Behaviour. Each actor (anon, anon carrying A's claims, authenticated as A, as B, and
 *    with no claims) tries, on every table, to read each column, to insert a copy of a row
 *    that is not its own (and a row of defaults), to update each column (in place, and to
 *    another row's value) and to delete. Every attempt runs in a transaction that is rolled
 *    back. A row's owner is found from the catalogue: the identity table's `id`, a `user_id`
 *    column, or a foreign key chain to a table that has one; a row with none is nobody's.
 *    Violations: anon gets anything done; anyone reads a token column; an authenticated
 *    actor reads, changes, deletes or creates a row that is not its own.
 * 3. Functions. Every function `anon` or `authenticated` may execute (has_function_privilege:
 *    its own grants, PUBLIC's and its roles'), in any schema but PostgreSQL's own and not an
 *    extension's, is called by each actor with B's claims in every json/jsonb argument (NULL
 *    in the others), in a transaction that is rolled back. USAGE on the function's schema is
 *    granted for the probe when the role lacks it, so a function is judged by what it does,
 *    not by the schema grant in front of it that one later GRANT can open (a Supabase project
 *    exposing the schema does exactly that). Violations: afterwards `auth.uid()` is not what
 *    it was (the caller chose whose rows it reaches); the result holds any of B's data (a
 *    value of B's rows that no other row holds); any of B's rows changed. A call that fails
 *    did nothing.
 * Also from the catalogue: neither role may change or delete rows of a table that holds
 *    token columns (DELETE, TRUNCATE, UPDATE or INSERT of any column): tokens are written by
 *    the jobs and by the API's own role only.
 *
 * Returns the violations as sentences; none means the database passes.
 */
export interface PrivilegeCheckOptions {
  /** The table whose `id` is the user's id (`auth.uid()`). */
  readonly identityTable: string;
  /** Two users with data in every table that has rows per user. */
  readonly userA: string;
  readonly userB: string;
  /** Tables that may go without RLS (they must still grant nothing): the migration runner's own. */
  readonly withoutRls?: readonly string[];
  /** SECURITY DEFINER functions (`schema.name(args)`) and the roles meant to execute them. */
  readonly definerExecutors?: Readonly<Record<string, readonly string[]>>;
}

export const TOKEN_COLUMNS = ['access_token', 'refresh_token'];
const ROLES = ['anon', 'authenticated'] as const;
const TABLE_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER'];
const COLUMN_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'REFERENCES'];
const SEQUENCE_PRIVILEGES = ['USAGE', 'SELECT', 'UPDATE'];

interface Actor {
  readonly name: string;
  readonly role: (typeof ROLES)[number];
  readonly sub: string | null;
}

interface Column {
  readonly name: string;
  readonly type: string;
}

interface Relation {
  readonly oid: number;
  readonly name: string; // schema.name, for messages
  readonly sql: string; // quoted
  readonly kind: string;
  readonly rls: boolean;
  readonly securityInvoker: boolean;
  readonly columns: Column[];
  /** SQL for the owner of row `t`, evaluated by a superuser; null when rows belong to nobody. */
  ownerSql: string | null;
  /** The column of this table the owner is read from (user_id, a foreign key, or id). */
  ownerColumn: string | null;
}

interface Outcome {
  readonly error?: { code?: string; message: string };
  readonly rows: Array<Record<string, unknown>>;
  /** Owners of the rows the statement removed or replaced (UPDATE/DELETE). */
  readonly reached: Array<string | null>;
  /** Owners of the rows the statement created (INSERT, or new versions of updated rows). */
  readonly created: Array<string | null>;
}

const REFUSED = '42501'; // insufficient_privilege, also raised for a row-level security violation

/**
 * Runs `statements` in order in one round trip (one simple-protocol query: inside the open
 * transaction each runs as it would alone, and the first that fails stops the rest and rejects)
 * and returns each one's result. The matrix sends thousands of statements; one round trip per
 * step instead of per statement is what keeps it fast. Values must be inlined as literals.
 */
async function batch(c: Client, statements: string[]): Promise<QueryResult[]> {
  const out = (await c.query(statements.join(';\n'))) as unknown as QueryResult | QueryResult[];
  return Array.isArray(out) ? out : [out];
}

export async function checkPrivileges(url: string, options: PrivilegeCheckOptions): Promise<string[]> {
  const c = new Client({ connectionString: url });
  await c.connect();
  try {
    const relations = await loadRelations(c, options.identityTable);
    const violations = [
      ...(await catalogueViolations(c, relations, options)),
      ...(await functionViolations(c, options)),
      ...(await tokenRowViolations(c, relations)),
      ...(await claimsViolations(c, relations, options)),
    ];
    const actors: Actor[] = [
      { name: 'anon', role: 'anon', sub: null },
      { name: 'anon with A’s claims', role: 'anon', sub: options.userA },
      { name: 'authenticated as A', role: 'authenticated', sub: options.userA },
      { name: 'authenticated as B', role: 'authenticated', sub: options.userB },
      { name: 'authenticated without claims', role: 'authenticated', sub: null },
    ];
    const label = (owner: string | null) =>
      owner === null ? 'nobody' : owner === options.userA ? 'A' : owner === options.userB ? 'B' : `user ${owner}`;
    for (const relation of relations.filter((r) => r.kind === 'r' || r.kind === 'p')) {
      for (const actor of actors) {
        violations.push(...(await behaviourViolations(c, relation, actor, label)));
      }
    }
    return violations;
  } finally {
    await c.end();
  }
}

async function loadRelations(c: Client, identityTable: string): Promise<Relation[]> {
  const { rows } = await c.query(`
    SELECT c.oid::int AS oid, n.nspname || '.' || c.relname AS name, format('%I.%I', n.nspname, c.relname) AS sql,
           c.relkind AS kind, c.relrowsecurity AS rls,
           coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions) WHERE option_name = 'security_invoker'), 'false')
             IN ('true', 'on', '1') AS security_invoker
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
     ORDER BY 2`);
  const oids = rows.map((r) => r.oid as number);
  const columns = await c.query(
    `SELECT attrelid::int AS oid, attname AS name, format_type(atttypid, atttypmod) AS type
       FROM pg_attribute WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped ORDER BY attrelid, attnum`,
    [oids],
  );
  const foreignKeys = await c.query(
    `SELECT conrelid::int AS child, confrelid::int AS parent,
            (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1]) AS col,
            (SELECT attname FROM pg_attribute WHERE attrelid = confrelid AND attnum = confkey[1]) AS parent_col
       FROM pg_constraint WHERE contype = 'f' AND cardinality(conkey) = 1 AND conrelid = ANY($1::oid[])
      ORDER BY conname`,
    [oids],
  );
  const relations: Relation[] = rows.map((r) => ({
    oid: r.oid,
    name: r.name,
    sql: r.sql,
    kind: r.kind,
    rls: r.rls,
    securityInvoker: r.security_invoker,
    columns: columns.rows.filter((col) => col.oid === r.oid).map((col) => ({ name: col.name, type: col.type })),
    ownerSql: null,
    ownerColumn: null,
  }));
  const byOid = new Map(relations.map((r) => [r.oid, r]));
  // Owner expressions, resolved a few foreign-key hops deep.
  const resolve = (relation: Relation, alias: string, depth: number): { sql: string; column: string } | null => {
    if (relation.name === identityTable) return { sql: `${alias}.id`, column: 'id' };
    if (relation.columns.some((col) => col.name === 'user_id')) return { sql: `${alias}.user_id`, column: 'user_id' };
    if (depth === 0) return null;
    for (const fk of foreignKeys.rows.filter((f) => f.child === relation.oid)) {
      const parent = byOid.get(fk.parent);
      if (!parent || parent === relation) continue;
      const inner = resolve(parent, `p${depth}`, depth - 1);
      if (inner) {
        return {
          sql: `(SELECT ${inner.sql} FROM ${parent.sql} p${depth} WHERE p${depth}.${escapeIdentifier(fk.parent_col)} = ${alias}.${escapeIdentifier(fk.col)})`,
          column: fk.col,
        };
      }
    }
    return null;
  };
  for (const relation of relations) {
    const owner = resolve(relation, 't', 3);
    relation.ownerSql = owner?.sql ?? null;
    relation.ownerColumn = owner?.column ?? null;
  }
  return relations;
}

async function catalogueViolations(
  c: Client,
  relations: Relation[],
  options: PrivilegeCheckOptions,
): Promise<string[]> {
  const violations: string[] = [];
  for (const relation of relations) {
    const isTable = relation.kind === 'r' || relation.kind === 'p';
    if (isTable && !relation.rls && !(options.withoutRls ?? []).includes(relation.name)) {
      violations.push(`${relation.name}: row level security is off`);
    }
    for (const role of ROLES) {
      const sequence = relation.kind === 'S';
      const held: string[] = (
        await c.query(
          sequence
            ? `SELECT p FROM unnest($3::text[]) p WHERE has_sequence_privilege($1, $2::oid, p)`
            : `SELECT p FROM unnest($3::text[]) p WHERE has_table_privilege($1, $2::oid, p)`,
          [role, relation.oid, sequence ? SEQUENCE_PRIVILEGES : TABLE_PRIVILEGES],
        )
      ).rows.map((r) => r.p);
      const columnHeld: Array<{ column: string; privilege: string }> = sequence
        ? []
        : (
            await c.query(
              `SELECT a.name AS column, p AS privilege FROM unnest($3::text[]) a(name), unnest($4::text[]) p
                WHERE has_column_privilege($1, $2::oid, a.name, p) ORDER BY 1, 2`,
              [role, relation.oid, relation.columns.map((col) => col.name), COLUMN_PRIVILEGES],
            )
          ).rows;
      const columnOnly = columnHeld.filter((h) => !held.includes(h.privilege));
      const sidesteps =
        role === 'anon' ||
        relation.kind === 'S' ||
        relation.kind === 'm' ||
        relation.kind === 'f' ||
        (relation.kind === 'v' && !relation.securityInvoker) ||
        (isTable && !relation.rls);
      const why =
        role === 'anon'
          ? ''
          : isTable && !relation.rls
            ? ', which has no row level security'
            : relation.kind === 'v'
              ? ', a view that is not security_invoker'
              : isTable
                ? ''
                : `, a relation of kind ${relation.kind}`;
      for (const privilege of held) {
        if (sidesteps || ['TRUNCATE', 'REFERENCES', 'TRIGGER'].includes(privilege)) {
          violations.push(`${role} may ${privilege} ${relation.name}${why}`);
        }
      }
      for (const h of columnOnly) {
        if (sidesteps || h.privilege === 'REFERENCES')
          violations.push(`${role} may ${h.privilege} ${relation.name}.${h.column}${why}`);
      }
      for (const h of columnHeld.filter((x) => TOKEN_COLUMNS.includes(x.column))) {
        violations.push(`${role} may ${h.privilege} token column ${relation.name}.${h.column}`);
      }
    }
  }
  return violations;
}

async function functionViolations(c: Client, options: PrivilegeCheckOptions): Promise<string[]> {
  const { rows } = await c.query(`
    SELECT format('%s.%s(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS name,
           ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END
                   FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                  WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner ORDER BY 1)::text[] AS executors
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
     ORDER BY 1`);
  const violations: string[] = [];
  for (const fn of rows) {
    const allowed = options.definerExecutors?.[fn.name] ?? [];
    for (const executor of fn.executors as string[]) {
      if (!allowed.includes(executor)) violations.push(`${fn.name} is SECURITY DEFINER and executable by ${executor}`);
    }
  }
  return violations;
}

/** Neither end-user role may change, remove or create rows of a table holding tokens. */
async function tokenRowViolations(c: Client, relations: Relation[]): Promise<string[]> {
  const violations: string[] = [];
  for (const relation of relations.filter((r) => r.columns.some((col) => TOKEN_COLUMNS.includes(col.name)))) {
    for (const role of ROLES) {
      const { rows } = await c.query<{ p: string }>(
        `SELECT p FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) p WHERE has_table_privilege($1, $2::oid, p)
         UNION
         SELECT p FROM unnest(ARRAY['INSERT', 'UPDATE']) p
          WHERE has_any_column_privilege($1, $2::oid, p) AND NOT has_table_privilege($1, $2::oid, p)
         ORDER BY 1`,
        [role, relation.oid],
      );
      for (const { p } of rows) violations.push(`${role} may ${p} token rows of ${relation.name}`);
    }
  }
  return violations;
}

interface CallableFunction {
  readonly oid: number;
  readonly name: string; // schema.name(args), for messages
  readonly sql: string; // schema.name, quoted
  readonly schema: string;
  readonly procedure: boolean;
  readonly argTypes: string[]; // format_type of each input argument
  readonly executors: string[]; // of ROLES
}

/**
 * Part 3 of the matrix (see the top of this file): every function `anon` or `authenticated`
 * may execute, called with B's claims in every json/jsonb argument.
 */
async function claimsViolations(c: Client, relations: Relation[], options: PrivilegeCheckOptions): Promise<string[]> {
  const { rows } = await c.query(
    `SELECT p.oid::int AS oid, format('%s.%s(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS name,
            format('%I.%I', n.nspname, p.proname) AS sql,
            n.nspname AS schema, p.prokind = 'p' AS procedure,
            ARRAY(SELECT format_type(t, NULL) FROM unnest(coalesce(p.proargtypes::oid[], '{}')) t)::text[] AS "argTypes",
            ARRAY(SELECT r FROM unnest($1::text[]) r
                   WHERE to_regrole(r) IS NOT NULL AND has_function_privilege(r, p.oid, 'EXECUTE'))::text[] AS executors
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.prokind IN ('f', 'p')
        AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        AND NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
      ORDER BY 2`,
    [ROLES],
  );
  const functions = (rows as CallableFunction[]).filter((f) => f.executors.length > 0);
  if (functions.length === 0) return [];
  const claimsOfB = JSON.stringify({ sub: options.userB, role: 'authenticated' });
  const fingerprints = await dataOf(c, relations, options.userB, [options.userB]);
  const digestSql = digestOfSql(relations, options.userB);
  const actors: Actor[] = [
    { name: 'anon', role: 'anon', sub: null },
    { name: 'anon with A’s claims', role: 'anon', sub: options.userA },
    { name: 'authenticated as A', role: 'authenticated', sub: options.userA },
    { name: 'authenticated without claims', role: 'authenticated', sub: null },
  ];
  const violations: string[] = [];
  for (const fn of functions) {
    // B's claims in every json/jsonb argument at once, and (when there are several) in each
    // alone with NULL in the others: a second jsonb argument may be a filter that B's claims
    // would match nothing with.
    const jsonArgs = fn.argTypes.flatMap((type, i) => (/^jsonb?$/.test(type) ? [i] : []));
    const variants: Array<{ claimsAt: number[]; label: string }> = [
      { claimsAt: jsonArgs, label: jsonArgs.length ? ' with B’s claims' : '' },
      ...(jsonArgs.length > 1
        ? jsonArgs.map((i) => ({ claimsAt: [i], label: ` with B’s claims as argument ${i + 1} only` }))
        : []),
    ];
    for (const variant of variants) {
      const args = fn.argTypes.map((type, i) => (variant.claimsAt.includes(i) ? `$1::${type}` : `NULL::${type}`));
      const call = fn.procedure
        ? `CALL ${fn.sql}(${args.join(', ')})`
        : `SELECT (SELECT string_agg(to_jsonb(x)::text, ',') FROM ${fn.sql}(${args.join(', ')}) x) AS result`;
      violations.push(...(await callAsEachActor(fn, call, variant.claimsAt.length > 0, variant.label)));
    }
  }
  return [...new Set(violations)];

  async function callAsEachActor(
    fn: CallableFunction,
    call: string,
    withClaims: boolean,
    label: string,
  ): Promise<string[]> {
    const found: string[] = [];
    for (const actor of actors.filter((a) => fn.executors.includes(a.role))) {
      const [, schemaUsage] = await batch(c, [
        'BEGIN',
        `SELECT has_schema_privilege(${escapeLiteral(actor.role)}, ${escapeLiteral(fn.schema)}, 'USAGE') AS u`,
      ]);
      try {
        const schemaGranted = schemaUsage.rows[0].u as boolean;
        // (the schema's USAGE), B's digest before, SAVEPOINT, becoming the actor, auth.uid(): one round trip.
        const first = await batch(c, [
          ...(schemaGranted ? [] : [`GRANT USAGE ON SCHEMA ${escapeIdentifier(fn.schema)} TO ${actor.role}`]),
          digestSql,
          'SAVEPOINT call',
          ...becomeActorSql(actor),
          UID_NOW,
        ]);
        const before = first[schemaGranted ? 0 : 1].rows[0].d as string;
        const uidBefore = first[first.length - 1].rows[0].uid as string | null;
        let result: string | null = null;
        try {
          const out = await c.query(call, withClaims ? [claimsOfB] : []);
          result = fn.procedure ? JSON.stringify(out.rows) : ((out.rows[0]?.result as string | null) ?? null);
        } catch {
          await c.query('ROLLBACK TO SAVEPOINT call');
          continue; // refused or failed: rolled back, nothing done
        }
        const [uidRead, , digestAfter] = await batch(c, [UID_NOW, 'RESET ROLE', digestSql]);
        const uidAfter = uidRead.rows[0].uid as string | null;
        const what = `${actor.name} calling ${fn.name}${label}${schemaGranted ? '' : ` (given USAGE on schema ${fn.schema})`}`;
        if (uidAfter !== uidBefore) {
          const who = uidAfter === options.userB ? 'B' : uidAfter === options.userA ? 'A' : String(uidAfter);
          found.push(`${what} makes auth.uid() ${who}`);
        }
        const leaked = fingerprints.filter((v) => result?.includes(v));
        if (leaked.length) found.push(`${what} returns B’s data (${leaked.length} value(s) only B’s rows hold)`);
        if ((digestAfter.rows[0].d as string) !== before) found.push(`${what} changes B’s rows`);
      } finally {
        await c.query('ROLLBACK');
      }
    }
    return found;
  }
}

/** auth.uid() as PostgreSQL and Supabase define it, read from the transaction's settings. */
const UID_SQL = `coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
  nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')`;
const UID_NOW = `SELECT ${UID_SQL} AS uid`;

/**
 * Values only `user`'s rows hold: every value of a row it owns, as JSON shows it (a timestamp
 * as to_jsonb writes it), 6 characters or more, that no row of anyone else (or of nobody)
 * holds, except those in `given` (what the call was passed: echoing an argument back reveals
 * nothing).
 */
async function dataOf(c: Client, relations: Relation[], user: string, given: string[]): Promise<string[]> {
  const own = new Set<string>();
  const others = new Set<string>(given);
  for (const relation of relations.filter((r) => (r.kind === 'r' || r.kind === 'p') && r.columns.length > 0)) {
    const { rows } = await c.query<{ owner: string | null; v: string }>(
      `SELECT ${relation.ownerSql ?? 'NULL'}::text AS owner, x.v
         FROM ${relation.sql} t
        CROSS JOIN LATERAL (VALUES ${relation.columns.map((col) => `(to_jsonb(t.${escapeIdentifier(col.name)}) #>> '{}')`).join(', ')}) x(v)
        WHERE x.v IS NOT NULL`,
    );
    for (const r of rows) (r.owner === user ? own : others).add(r.v);
  }
  return [...own].filter((v) => v.length >= 6 && !others.has(v)).sort();
}

/**
 * A digest of every row `user` owns, in every table (read by the superuser): one statement,
 * one row (`d`), each table's digest joined.
 */
function digestOfSql(relations: Relation[], user: string): string {
  const parts = relations
    .filter((r) => (r.kind === 'r' || r.kind === 'p') && r.ownerSql !== null)
    .map(
      (relation) =>
        `${escapeLiteral(`${relation.name}:`)} || coalesce((SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ${relation.sql} t WHERE ${relation.ownerSql}::text = ${escapeLiteral(user)}), '')`,
    );
  return `SELECT array_to_string(ARRAY[${parts.join(', ')}]::text[], ',') AS d`;
}

async function behaviourViolations(
  c: Client,
  relation: Relation,
  actor: Actor,
  label: (owner: string | null) => string,
): Promise<string[]> {
  const violations: string[] = [];
  const own = (owner: string | null) => actor.role === 'authenticated' && actor.sub !== null && owner === actor.sub;
  const notOwn = (owners: Array<string | null>) => owners.filter((o) => !own(o));
  const describe = (owners: Array<string | null>) => [...new Set(owners.map(label))].join(', ');
  const failedLater = (o: Outcome) => o.error !== undefined && o.error.code !== REFUSED;

  // Read: each column on its own, then (when anything is readable) which rows are visible.
  const readable = await readableColumns(c, relation, actor);
  for (const column of readable) {
    if (actor.role === 'anon') violations.push(`${actor.name} reads ${relation.name}.${column}`);
    if (TOKEN_COLUMNS.includes(column)) violations.push(`${actor.name} reads token column ${relation.name}.${column}`);
  }
  if (readable.length > 0) {
    const visible = await probe(
      c,
      relation,
      actor,
      `SELECT ctid::text AS ctid FROM ${relation.sql}`,
      [],
      `GRANT SELECT ON ${relation.sql} TO ${actor.role}`,
    );
    const owners = visible.rows.map((r) => visible.ownerOf(String(r.ctid)));
    const foreign = notOwn(owners);
    if (foreign.length)
      violations.push(
        `${actor.name} sees ${foreign.length} row(s) of ${relation.name} that are not its own (${describe(foreign)})`,
      );
  }

  // Insert: a copy of a row of every other owner (the columns the role may insert), and defaults.
  const sources = await sampleRows(c, relation);
  const insertable: string[] = (
    await c.query(`SELECT a FROM unnest($3::text[]) a WHERE has_column_privilege($1, $2::oid, a, 'INSERT')`, [
      actor.role,
      relation.oid,
      relation.columns.map((col) => col.name),
    ])
  ).rows.map((r) => r.a);
  const attempts: Array<{ what: string; sql: string; params: Array<string | null> }> = [
    { what: 'a row of defaults', sql: `INSERT INTO ${relation.sql} DEFAULT VALUES`, params: [] },
  ];
  if (insertable.length) {
    for (const source of sources.filter((s) => !own(s.owner))) {
      const cols = relation.columns.filter((col) => insertable.includes(col.name));
      attempts.push({
        what: `a copy of a row of ${label(source.owner)}`,
        sql: `INSERT INTO ${relation.sql} (${cols.map((col) => escapeIdentifier(col.name)).join(', ')}) VALUES (${cols
          .map((col, i) => `$${i + 1}::${col.type}`)
          .join(', ')})`,
        params: cols.map((col) => source.values[col.name]),
      });
    }
  }
  for (const attempt of attempts) {
    const o = await probe(c, relation, actor, attempt.sql, attempt.params);
    if (!o.error && actor.role === 'anon')
      violations.push(`${actor.name} inserts ${attempt.what} into ${relation.name}`);
    else if (!o.error && notOwn(o.created).length)
      violations.push(
        `${actor.name} inserts ${attempt.what} into ${relation.name}, owned by ${describe(notOwn(o.created))}`,
      );
    else if (failedLater(o))
      violations.push(
        `${actor.name} inserting ${attempt.what} into ${relation.name} passed privileges and row security (then: ${o.error!.message})`,
      );
  }

  // Update: each column in place (reach), then set to another owner's value (moving rows).
  const other =
    sources.find((s) => s.owner !== null && !own(s.owner)) ?? sources.find((s) => !own(s.owner)) ?? sources[0];
  for (const column of relation.columns) {
    const col = escapeIdentifier(column.name);
    const inPlace = await probe(
      c,
      relation,
      actor,
      `UPDATE ${relation.sql} SET ${col} = ${col}`,
      [],
      `GRANT SELECT ON ${relation.sql} TO ${actor.role}`,
    );
    const moved = await probe(c, relation, actor, `UPDATE ${relation.sql} SET ${col} = $1::${column.type}`, [
      other?.values[column.name] ?? null,
    ]);
    for (const [how, o] of [
      ['in place', inPlace],
      ['to another row’s value', moved],
    ] as const) {
      if (o.error?.code === REFUSED) continue;
      if (!o.error && actor.role === 'anon') violations.push(`${actor.name} updates ${relation.name}.${column.name}`);
      else if (!o.error && notOwn(o.reached).length)
        violations.push(
          `${actor.name} updates ${relation.name}.${column.name} (${how}) in ${notOwn(o.reached).length} row(s) that are not its own (${describe(notOwn(o.reached))})`,
        );
      else if (!o.error && notOwn(o.created).length)
        violations.push(
          `${actor.name} updates ${relation.name}.${column.name} (${how}) and so gives its rows to ${describe(notOwn(o.created))}`,
        );
      else if (
        failedLater(o) &&
        (how === 'in place' || column.name === relation.ownerColumn || actor.role === 'anon')
      ) {
        violations.push(
          `${actor.name} updating ${relation.name}.${column.name} (${how}) passed privileges and row security (then: ${o.error!.message})`,
        );
      }
    }
  }

  // Delete.
  const deleted = await probe(c, relation, actor, `DELETE FROM ${relation.sql}`, []);
  if (!deleted.error && actor.role === 'anon') violations.push(`${actor.name} deletes from ${relation.name}`);
  else if (!deleted.error && notOwn(deleted.reached).length)
    violations.push(
      `${actor.name} deletes ${notOwn(deleted.reached).length} row(s) of ${relation.name} that are not its own (${describe(notOwn(deleted.reached))})`,
    );
  else if (failedLater(deleted))
    violations.push(
      `${actor.name} deleting from ${relation.name} passed privileges and row security (then: ${deleted.error!.message})`,
    );
  return violations;
}

/** The statements that make the transaction run as `actor` (SET LOCAL ROLE, its claims). */
function becomeActorSql(actor: Actor): string[] {
  const claims = actor.sub ? JSON.stringify({ sub: actor.sub, role: actor.role }) : '';
  return [
    `SET LOCAL ROLE ${escapeIdentifier(actor.role)}`,
    `SELECT set_config('request.jwt.claims', ${escapeLiteral(claims)}, true), set_config('request.jwt.claim.sub', ${escapeLiteral(actor.sub ?? '')}, true)`,
  ];
}

async function readableColumns(c: Client, relation: Relation, actor: Actor): Promise<string[]> {
  const readable: string[] = [];
  await batch(c, ['BEGIN', ...becomeActorSql(actor)]);
  try {
    for (const column of relation.columns) {
      try {
        await batch(c, [
          'SAVEPOINT col',
          `SELECT ${escapeIdentifier(column.name)} FROM ${relation.sql}`,
          'RELEASE SAVEPOINT col',
        ]);
        readable.push(column.name);
      } catch (error) {
        if ((error as { code?: string }).code !== REFUSED) throw error;
        await c.query('ROLLBACK TO SAVEPOINT col');
      }
    }
  } finally {
    await c.query('ROLLBACK');
  }
  return readable;
}

async function sampleRows(
  c: Client,
  relation: Relation,
): Promise<Array<{ owner: string | null; values: Record<string, string | null> }>> {
  const { rows } = await c.query(
    `SELECT DISTINCT ON (owner) * FROM (SELECT ${relation.ownerSql ?? 'NULL'}::text AS owner, ${relation.columns
      .map((col, i) => `t.${escapeIdentifier(col.name)}::text AS c${i}`)
      .join(', ')} FROM ${relation.sql} t) x ORDER BY owner`,
  );
  return rows.map((r) => ({
    owner: r.owner,
    values: Object.fromEntries(relation.columns.map((col, i) => [col.name, r[`c${i}`]])),
  }));
}

/**
 * Runs `statement` as `actor` in a transaction that is rolled back, and reports which rows it
 * removed or replaced and which it created, with their owners (read by the superuser before
 * and after, by physical row id: an updated row gets a new one). `grant` is made first, in
 * the same transaction, when the probe needs a privilege the role may not have.
 */
async function probe(
  c: Client,
  relation: Relation,
  actor: Actor,
  statement: string,
  params: ReadonlyArray<string | null>,
  grant?: string,
): Promise<Outcome & { ownerOf(ctid: string): string | null }> {
  const snapshotSql = `SELECT t.ctid::text AS ctid, ${relation.ownerSql ?? 'NULL'}::text AS owner FROM ${relation.sql} t`;
  const owners = (result: QueryResult) => new Map(result.rows.map((r) => [r.ctid as string, r.owner as string | null]));
  // One round trip: BEGIN, the grant, the snapshot before, SAVEPOINT, becoming the actor,
  // SAVEPOINT, the statement (its parameters inlined as literals), RESET ROLE, the snapshot
  // after, ROLLBACK. When it fails, going back to the savepoint just before the statement tells
  // that the statement is what failed; then back to the first savepoint, where nothing has
  // changed, and the snapshot after is taken there (one more round trip).
  const parts = [
    'BEGIN',
    ...(grant ? [grant] : []),
    snapshotSql,
    'SAVEPOINT probe',
    ...becomeActorSql(actor),
    'SAVEPOINT statement',
    inlineParameters(statement, params),
    'RESET ROLE',
    snapshotSql,
    'ROLLBACK',
  ];
  let results: QueryResult[];
  try {
    results = await batch(c, parts);
  } catch (e) {
    const err = e as { code?: string; message: string };
    let after: QueryResult;
    try {
      [, , , after] = await batch(c, [
        'ROLLBACK TO SAVEPOINT statement',
        'ROLLBACK TO SAVEPOINT probe',
        'RESET ROLE',
        snapshotSql,
        'ROLLBACK',
      ]);
    } catch {
      await c.query('ROLLBACK');
      throw e; // no savepoint "statement": the probe's own set-up failed, not the statement
    }
    const before = owners(after);
    return {
      error: { code: err.code, message: err.message },
      rows: [],
      reached: [],
      created: [],
      ownerOf: (ctid: string) => before.get(ctid) ?? null,
    };
  }
  const before = owners(results[parts.indexOf(snapshotSql)]);
  const after = owners(results[parts.lastIndexOf(snapshotSql)]);
  return {
    rows: results[parts.indexOf('SAVEPOINT statement') + 1].rows,
    reached: [...before.keys()].filter((k) => !after.has(k)).map((k) => before.get(k) ?? null),
    created: [...after.keys()].filter((k) => !before.has(k)).map((k) => after.get(k) ?? null),
    ownerOf: (ctid: string) => before.get(ctid) ?? null,
  };
}

/** `statement` with its `$n` parameters (text or null) written in as literals. */
function inlineParameters(statement: string, params: ReadonlyArray<string | null>): string {
  return statement.replace(/\$(\d+)/g, (_, n: string) => {
    const value = params[Number(n) - 1];
    return value === null || value === undefined ? 'NULL' : escapeLiteral(value);
  });
}

/**
 * Everything one role holds in its own name, as sentences sorted: `SELECT ON t`, `UPDATE (c)
 * ON t` (per column), `USAGE ON SCHEMA s`, `EXECUTE ON FUNCTION f(args)`, `MEMBER OF r`.
 * Tables and functions outside `public` are named with their schema. Read from the
 * catalogue's ACLs (what GRANT wrote), not from what PUBLIC or membership adds.
 */
export async function rolePrivileges(c: Client, role: string): Promise<string[]> {
  const { rows } = await c.query(
    `WITH r AS (SELECT oid FROM pg_roles WHERE rolname = $1),
     rel AS (
       SELECT c.oid, c.relacl, CASE WHEN n.nspname = 'public' THEN c.relname::text ELSE format('%I.%I', n.nspname, c.relname) END AS name
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     )
     SELECT a.privilege_type || ' ON ' || rel.name AS p
       FROM rel, aclexplode(rel.relacl) a, r WHERE a.grantee = r.oid
     UNION ALL
     SELECT a.privilege_type || ' (' || att.attname || ') ON ' || rel.name
       FROM rel JOIN pg_attribute att ON att.attrelid = rel.oid, aclexplode(att.attacl) a, r
      WHERE a.grantee = r.oid AND NOT att.attisdropped
     UNION ALL
     SELECT a.privilege_type || ' ON SCHEMA ' || n.nspname
       FROM pg_namespace n, aclexplode(n.nspacl) a, r WHERE a.grantee = r.oid
     UNION ALL
     SELECT a.privilege_type || ' ON FUNCTION ' || p.oid::regprocedure
       FROM pg_proc p, aclexplode(p.proacl) a, r WHERE a.grantee = r.oid
     UNION ALL
     SELECT a.privilege_type || ' ON DATABASE ' || d.datname
       FROM pg_database d, aclexplode(d.datacl) a, r WHERE a.grantee = r.oid
     UNION ALL
     SELECT 'MEMBER OF ' || m.roleid::regrole FROM pg_auth_members m, r WHERE m.member = r.oid`,
    [role],
  );
  return rows.map((row) => row.p as string).sort();
}
