import type { AmazonRegion } from '../shared/amazon/regions';
import type { AppLogger } from '../shared/logger';
import type { SyncStarter } from './core';

/**
 * Locally (`npm run api`, `npm start`, tests): a manual or first sync runs the account-sync
 * core in this process, in the background; the request that started it does not wait.
 * `idle()` resolves once every sync started so far has finished (tests, shutdown).
 */
export interface InProcessSyncStarter extends SyncStarter {
  idle(): Promise<void>;
}

export function inProcessSyncStarter(
  run: (request: { syncType: 'manual'; userId: string; regions: readonly AmazonRegion[] }) => Promise<unknown>,
  logger: AppLogger,
): InProcessSyncStarter {
  const running = new Set<Promise<void>>();
  return {
    start({ userId, regions }) {
      // Only the regions asked for, as the account-sync function does with the same request in AWS.
      const done = run({ syncType: 'manual', userId, regions: regions as readonly AmazonRegion[] }).then(
        () => undefined,
        (error: unknown) => logger.error('In-process account sync failed', { userId, error: (error as Error).name }),
      );
      running.add(done);
      void done.finally(() => running.delete(done));
      return Promise.resolve();
    },
    async idle() {
      while (running.size) await Promise.all([...running]);
    },
  };
}
