// Room event (PDU) types and small pure helpers shared by the rooms modules.
//
// Wire formats: server-server API "PDUs" and the per-room-version event formats
// (rooms/v1 "Event format", rooms/v3, rooms/v4, rooms/v11, rooms/v12 fragments).

/** `hashes` of a PDU (server-server API, "Signing Events" / content hash). */
export interface EventHashes {
  sha256: string;
  [algorithm: string]: string;
}

/** `signatures`: server name (or user id) → key id → unpadded base64 signature. */
export type Signatures = Record<string, Record<string, string>>;

/** v1/v2 rooms reference other events as `[event_id, {sha256: reference_hash}]`. */
export type EventReferenceV1 = [string, Record<string, string>];

/**
 * A persistent data unit as it travels over federation.
 *
 * - rooms v1/v2: `event_id` is present, `prev_events`/`auth_events` are `[id, hashes]` pairs.
 * - rooms v3+: no `event_id` (it is derived from the reference hash), references are bare ids.
 * - rooms v11+: `m.room.redaction` carries `redacts` in `content` (top-level kept for compat).
 * - rooms v12: the `m.room.create` event has no `room_id`.
 */
export interface PDU {
  auth_events: string[] | EventReferenceV1[];
  prev_events: string[] | EventReferenceV1[];
  content: Record<string, unknown>;
  depth: number;
  hashes: EventHashes;
  origin_server_ts: number;
  room_id?: string;
  sender: string;
  type: string;
  state_key?: string;
  redacts?: string;
  signatures: Signatures;
  unsigned?: Record<string, unknown>;
  event_id?: string;
  origin?: string;
  membership?: string;
  prev_state?: unknown;
  [key: string]: unknown;
}

/** Room state: state key (see {@link stateKey}) → event id. */
export type StateMap = Map<string, string>;

const SEP = '\u0000';

/** The map key for a `(type, state_key)` pair. */
export function stateKey(type: string, key: string): string {
  return `${type}${SEP}${key}`;
}

/** Inverse of {@link stateKey}. */
export function parseStateKey(key: string): [type: string, stateKey: string] {
  const i = key.indexOf(SEP);
  if (i < 0) throw new Error(`not a state map key: ${JSON.stringify(key)}`);
  return [key.slice(0, i), key.slice(i + 1)];
}

/** The state map key of a state event, or undefined for a message event. */
export function eventStateKey(event: Pick<PDU, 'type' | 'state_key'>): string | undefined {
  return typeof event.state_key === 'string' ? stateKey(event.type, event.state_key) : undefined;
}

export function isStateEvent(event: Pick<PDU, 'state_key'>): boolean {
  return typeof event.state_key === 'string';
}

function referenceIds(refs: unknown): string[] {
  if (!Array.isArray(refs)) return [];
  const out: string[] = [];
  for (const r of refs) {
    if (typeof r === 'string') out.push(r);
    else if (Array.isArray(r) && typeof r[0] === 'string') out.push(r[0]);
  }
  return out;
}

/** Event ids in `auth_events`, for either reference format. */
export function authEventIds(event: Pick<PDU, 'auth_events'>): string[] {
  return referenceIds(event.auth_events);
}

/** Event ids in `prev_events`, for either reference format. */
export function prevEventIds(event: Pick<PDU, 'prev_events'>): string[] {
  return referenceIds(event.prev_events);
}

/**
 * The server name part of a user id, v1/v2 event id or v1–v11 room id (everything after the first
 * colon, appendix "Common Identifier Format"). Undefined when there is no colon.
 */
export function domainOf(id: string): string | undefined {
  const i = id.indexOf(':');
  return i < 0 ? undefined : id.slice(i + 1);
}

/**
 * Minimal user id shape check used by the auth rules ("valid user IDs"): `@localpart:server`
 * (appendix "User Identifiers"), at most 255 bytes. Historical localparts are not restricted.
 */
export function isValidUserId(value: unknown): value is string {
  if (typeof value !== 'string' || value.length < 3 || value[0] !== '@') return false;
  if (Buffer.byteLength(value, 'utf8') > 255) return false;
  const i = value.indexOf(':');
  return i > 1 && i < value.length - 1;
}

/** `content.membership` of a member event, if it is a string. */
export function membershipOf(event: PDU | undefined): string | undefined {
  const m = event?.content?.membership;
  return typeof m === 'string' ? m : undefined;
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
