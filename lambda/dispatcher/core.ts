import { randomUUID } from 'node:crypto';
import { AMAZON_REGIONS } from '../shared/amazon/regions';
import type { AppLogger } from '../shared/logger';
import type { JobMetrics } from '../shared/jobs/runtime';
import { describeError } from '../shared/jobs/runtime';
import { FanOutJob, FanOutMessage, IDS_PER_MESSAGE } from '../shared/jobs/fan-out';
import { DISPATCH_METRICS } from '../shared/jobs/metrics';

/** SQS accepts at most this many entries per SendMessageBatch. */
export const MESSAGES_PER_BATCH = 10;

/** What the dispatcher needs of SQS (lambda/dispatcher/sqs-sender.ts in AWS). */
export interface QueueSender {
  /** Sends up to {@link MESSAGES_PER_BATCH} bodies in one request; returns the indexes SQS did not accept. */
  sendBatch(bodies: readonly string[]): Promise<{ readonly failed: readonly number[] }>;
}

/** One job's selection of due ids (lambda/dispatcher/selections.ts). */
export interface DispatchSelection {
  readonly job: FanOutJob;
  /** Work done once per tick before selecting (the account sync flags re-authorisations). @default none */
  beforeTick?(): Promise<void>;
  /** Marks up to `limit` due ids as dispatched by `dispatchId` and returns them. */
  select(o: { readonly dispatchId: string; readonly limit: number }): Promise<string[]>;
  /** Takes the mark off ids that could not be sent. */
  release(dispatchId: string, ids: readonly string[]): Promise<void>;
}

export interface DispatchSettings {
  /** Ids per SQS message. @default IDS_PER_MESSAGE */
  readonly idsPerMessage?: number;
  /** Ids marked per database round trip. @default 5000 (their ids stay well under the Data API's 1 MiB response) */
  readonly selectLimit?: number;
  /** Most ids one tick dispatches (see {@link dispatchCap}). */
  readonly maxIds: number;
  /** Stop selecting when less than this remains of the invocation. @default 10000 */
  readonly reserveMs?: number;
}

export interface DispatchDeps {
  readonly selection: DispatchSelection;
  readonly queue: QueueSender;
  readonly logger: AppLogger;
  readonly metrics: JobMetrics;
  readonly remainingTimeMs: () => number;
  readonly settings: DispatchSettings;
  /** @default randomUUID */
  readonly newDispatchId?: () => string;
}

export interface DispatchSummary {
  readonly job: FanOutJob;
  readonly dispatchId: string;
  /** Ids sent to the queue. */
  readonly dispatched: number;
  readonly messages: number;
  /** Ids SQS did not accept even on a second try: their mark was taken off. */
  readonly notSent: number;
}

/** Thrown after a tick whose sends partly failed (the Errors alarm); what was sent stays sent. */
export class DispatchSendError extends Error {
  constructor(readonly summary: DispatchSummary) {
    super(
      `${summary.notSent} of the due ids of ${summary.job} could not be sent to its queue; the next tick sends them`,
    );
    this.name = 'DispatchSendError';
  }
}

/**
 * The most ids one tick should dispatch: what the shared Amazon budget serves, in every region,
 * within the dispatch mark. More would wait past their mark and be dispatched again.
 */
export function dispatchCap(requestsPerSecondPerRegion: number, markSeconds: number): number {
  return Math.max(1, Math.floor(requestsPerSecondPerRegion * AMAZON_REGIONS.length * markSeconds));
}

/**
 * One tick of a job's dispatcher: marks due ids (one dispatch id for the tick) in rounds of
 * `selectLimit`, sends them to the job's queue in messages of `idsPerMessage` ids, ten messages
 * per request, until nothing is due, the cap is reached or time runs low. Entries SQS refuses
 * are sent once more; ids still unsent get their mark taken off (the next tick sends them) and
 * the tick ends with DispatchSendError.
 */
export async function runDispatch(deps: DispatchDeps): Promise<DispatchSummary> {
  const idsPerMessage = deps.settings.idsPerMessage ?? IDS_PER_MESSAGE;
  const selectLimit = deps.settings.selectLimit ?? 5000;
  const reserveMs = deps.settings.reserveMs ?? 10_000;
  const { selection } = deps;
  const dispatchId = (deps.newDispatchId ?? randomUUID)();
  let dispatched = 0;
  let messages = 0;
  let notSent = 0;

  await selection.beforeTick?.();
  while (dispatched + notSent < deps.settings.maxIds && deps.remainingTimeMs() > reserveMs) {
    const limit = Math.min(selectLimit, deps.settings.maxIds - dispatched - notSent);
    const ids = await selection.select({ dispatchId, limit });
    if (ids.length === 0) break;
    const bodies = chunk(ids, idsPerMessage).map((part) => ({
      ids: part,
      body: JSON.stringify({ job: selection.job, dispatchId, ids: part } satisfies FanOutMessage),
    }));
    for (const batch of chunk(bodies, MESSAGES_PER_BATCH)) {
      const unsent = await sendWithOneRetry(deps, batch);
      const unsentIds = unsent.flatMap((m) => m.ids);
      if (unsentIds.length > 0) {
        await selection.release(dispatchId, unsentIds);
        notSent += unsentIds.length;
      }
      messages += batch.length - unsent.length;
      dispatched += batch.reduce((n, m) => n + m.ids.length, 0) - unsentIds.length;
    }
    if (ids.length < limit) break;
  }

  const summary: DispatchSummary = { job: selection.job, dispatchId, dispatched, messages, notSent };
  deps.metrics.addMetric(DISPATCH_METRICS.dispatched, 'Count', dispatched);
  deps.metrics.addMetric(DISPATCH_METRICS.notSent, 'Count', notSent);
  deps.logger.info('Dispatch finished', { ...summary });
  if (notSent > 0) throw new DispatchSendError(summary);
  return summary;
}

async function sendWithOneRetry<M extends { readonly body: string }>(
  deps: DispatchDeps,
  batch: readonly M[],
): Promise<M[]> {
  let pending = [...batch];
  for (let attempt = 1; attempt <= 2 && pending.length > 0; attempt++) {
    try {
      const { failed } = await deps.queue.sendBatch(pending.map((m) => m.body));
      pending = failed.map((i) => pending[i]);
    } catch (error) {
      deps.logger.warn('Sending to the queue failed', {
        attempt,
        messages: pending.length,
        error: describeError(error),
      });
    }
  }
  return pending;
}

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
