import { Database, ResultTooLargeError, Row, SqlParams, SqlValue } from './port';

/**
 * A keyset-paged query. The Data API refuses responses over 1 MiB, so any query whose result
 * can grow with the data is read in pages. The SQL filters on the cursor and limits:
 *
 * ```sql
 * SELECT id, refresh_token FROM oauth_tokens
 * WHERE (:after::uuid IS NULL OR id > :after::uuid)
 * ORDER BY id
 * LIMIT :limit
 * ```
 */
export interface PagedQuery<T> {
  /** SQL using `:after` (NULL for the first page) and `:limit`, ordered by the cursor. */
  readonly sql: string;
  /** Other parameters of the SQL. @default - none */
  readonly params?: SqlParams;
  /** The value of `:after` for the page that follows `row`, e.g. `(row) => sqlUuid(row.id)`. */
  readonly cursor: (row: T) => SqlValue;
  /**
   * Rows per page. When a page still exceeds the response limit the page size is halved and
   * the page read again, so wide rows cost more calls but never fail. @default 1000
   */
  readonly pageSize?: number;
}

/** Yields the pages of `query` in order until a page comes back shorter than the limit. */
export async function* readPages<T extends object = Row>(db: Database, query: PagedQuery<T>): AsyncGenerator<T[]> {
  let limit = query.pageSize ?? 1000;
  let after: SqlValue = null;
  for (;;) {
    let rows: T[];
    try {
      rows = (await db.query<T>(query.sql, { ...query.params, after, limit })).rows;
    } catch (error) {
      if (error instanceof ResultTooLargeError && limit > 1) {
        limit = Math.floor(limit / 2);
        continue;
      }
      throw error;
    }
    if (rows.length > 0) yield rows;
    if (rows.length < limit) return;
    after = query.cursor(rows[rows.length - 1]);
  }
}

/** Reads every page of `query` into one array (see {@link readPages}). */
export async function readAllPages<T extends object = Row>(db: Database, query: PagedQuery<T>): Promise<T[]> {
  const all: T[] = [];
  for await (const page of readPages(db, query)) all.push(...page);
  return all;
}
