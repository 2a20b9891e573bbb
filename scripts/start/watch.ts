import { handler as accountSync } from '../../lambda/account-sync/handler';
import { handler as tokenRefresh } from '../../lambda/token-refresh/handler';
import { invoke } from './invoke';

/**
 * `npm start -- --watch`: runs the token refresh every 30 s and the account sync every 60 s
 * (5 and 15 min in AWS), a line per run, until SIGINT or SIGTERM.
 */
export async function runJobsUntilStopped(
  say: (line: string) => void,
  /** Runs after each tick's jobs (npm start publishes the connection events there). @default - nothing */
  afterTick?: () => Promise<void>,
): Promise<void> {
  let busy = false;
  let tick = 0;
  // The tick's own try/catch reports a failed run; nothing of it is left unhandled.
  const timer = setInterval(() => void watchTick(), 30_000);
  const watchTick = async () => {
    if (busy) return;
    busy = true;
    tick += 1;
    try {
      const r = await invoke('token-refresh', tokenRefresh, {}, 5 * 60_000);
      let line = `  [${new Date().toISOString().slice(11, 19)}] token-refresh: ${r.refreshed} refreshed, ${r.failed} failed, ${r.reauthRequired} re-authorisation needed`;
      if (tick % 2 === 0) {
        const s = await invoke('account-sync', accountSync, { source: 'aws.events' }, 15 * 60_000);
        line += ` | account-sync: ${s.connectionsSynced} users, ${s.accountsSynced} accounts synced, ${s.connectionsFailed} failed`;
      }
      say(line);
      await afterTick?.();
    } catch (error) {
      say(`  job failed: ${(error as Error).message}`);
    } finally {
      busy = false;
    }
  };
  await new Promise<void>((resolvePromise) => {
    const stop = () => {
      clearInterval(timer);
      resolvePromise();
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
