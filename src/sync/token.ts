// The /sync `since` token: one position per stream, joined in a fixed order.
import { MatrixError } from '../http/errors.js';
import type { StreamName } from '../storage/streams-store.js';

export const SYNC_STREAMS = ['events', 'account_data', 'receipts', 'to_device', 'presence', 'device_lists', 'push_rules', 'typing', 'invites'] as const satisfies readonly StreamName[];

export type SyncToken = Record<(typeof SYNC_STREAMS)[number], number>;

export function formatSyncToken(t: SyncToken): string {
  return `s${SYNC_STREAMS.map((s) => t[s]).join('_')}`;
}

export function parseSyncToken(raw: string): SyncToken {
  const m = /^s(\d+(?:_\d+)*)$/.exec(raw);
  if (!m) throw new MatrixError(400, 'M_INVALID_PARAM', 'Malformed since token');
  const parts = m[1].split('_').map(Number);
  if (parts.length > SYNC_STREAMS.length || parts.some((n) => !Number.isSafeInteger(n))) throw new MatrixError(400, 'M_INVALID_PARAM', 'Malformed since token');
  const out = {} as SyncToken;
  SYNC_STREAMS.forEach((s, i) => { out[s] = parts[i] ?? 0; });
  return out;
}

export const zeroToken = (): SyncToken => Object.fromEntries(SYNC_STREAMS.map((s) => [s, 0])) as SyncToken;

export function tokenEquals(a: SyncToken, b: SyncToken): boolean {
  return SYNC_STREAMS.every((s) => a[s] === b[s]);
}
