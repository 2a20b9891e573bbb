// An index for the windowed proactive refresh (0016's last_used_at, #14 "refresh what is used").
//
// With `jobs.proactiveRefreshUsedWithinHours` set, the token refresh claims connections with
// refresh on, expiring within 30 minutes and used within the window (NULL last_used_at: never
// recorded, counts as used), in expires_at order. On idx_oauth_tokens_expires_at (0005) that
// order starts with every idle connection whose token expired long ago, and each one was
// fetched from the table and dropped by the window's filter: measured on PostgreSQL 17 with
// 1,000,000 connections of which 740,000 idle and expired, 15.6 s per claim (2.6 s at 200,000).
//
// idx_oauth_tokens_refresh_due_used keys the same rows on (expires_at, coalesce(last_used_at,
// 'infinity')): the claim's order first, then the window, with NULL as 'infinity' (newer than
// any window's start, so "never recorded = used" holds inside the index). The claim writes its
// window as `coalesce(last_used_at, 'infinity') >= now() - …`, which PostgreSQL then checks as
// an index condition on each index entry: idle rows are stepped over in the index, never
// fetched. Same data: 104 ms per claim (500 rows; EXPLAIN in test/migrations/refresh-window-index.test.ts
// checks the plan on a realistic table). Claims without a window use it as they used 0005's.
// Partial on proactive_refresh_enabled = TRUE like 0005's: connections that need
// re-authorisation are never claimed.
//
// Built CONCURRENTLY outside a transaction (writes go on while it scans), an INVALID index left
// by an interrupted build dropped first, lock_timeout around both (migrations/lib/online.js, as
// 0005, 0008 and 0012). No privilege changes: the claim reads the same columns.
// Down drops it concurrently.

const { createIndexesConcurrently, dropIndexesConcurrently } = require('./lib/online');

const indexes = [
  {
    name: 'idx_oauth_tokens_refresh_due_used',
    table: 'oauth_tokens',
    definition:
      "ON oauth_tokens (expires_at, coalesce(last_used_at, 'infinity'::timestamptz)) WHERE proactive_refresh_enabled = TRUE",
  },
];

exports.indexes = indexes;

exports.up = async (pgm) => {
  pgm.noTransaction();
  await createIndexesConcurrently(pgm, indexes);
};

exports.down = (pgm) => {
  pgm.noTransaction();
  dropIndexesConcurrently(pgm, indexes);
};
