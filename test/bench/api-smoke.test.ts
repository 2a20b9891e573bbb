import { measureAccountsApi, renderApiMarkdown } from '../../bench/api';

// bench/api.ts at a tiny size (the code `npm run bench` runs): users with more accounts than one
// page (50), so every listing answers with a next-page cursor, as in the full run. No assertion
// on speed.

test('the accounts API bench lists full pages, one Data API call per request', async () => {
  const rows = await measureAccountsApi({ users: 2, accountsPerUser: 60, requests: 10, inFlight: [1] });
  expect(rows.map((r) => [r.path, r.inFlight, r.requests])).toEqual([
    ['RLS (accounts_api)', 1, 10],
    ['no RLS (owner)', 1, 10],
  ]);
  for (const r of rows) {
    expect(r.itemsPerResponse).toBe(50);
    expect(r.dataApiCallsPerRequest).toBe(1);
  }
  expect(renderApiMarkdown(rows)).toContain('| RLS (accounts_api) | 1 | 10 |');
}, 120_000);
