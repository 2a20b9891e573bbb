import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

/** Reading the repository's Markdown the way GitHub renders it, for the docs' drift tests. */

export const ROOT = resolve(__dirname, '..', '..');

export function read(path: string): string {
  return readFileSync(join(ROOT, path), 'utf8');
}

/** The Markdown files whose links must resolve: the front door, the contributors' guide, docs/. */
export function markdownFiles(): string[] {
  const docs = readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`);
  const others = ['README.md', 'CONTRIBUTING.md', 'bench/README.md', 'migrations/README.md'].filter((f) =>
    existsSync(join(ROOT, f)),
  );
  return [...others, ...docs].sort();
}

/** The lines outside fenced code blocks (``` or ~~~), with their 1-based numbers. */
export function proseLines(markdown: string): { line: number; text: string }[] {
  const out: { line: number; text: string }[] = [];
  let fence: string | undefined;
  markdown.split('\n').forEach((text, i) => {
    const marker = /^\s*(```|~~~)/.exec(text)?.[1];
    if (marker && (!fence || fence === marker)) {
      fence = fence ? undefined : marker;
      return;
    }
    if (!fence) out.push({ line: i + 1, text });
  });
  return out;
}

/** A line without its inline code spans (links inside `…` are not links). */
function withoutCode(text: string): string {
  return text.replace(/(`+)[^`]*?\1/g, '');
}

/**
 * GitHub's anchor for a heading (github-slugger): the rendered text lower-cased, every
 * character that is not a letter, mark, number, connector (`_`), space or hyphen removed,
 * spaces turned into hyphens; a repeated anchor gets `-1`, `-2`, … in order.
 */
export function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  for (const { text } of proseLines(markdown)) {
    const heading = /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(text);
    if (!heading) continue;
    const rendered = heading[1]
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1') // links and images: their text
      .replace(/`([^`]*)`/g, '$1') // code spans: their content
      .replace(/<[^>]+>/g, ''); // inline HTML
    const base = rendered
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
      .replace(/ /g, '-');
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    anchors.add(count === 0 ? base : `${base}-${count}`);
  }
  return anchors;
}

export interface Link {
  readonly file: string;
  readonly line: number;
  readonly target: string;
}

/** Every inline link and image of a file, outside code, that is not to another site. */
export function relativeLinks(file: string): Link[] {
  const links: Link[] = [];
  for (const { line, text } of proseLines(read(file))) {
    for (const match of withoutCode(text).matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = match[1];
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:, …
      links.push({ file, line, target });
    }
  }
  return links;
}

/** Why a link does not resolve, or undefined when it does. */
export function brokenReason(link: Link): string | undefined {
  const [pathPart, fragment] = link.target.split('#', 2) as [string, string | undefined];
  const path = pathPart ? resolve(ROOT, dirname(link.file), decodeURIComponent(pathPart)) : join(ROOT, link.file);
  if (!path.startsWith(ROOT)) return `${link.target} leaves the repository`;
  if (!existsSync(path)) return `${relative(ROOT, path)} does not exist`;
  if (fragment === undefined || fragment === '') return undefined;
  if (statSync(path).isDirectory() || !path.endsWith('.md')) return `#${fragment} on a file that has no headings`;
  const anchors = headingAnchors(readFileSync(path, 'utf8'));
  return anchors.has(decodeURIComponent(fragment).toLowerCase())
    ? undefined
    : `${relative(ROOT, path)} has no heading #${fragment}`;
}

/** The text of a section (its heading line to the next heading of the same or a higher level). */
export function section(markdown: string, heading: string): string {
  const lines = markdown.split('\n');
  const start = lines.findIndex((l) => l.replace(/^#+\s*/, '') === heading && /^#+\s/.test(l));
  if (start < 0) throw new Error(`no heading "${heading}"`);
  const level = /^#+/.exec(lines[start])![0].length;
  const end = lines.findIndex((l, i) => i > start && /^#+\s/.test(l) && /^#+/.exec(l)![0].length <= level);
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

/** Every `code span` of a text, without the backticks. */
export function codeSpans(text: string): Set<string> {
  return new Set([...text.matchAll(/`([^`\n]+)`/g)].map((m) => m[1]));
}
