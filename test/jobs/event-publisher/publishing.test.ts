import { DETAIL_TYPES, EVENT_SOURCE } from '../../../lambda/event-publisher/catalogue';
import { BusEntry, EventBus, runEventPublisher } from '../../../lambda/event-publisher/core';
import {
  Database,
  failingOnce,
  JobWorld,
  runtime,
  seedUsers,
  SeedUser,
  useBothDatabasePaths,
  useJobWorld,
} from '../../support/jobs';
import { outboxEvents, schemaErrors } from './outbox';

/**
 * The event publisher (lambda/event-publisher/core.ts) on both database paths, against a
 * recording bus: at least once with stable ids, partial failures retried alone, order per
 * connection, deadline, pruning.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

interface Put {
  readonly entries: Array<{ type: string; detail: Record<string, unknown> }>;
}

/** A bus that records every PutEvents request; `refuse` picks entries to refuse (by index) per call. */
function recordingBus(refuse: (call: number, entries: readonly BusEntry[]) => number[] = () => []): EventBus & {
  puts: Put[];
} {
  const puts: Put[] = [];
  return {
    puts,
    putEvents(entries) {
      const call = puts.length;
      puts.push({
        entries: entries.map((e) => {
          expect(e.Source).toBe(EVENT_SOURCE);
          return { type: e.DetailType, detail: JSON.parse(e.Detail) as Record<string, unknown> };
        }),
      });
      return Promise.resolve({
        failed: refuse(call, entries).map((index) => ({ index, errorCode: 'InternalFailure' })),
      });
    },
  };
}

const accepted = (puts: readonly Put[], refused: (call: number) => number[] = () => []) =>
  puts.flatMap((p, call) => p.entries.filter((_e, i) => !refused(call).includes(i)));

/** Three users; each: connected, refresh turned off, connected again (three events per connection, in order). */
async function threeEventsPerConnection(count = 3): Promise<SeedUser[]> {
  const users = await seedUsers(world, { count, regions: () => ['NA'], expiresInSeconds: 7200 });
  for (const u of users) {
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = false WHERE user_id = :id::uuid`, {
      id: u.userId,
    });
    await world.admin.query(`UPDATE oauth_tokens SET proactive_refresh_enabled = true WHERE user_id = :id::uuid`, {
      id: u.userId,
    });
  }
  return users;
}

const publish = (db: Database, bus: EventBus, extra: Partial<Parameters<typeof runEventPublisher>[0]> = {}) =>
  runEventPublisher({ db, bus, ...runtime(), settings: { retryBaseMs: 1, retryMaxMs: 2 }, ...extra });

describe.each(PATHS)('%s path', (_path, database) => {
  test('every event once, schema-valid, each connection’s in its order and never two of one connection in a request', async () => {
    const users = await threeEventsPerConnection(12);
    const bus = recordingBus();
    const summary = await publish(database(), bus);
    expect(summary).toMatchObject({ published: 36, notPublished: 0, unpublished: 0, stoppedForDeadline: false });
    const all = accepted(bus.puts);
    expect(all).toHaveLength(36);
    for (const e of all) expect(schemaErrors(e.type, e.detail)).toEqual([]);
    expect(new Set(all.map((e) => e.detail.eventId)).size).toBe(36);
    for (const u of users) {
      expect(all.filter((e) => e.detail.userId === u.userId).map((e) => e.type)).toEqual([
        DETAIL_TYPES.connected,
        DETAIL_TYPES.refreshTurnedOff,
        DETAIL_TYPES.recovered,
      ]);
    }
    for (const put of bus.puts) {
      expect(put.entries.length).toBeLessThanOrEqual(10);
      const connections = put.entries.map((e) => `${String(e.detail.userId)}/${String(e.detail.region)}`);
      expect(new Set(connections).size).toBe(connections.length);
    }
    // Published rows are marked; a second run publishes nothing.
    const again = recordingBus();
    expect(await publish(database(), again)).toMatchObject({ published: 0 });
    expect(again.puts).toEqual([]);
  });

  test('killed after PutEvents, before marking the rows: a later run puts the same event ids again', async () => {
    await threeEventsPerConnection(2);
    const first = recordingBus();
    // The first mark never happens: the run dies there (as a Lambda timing out would).
    const dying = failingOnce(database(), /SET published_at = now\(\)/, () => new Error('invocation killed'));
    await expect(publish(dying, first)).rejects.toThrow('invocation killed');
    const sent = accepted(first.puts).map((e) => e.detail.eventId);
    expect(sent).toHaveLength(2);
    // Leased: nobody puts them again before the lease expires.
    const early = recordingBus();
    await publish(database(), early);
    expect(early.puts).toEqual([]);
    await world.admin.query(
      `UPDATE event_outbox SET lease_expires_at = now() - interval '1 second' WHERE lease_owner IS NOT NULL`,
    );
    const second = recordingBus();
    await publish(database(), second);
    const republished = accepted(second.puts).map((e) => e.detail.eventId);
    expect(republished.slice(0, 2).sort()).toEqual([...sent].sort());
    expect(republished).toHaveLength(6);
    expect((await outboxEvents(world.admin)).every((e) => e.attempts >= 1)).toBe(true);
  });

  test('an entry the bus refuses is sent again alone, with its id; the others are not sent twice', async () => {
    await threeEventsPerConnection(5);
    const refusedOnce = (call: number) => (call === 0 ? [2] : []);
    const bus = recordingBus(refusedOnce);
    const summary = await publish(database(), bus);
    expect(summary).toMatchObject({ published: 15, notPublished: 0 });
    expect(bus.puts[0].entries).toHaveLength(5);
    expect(bus.puts[1].entries).toHaveLength(1);
    expect(bus.puts[1].entries[0].detail.eventId).toBe(bus.puts[0].entries[2].detail.eventId);
    const ids = accepted(bus.puts, refusedOnce).map((e) => e.detail.eventId);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toHaveLength(15);
  });

  test('an entry refused in every attempt is given back; its connection’s later events wait for it, others go on', async () => {
    const [stuck, ...others] = await threeEventsPerConnection(3);
    const refuseStuck = (_call: number, entries: readonly BusEntry[]) =>
      entries.flatMap((e, i) => ((JSON.parse(e.Detail) as { userId: string }).userId === stuck.userId ? [i] : []));
    const bus = recordingBus(refuseStuck);
    const summary = await publish(database(), bus);
    expect(summary).toMatchObject({ published: 6, notPublished: 1, unpublished: 3 });
    const all = accepted(bus.puts, (call) => refuseStuck(call, []));
    for (const u of others) expect(all.filter((e) => e.detail.userId === u.userId)).toHaveLength(3);
    // Sent alone after the first refusal, three attempts in all; never its later events.
    const stuckSent = bus.puts.flatMap((p) => p.entries).filter((e) => e.detail.userId === stuck.userId);
    expect(stuckSent.map((e) => e.type)).toEqual([
      DETAIL_TYPES.connected,
      DETAIL_TYPES.connected,
      DETAIL_TYPES.connected,
    ]);
    const waiting = await world.admin.query<{ next_attempt_at: Date | null }>(
      `SELECT next_attempt_at FROM event_outbox WHERE user_id = :id::uuid AND published_at IS NULL ORDER BY event_outbox.id LIMIT 1`,
      { id: stuck.userId },
    );
    expect(waiting.rows[0].next_attempt_at!.getTime()).toBeGreaterThan(Date.now());
    // Its retry time comes: all three, in order, with the first one's id unchanged.
    await world.admin.query(
      `UPDATE event_outbox SET next_attempt_at = now() - interval '1 second' WHERE next_attempt_at IS NOT NULL`,
    );
    const later = recordingBus();
    await publish(database(), later);
    const stuckLater = accepted(later.puts);
    expect(stuckLater.map((e) => e.type)).toEqual([
      DETAIL_TYPES.connected,
      DETAIL_TYPES.refreshTurnedOff,
      DETAIL_TYPES.recovered,
    ]);
    expect(stuckLater[0].detail.eventId).toBe(stuckSent[0].detail.eventId);
  });

  test('near its deadline a run claims nothing; published rows past the retention are pruned', async () => {
    await threeEventsPerConnection(2);
    const idle = recordingBus();
    expect(await publish(database(), idle, { remainingTimeMs: () => 5_000 })).toMatchObject({
      published: 0,
      stoppedForDeadline: true,
    });
    expect(idle.puts).toEqual([]);
    await publish(database(), recordingBus());
    await world.admin.query(
      `UPDATE event_outbox SET published_at = now() - interval '8 days' WHERE event_outbox.id IN (SELECT min(e.id) FROM event_outbox e)`,
    );
    const summary = await publish(database(), recordingBus());
    expect(summary).toMatchObject({ pruned: 1 });
    expect(await outboxEvents(world.admin)).toHaveLength(5);
  });
});
