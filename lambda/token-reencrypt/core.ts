import { randomUUID } from 'node:crypto';
import type { Database } from '../shared/db';
import { METRIC_NAMES, REENCRYPTION_METRICS } from '../shared/jobs/metrics';
import { addCounts, describeError, type JobRuntime } from '../shared/jobs/runtime';
import type { TokenCipher, TokenBinding } from '../shared/token-crypto';
import {
  claimStaleConnections,
  countKeyUsage,
  type Reencrypted,
  type StaleConnection,
  writeReencrypted,
} from './store';

/**
 * The token re-encryption: rewrites every oauth_tokens value that is not `enc:v2` under the key
 * ring's current key (an older key, `enc:v1`, legacy plaintext) as `enc:v2` under it, online.
 *
 * - In batches, by id (keyset), each one claim (a short lease under the token refresh's lease
 *   rules: a connection another writer holds is skipped, see store.ts) and one guarded write
 *   (only where the values are still the ones read). Two statements per batch, whatever the path.
 * - Bounded by the invocation's deadline: it claims no batch it could not finish, and a lease it
 *   holds when killed expires after `leaseSeconds`, the values untouched.
 * - Resumable: what it rewrote is current, and a later run (or pass) claims only what is not,
 *   so a run killed anywhere is finished by running it again. A pass skips what was busy; it
 *   makes passes until nothing is left it can rewrite, or time or `maxPasses` runs out.
 * - A value no key of the ring can read (unknown key after one re-read, tampered, moved to
 *   another row) fails that connection alone: counted, logged with its reason (never a token),
 *   left as it is for the user's reconnection.
 */
export interface ReencryptionSettings {
  /** Connections per batch. @default 200 */
  readonly batchSize?: number;
  /** The lease a batch holds while it is rewritten. @default 60 */
  readonly leaseSeconds?: number;
  /** Time kept back at the end of the invocation: no batch starts within it. @default 10_000 */
  readonly reserveMs?: number;
  /** Passes over the table at most (a pass retries what was busy in the last). @default 5 */
  readonly maxPasses?: number;
  /** Pause between passes while busy connections are left. @default 2_000 */
  readonly passPauseMs?: number;
}

export interface TokenReencryptionDeps extends JobRuntime {
  readonly db: Database;
  /** The key ring as it is in the secret now (read fresh for this run). */
  readonly cipher: TokenCipher;
  readonly settings?: ReencryptionSettings;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
  /** Called after each written batch (the bench's and tests' progress hook). */
  readonly onBatch?: (progress: { readonly reencrypted: number; readonly batches: number }) => void;
}

export interface TokenReencryptionSummary {
  readonly job: 'token-reencrypt';
  readonly currentKeyId: string;
  readonly batches: number;
  readonly passes: number;
  /** Connections whose values this run rewrote. */
  readonly reencrypted: number;
  /** Connections stored again by someone else between this run's read and its write. */
  readonly changedMeanwhile: number;
  /** Connections with a value nobody can read (distinct). */
  readonly unreadable: number;
  /** Connections still not current at the end (the unreadable ones included). */
  readonly remaining: number;
  /** Whether nothing is left that a run could rewrite (only unreadable connections, if any). */
  readonly complete: boolean;
  /** Why it stopped: `complete`, `deadline` or `passes`. */
  readonly stoppedBy: 'complete' | 'deadline' | 'passes';
  readonly databaseCalls: number;
}

const DEFAULTS = { batchSize: 200, leaseSeconds: 60, reserveMs: 10_000, maxPasses: 5, passPauseMs: 2_000 };

export async function runTokenReencryption(deps: TokenReencryptionDeps): Promise<TokenReencryptionSummary> {
  const s = { ...DEFAULTS, ...deps.settings };
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const owner = randomUUID();
  const callsBefore = deps.db.callCounts().total;
  const unreadable = new Set<string>();
  let batches = 0;
  let passes = 0;
  let reencrypted = 0;
  let changedMeanwhile = 0;
  let stoppedBy: TokenReencryptionSummary['stoppedBy'] = 'passes';
  const timeLeft = () => deps.remainingTimeMs() - s.reserveMs;

  passesLoop: while (passes < s.maxPasses) {
    passes += 1;
    let afterId: string | undefined;
    for (;;) {
      if (timeLeft() <= 0) {
        stoppedBy = 'deadline';
        break passesLoop;
      }
      const currentKeyId = deps.cipher.ring.currentKeyId;
      const batch = await claimStaleConnections(deps.db, {
        owner,
        currentKeyId,
        afterId,
        limit: s.batchSize,
        leaseSeconds: s.leaseSeconds,
      });
      if (batch.length === 0) break;
      afterId = batch[batch.length - 1].id;
      const rewritten: Reencrypted[] = [];
      const failed: StaleConnection[] = [];
      for (const c of batch) {
        try {
          rewritten.push({
            connection: c,
            accessToken: await rewrite(deps.cipher, c.accessToken, binding(c, 'access_token')),
            refreshToken: await rewrite(deps.cipher, c.refreshToken, binding(c, 'refresh_token')),
          });
        } catch (error) {
          failed.push(c);
          if (!unreadable.has(c.id))
            deps.logger.warn('Stored token unreadable: not re-encrypted', {
              tokenId: c.id,
              userId: c.userId,
              region: c.region,
              error: describeError(error),
            });
          unreadable.add(c.id);
        }
      }
      const result = await writeReencrypted(deps.db, owner, rewritten, failed);
      batches += 1;
      reencrypted += result.written;
      changedMeanwhile += result.skipped.length;
      deps.onBatch?.({ reencrypted, batches });
    }
    const usage = await countKeyUsage(deps.db, deps.cipher.ring.currentKeyId);
    if (usage.staleConnections <= unreadable.size) {
      stoppedBy = 'complete';
      break;
    }
    if (passes < s.maxPasses) {
      // Busy connections are left: the leases of the other writers last seconds.
      if (timeLeft() <= s.passPauseMs) {
        stoppedBy = 'deadline';
        break;
      }
      await sleep(s.passPauseMs);
    }
  }
  const usage = await countKeyUsage(deps.db, deps.cipher.ring.currentKeyId);
  const summary: TokenReencryptionSummary = {
    job: 'token-reencrypt',
    currentKeyId: deps.cipher.ring.currentKeyId,
    batches,
    passes,
    reencrypted,
    changedMeanwhile,
    unreadable: unreadable.size,
    remaining: usage.staleConnections,
    complete: usage.staleConnections <= unreadable.size,
    stoppedBy: usage.staleConnections <= unreadable.size ? 'complete' : stoppedBy,
    databaseCalls: deps.db.callCounts().total - callsBefore,
  };
  addCounts(deps.metrics, {
    [REENCRYPTION_METRICS.reencrypted]: reencrypted,
    [REENCRYPTION_METRICS.unreadable]: unreadable.size,
    [REENCRYPTION_METRICS.remaining]: usage.staleConnections,
    [METRIC_NAMES.dataApiCalls]: summary.databaseCalls,
  });
  deps.logger.info('Token re-encryption finished', { ...summary });
  return summary;
}

function binding(c: StaleConnection, column: 'access_token' | 'refresh_token'): TokenBinding {
  return { table: 'oauth_tokens', userId: c.userId, region: c.region, column };
}

/** The value as `enc:v2` under the current key (a current one is kept as it is). */
async function rewrite(cipher: TokenCipher, stored: string, b: TokenBinding): Promise<string> {
  if (cipher.isCurrent(stored)) {
    await cipher.decrypt(stored, b); // still proves it belongs here
    return stored;
  }
  return cipher.encrypt(await cipher.decrypt(stored, b), b);
}
