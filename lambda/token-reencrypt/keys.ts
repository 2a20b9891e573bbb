import type { TokenKeyRing } from '../shared/token-crypto';
import type { KeyUsage } from './store';

/**
 * Which keys of the ring stored values use, and whether one may be removed. A key is removed
 * only when no row can need it: no `enc:v2` value names it, no `enc:v1` value is left (those do
 * not name their key), it is not the current key, and the ring has not changed for
 * `settleMs` (a function that read the ring before the change may still write under a key that
 * was current then, for the secrets cache's time to live plus one invocation).
 */

/** Per key of the ring, how many values use it; and key ids in use that the ring lacks. */
export interface KeyUsageReport {
  readonly currentKeyId: string;
  /** Key id → `enc:v2` values under it, for every key of the ring (0 when unused). */
  readonly byKey: Readonly<Record<string, number>>;
  /** Key ids that stored values name but the ring lacks: those values are unreadable. */
  readonly unknownKeys: Readonly<Record<string, number>>;
  readonly v1: number;
  readonly plaintext: number;
  /** Connections with a value not yet `enc:v2` under the current key. */
  readonly connectionsToReencrypt: number;
}

export function keyUsageReport(ring: TokenKeyRing, usage: KeyUsage): KeyUsageReport {
  const byKey: Record<string, number> = {};
  for (const id of ring.keyIds) byKey[id] = usage.v2[id] ?? 0;
  const unknownKeys: Record<string, number> = {};
  for (const [id, n] of Object.entries(usage.v2)) if (!ring.has(id)) unknownKeys[id] = n;
  return {
    currentKeyId: ring.currentKeyId,
    byKey,
    unknownKeys,
    v1: usage.v1,
    plaintext: usage.plaintext,
    connectionsToReencrypt: usage.staleConnections,
  };
}

/** The secrets cache's time to live (5 min) plus the longest invocation (15 min). */
export const RING_SETTLE_MS = 20 * 60_000;

export type KeyRemoval =
  { readonly allowed: true; readonly ring: TokenKeyRing } | { readonly allowed: false; readonly reason: string };

/** Whether `keyId` may leave the ring now, and the ring without it. */
export function checkKeyRemoval(
  ring: TokenKeyRing,
  keyId: string,
  usage: KeyUsage,
  o: { readonly ringChangedAt: Date | undefined; readonly now: Date; readonly settleMs?: number },
): KeyRemoval {
  const refuse = (reason: string): KeyRemoval => ({ allowed: false, reason });
  if (!ring.has(keyId)) return refuse(`Key "${keyId}" is not in the ring`);
  if (keyId === ring.currentKeyId) return refuse(`Key "${keyId}" is the current key: make another key current first`);
  const v2 = usage.v2[keyId] ?? 0;
  if (v2 > 0) return refuse(`${v2} stored values use key "${keyId}": run the token re-encryption first`);
  if (usage.v1 > 0)
    return refuse(`${usage.v1} stored enc:v1 values may be under key "${keyId}": run the token re-encryption first`);
  const settleMs = o.settleMs ?? RING_SETTLE_MS;
  const settledAt = o.ringChangedAt ? o.ringChangedAt.getTime() + settleMs : Number.POSITIVE_INFINITY;
  if (o.now.getTime() < settledAt)
    return refuse(
      o.ringChangedAt
        ? `The ring changed at ${o.ringChangedAt.toISOString()}: functions may still write under keys read before; try after ${new Date(settledAt).toISOString()} (and run the re-encryption again)`
        : 'When the ring last changed is unknown: try again later',
    );
  return { allowed: true, ring: ring.without(keyId) };
}
