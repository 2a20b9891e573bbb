import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { GROUPS } from '../../scripts/mutation';

// The mutation groups (scripts/mutation.ts) and the scheduled workflow that runs one job per
// group must name the same groups, and every group must name modules and test files that exist:
// a group left out of the workflow, or a glob that matches nothing, would silently measure less.

const ROOT = join(__dirname, '..', '..');

/** The files a group's test glob matches (globs of the form `dir/name*.test.ts`: `*` within a name). */
function matches(glob: string): string[] {
  expect(dirname(glob)).not.toMatch(/\*/);
  const name = new RegExp(
    `^${basename(glob)
      .replace(/[.+?^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '[^/]*')}$`,
  );
  return readdirSync(join(ROOT, dirname(glob))).filter((file) => name.test(file));
}

test('the workflow runs every mutation group, and only those', () => {
  const workflow = readFileSync(join(ROOT, '.github', 'workflows', 'mutation.yml'), 'utf8');
  const list = /group:\n((?:\s+- [\w-]+\n)+)/.exec(workflow);
  expect(list).not.toBeNull();
  const groups = [...list![1].matchAll(/- ([\w-]+)/g)].map((m) => m[1]);
  expect(groups.sort()).toEqual(Object.keys(GROUPS).sort());
});

test.each(Object.entries(GROUPS))('group %s mutates modules that exist, with test files that exist', (_name, group) => {
  expect(group.mutate.length).toBeGreaterThan(0);
  for (const module of group.mutate) expect(existsSync(join(ROOT, module))).toBe(true);
  for (const glob of group.tests) expect(matches(glob)).not.toEqual([]);
});
