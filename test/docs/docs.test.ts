import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { API_ROUTES } from '../../lib/accounts-api';
import { TOKEN_ROUTE } from '../../lambda/token-route/route';
import { brokenReason, codeSpans, headingAnchors, markdownFiles, read, relativeLinks, ROOT, section } from './markdown';

// The docs against the code: what a reader relies on (environment variables, commands, routes,
// migrations, links) must be what the code has. The alarms, the variables the stack sets and
// the architecture picture are checked against the synthesized stack in stack-docs.test.ts.

function tsFiles(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((name) => name.endsWith('.ts'))
    .map((name) => join(dir, name));
}

/**
 * Every environment variable name the code declares: the string values of each exported
 * `…_ENV` constant (`JOB_ENV = { … }`, `INTERNAL_API_KEY_ENV = '…'`) in lambda/ and scripts/,
 * and the names the migration handler reads (`requiredEnv([...])`, `env.NAME`). Read from the
 * source, so a module that moves or a new `…_ENV` constant is found without a list to keep.
 */
function declaredEnvironmentVariables(): Map<string, string> {
  const names = new Map<string, string>();
  for (const file of [...tsFiles('lambda'), ...tsFiles('scripts')]) {
    const source = read(file);
    for (const m of source.matchAll(/export const (\w*_ENV)\s*=\s*\{([\s\S]*?)\}\s*as const/g)) {
      const body = m[2].replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
      for (const value of body.matchAll(/'([A-Z][A-Z0-9_]+)'/g)) names.set(value[1], `${file} ${m[1]}`);
    }
    for (const m of source.matchAll(/export const (\w*_ENV)\s*=\s*'([A-Z][A-Z0-9_]+)'/g)) {
      names.set(m[2], `${file} ${m[1]}`);
    }
    if (file.startsWith('lambda/migrate/')) {
      for (const m of source.matchAll(/requiredEnv\(\[([^\]]*)\]\)/g)) {
        for (const value of m[1].matchAll(/'([A-Z][A-Z0-9_]+)'/g)) names.set(value[1], `${file} requiredEnv`);
      }
      for (const m of source.matchAll(/\benv\.([A-Z][A-Z0-9_]+)\b/g)) names.set(m[1], `${file} env`);
    }
  }
  return names;
}

/** The variables docs/architecture.md documents: its table's first column. */
function documentedEnvironmentVariables(): Set<string> {
  return codeSpans(
    section(read('docs/architecture.md'), 'Environment variables')
      .split('\n')
      .filter((l) => l.startsWith('| `'))
      .map((l) => l.split('|')[1])
      .join('\n'),
  );
}

test('every environment variable the code declares is in docs/architecture.md, and nothing else is', () => {
  const declared = declaredEnvironmentVariables();
  // Not vacuous: the scan finds the jobs', the API's, the dispatchers' and the migration's names.
  for (const name of ['DB_CLUSTER_ARN', 'API_JWT_ISSUER', 'FAN_OUT_QUEUE_URL', 'MASTER_SECRET_ARN', 'DATABASE_URL']) {
    expect(declared.has(name)).toBe(true);
  }
  const documented = documentedEnvironmentVariables();
  const undocumented = [...declared].filter(([name]) => !documented.has(name)).map(([n, where]) => `${n} (${where})`);
  expect(undocumented).toEqual([]);
  // The stack's own (NODE_OPTIONS, Powertools', CDK's) are checked against the template instead.
  const stackOnly = [
    'NODE_OPTIONS',
    'POWERTOOLS_SERVICE_NAME',
    'POWERTOOLS_METRICS_NAMESPACE',
    'USER_ON_EVENT_FUNCTION_ARN',
  ];
  const unknown = [...documented].filter((name) => !declared.has(name) && !stackOnly.includes(name));
  expect(unknown).toEqual([]);
});

test("every npm script is on the README's command list", () => {
  const scripts = Object.keys((JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts);
  const commands = section(read('README.md'), 'Commands');
  const missing = scripts.filter((name) => {
    const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const shorthand = name === 'start' || name === 'test' ? `|\`npm ${escaped}(?![\\w:-])` : '';
    return !new RegExp(`npm run ${escaped}(?![\\w:-])${shorthand}`).test(commands);
  });
  expect(missing).toEqual([]);
  // and every `npm run x` the list names is a script
  const named = [...commands.matchAll(/npm run ([\w:-]+)/g)].map((m) => m[1]);
  expect(named.filter((name) => !scripts.includes(name))).toEqual([]);
});

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

/** The operations of docs/openapi.yaml, as `METHOD /path`, apart from those marked `x-local-only`. */
function openApiRoutes(): { deployed: string[]; localOnly: string[] } {
  const doc = parse(read('docs/openapi.yaml')) as {
    paths: Record<string, Record<string, { 'x-local-only'?: boolean }>>;
  };
  const deployed: string[] = [];
  const localOnly: string[] = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of Object.keys(item).filter((k) => METHODS.includes(k))) {
      (item[method]['x-local-only'] ? localOnly : deployed).push(`${method.toUpperCase()} ${path}`);
    }
  }
  return { deployed, localOnly };
}

/** `METHOD /path` code spans of a text. */
function routesNamed(text: string): string[] {
  return [...codeSpans(text)].filter((s) => /^(GET|PUT|POST|DELETE|PATCH) \/\S*$/.test(s));
}

test('the routes the stack deploys are exactly the operations of docs/openapi.yaml and of docs/accounts-api.md', () => {
  const { deployed, localOnly } = openApiRoutes();
  expect([...deployed].sort()).toEqual([...API_ROUTES].sort());
  // The endpoint table of docs/accounts-api.md names each route, and no route the API lacks.
  const table = section(read('docs/accounts-api.md'), 'Endpoints')
    .split('\n')
    .filter((l) => l.startsWith('|'))
    .join('\n');
  expect(routesNamed(table).sort()).toEqual([...API_ROUTES].sort());
  // A local-only operation is said to be local-only where the API is described.
  for (const route of localOnly) expect(read('docs/accounts-api.md')).toContain(`\`${route}\``);
});

test('the internal token route is the route docs/internal-api.md describes, and not in openapi.yaml', () => {
  const doc = read('docs/internal-api.md');
  expect(routesNamed(doc)).toEqual([TOKEN_ROUTE]);
  const { deployed, localOnly } = openApiRoutes();
  expect([...deployed, ...localOnly]).not.toContain(TOKEN_ROUTE);
});

test('every migration file is in the table of docs/migrations.md, and the table names no other', () => {
  const files = readdirSync(join(ROOT, 'migrations'), { withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => e.name)
    .sort();
  expect(files.length).toBeGreaterThan(0);
  const table = section(read('docs/migrations.md'), 'The migrations')
    .split('\n')
    .filter((l) => l.startsWith('| `'))
    .map((l) => l.split('|')[1].trim().replace(/`/g, ''));
  expect([...table].sort()).toEqual(files);
});

test('every test file or folder the docs name exists (tests move; the docs move with them)', () => {
  const named: string[] = [];
  for (const file of markdownFiles()) {
    for (const span of codeSpans(read(file))) {
      // Concrete paths only: a pattern (`test/jobs/<module>.test.ts`) or a command is not one.
      if (/^test\/[\w./-]+$/.test(span)) named.push(`${file}: ${span}`);
    }
  }
  // Not vacuous: CONTRIBUTING.md's map and the mutation groups name test paths.
  expect(named.length).toBeGreaterThan(10);
  expect(named.filter((n) => !existsSync(join(ROOT, n.split(': ')[1])))).toEqual([]);
});

describe('links', () => {
  const files = markdownFiles();

  test('the files checked include the README, CONTRIBUTING.md, bench/README.md and docs/', () => {
    expect(files).toEqual(
      expect.arrayContaining(['README.md', 'CONTRIBUTING.md', 'bench/README.md', 'docs/architecture.md']),
    );
  });

  test('a link to a missing file, or to a missing heading, is reported', () => {
    const link = (target: string) => brokenReason({ file: 'README.md', line: 1, target });
    expect(link('docs/no-such-file.md')).toBe('docs/no-such-file.md does not exist');
    expect(link('docs/deploying.md#no-such-heading')).toBe('docs/deploying.md has no heading #no-such-heading');
    expect(link('docs/deploying.md#what-a-deploy-does')).toBeUndefined();
    expect(link('#commands')).toBeUndefined();
    expect(link('../outside.md')).toBe('../outside.md leaves the repository');
  });

  test.each(files)('every relative link in %s resolves to a file, and a #fragment to a heading', (file) => {
    const broken = relativeLinks(file)
      .map((link) => ({ link, reason: brokenReason(link) }))
      .filter((b) => b.reason)
      .map(({ link, reason }) => `${link.file}:${link.line} ${link.target}: ${reason}`);
    expect(broken).toEqual([]);
  });
});

test('the README is a front door: at most 200 lines, with npm install, npm start and npm test', () => {
  const readme = read('README.md');
  expect(readme.split('\n').length).toBeLessThanOrEqual(201);
  for (const command of ['npm install', 'npm start', 'npm test']) expect(readme).toContain(command);
});

test("the anchors follow GitHub's rules", () => {
  const anchors = headingAnchors(
    [
      '# Checking a deploy: `npm run verify`',
      "## Fan-out: more workers on AWS's own machinery",
      '## CI/CD (`.github/workflows/`)',
      '## Both jobs',
      '## Both jobs',
      '```sh',
      '# not a heading',
      '```',
    ].join('\n'),
  );
  expect([...anchors]).toEqual([
    'checking-a-deploy-npm-run-verify',
    'fan-out-more-workers-on-awss-own-machinery',
    'cicd-githubworkflows',
    'both-jobs',
    'both-jobs-1',
  ]);
});
