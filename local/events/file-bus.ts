import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { BusEntry, EventBus } from '../../lambda/event-publisher/contract';

/** Where `npm start` and `npm run api` write the events their runs publish. */
export const LOCAL_EVENTS_FILE = '.local/events.jsonl';

/** One line of the local events file: what EventBridge would deliver to a rule's target. */
export interface LocalEventLine {
  readonly source: string;
  readonly 'detail-type': string;
  readonly time: string;
  readonly detail: Record<string, unknown>;
}

/**
 * A local stand-in for the environment's EventBridge bus: every entry is appended to a JSON
 * Lines file (one event per line, in EventBridge's delivered shape) and handed to `onEvent`.
 * Accepts every entry (tests that need refusals wrap it).
 */
export function fileEventBus(file: string, onEvent?: (line: LocalEventLine) => void): EventBus {
  mkdirSync(dirname(file), { recursive: true });
  return {
    putEvents(entries: readonly BusEntry[]) {
      const lines = entries.map((e): LocalEventLine => ({
        source: e.Source,
        'detail-type': e.DetailType,
        time: e.Time.toISOString(),
        detail: JSON.parse(e.Detail) as Record<string, unknown>,
      }));
      if (lines.length > 0) appendFileSync(file, lines.map((l) => JSON.stringify(l) + '\n').join(''));
      for (const line of lines) onEvent?.(line);
      return Promise.resolve({ failed: [] });
    },
  };
}
