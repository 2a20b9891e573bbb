/**
 * The import rules of docs/architecture.md ("Which way imports point"), checked on every
 * TypeScript and JavaScript file of the repository; part of `npm run lint`. Exits 1 and names
 * each offending import when a rule is broken or when lambda/, lib/ or local/ has an import cycle.
 *
 * The rules are data (below), each exception with its reason, so that widening one is a
 * reviewed change of this file and of the doc, which test/scripts/check-imports.test.ts holds to
 * the same lists.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const ROOT = resolve(__dirname, '..');

/** Top-level folders whose files are checked. */
export const SOURCE_FOLDERS = ['bin', 'lib', 'lambda', 'local', 'scripts', 'bench', 'test'] as const;

/**
 * The lambda/ modules that lib/ and bin/ may import: names both sides must agree on (environment
 * variable names, metric names, routes, timings, the migrations' fingerprint), never code that runs.
 */
export const CONTRACT_MODULES: Readonly<Record<string, string>> = {
  'lambda/shared/config.ts': 'JOB_ENV: the job functions’ environment variables',
  'lambda/shared/api-env.ts': 'API_ENV: the accounts API’s environment variables',
  'lambda/shared/jobs/metrics.ts': 'the metric namespace and names the dashboards and alarms read',
  'lambda/shared/jobs/timing.ts': 'JOB_TIMING: the functions’ timeouts and leases, which the schedules must fit',
  'lambda/token-refresh/window.ts':
    'the token refresh’s window, which the stack derives from its schedule (PROACTIVE_REFRESH_WINDOW_SECONDS)',
  'lambda/shared/jobs/fan-out.ts': 'DISPATCH_MARK_SECONDS: the queues’ visibility must outlast the dispatch mark',
  'lambda/shared/amazon/regions.ts': 'AMAZON_REGIONS: the dashboard graphs each region',
  'lambda/dispatcher/config.ts': 'DISPATCHER_ENV: the dispatchers’ environment variables',
  'lambda/token-route/route.ts': 'TOKEN_ROUTE: the internal token route’s path and service name',
  'lambda/migrate/migrations-hash.ts': 'the migrations’ fingerprint in the custom resource’s properties',
  'lambda/migrate/tls.ts': 'where the migration bundle carries the RDS certificate bundle',
  'lambda/event-publisher/contract.ts':
    'the event publisher’s environment variables, service, timeout and metric names the stack sets and alarms on',
};

/**
 * The lambda/ modules that local/ may import: production contracts the stand-ins must honour,
 * or the code path production runs (never a job core).
 */
export const LOCAL_CONTRACTS: Readonly<Record<string, string>> = {
  'lambda/shared/amazon/regions.ts': 'the regions the fake Amazon serves',
  'lambda/shared/db/named-parameters.ts': 'the Data API’s `:name` parameter syntax, which the emulator parses',
  'lambda/shared/db/data-api-database.ts': 'the emulator’s wire values are the adapter’s',
  'lambda/shared/db/index.ts': 'the node-postgres adapter the world hands to scripts',
  'lambda/shared/token-crypto.ts': 'demo tokens are stored in the production format',
  'lambda/migrate/run-migrations.ts': 'migrations run through the deploy-time code path',
  'lambda/migrate/worker-login.ts': 'the jobs’ and the API’s logins are made as the custom resource makes them',
  'lambda/event-publisher/contract.ts': 'the bus interface the local event bus stand-in implements',
};

/**
 * Function folders of lambda/ that import another function folder, and why. Any other import
 * between two function folders is refused (shared code belongs in lambda/shared/).
 */
export const CROSS_FUNCTION_IMPORTS: Readonly<Record<string, string>> = {
  'lambda/dispatcher -> lambda/token-refresh':
    'the dispatcher selects due connections with the token refresh’s own claim conditions',
  'lambda/dispatcher -> lambda/account-sync':
    'the dispatcher selects due connections with the account sync’s own claim conditions',
  'lambda/account-sync -> lambda/token-refresh':
    'the account sync takes a token about to expire on demand, through the token refresh’s single-flight path (on-demand.ts)',
  'lambda/token-route -> lambda/token-refresh':
    'the on-demand route writes its refresh back through the token refresh’s write-back and outcome policy',
};

/** Folders whose import graph must have no cycle. */
export const ACYCLIC_FOLDERS = ['lambda', 'lib', 'local'] as const;

export interface ImportEdge {
  readonly from: string;
  readonly to: string;
}

/** `lambda/<name>` for a file in a function folder, `lambda/shared` for shared code. */
function lambdaFolder(file: string): string | undefined {
  const [top, name] = file.split('/');
  return top === 'lambda' && name !== undefined && !name.includes('.') ? `lambda/${name}` : undefined;
}

const top = (file: string) => file.split('/')[0];

/** Every broken rule among the edges (files relative to the repository, with extensions). */
export function ruleViolations(edges: readonly ImportEdge[]): string[] {
  const problems: string[] = [];
  for (const { from, to } of edges) {
    const at = `${from} imports ${to}`;
    if (top(to) === 'test' && top(from) !== 'test') problems.push(`${at}: nothing outside test/ imports test/`);
    if (top(from) === 'lambda' && top(to) !== 'lambda')
      problems.push(`${at}: lambda/ imports only npm packages and lambda/ (it is what gets bundled)`);
    if ((top(from) === 'lib' || top(from) === 'bin') && top(to) === 'lambda' && !(to in CONTRACT_MODULES))
      problems.push(`${at}: lib/ and bin/ import only the contract modules of lambda/ (scripts/check-imports.ts)`);
    if (top(from) === 'local' && top(to) === 'lambda' && !(to in LOCAL_CONTRACTS))
      problems.push(`${at}: local/ imports only the production contracts of lambda/ (scripts/check-imports.ts)`);
    if (top(from) === 'local' && ['scripts', 'bench'].includes(top(to)))
      problems.push(`${at}: local/ is imported by scripts/ and bench/, not the other way round`);
    const source = lambdaFolder(from);
    const target = lambdaFolder(to);
    if (source && target && source !== target && target !== 'lambda/shared') {
      if (source === 'lambda/shared') problems.push(`${at}: lambda/shared/ never imports a function folder`);
      else if (!(`${source} -> ${target}` in CROSS_FUNCTION_IMPORTS))
        problems.push(`${at}: a function folder imports another only where scripts/check-imports.ts names the reason`);
    }
  }
  return problems;
}

/** Each import cycle among files of the given folders, as `a -> b -> a` (Tarjan's components). */
export function importCycles(edges: readonly ImportEdge[], folders: readonly string[] = ACYCLIC_FOLDERS): string[] {
  const inScope = (file: string) => folders.includes(top(file));
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) if (inScope(from) && inScope(to)) next.set(from, [...(next.get(from) ?? []), to]);
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[] = [];
  let counter = 0;
  const visit = (node: string): void => {
    index.set(node, counter);
    low.set(node, counter);
    counter += 1;
    stack.push(node);
    onStack.add(node);
    for (const to of next.get(node) ?? []) {
      if (!index.has(to)) {
        visit(to);
        low.set(node, Math.min(low.get(node)!, low.get(to)!));
      } else if (onStack.has(to)) low.set(node, Math.min(low.get(node)!, index.get(to)!));
    }
    if (low.get(node) === index.get(node)) {
      const component: string[] = [];
      let member: string;
      do {
        member = stack.pop()!;
        onStack.delete(member);
        component.push(member);
      } while (member !== node);
      const selfImport = (next.get(node) ?? []).includes(node);
      if (component.length > 1 || selfImport) cycles.push([...component.reverse(), component[0]].join(' -> '));
    }
  };
  for (const node of [...next.keys()].sort()) if (!index.has(node)) visit(node);
  return cycles;
}

function sourceFiles(root: string, folder: string): string[] {
  const dir = join(root, folder);
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .filter((name) => /\.(ts|js|cjs|mjs)$/.test(name) && !name.endsWith('.d.ts') && !name.includes('node_modules'))
    .map((name) => `${folder}/${name}`)
    .filter((file) => statSync(join(root, file)).isFile());
}

/** The file a relative specifier names (with its extension), or undefined for a package or a missing file. */
function resolveImport(root: string, from: string, specifier: string): string | undefined {
  if (!specifier.startsWith('.')) return undefined;
  const base = join(dirname(join(root, from)), specifier);
  for (const candidate of [base, `${base}.ts`, `${base}.js`, join(base, 'index.ts'), join(base, 'index.js')])
    if (existsSync(candidate) && statSync(candidate).isFile()) return relative(root, candidate).split('\\').join('/');
  return undefined;
}

/**
 * Every relative import (static, dynamic, require and `import type`) between the files of the
 * repository at `root`.
 */
export function repositoryImports(root = ROOT): ImportEdge[] {
  const edges: ImportEdge[] = [];
  for (const file of SOURCE_FOLDERS.flatMap((folder) => sourceFiles(root, folder))) {
    const { importedFiles } = ts.preProcessFile(readFileSync(join(root, file), 'utf8'), true, true);
    for (const { fileName } of importedFiles) {
      const to = resolveImport(root, file, fileName);
      if (to && to !== file) edges.push({ from: file, to });
    }
  }
  return edges;
}

/** Every broken rule and every cycle of the repository at `root`. */
export function importProblems(root = ROOT): { edges: number; problems: string[] } {
  const edges = repositoryImports(root);
  return {
    edges: edges.length,
    problems: [...ruleViolations(edges), ...importCycles(edges).map((cycle) => `import cycle: ${cycle}`)],
  };
}

if (require.main === module) {
  const { edges, problems } = importProblems(process.argv[2] ? resolve(process.argv[2]) : ROOT);
  for (const problem of problems) console.error(problem);
  if (problems.length) {
    console.error(`\n${problems.length} import rule(s) broken (docs/architecture.md, "Which way imports point").`);
    process.exit(1);
  }
  console.log(
    `imports: ${edges} checked, rules of docs/architecture.md hold, no cycle in ${ACYCLIC_FOLDERS.join(', ')}`,
  );
}
