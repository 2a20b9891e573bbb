import { runPipeline } from '../../lambda/shared/jobs/pipeline';

/** Items whose processing the test finishes by hand, to observe what runs when. */
function controlled() {
  const waiting = new Map<number, () => void>();
  let inFlight = 0;
  let maxInFlight = 0;
  return {
    process: (item: number) =>
      new Promise<string>((resolve) => {
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        waiting.set(item, () => {
          inFlight -= 1;
          resolve(`done ${item}`);
        });
      }),
    finish: (item: number) => waiting.get(item)!(),
    pending: () => [...waiting.keys()].filter((k) => waiting.has(k)),
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

test('claims the next batch while the current one is still in flight, and keeps every slot busy', async () => {
  const batches = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], []];
  const claims: number[] = [];
  const written: string[][] = [];
  const c = controlled();
  const run = runPipeline<number, string>({
    concurrency: 4,
    claim: async () => {
      claims.push(c.inFlight);
      return batches.shift() ?? [];
    },
    mayClaim: () => true,
    process: c.process,
    unprocessed: (i) => `released ${i}`,
    writeBack: async (outcomes) => void written.push(outcomes),
  });
  await tick();
  expect(c.inFlight).toBe(4);
  // Finishing items one by one: the second claim happens while batch 1 still has calls in flight.
  for (let item = 1; item <= 12; item++) {
    c.finish(item);
    await tick();
    await tick();
    if (item <= 8) expect(c.inFlight).toBe(4); // no idle slot at the batch boundary
  }
  const result = await run;
  expect(result).toEqual({ batches: 2, claimed: 12 });
  expect(claims[1]).toBeGreaterThan(0);
  expect(written).toEqual([[1, 2, 3, 4, 5, 6].map((i) => `done ${i}`), [7, 8, 9, 10, 11, 12].map((i) => `done ${i}`)]);
  expect(c.maxInFlight).toBe(4);
});

test('a stop request writes every claimed item back: processed ones with their outcome, the rest released', async () => {
  const written: string[][] = [];
  let stop = false;
  const summary = await runPipeline<number, string>({
    concurrency: 2,
    claim: async () => [1, 2, 3, 4, 5],
    mayClaim: () => true,
    process: async (i) => {
      if (i === 2) stop = true;
      return `done ${i}`;
    },
    shouldStop: () => stop,
    unprocessed: (i) => `released ${i}`,
    writeBack: async (outcomes) => void written.push(outcomes),
  });
  expect(summary.claimed).toBe(5);
  expect(written).toEqual([['done 1', 'done 2', 'released 3', 'released 4', 'released 5']]);
});

test('no time left: nothing is claimed', async () => {
  const claim = jest.fn(async () => [1]);
  const result = await runPipeline<number, string>({
    concurrency: 3,
    claim,
    mayClaim: () => false,
    process: async (i) => `${i}`,
    unprocessed: (i) => `${i}`,
    writeBack: async () => undefined,
  });
  expect(result).toEqual({ batches: 0, claimed: 0 });
  expect(claim).not.toHaveBeenCalled();
});

test('a failing claim or write-back is rethrown after everything claimed was written back', async () => {
  const written: string[][] = [];
  let claims = 0;
  await expect(
    runPipeline<number, string>({
      concurrency: 2,
      claim: async () => {
        claims += 1;
        if (claims === 2) throw new Error('database went away');
        return [1, 2, 3];
      },
      mayClaim: () => true,
      process: async (i) => `done ${i}`,
      unprocessed: (i) => `released ${i}`,
      writeBack: async (outcomes) => void written.push(outcomes),
    }),
  ).rejects.toThrow('database went away');
  expect(written.flat().sort()).toEqual(['done 1', 'done 2', 'done 3']);

  await expect(
    runPipeline<number, string>({
      concurrency: 2,
      claim: async () => (claims++ < 4 ? [1] : []),
      mayClaim: () => true,
      process: async (i) => `done ${i}`,
      unprocessed: (i) => `released ${i}`,
      writeBack: async () => {
        throw new Error('write failed');
      },
    }),
  ).rejects.toThrow('write failed');
});

test('finished outcomes are written back within flushAfterMs even while others of the batch are still in flight', async () => {
  const written: string[][] = [];
  const timers: Array<{ fn: () => void; ms: number; cancelled: boolean }> = [];
  const c = controlled();
  const batches = [[1, 2, 3, 4], []];
  const run = runPipeline<number, string>({
    concurrency: 4,
    claim: async () => batches.shift() ?? [],
    mayClaim: () => true,
    process: c.process,
    unprocessed: (i) => `released ${i}`,
    writeBack: async (outcomes) => void written.push(outcomes),
    flushAfterMs: 3000,
    setTimer: (fn, ms) => {
      const timer = { fn, ms, cancelled: false };
      timers.push(timer);
      return () => void (timer.cancelled = true);
    },
  });
  await tick();
  c.finish(2);
  c.finish(3);
  await tick();
  expect(written).toEqual([]); // not yet: the timer has not fired
  expect(timers).toHaveLength(1);
  expect(timers[0].ms).toBe(3000);
  timers[0].fn(); // flushAfterMs later, items 1 and 4 still in flight
  await tick();
  expect(written).toEqual([['done 2', 'done 3']]);
  c.finish(1);
  c.finish(4);
  await run;
  // The rest when the batch's last item finished; nothing written twice.
  expect(written).toEqual([
    ['done 2', 'done 3'],
    ['done 1', 'done 4'],
  ]);
});
