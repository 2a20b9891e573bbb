/**
 * The writer and the lock-wait monitor of bench/reencrypt.ts, in a process of their own (forked
 * by `startWriterProcess`): one connection updating random oauth_tokens rows back to back, and
 * one polling pg_stat_activity for that connection waiting on a lock. Run in the bench's own
 * process, a write's measured time also held every moment the re-encryption core kept that
 * process's event loop busy (decrypting and encrypting a batch, parsing its rows), a delay no
 * other writer of the table would see; here each write's time is the database's answer only
 * (and the machine's scheduling of this small process).
 */
import { ChildProcess, fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { Client } from 'pg';

/** One write: when it started (epoch ms, `performance.timeOrigin + performance.now()`) and how long it took. */
export interface WriteSample {
  readonly at: number;
  readonly ms: number;
}

/** One poll that found the writer waiting for a lock: when, and how long its statement had been waiting. */
export interface LockWaitSample {
  readonly at: number;
  readonly ms: number;
}

export interface WriterRecord {
  readonly writes: WriteSample[];
  readonly lockWaits: LockWaitSample[];
}

interface StartMessage {
  readonly start: { readonly url: string; readonly ids: readonly string[] };
}

const WRITER = 'reencrypt-bench-writer';
const now = () => performance.timeOrigin + performance.now();

/** The same clock as the samples' (epoch ms, sub-millisecond), for the bench's windows. */
export const epochNow = now;

/** Forks the writer; `stop()` ends it and returns every sample. */
export async function startWriterProcess(
  url: string,
  ids: readonly string[],
): Promise<{ stop(): Promise<WriterRecord> }> {
  const child: ChildProcess = fork(__filename, [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, REENCRYPT_WRITER_CHILD: '1' },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const next = <T>(key: string) =>
    new Promise<T>((resolve, reject) => {
      const onMessage = (m: Record<string, unknown>) => {
        if (key in m) {
          child.off('message', onMessage);
          resolve(m[key] as T);
        } else if ('failed' in m) {
          child.off('message', onMessage);
          reject(new Error(`The re-encryption bench's writer failed: ${String(m.failed)}`));
        }
      };
      child.on('message', onMessage);
      void exited.then((code) => reject(new Error(`The re-encryption bench's writer exited (${code})`)));
    });
  const running = next<true>('running');
  child.send({ start: { url, ids } } satisfies StartMessage);
  await running;
  return {
    async stop() {
      const record = next<WriterRecord>('record');
      child.send({ stop: true });
      const result = await record;
      child.disconnect();
      await exited;
      return result;
    },
  };
}

async function main(): Promise<void> {
  const { url, ids } = await new Promise<StartMessage['start']>((resolve) =>
    process.once('message', (m: StartMessage) => resolve(m.start)),
  );
  let running = true;
  process.once('message', () => {
    running = false;
  });
  const writes: WriteSample[] = [];
  const lockWaits: LockWaitSample[] = [];
  const writer = new Client({ connectionString: url, application_name: WRITER });
  const monitor = new Client({ connectionString: url });
  await writer.connect();
  await monitor.connect();
  const writing = (async () => {
    let i = 0;
    while (running) {
      const id = ids[i++ % ids.length];
      const t0 = now();
      await writer.query('UPDATE oauth_tokens SET updated_at = now() WHERE id = $1', [id]);
      writes.push({ at: t0, ms: now() - t0 });
    }
  })();
  const monitoring = (async () => {
    while (running) {
      // While the writer waits for a lock: how long its statement has been waiting (the server's clock).
      const { rows } = await monitor.query<{ ms: number }>(
        `SELECT extract(epoch FROM clock_timestamp() - query_start) * 1000 AS ms FROM pg_stat_activity
          WHERE application_name = $1 AND wait_event_type = 'Lock'`,
        [WRITER],
      );
      const at = now();
      for (const r of rows) lockWaits.push({ at, ms: Number(r.ms) });
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  process.send?.({ running: true });
  await Promise.all([writing, monitoring]);
  await writer.end();
  await monitor.end();
  process.send?.({ record: { writes, lockWaits } satisfies WriterRecord });
}

// Only as the child startWriterProcess forks.
if (process.env.REENCRYPT_WRITER_CHILD === '1' && process.send) {
  main().catch((error) => {
    process.send?.({ failed: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.exit(1);
  });
}
