import { DispatchSendError, QueueSender, runDispatch } from '../../../../lambda/dispatcher/core';
import { accountSyncSelection } from '../../../../lambda/dispatcher/selections';
import {
  endpointKey,
  RateLimitUsageRecorder,
  recordRateLimitUsage,
} from '../../../../lambda/shared/amazon/usage-store';
import { recordingQueue, sentIds, tokenIds } from '../../recording-queue';
import { Database, JobWorld, runtime, seedUsers, useBothDatabasePaths, useJobWorld } from '../../../support/jobs';

/**
 * The account sync's dispatch marks (lambda/account-sync/store/dispatch-marks.ts), through the
 * dispatcher: a region paused by a Retry-After is left, entries SQS refuses lose their mark.
 */
let world: JobWorld;
useJobWorld((w) => (world = w));
const PATHS = useBothDatabasePaths(() => world);

function dispatch(db: Database, queue: QueueSender, idsPerMessage: number) {
  return runDispatch({
    selection: accountSyncSelection(db),
    queue,
    ...runtime(),
    settings: { maxIds: 10_000, idsPerMessage },
  });
}

describe.each(PATHS)('%s path', (_path, database) => {
  test('the dispatcher leaves the connections of a region whose profiles endpoint is paused by a Retry-After', async () => {
    const users = await seedUsers(world, { count: 9 });
    const paused = users[0].region;
    // What a run that got a 429 with Retry-After: 600 from that region's profiles endpoint records.
    const usage = new RateLimitUsageRecorder();
    usage.request(endpointKey('ads', paused));
    usage.limitHit(endpointKey('ads', paused), null, 600, new Date());
    await recordRateLimitUsage(world.admin, usage.drain());
    const { queue, messages } = recordingQueue();

    await dispatch(database(), queue, 100);

    const open = users.filter((u) => u.region !== paused);
    expect(open.length).toBeGreaterThan(0);
    expect(open.length).toBeLessThan(users.length);
    expect(sentIds(messages)).toEqual(await tokenIds(world, open));
  });

  test('entries SQS refuses twice lose their dispatch mark: the next tick sends them', async () => {
    const users = await seedUsers(world, { count: 6 });
    const db = database();
    // The second entry is refused on the first request and on its retry.
    const refusing = recordingQueue((call, index) => (call === 0 && index === 1) || (call === 1 && index === 0));

    const error = await dispatch(db, refusing.queue, 2).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(DispatchSendError);
    expect((error as DispatchSendError).summary).toMatchObject({ dispatched: 4, notSent: 2 });
    const next = recordingQueue();
    expect(await dispatch(db, next.queue, 2)).toMatchObject({ dispatched: 2 });
    expect([...sentIds(refusing.messages), ...sentIds(next.messages)].sort()).toEqual(await tokenIds(world, users));
  });
});
