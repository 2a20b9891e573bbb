import { GetSecretValueCommand, PutSecretValueCommand, SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { Context } from 'aws-lambda';
import { readReencryptionConfig } from '../shared/config';
import { createDataApiClient, DataApiDatabase } from '../shared/db';
import { DATA_API_REQUEST_RESERVE_MS, type JobInvocationContext } from '../shared/jobs/container';
import { SERVICE_NAMES } from '../shared/jobs/metrics';
import { createObservability } from '../shared/jobs/observability';
import { keyRingFromSecret, parseKeyRingSecret, SecretsCache } from '../shared/secrets';
import { runTokenReencryption, type TokenReencryptionSummary } from './core';
import { type KeyRemovalOutcome, type KeyUsageReport, keyUsageReport, parseTokenKeyAction, removeKey } from './keys';
import { countKeyUsage } from './store';

/**
 * The token keys' function, run on demand (docs/token-encryption.md), never on a schedule:
 *
 *     {}                                          re-encrypt what is not under the current key
 *     {"action": "usage"}                         stored values per key id
 *     {"action": "remove-key", "keyId": "<id>"}   remove a key from the ring, refused while in use
 *
 * As the jobs' login on the Data API; reads the token key secret and, for remove-key only,
 * writes it (PutSecretValue). Nothing it logs or returns holds a key or a token.
 */
let container: ReturnType<typeof build> | undefined;
let current: JobInvocationContext | undefined;

function build() {
  const config = readReencryptionConfig();
  const secrets = new SecretsManagerClient({});
  const db = new DataApiDatabase({
    client: createDataApiClient(),
    resourceArn: config.clusterArn,
    secretArn: config.databaseSecretArn,
    database: config.databaseName,
    retry: {
      waitBudgetMs: () =>
        current ? current.getRemainingTimeInMillis() - DATA_API_REQUEST_RESERVE_MS : Number.POSITIVE_INFINITY,
    },
  });
  const keys = keyRingFromSecret(new SecretsCache(secrets), config.tokenKeySecretArn);
  return { config, secrets, db, keys, ...createObservability(SERVICE_NAMES.tokenReencrypt, config.environment) };
}

export async function handler(
  event: unknown,
  context: JobInvocationContext,
): Promise<TokenReencryptionSummary | KeyUsageReport | KeyRemovalOutcome> {
  const action = parseTokenKeyAction(event);
  const c = (container ??= build());
  current = context;
  c.logger.addContext(context as Context);
  try {
    if (action.action === 'usage') {
      const cipher = await c.keys.fresh();
      return keyUsageReport(cipher.ring, await countKeyUsage(c.db, cipher.ring.currentKeyId));
    }
    if (action.action === 'remove-key') {
      const arn = c.config.tokenKeySecretArn;
      const outcome = await removeKey(
        c.db,
        {
          read: async () => {
            const out = await c.secrets.send(new GetSecretValueCommand({ SecretId: arn }));
            return { text: out.SecretString ?? '', createdAt: out.CreatedDate };
          },
          write: async (text) => {
            await c.secrets.send(new PutSecretValueCommand({ SecretId: arn, SecretString: text }));
          },
        },
        action.keyId,
        (text) => parseKeyRingSecret(arn, text),
        new Date(),
      );
      if (outcome.removed) c.logger.info('Token key removed from the ring', { ...outcome });
      else c.logger.warn('Token key removal refused', { ...outcome });
      return outcome;
    }
    // The ring as it is in the secret now: never re-encrypt under a current key already replaced.
    const cipher = await c.keys.fresh();
    return await runTokenReencryption({
      db: c.db,
      cipher,
      logger: c.jobLogger,
      metrics: c.jobMetrics,
      remainingTimeMs: () => context.getRemainingTimeInMillis(),
    });
  } catch (error) {
    c.logger.error('token-reencrypt run failed', error as Error);
    throw error;
  } finally {
    current = undefined;
    c.metrics.publishStoredMetrics();
  }
}
