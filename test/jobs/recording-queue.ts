import type { QueueSender } from '../../lambda/dispatcher/core';
import type { FanOutMessage } from '../../lambda/shared/jobs/fan-out';
import type { JobWorld, SeedUser } from '../support/jobs';

/** A queue that keeps what was sent; `refuse(call, index)` makes it fail those entries. */
export function recordingQueue(refuse: (call: number, index: number) => boolean = () => false) {
  const messages: FanOutMessage[] = [];
  let calls = 0;
  const queue: QueueSender = {
    sendBatch(bodies) {
      const call = calls++;
      const failed: number[] = [];
      bodies.forEach((body, i) => {
        if (refuse(call, i)) failed.push(i);
        else messages.push(JSON.parse(body) as FanOutMessage);
      });
      return Promise.resolve({ failed });
    },
  };
  return { queue, messages, calls: () => calls };
}

/** The connections (oauth_tokens ids) of these users, sorted. */
export async function tokenIds(world: JobWorld, users: readonly SeedUser[]): Promise<string[]> {
  const { rows } = await world.admin.query<{ id: string }>(
    'SELECT id FROM oauth_tokens WHERE user_id IN (SELECT jsonb_array_elements_text(:ids::jsonb)::uuid) ORDER BY id',
    { ids: JSON.stringify(users.map((u) => u.userId)) },
  );
  return rows.map((r) => r.id);
}

/** Every id the messages carry, sorted. */
export const sentIds = (messages: readonly FanOutMessage[]) => messages.flatMap((m) => m.ids).sort();
