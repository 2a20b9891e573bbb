import { randomUUID } from 'node:crypto';
import { runAccountSync } from '../../../lambda/account-sync/core';
import {
  dispatchCap,
  DispatchSelection,
  DispatchSendError,
  QueueSender,
  runDispatch,
} from '../../../lambda/dispatcher/core';
import { accountSyncSelection, tokenRefreshSelection } from '../../../lambda/dispatcher/selections';
import { consumeBatch, FanOutMessage, IDS_PER_MESSAGE, parseFanOutMessage } from '../../../lambda/shared/jobs/fan-out';
import { JOB_TIMING } from '../../../lambda/shared/jobs/timing';
import { runTokenRefresh } from '../../../lambda/token-refresh/core';
import { claimDueTokens } from '../../../lambda/token-refresh/store';
import { recordingQueue, sentIds, tokenIds } from '../recording-queue';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../support/jobs';

/**
 * The fan-out (docs/architecture.md): a dispatcher marks due ids and sends them to the job's
 * queue; the job function, given a message's ids, claims them on the same conditions as the
 * next due ones. Here the queue is a recorder; the SQS client path is in handler.test.ts.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

function dispatch(selection: DispatchSelection, queue: QueueSender, idsPerMessage = IDS_PER_MESSAGE) {
  return runDispatch({
    selection,
    queue,
    ...runtime(),
    settings: { maxIds: 10_000, idsPerMessage },
  });
}

function refresh(db: Database, message: FanOutMessage) {
  return runTokenRefresh({ db, lwa: world.lwa(), cipher: world.cipher, ...runtime(), settings: { given: message } });
}

function sync(db: Database, message: FanOutMessage) {
  return runAccountSync(
    { db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() },
    { syncType: 'scheduled', given: message },
  );
}

describe.each(PATHS)('%s: token refresh', (_path, database) => {
  test('the dispatcher sends each due token once, in messages of the given size; a second tick while they wait sends nothing', async () => {
    const due = await seedUsers(world, { count: 5, expiresInSeconds: 600 });
    await seedUsers(world, { count: 2, expiresInSeconds: 7200 });
    const db = database();
    const { queue, messages } = recordingQueue();

    const first = await dispatch(tokenRefreshSelection(db), queue, 2);
    const second = await dispatch(tokenRefreshSelection(db), queue, 2);

    expect(first).toMatchObject({ dispatched: 5, messages: 3, notSent: 0 });
    expect(sentIds(messages)).toEqual(await tokenIds(world, due));
    expect(messages.map((m) => m.ids.length)).toEqual([2, 2, 1]);
    expect(new Set(messages.map((m) => m.dispatchId))).toEqual(new Set([first.dispatchId]));
    expect(second).toMatchObject({ dispatched: 0, messages: 0 });
    expect(messages).toHaveLength(3);
  });

  test('a consumer given ids claims them under its own lease, taking it over from the dispatch mark', async () => {
    const users = await seedUsers(world, { count: 3, expiresInSeconds: 600 });
    const db = database();
    const { queue, messages } = recordingQueue();
    await dispatch(tokenRefreshSelection(db), queue);
    const owner = randomUUID();

    const claimed = await claimDueTokens(db, {
      owner,
      windowSeconds: 1800,
      leaseSeconds: JOB_TIMING.tokenRefresh.leaseSeconds,
      limit: 500,
      pausedRegions: [],
      given: messages[0],
    });

    expect(claimed.map((t) => t.id).sort()).toEqual(await tokenIds(world, users));
    const { rows } = await world.admin.query<{ owner: string; seconds: number }>(
      `SELECT refresh_lease_owner AS owner,
              round(extract(epoch FROM refresh_lease_expires_at - now()))::int AS seconds
         FROM oauth_tokens`,
    );
    for (const row of rows) {
      expect(row.owner).toBe(owner);
      expect(Math.abs(row.seconds - JOB_TIMING.tokenRefresh.leaseSeconds)).toBeLessThanOrEqual(5);
    }
  });

  test('two consumers given overlapping ids at once refresh every token exactly once', async () => {
    const users = await seedUsers(world, { count: 8, expiresInSeconds: 600 });
    const db = database();
    const { queue, messages } = recordingQueue();
    await dispatch(tokenRefreshSelection(db), queue, 5);
    // Each message delivered twice (SQS is at-least-once), the copies consumed concurrently.
    const runs = await Promise.all(messages.flatMap((m) => [refresh(db, m), refresh(db, m)]));

    expect(runs.reduce((n, r) => n + r.refreshed, 0)).toBe(8);
    expect(runs.reduce((n, r) => n + r.claimed, 0)).toBe(8);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
    const { rows } = await world.admin.query<{ leased: number }>(
      'SELECT count(*)::int AS leased FROM oauth_tokens WHERE refresh_lease_owner IS NOT NULL',
    );
    expect(rows[0].leased).toBe(0);
  });

  test('an id no longer due, or leased by a live run, is skipped, not an error', async () => {
    const [renewed, leased, ...rest] = await seedUsers(world, { count: 4, expiresInSeconds: 600 });
    const db = database();
    const { queue, messages } = recordingQueue();
    await dispatch(tokenRefreshSelection(db), queue);
    // Meanwhile the web app stored fresh tokens for one, and a run holds the other's lease.
    await world.admin.query(
      `UPDATE oauth_tokens SET expires_at = now() + interval '2 hours' WHERE user_id = :id::uuid`,
      { id: renewed.userId },
    );
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_owner = :owner::uuid, refresh_lease_expires_at = now() + interval '5 minutes'
        WHERE user_id = :id::uuid`,
      { id: leased.userId, owner: randomUUID() },
    );

    const summary = await refresh(db, messages[0]);

    expect(summary).toMatchObject({ claimed: 2, refreshed: 2, failed: 0 });
    expect(world.amazon.counters.refreshCalls(renewed.refreshToken)).toBe(0);
    expect(world.amazon.counters.refreshCalls(leased.refreshToken)).toBe(0);
    for (const u of rest) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  });

  test('a message never processed: its ids are dispatched again once the mark expires, and the stale message then refreshes nothing', async () => {
    const users = await seedUsers(world, { count: 3, expiresInSeconds: 600 });
    const db = database();
    const lost = recordingQueue();
    const first = await dispatch(tokenRefreshSelection(db), lost.queue);
    const again = recordingQueue();
    expect(await dispatch(tokenRefreshSelection(db), again.queue)).toMatchObject({ dispatched: 0 });

    // The mark runs out (as DISPATCH_MARK_SECONDS after the dispatch).
    await world.admin.query(
      `UPDATE oauth_tokens SET refresh_lease_expires_at = now() - interval '1 second'
        WHERE refresh_lease_owner = :owner::uuid`,
      { owner: first.dispatchId },
    );
    const third = await dispatch(tokenRefreshSelection(db), again.queue);

    expect(third.dispatched).toBe(3);
    expect(sentIds(again.messages)).toEqual(await tokenIds(world, users));
    // The first message, delivered late after all: its mark is no longer the tokens' lease.
    expect(await refresh(db, lost.messages[0])).toMatchObject({ claimed: 0 });
    expect(await refresh(db, again.messages[0])).toMatchObject({ claimed: 3, refreshed: 3 });
  });

  test('entries SQS refuses are sent once more; those refused again lose their mark, the tick fails, and the next tick sends them', async () => {
    const users = await seedUsers(world, { count: 6, expiresInSeconds: 600 });
    const db = database();
    // The second entry is refused on the first request and on its retry.
    const refusing = recordingQueue((call, index) => (call === 0 && index === 1) || (call === 1 && index === 0));

    const error = await dispatch(tokenRefreshSelection(db), refusing.queue, 2).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(DispatchSendError);
    expect((error as DispatchSendError).summary).toMatchObject({ dispatched: 4, messages: 2, notSent: 2 });
    const next = recordingQueue();
    expect(await dispatch(tokenRefreshSelection(db), next.queue)).toMatchObject({ dispatched: 2 });
    expect([...sentIds(refusing.messages), ...sentIds(next.messages)].sort()).toEqual(await tokenIds(world, users));
  });

  test('a failure is reported per message (partial batch response): the others are done and deleted', async () => {
    const users = await seedUsers(world, { count: 4, expiresInSeconds: 600 });
    const db = database();
    const { queue, messages } = recordingQueue();
    await dispatch(tokenRefreshSelection(db), queue, 2);
    const failures: string[] = [];
    const records = [
      { messageId: 'm-1', body: JSON.stringify(messages[0]), eventSource: 'aws:sqs' },
      { messageId: 'm-bad', body: '{"job":"token-refresh","ids":["not-a-uuid"]}', eventSource: 'aws:sqs' },
      {
        messageId: 'm-other-job',
        body: JSON.stringify({ ...messages[1], job: 'account-sync' }),
        eventSource: 'aws:sqs',
      },
      { messageId: 'm-2', body: JSON.stringify(messages[1]), eventSource: 'aws:sqs' },
    ];

    const response = await consumeBatch({ Records: records }, 'token-refresh', {
      work: (m) => refresh(db, m),
      remainingTimeMs: () => 600_000,
      reserveMs: 60_000,
      onFailure: (id) => failures.push(id),
      requeue: () => Promise.reject(new Error('every message was started: nothing to send back')),
    });

    expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'm-bad' }, { itemIdentifier: 'm-other-job' }]);
    expect(failures).toEqual(['m-bad', 'm-other-job']);
    for (const u of users) expect(world.amazon.counters.refreshCalls(u.refreshToken)).toBe(1);
  });
});

describe.each(PATHS)('%s: account sync', (_path, database) => {
  test('the dispatcher sends each due connection once; consumers given them (twice, at once) sync each once', async () => {
    const users = await seedUsers(world, { count: 6 });
    const db = database();
    const { queue, messages } = recordingQueue();

    const first = await dispatch(accountSyncSelection(db), queue, 4);
    expect(await dispatch(accountSyncSelection(db), queue, 4)).toMatchObject({ dispatched: 0 });
    expect(first.dispatched).toBe(6);
    expect(sentIds(messages)).toEqual(await tokenIds(world, users));

    const runs = await Promise.all(messages.flatMap((m) => [sync(db, m), sync(db, m)]));
    expect(runs.reduce((n, r) => n + r.connectionsSynced, 0)).toBe(6);
    for (const u of users) expect(world.amazon.counters.profileCalls(u.userId)).toBe(1);
    const { rows } = await world.admin.query<{ attempts: number }>(
      `SELECT count(*)::int AS attempts FROM account_sync_history GROUP BY metadata->>'userId', region`,
    );
    expect(rows.map((r) => r.attempts)).toEqual(Array(6).fill(1));
  });

  test('a connection no longer due is skipped by the consumer', async () => {
    const [synced, ...rest] = await seedUsers(world, { count: 3 });
    const db = database();
    const { queue, messages } = recordingQueue();
    await dispatch(accountSyncSelection(db), queue);
    // Synced meanwhile (e.g. a manual sync): nothing due until its next sync time.
    await world.admin.query(
      `UPDATE oauth_tokens SET sync_next_attempt_at = now() + interval '6 hours' WHERE user_id = :id::uuid`,
      {
        id: synced.userId,
      },
    );

    const summary = await sync(db, messages[0]);

    expect(summary).toMatchObject({ connectionsClaimed: 2, connectionsSynced: 2 });
    expect(world.amazon.counters.profileCalls(synced.userId)).toBe(0);
    for (const u of rest) expect(world.amazon.counters.profileCalls(u.userId)).toBe(1);
  });

  test('a manual sync of one region syncs only that connection of the user', async () => {
    const [user] = await seedUsers(world, { count: 1, regions: () => ['NA', 'EU'] });
    const db = database();

    const summary = await runAccountSync(
      { db, ads: world.ads(), lwa: world.lwa(), cipher: world.cipher, ...runtime() },
      { syncType: 'manual', userId: user.userId, regions: ['EU'] },
    );

    expect(summary).toMatchObject({ connectionsClaimed: 1, connectionsSynced: 1 });
    expect(world.amazon.counters.profileCalls(user.userId, 'EU')).toBe(1);
    expect(world.amazon.counters.profileCalls(user.userId, 'NA')).toBe(0);
  });
});

test('a message is read only when it is one of the job’s, with at least one id', () => {
  const message = { job: 'account-sync', dispatchId: randomUUID(), ids: [randomUUID()] };
  expect(parseFanOutMessage(JSON.stringify(message), 'account-sync')).toEqual(message);
  expect(() => parseFanOutMessage('not json', 'account-sync')).toThrow(/not JSON/);
  expect(() => parseFanOutMessage(JSON.stringify({ ...message, ids: [] }), 'account-sync')).toThrow(/ids/);
  expect(() => parseFanOutMessage(JSON.stringify(message), 'token-refresh')).toThrow(/for account-sync/);
});

test('messages left when the invocation is short of time are sent back to the queue, unread, and not reported failed', async () => {
  const seen: string[] = [];
  const requeued: string[][] = [];
  let remaining = 120_000;
  const records = ['a', 'b', 'c', 'd'].map((id) => ({
    messageId: id,
    body: JSON.stringify({ job: 'token-refresh', dispatchId: randomUUID(), ids: [randomUUID()] }),
    eventSource: 'aws:sqs',
  }));
  const response = await consumeBatch({ Records: records }, 'token-refresh', {
    work: (m) => {
      seen.push(m.ids[0]);
      remaining -= 70_000;
      return Promise.resolve();
    },
    remainingTimeMs: () => remaining,
    reserveMs: 60_000,
    onFailure: () => undefined,
    // SQS took b and c, not d.
    requeue: (unstarted) => {
      requeued.push(unstarted.map((r) => r.messageId));
      expect(unstarted.map((r) => r.body)).toEqual(records.slice(1).map((r) => r.body));
      return Promise.resolve(['d']);
    },
  });
  expect(seen).toHaveLength(1);
  expect(requeued).toEqual([['b', 'c', 'd']]);
  // Only the message SQS did not take is delivered again (spending a receive).
  expect(response.batchItemFailures).toEqual([{ itemIdentifier: 'd' }]);

  // A send that fails altogether leaves every unstarted message to be delivered again.
  remaining = 120_000;
  const failed = await consumeBatch({ Records: records }, 'token-refresh', {
    work: () => ((remaining -= 70_000), Promise.resolve()),
    remainingTimeMs: () => remaining,
    reserveMs: 60_000,
    onFailure: () => undefined,
    requeue: () => Promise.reject(new Error('SQS unavailable')),
  });
  expect(failed.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(['b', 'c', 'd']);
});

/**
 * runDispatch on its own (no database): a selection of `due` in-memory ids that records each
 * call, and a queue that records each send.
 */
function memorySelection(due: number) {
  let left = Array.from({ length: due }, (_, i) => `id-${i}`);
  const calls: Array<{ dispatchId: string; limit: number }> = [];
  const released: string[][] = [];
  let ticks = 0;
  const selection: DispatchSelection = {
    job: 'account-sync',
    beforeTick: () => {
      ticks++;
      expect(calls).toEqual([]);
      return Promise.resolve();
    },
    select: (o) => {
      calls.push(o);
      const ids = left.slice(0, o.limit);
      left = left.slice(o.limit);
      return Promise.resolve(ids);
    },
    release: (_dispatchId, ids) => {
      released.push([...ids]);
      return Promise.resolve();
    },
  };
  return { selection, calls, released, ticks: () => ticks };
}

describe('runDispatch without a database', () => {
  test('a tick selects in rounds of selectLimit up to its cap, and stops at the cap; with every message sent, nothing is released', async () => {
    const s = memorySelection(100);
    const { queue, messages } = recordingQueue();
    const summary = await runDispatch({
      selection: s.selection,
      queue,
      ...runtime(),
      settings: { maxIds: 25, selectLimit: 10, idsPerMessage: 3 },
      newDispatchId: () => 'tick-1',
    });
    expect(s.ticks()).toBe(1);
    expect(s.calls).toEqual([
      { dispatchId: 'tick-1', limit: 10 },
      { dispatchId: 'tick-1', limit: 10 },
      { dispatchId: 'tick-1', limit: 5 },
    ]);
    expect(summary).toEqual({ job: 'account-sync', dispatchId: 'tick-1', dispatched: 25, messages: 10, notSent: 0 });
    expect(messages.map((m) => m.ids.length)).toEqual([3, 3, 3, 1, 3, 3, 3, 1, 3, 2]);
    expect(messages.every((m) => m.job === 'account-sync' && m.dispatchId === 'tick-1')).toBe(true);
    // No release statement for a batch SQS took whole (one wasted database round trip per batch).
    expect(s.released).toEqual([]);
  });

  test('ids SQS refused count toward the cap: the tick stops when sent and unsent reach it, without asking for 0 more', async () => {
    const s = memorySelection(100);
    // SQS refuses the first message of every request, both times it is sent.
    const queue: QueueSender = {
      sendBatch: (bodies) => Promise.resolve({ failed: bodies.length > 0 ? [0] : [] }),
    };
    await expect(
      runDispatch({
        selection: s.selection,
        queue,
        ...runtime(),
        settings: { maxIds: 20, selectLimit: 10, idsPerMessage: 2 },
        newDispatchId: () => 'tick-2',
      }),
    ).rejects.toMatchObject({ summary: { dispatched: 16, notSent: 4, messages: 8 } });
    // Two rounds of 10 (16 sent, 4 released): one select per round, never a round of 0 ids.
    expect(s.calls).toEqual([
      { dispatchId: 'tick-2', limit: 10 },
      { dispatchId: 'tick-2', limit: 10 },
    ]);
    expect(s.released).toEqual([
      ['id-0', 'id-1'],
      ['id-10', 'id-11'],
    ]);
  });

  test('a round that selects fewer than it asked for is the last; the default round is 5,000 ids', async () => {
    const s = memorySelection(7);
    const { queue } = recordingQueue();
    const summary = await runDispatch({ selection: s.selection, queue, ...runtime(), settings: { maxIds: 20_000 } });
    expect(s.calls.map((c) => c.limit)).toEqual([5000]);
    expect(summary).toMatchObject({ dispatched: 7, messages: 1, notSent: 0 });
  });

  test('ten messages per send, and every round sent before the next is selected', async () => {
    const s = memorySelection(23);
    const sends: number[] = [];
    const queue: QueueSender = {
      sendBatch: (bodies) => {
        sends.push(bodies.length);
        return Promise.resolve({ failed: [] });
      },
    };
    await runDispatch({ selection: s.selection, queue, ...runtime(), settings: { maxIds: 100, idsPerMessage: 1 } });
    expect(sends).toEqual([10, 10, 3]);
  });

  test('no round starts once only the reserve remains (10 s by default); the summary is still logged and counted', async () => {
    for (const [remaining, rounds] of [
      [10_000, 0],
      [10_001, 1],
    ] as const) {
      const s = memorySelection(3);
      const rt = runtime({ remainingTimeMs: () => remaining });
      const { queue } = recordingQueue();
      const summary = await runDispatch({ selection: s.selection, queue, ...rt, settings: { maxIds: 100 } });
      expect(s.calls).toHaveLength(rounds);
      expect(summary.dispatched).toBe(rounds * 3);
      expect(rt.metrics.totals).toEqual({ IdsDispatched: rounds * 3, IdsNotDispatched: 0 });
      expect(rt.logger.lines).toEqual([{ level: 'info', message: 'Dispatch finished', attributes: { ...summary } }]);
    }
  });

  test('a send that throws is logged and tried once more; ids still unsent lose their mark, are counted, and fail the tick with a message that names them', async () => {
    const s = memorySelection(4);
    let sends = 0;
    const queue: QueueSender = {
      sendBatch: () => {
        sends++;
        return Promise.reject(new Error('SQS unavailable'));
      },
    };
    const rt = runtime();
    const error = (await runDispatch({
      selection: s.selection,
      queue,
      ...rt,
      settings: { maxIds: 100, idsPerMessage: 2 },
    }).catch((e: unknown) => e)) as DispatchSendError;
    expect(sends).toBe(2);
    expect(error).toBeInstanceOf(DispatchSendError);
    expect(error.name).toBe('DispatchSendError');
    expect(error.message).toBe(
      '4 of the due ids of account-sync could not be sent to its queue; the next tick sends them',
    );
    expect(error.summary).toMatchObject({ dispatched: 0, messages: 0, notSent: 4 });
    expect(s.released).toEqual([['id-0', 'id-1', 'id-2', 'id-3']]);
    expect(rt.metrics.totals).toEqual({ IdsDispatched: 0, IdsNotDispatched: 4 });
    expect(rt.logger.lines.filter((l) => l.level === 'warn')).toEqual([
      {
        level: 'warn',
        message: 'Sending to the queue failed',
        attributes: { attempt: 1, messages: 2, error: 'Error: SQS unavailable' },
      },
      {
        level: 'warn',
        message: 'Sending to the queue failed',
        attributes: { attempt: 2, messages: 2, error: 'Error: SQS unavailable' },
      },
    ]);
  });

  test('the cap is what the budget serves in every region within the mark, at least one id', () => {
    expect(dispatchCap(10, 600)).toBe(18_000);
    expect(dispatchCap(0.5, 3)).toBe(4);
    expect(dispatchCap(0.0001, 1)).toBe(1);
  });
});
