/**
 * The jobs' work loop: claim a batch, process its items with bounded concurrency, write the
 * batch back; until nothing is due or time runs low. Claims and write-backs overlap with the
 * Amazon calls: the next batch is claimed while the last items of the current one are still
 * in flight, and a finished batch is written back while the next one is being processed, so
 * `concurrency` calls stay in flight from the first item to the last (a loop that waits for
 * each step in turn idles at every batch boundary: measured at 77 % of concurrency ÷ latency).
 * Finished outcomes are not held until the whole batch is done: they are written back at the
 * latest `flushAfterMs` after the first of them finished, so an invocation cut short (Lambda's
 * timeout, a hung call) loses at most that much finished work.
 */
export interface PipelineOptions<T, O> {
  /** Items processed at once. */
  readonly concurrency: number;
  /** Claims the next batch; an empty batch means nothing more is due. */
  readonly claim: () => Promise<T[]>;
  /** Whether another batch may be claimed (time left in the invocation). */
  readonly mayClaim: () => boolean;
  /** Processes one item. Must not throw: every item ends in an outcome. */
  readonly process: (item: T) => Promise<O>;
  /**
   * Writes finished outcomes back (one call at a time): a whole batch when it finishes within
   * `flushAfterMs`, else its outcomes so far, then the rest.
   */
  readonly writeBack: (outcomes: O[]) => Promise<void>;
  /**
   * Longest a finished outcome waits for the rest of its batch before it is written back
   * anyway. @default 3000
   */
  readonly flushAfterMs?: number;
  /** Runs `fn` after `ms` unless cancelled (tests pass a manual timer). @default setTimeout */
  readonly setTimer?: (fn: () => void, ms: number) => () => void;
  /** The outcome of an item that was claimed but will not be processed (its lease is given back). */
  readonly unprocessed: (item: T) => O;
  /** Stop taking new items (a fatal condition seen while processing). @default never */
  readonly shouldStop?: () => boolean;
  /** Called after each write-back, with the outcomes it wrote. */
  readonly onBatchWritten?: (outcomes: O[], ms: number) => void;
}

export interface PipelineResult {
  readonly batches: number;
  readonly claimed: number;
}

interface Batch<T, O> {
  readonly items: T[];
  readonly outcomes: Array<O | undefined>;
  remaining: number;
  readonly started: number;
  /** Indexes finished and not yet handed to writeBack. */
  unwritten: number[];
  /** Whether each item has been handed to writeBack. */
  readonly written: boolean[];
  /** Cancels the pending flush of `unwritten`. */
  cancelFlush?: () => void;
}

const defaultTimer = (fn: () => void, ms: number) => {
  const handle = setTimeout(fn, ms);
  return () => clearTimeout(handle);
};

/**
 * Runs the pipeline to the end. Every claimed item is written back, processed or not, before
 * it returns or throws; a failure of `claim` or `writeBack` stops it and is rethrown after that.
 */
export async function runPipeline<T, O>(o: PipelineOptions<T, O>): Promise<PipelineResult> {
  const queue: Array<{ batch: Batch<T, O>; index: number }> = [];
  const batches: Array<Batch<T, O>> = [];
  let exhausted = false;
  let claiming: Promise<void> | undefined;
  let failure: unknown;
  let writes: Promise<void> = Promise.resolve();
  let claimed = 0;
  const flushAfterMs = o.flushAfterMs ?? 3000;
  const setTimer = o.setTimer ?? defaultTimer;
  const stopped = () => failure !== undefined || (o.shouldStop?.() ?? false);

  const startClaim = (): Promise<void> | undefined => {
    if (claiming || exhausted || stopped()) return claiming;
    if (!o.mayClaim()) {
      exhausted = true;
      return undefined;
    }
    claiming = (async () => {
      try {
        const items = await o.claim();
        if (items.length === 0) {
          exhausted = true;
          return;
        }
        const batch: Batch<T, O> = {
          items,
          outcomes: new Array<O | undefined>(items.length),
          remaining: items.length,
          started: Date.now(),
          unwritten: [],
          written: new Array<boolean>(items.length).fill(false),
        };
        batches.push(batch);
        claimed += items.length;
        items.forEach((_, index) => queue.push({ batch, index }));
      } catch (error) {
        failure ??= error;
        exhausted = true;
      } finally {
        claiming = undefined;
      }
    })();
    return claiming;
  };

  /** Hands `indexes` of the batch to writeBack (items never processed are released). */
  const write = (batch: Batch<T, O>, indexes: number[]) => {
    const fresh = indexes.filter((i) => !batch.written[i]);
    if (fresh.length === 0) return;
    for (const i of fresh) batch.written[i] = true;
    const outcomes = fresh.map((i) => batch.outcomes[i] ?? o.unprocessed(batch.items[i]));
    writes = writes.then(async () => {
      try {
        await o.writeBack(outcomes);
        o.onBatchWritten?.(outcomes, Date.now() - batch.started);
      } catch (error) {
        failure ??= error;
      }
    });
  };

  /** Writes what the batch has finished so far. */
  const flush = (batch: Batch<T, O>) => {
    batch.cancelFlush?.();
    batch.cancelFlush = undefined;
    write(batch, batch.unwritten.splice(0));
  };

  const finished = (batch: Batch<T, O>, index: number) => {
    batch.unwritten.push(index);
    batch.remaining -= 1;
    if (batch.remaining === 0)
      flush(batch); // chained on `writes`, awaited below
    else batch.cancelFlush ??= setTimer(() => flush(batch), flushAfterMs);
  };

  const worker = async () => {
    for (;;) {
      if (stopped()) return;
      // Claim ahead: the next batch arrives while the current one's last calls are in flight.
      if (queue.length <= o.concurrency) void startClaim(); // awaited through `claiming`
      const next = queue.shift();
      if (!next) {
        const pending = claiming ?? startClaim();
        if (pending) {
          await pending;
          continue;
        }
        return; // nothing queued, nothing being claimed, nothing more to claim
      }
      next.batch.outcomes[next.index] = await o.process(next.batch.items[next.index]);
      finished(next.batch, next.index);
    }
  };

  await Promise.all(Array.from({ length: Math.max(1, o.concurrency) }, worker));
  await claiming;
  // Stopped early: batches with unprocessed items are written back with those items released.
  for (const batch of batches) {
    batch.cancelFlush?.();
    write(
      batch,
      batch.items.map((_, i) => i),
    );
  }
  await writes;
  if (failure !== undefined)
    throw failure instanceof Error ? failure : new Error('pipeline failed', { cause: failure });
  return { batches: batches.length, claimed };
}
