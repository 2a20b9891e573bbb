import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DETAIL_TYPES } from '../../lambda/event-publisher/catalogue';
import type { LocalEventLine } from '../../local/events/file-bus';
import { eventLine, eventsSummaryText, publishLocalEvents } from '../../scripts/local-events';
import { JobWorld, seedUsers, useBothDatabasePaths, useJobWorld } from '../support/jobs';
import { schemaErrors } from '../jobs/event-publisher/outbox';

// The local bus (local/events/file-bus.ts) and what `npm start` / `npm run api` do with it
// (scripts/local-events.ts): the outbox published to a JSON Lines file in EventBridge's
// delivered shape, each line schema-valid, a summary by detail-type, one line per event.

let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

describe.each(PATHS)('%s path', (_path, database) => {
  test('the run’s events are appended to the file, printed as they are put, and summarised', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'events-'));
    try {
      const file = join(dir, 'events.jsonl');
      const users = await seedUsers(world, { count: 3, regions: () => ['EU'], expiresInSeconds: 7200 });
      const printed: string[] = [];
      const first = await publishLocalEvents(database(), { file, onEvent: (e) => printed.push(eventLine(e)) });
      expect(first.summary).toMatchObject({ published: 3, unpublished: 0 });
      const lines = readFileSync(file, 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as LocalEventLine);
      expect(lines.map((l) => l['detail-type'])).toEqual([
        DETAIL_TYPES.connected,
        DETAIL_TYPES.connected,
        DETAIL_TYPES.connected,
      ]);
      for (const l of lines) expect(schemaErrors(l['detail-type'], l.detail)).toEqual([]);
      expect(new Set(lines.map((l) => l.detail.userId))).toEqual(new Set(users.map((u) => u.userId)));
      expect(printed).toHaveLength(3);
      expect(printed[0]).toMatch(
        /^\[\d\d:\d\d:\d\d\] Connection Connected {2}EU {2}user [0-9a-f]{8}… {2}refreshEnabled=true$/,
      );
      expect(eventsSummaryText(first.events, 'events.jsonl')).toContain('3  Connection Connected');
      // A later run appends only what is new.
      await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = :u::uuid`, {
        u: users[0].userId,
      });
      const second = await publishLocalEvents(database(), { file });
      expect(second.events.map((e) => e['detail-type'])).toEqual([DETAIL_TYPES.refreshTurnedOff]);
      expect(readFileSync(file, 'utf8').trim().split('\n')).toHaveLength(4);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
