/**
 * Finds `:name` parameters in PostgreSQL text the way the Data API does, skipping `::casts`,
 * string literals ('…', E'…' with backslash escapes, $tag$…$tag$), quoted identifiers and
 * comments (-- and nested /* *\/). A name is `[A-Za-z_][A-Za-z0-9_]*`.
 *
 * Caveat shared with the Data API: an array slice written with identifiers (`a[lo:hi]`) reads
 * as a parameter; put spaces around that colon (`a[lo : hi]`).
 */
export interface NamedSql {
  /** The SQL with every parameter replaced by what `placeholder` returned for it. */
  readonly text: string;
  /** Distinct parameter names in order of first appearance. */
  readonly names: string[];
}

const NAME_START = /[A-Za-z_]/;
const NAME_PART = /[A-Za-z0-9_]/;

/**
 * Rewrites the parameters of `sql`. `placeholder(name, position)` gets the 1-based position of
 * the name among distinct names (the same name always gets the same position).
 */
export function rewriteNamedParameters(sql: string, placeholder: (name: string, position: number) => string): NamedSql {
  const names: string[] = [];
  let out = '';
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const c = sql[i];
    const next = sql[i + 1];
    if (c === "'") {
      const escapes = i > 0 && (sql[i - 1] === 'E' || sql[i - 1] === 'e') && !(i > 1 && NAME_PART.test(sql[i - 2]));
      const end = skipQuoted(sql, i, "'", escapes);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '"') {
      const end = skipQuoted(sql, i, '"', false);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '-' && next === '-') {
      const newline = sql.indexOf('\n', i);
      const end = newline === -1 ? n : newline;
      out += sql.slice(i, end);
      i = end;
    } else if (c === '/' && next === '*') {
      const end = skipBlockComment(sql, i);
      out += sql.slice(i, end);
      i = end;
    } else if (c === '$' && (i === 0 || !NAME_PART.test(sql[i - 1]))) {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i));
      if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length);
        const end = close === -1 ? n : close + tag[0].length;
        out += sql.slice(i, end);
        i = end;
      } else {
        out += c;
        i += 1;
      }
    } else if (c === ':' && next === ':') {
      out += '::';
      i += 2;
    } else if (c === ':' && next !== undefined && NAME_START.test(next)) {
      let j = i + 1;
      while (j < n && NAME_PART.test(sql[j])) j += 1;
      const name = sql.slice(i + 1, j);
      let position = names.indexOf(name) + 1;
      if (position === 0) {
        names.push(name);
        position = names.length;
      }
      out += placeholder(name, position);
      i = j;
    } else {
      out += c;
      i += 1;
    }
  }
  return { text: out, names };
}

function skipQuoted(sql: string, start: number, quote: string, backslashEscapes: boolean): number {
  let i = start + 1;
  while (i < sql.length) {
    const c = sql[i];
    if (backslashEscapes && c === '\\') {
      i += 2;
    } else if (c === quote) {
      if (sql[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i += 1;
    }
  }
  return sql.length;
}

function skipBlockComment(sql: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql[i] === '/' && sql[i + 1] === '*') {
      depth += 1;
      i += 2;
    } else if (sql[i] === '*' && sql[i + 1] === '/') {
      depth -= 1;
      i += 2;
      if (depth === 0) return i;
    } else {
      i += 1;
    }
  }
  return sql.length;
}
