import { EventBridgeClient, PutEventsCommand } from '@aws-sdk/client-eventbridge';
import type { BusEntry, EventBus } from './core';

/**
 * The environment's EventBridge bus: one PutEvents request per call. EventBridge answers 200
 * with `FailedEntryCount` and, per entry in request order, either an `EventId` or an
 * `ErrorCode` (https://docs.aws.amazon.com/eventbridge/latest/APIReference/API_PutEvents.html);
 * the failed ones are returned by index. A thrown error (throttled, network) fails them all.
 */
export function eventBridgeBus(client: EventBridgeClient, eventBusName: string): EventBus {
  return {
    async putEvents(entries: readonly BusEntry[]) {
      const out = await client.send(
        new PutEventsCommand({ Entries: entries.map((e) => ({ ...e, EventBusName: eventBusName })) }),
      );
      const failed: Array<{ index: number; errorCode: string }> = [];
      (out.Entries ?? []).forEach((r, index) => {
        if (r.ErrorCode || !r.EventId) failed.push({ index, errorCode: r.ErrorCode ?? 'NoEventId' });
      });
      // Fewer results than entries: the missing ones are not known to be on the bus.
      for (let index = out.Entries?.length ?? 0; index < entries.length; index++)
        failed.push({ index, errorCode: 'NoResult' });
      return { failed };
    },
  };
}
