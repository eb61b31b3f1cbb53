// Builds, authorises, signs and persists events created on this server (the send path), in one
// transaction per event, one event at a time per room.
import type { Knex } from 'knex';
import type { SigningKey } from '../crypto/signing.js';
import { MatrixError } from '../http/errors.js';
import type { EventsStore, MemberRow } from '../storage/events-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';
import { AuthError, authEventTypesFor, checkAuth, isRedactionApplicable } from './auth-rules.js';
import { eventStateKey, stateKey, type PDU, type StateMap } from './event.js';
import { eventIdOf, redactEvent, redactsOf, signEvent } from './hashing.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';

export interface NewEvent {
  type: string;
  content: Record<string, unknown>;
  sender: string;
  stateKey?: string;
  redacts?: string;
  txn?: { deviceId: string; txnId: string };
  originServerTs?: number;
  /**
   * Called with the signed event before it is stored, outside any database transaction (e.g. an
   * invite the invitee's server must countersign); returns the event to store.
   */
  transform?: (pdu: PDU, room: RoomInfo) => Promise<PDU>;
}

export interface PersistHooks {
  /** Runs inside the event's transaction (outbox rows for federation, push actions ...). */
  inTransaction?(trx: Knex, ev: StoredEvent, room: RoomInfo, stateBefore: StateMap): Promise<void>;
  /** Runs after commit, with the event's stream position. */
  afterCommit?(ev: StoredEvent, room: RoomInfo): void;
}

const MAX_PREV_EVENTS = 10;
const MAX_EVENT_BYTES = 65536;

export class EventPersister {
  private readonly mutex = new KeyedMutex();
  readonly hooks: PersistHooks[] = [];

  constructor(
    private readonly db: Knex,
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
    private readonly serverName: string,
    private readonly signingKey: () => SigningKey,
  ) {}

  /**
   * Records a membership of a room this server is not in (an invite received, or its rejection):
   * the row gets a fresh events-stream position so /sync reports it.
   */
  async recordMembership(room: RoomInfo, row: MemberRow): Promise<number> {
    const position = await this.db.transaction(async (trx) => {
      const pos = await this.streams.nextPosition(trx, 'events');
      await this.store.upsertMember({ ...row, stream_ordering: pos }, trx);
      return pos;
    });
    this.notifier.notify({ stream: 'events', position, roomIds: [room.roomId], userIds: [row.user_id] });
    return position;
  }

  /** Runs `task` while holding the room's in-process lock. */
  withRoomLock<T>(roomId: string, task: () => Promise<T>): Promise<T> {
    return this.mutex.run(roomId, task);
  }

  /**
   * Creates and persists an event in an existing room. Throws M_FORBIDDEN when the auth rules
   * reject it. With `txn`, a repeated (device, txnId) returns the first event instead.
   */
  async send(room: RoomInfo, ev: NewEvent): Promise<StoredEvent> {
    return this.mutex.run(room.roomId, async () => {
      let stored!: StoredEvent;
      let fresh = true;
      let prebuilt: { pdu: PDU; stateBefore: StateMap; group: number | null; prev: { event_id: string; event_nid: number; depth: number }[] } | undefined;
      if (ev.transform) {
        // Built under the in-process room lock but outside a transaction: the transform may wait
        // on another server.
        const head = await this.store.roomHead(room.nid);
        const stateBefore = await this.data.stateOfGroup(head.stateGroup);
        const prev = head.extremities.sort((a, b) => b.depth - a.depth).slice(0, MAX_PREV_EVENTS);
        const built = await this.build(room, ev, stateBefore, prev.map((p) => p.event_id), (prev[0]?.depth ?? 0) + 1, this.db);
        prebuilt = { pdu: await ev.transform(built, room), stateBefore, group: head.stateGroup, prev };
      }
      await this.db.transaction(async (trx) => {
        if (prebuilt) {
          await this.store.lockRoom(room.roomId, trx);
          stored = await this.persistBuilt(trx, room, prebuilt.pdu, prebuilt.stateBefore, prebuilt.group, prebuilt.prev);
          return;
        }
        await this.store.lockRoom(room.roomId, trx);
        if (ev.txn) {
          // Checked under the lock, so a concurrent request with the same txn id cannot also win.
          const existing = await this.store.txnEvent(ev.sender, ev.txn.deviceId, ev.txn.txnId, trx);
          if (existing) {
            stored = (await this.data.event(existing, trx))!;
            fresh = false;
            return;
          }
        }
        const head = await this.store.roomHead(room.nid, trx);
        const stateBefore = await this.data.stateOfGroup(head.stateGroup, trx);
        const prev = head.extremities.sort((a, b) => b.depth - a.depth).slice(0, MAX_PREV_EVENTS);
        const depth = Math.min(Number.MAX_SAFE_INTEGER, (prev[0]?.depth ?? 0) + 1);
        const pdu = await this.build(room, ev, stateBefore, prev.map((p) => p.event_id), depth, trx);
        stored = await this.persistBuilt(trx, room, pdu, stateBefore, head.stateGroup, prev, ev.txn);
      }).catch((err) => {
        // A refusal comes before any write; anything else may leave rolled-back rows in the caches.
        if (!(err instanceof MatrixError)) this.data.dropCaches();
        throw err;
      });
      if (fresh) this.afterCommit(stored, room);
      return stored;
    });
  }

  /** Builds, hashes and signs the PDU, and checks it against the state before it. */
  private async build(room: RoomInfo, ev: NewEvent, state: StateMap, prevEvents: string[], depth: number, q: Knex): Promise<PDU> {
    const v = room.version;
    const draft: PDU = {
      auth_events: [],
      prev_events: prevEvents,
      content: ev.content,
      depth,
      hashes: { sha256: '' },
      origin_server_ts: ev.originServerTs ?? Date.now(),
      room_id: room.roomId,
      sender: ev.sender,
      type: ev.type,
      signatures: {},
    };
    if (ev.stateKey !== undefined) draft.state_key = ev.stateKey;
    if (ev.redacts !== undefined) {
      if (v.redactsInContent) draft.content = { ...ev.content, redacts: ev.redacts };
      draft.redacts = ev.redacts; // kept at the top level too for older clients and servers
    }
    if (v.eventIdFormat === 'v1') {
      // Rooms v1/v2 carry an event id and reference events by [id, hashes] (rooms/v1 event format).
      draft.event_id = `$${randomId()}:${this.serverName}`;
    }
    // `origin` is a top-level key only before rooms/v11, which removed it from the event format.
    if (v.redaction !== 'v11') draft.origin = this.serverName;

    const authKeys = authEventTypesFor(draft, v).map(([t, k]) => stateKey(t, k));
    const authIds = authKeys.map((k) => state.get(k)).filter((x): x is string => !!x);
    const authEvents = await this.data.eventsMap([...authIds, ...prevEvents], q);
    if (v.eventIdFormat === 'v1') {
      const ref = (id: string): [string, Record<string, string>] => [id, { sha256: authEvents.get(id)?.pdu.hashes?.sha256 ?? '' }];
      draft.auth_events = authIds.map(ref);
      draft.prev_events = prevEvents.map(ref);
    } else {
      draft.auth_events = authIds;
    }
    delete (draft as Partial<PDU>).hashes;
    const signed = signEvent(draft as unknown as Record<string, unknown>, this.serverName, this.signingKey(), v) as unknown as PDU;
    const bytes = Buffer.byteLength(JSON.stringify(signed));
    if (bytes > MAX_EVENT_BYTES) throw new MatrixError(413, 'M_TOO_LARGE', 'Event is larger than 64 KiB');

    const stateEvents = await this.data.stateEvents(state, authKeys.concat([stateKey('m.room.create', '')]), q);
    const lookup = (type: string, key: string) => stateEvents.get(stateKey(type, key))?.pdu;
    try {
      checkAuth(signed, lookup, v);
    } catch (err) {
      if (err instanceof AuthError) throw new MatrixError(403, 'M_FORBIDDEN', err.reason);
      throw err;
    }
    return signed;
  }

  /** Writes an authorised event and everything derived from it. Must run inside the room lock. */
  private async persistBuilt(trx: Knex, room: RoomInfo, pdu: PDU, stateBefore: StateMap, groupBefore: number | null, prev: readonly { event_id: string; event_nid: number }[], txn?: { deviceId: string; txnId: string }): Promise<StoredEvent> {
    const eventId = eventIdOf(pdu, room.version);
    const sk = eventStateKey(pdu);
    const replacesState = sk ? stateBefore.get(sk) ?? null : null;
    // The stream position is taken first: in SQLite the transaction is the only writer anyway, and
    // in PostgreSQL the row lock it takes is what orders commits (see StreamsStore.nextPosition).
    const position = await this.streams.nextPosition(trx, 'events');
    const nid = await this.store.insertEvent({
      event_id: eventId,
      room_nid: room.nid,
      stream_ordering: position,
      depth: pdu.depth,
      type: pdu.type,
      state_key: pdu.state_key ?? null,
      sender: pdu.sender,
      origin_server_ts: pdu.origin_server_ts,
      json: JSON.stringify(pdu),
      state_group: sk ? null : groupBefore,
      outlier: false,
      soft_failed: false,
      rejected_reason: null,
      redacted_by: null,
      replaces_state: replacesState,
      txn_id: txn?.txnId ?? null,
      device_id: txn?.deviceId ?? null,
      contains_url: typeof pdu.content?.url === 'string',
    }, trx);
    const stored: StoredEvent = {
      nid, eventId, roomNid: room.nid, roomId: room.roomId, stream: position, depth: pdu.depth, pdu, stateGroup: groupBefore,
      outlier: false, softFailed: false, rejected: null, redactedBy: null, replacesState, txnId: txn?.txnId ?? null, deviceId: txn?.deviceId ?? null,
    };
    this.data.remember(stored);

    if (sk) {
      const after = new Map(stateBefore);
      after.set(sk, eventId);
      const groupAfter = await this.data.writeStateGroup(room, after, groupBefore, trx);
      stored.stateGroup = groupAfter;
      await this.store.setEventStateGroup(nid, groupAfter, trx);
      await this.store.upsertCurrentState(room.nid, pdu.type, pdu.state_key!, nid, trx);
      await this.store.setCurrentStateGroup(room.nid, groupAfter, trx);
      if (pdu.type === 'm.room.member') {
        await this.store.upsertMember({
          room_nid: room.nid,
          user_id: pdu.state_key!,
          membership: String(pdu.content.membership),
          event_nid: nid,
          stream_ordering: position,
          displayname: typeof pdu.content.displayname === 'string' ? pdu.content.displayname : null,
          avatar_url: typeof pdu.content.avatar_url === 'string' ? pdu.content.avatar_url : null,
          forgotten: false,
        }, trx);
      }
    }

    await this.store.advanceForwardExtremities(room.nid, prev.map((p) => p.event_nid), nid, trx);

    const rel = pdu.content?.['m.relates_to'] as { rel_type?: unknown; event_id?: unknown; key?: unknown } | undefined;
    if (rel && typeof rel.rel_type === 'string' && typeof rel.event_id === 'string') {
      await this.store.insertRelation({ event_nid: nid, room_nid: room.nid, relates_to: rel.event_id, rel_type: rel.rel_type, aggregation_key: typeof rel.key === 'string' ? rel.key : null }, trx);
    }
    if (txn) await this.store.insertTxn(pdu.sender, txn.deviceId, txn.txnId, eventId, trx);

    if (pdu.type === 'm.room.redaction') await this.applyRedaction(trx, room, pdu, eventId, stateBefore);
    for (const h of this.hooks) await h.inTransaction?.(trx, stored, room, stateBefore);
    return stored;
  }

  /**
   * Applies a redaction to its target when the rules allow it (spec: "Redactions"): the target's
   * stored JSON becomes its redacted form. Used by the local send path and for received events.
   */
  async applyRedaction(trx: Knex, room: RoomInfo, redaction: PDU, redactionId: string, state: StateMap): Promise<void> {
    const targetId = redactsOf(redaction, room.version);
    if (!targetId) return;
    const target = await this.data.event(targetId, trx);
    if (!target || target.roomNid !== room.nid || target.redactedBy) return;
    const stateEvents = await this.data.stateEvents(state, [stateKey('m.room.power_levels', ''), stateKey('m.room.create', '')], trx);
    const lookup = (type: string, key: string) => stateEvents.get(stateKey(type, key))?.pdu;
    if (!isRedactionApplicable(redaction, target.pdu, lookup, room.version)) return;
    const redacted = redactEvent(target.pdu as unknown as Record<string, unknown>, room.version);
    await this.store.markRedacted(targetId, redactionId, JSON.stringify(redacted), trx);
    this.data.forget([targetId]);
  }

  private afterCommit(ev: StoredEvent, room: RoomInfo): void {
    const userIds = ev.pdu.type === 'm.room.member' && typeof ev.pdu.state_key === 'string' ? [ev.pdu.state_key] : undefined;
    const invalidate = ev.pdu.type === 'm.room.redaction' ? [redactsOf(ev.pdu, room.version)].filter((x): x is string => !!x) : undefined;
    if (invalidate) this.data.forget(invalidate);
    this.notifier.notify({ stream: 'events', position: ev.stream!, roomIds: [room.roomId], userIds, invalidateEvents: invalidate });
    for (const h of this.hooks) h.afterCommit?.(ev, room);
  }

  /**
   * Creates a room's first event (m.room.create) and the room row. For v12 the room id is derived
   * from the create event.
   */
  async createRoomWithCreateEvent(opts: { roomId: string | null; version: RoomInfo['version']; sender: string; content: Record<string, unknown> }): Promise<{ room: RoomInfo; event: StoredEvent }> {
    const v = opts.version;
    const draft: PDU = {
      auth_events: [],
      prev_events: [],
      content: opts.content,
      depth: 1,
      hashes: { sha256: '' },
      origin_server_ts: Date.now(),
      sender: opts.sender,
      type: 'm.room.create',
      state_key: '',
      signatures: {},
    };
    if (!v.roomIdFromCreateEvent) draft.room_id = opts.roomId!;
    if (v.eventIdFormat === 'v1') draft.event_id = `$${randomId()}:${this.serverName}`;
    if (v.redaction !== 'v11') draft.origin = this.serverName;
    delete (draft as Partial<PDU>).hashes;
    const pdu = signEvent(draft as unknown as Record<string, unknown>, this.serverName, this.signingKey(), v) as unknown as PDU;
    checkAuth(pdu, () => undefined, v);
    const eventId = eventIdOf(pdu, v);
    const roomId = v.roomIdFromCreateEvent ? `!${eventId.slice(1)}` : opts.roomId!;
    return this.mutex.run(roomId, async () => {
      let stored!: StoredEvent;
      let room!: RoomInfo;
      await this.db.transaction(async (trx) => {
        await this.store.lockRoom(roomId, trx);
        if (await this.store.roomById(roomId, trx)) throw new MatrixError(400, 'M_ROOM_IN_USE', 'Room already exists');
        const nid = await this.store.insertRoom({ room_id: roomId, room_version: v.id, creator: opts.sender, created_ts: Date.now(), is_public: false, current_state_group: null, is_local: true }, trx);
        room = { nid, roomId, version: v, creator: opts.sender, isLocal: true };
        stored = await this.persistBuilt(trx, room, pdu, new Map(), null, []);
      });
      this.afterCommit(stored, room);
      return { room, event: stored };
    });
  }
}

function randomId(): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  let s = '';
  for (let i = 0; i < 18; i++) s += alphabet[Math.floor(Math.random() * alphabet.length)];
  return s;
}
