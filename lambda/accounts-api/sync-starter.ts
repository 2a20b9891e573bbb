import { InvokeCommand, type LambdaClient } from '@aws-sdk/client-lambda';
import type { SyncStarter } from './core';

/**
 * In AWS: a manual (or first) sync is the account-sync function invoked asynchronously
 * (`InvocationType: Event`) with `{"syncType":"manual","userId":…,"regions":[…]}`; Lambda queues it and
 * answers 202 at once, and the function's own retries and on-failure destination apply.
 */
export function lambdaSyncStarter(client: Pick<LambdaClient, 'send'>, functionName: string): SyncStarter {
  return {
    async start({ userId, regions }) {
      const response = await client.send(
        new InvokeCommand({
          FunctionName: functionName,
          InvocationType: 'Event',
          // Only the regions asked for (the function claims just those connections).
          Payload: Buffer.from(JSON.stringify({ syncType: 'manual', userId, regions })),
        }),
      );
      if (response.StatusCode !== 202) throw new Error(`Invoke answered ${response.StatusCode ?? 'no status'}`);
    },
  };
}
