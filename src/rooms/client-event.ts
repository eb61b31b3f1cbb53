// Events as clients see them (spec: "Room Event Format" / ClientEvent), from stored PDUs.
import type { StoredEvent } from './room-data.js';

export interface ClientEvent {
  content: Record<string, unknown>;
  event_id: string;
  origin_server_ts: number;
  room_id: string;
  sender: string;
  type: string;
  state_key?: string;
  redacts?: string;
  unsigned?: Record<string, unknown>;
}

export interface FormatOptions {
  /** The requesting user and device: transaction_id is shown to the sending device only. */
  userId?: string;
  deviceId?: string;
  now?: number;
  /** Content of the state event this one replaced (unsigned.prev_content). */
  prevContent?: Record<string, unknown>;
  /** The redaction event, for unsigned.redacted_because. */
  redactedBecause?: ClientEvent;
  /** Bundled aggregations (unsigned["m.relations"]). */
  relations?: Record<string, unknown>;
  /** The requesting user's membership at the event (unsigned.membership, spec v1.11). */
  membership?: string;
}

export function toClientEvent(ev: StoredEvent, opts: FormatOptions = {}): ClientEvent {
  const pdu = ev.pdu;
  const out: ClientEvent = {
    content: pdu.content ?? {},
    event_id: ev.eventId,
    origin_server_ts: pdu.origin_server_ts,
    room_id: ev.roomId,
    sender: pdu.sender,
    type: pdu.type,
  };
  if (typeof pdu.state_key === 'string') out.state_key = pdu.state_key;
  if (typeof pdu.redacts === 'string') out.redacts = pdu.redacts;
  else if (pdu.type === 'm.room.redaction' && typeof pdu.content?.redacts === 'string') out.redacts = pdu.content.redacts as string;
  const unsigned: Record<string, unknown> = { age: Math.max(0, (opts.now ?? Date.now()) - pdu.origin_server_ts) };
  if (ev.txnId && opts.userId === pdu.sender && opts.deviceId === ev.deviceId) unsigned.transaction_id = ev.txnId;
  if (ev.replacesState) {
    unsigned.replaces_state = ev.replacesState;
    if (opts.prevContent) unsigned.prev_content = opts.prevContent;
  }
  if (ev.redactedBy) unsigned.redacted_because = opts.redactedBecause ?? { event_id: ev.redactedBy, type: 'm.room.redaction' };
  if (opts.relations && Object.keys(opts.relations).length) unsigned['m.relations'] = opts.relations;
  if (opts.membership) unsigned.membership = opts.membership;
  out.unsigned = unsigned;
  return out;
}

/** Stripped state (spec: "Stripped state"), for invite_state / knock_state. */
export function strippedState(ev: StoredEvent): Record<string, unknown> {
  return { type: ev.pdu.type, state_key: ev.pdu.state_key ?? '', content: ev.pdu.content ?? {}, sender: ev.pdu.sender };
}
