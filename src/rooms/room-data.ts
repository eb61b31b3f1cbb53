// Read access to rooms, events and state, with caches. Events and state groups are immutable once
// written (a redaction replaces an event's JSON and is announced, so caches drop it), which makes
// caching safe across processes that share the database.
import type { Knex } from 'knex';
import type { EventsStore, EventRow, MemberRow, RoomRow } from '../storage/events-store.js';
import { bool, num } from '../storage/rows.js';
import { Lru } from './lru.js';
import { eventStateKey, stateKey, type PDU, type StateMap } from './event.js';
import { getRoomVersion, type RoomVersion } from './versions.js';

export interface RoomInfo {
  nid: number;
  roomId: string;
  version: RoomVersion;
  creator: string | null;
  isLocal: boolean;
}

export interface StoredEvent {
  nid: number;
  eventId: string;
  roomNid: number;
  roomId: string;
  stream: number | null;
  depth: number;
  pdu: PDU;
  stateGroup: number | null;
  outlier: boolean;
  softFailed: boolean;
  rejected: string | null;
  redactedBy: string | null;
  replacesState: string | null;
  txnId: string | null;
  deviceId: string | null;
}

const STATE_CHAIN_MAX = 100;

export class RoomData {
  private readonly roomsById = new Map<string, RoomInfo>();
  private readonly roomsByNid = new Map<number, RoomInfo>();
  private readonly events = new Lru<string, StoredEvent>(50_000);
  private readonly groups = new Lru<number, StateMap>(2_000);
  private readonly joined = new Lru<number, MemberRow[]>(5_000);

  constructor(readonly db: Knex, readonly store: EventsStore) {}

  // Rooms

  private roomInfo(row: RoomRow): RoomInfo {
    const version = getRoomVersion(row.room_version);
    if (!version) throw new Error(`room ${row.room_id} has unknown version ${row.room_version}`);
    const info = { nid: row.room_nid, roomId: row.room_id, version, creator: row.creator, isLocal: bool(row.is_local) };
    this.roomsById.set(info.roomId, info);
    this.roomsByNid.set(info.nid, info);
    return info;
  }

  async room(roomId: string, q: Knex = this.db): Promise<RoomInfo | undefined> {
    const cached = this.roomsById.get(roomId);
    if (cached) return cached;
    const row = await this.store.roomById(roomId, q);
    return row ? this.roomInfo(row) : undefined;
  }

  async roomByNid(nid: number, q: Knex = this.db): Promise<RoomInfo | undefined> {
    const cached = this.roomsByNid.get(nid);
    if (cached) return cached;
    const row = await this.store.roomByNid(nid, q);
    return row ? this.roomInfo(row) : undefined;
  }

  // Members

  /**
   * The room's joined members. Cached per room; every membership change announces its room
   * (locally and over the bus), which drops the entry. Reads inside a transaction that changes
   * membership bypass the cache so nothing uncommitted is cached.
   */
  async joinedMembers(room: RoomInfo, q: Knex = this.db, bypassCache = false): Promise<MemberRow[]> {
    if (!bypassCache) {
      const hit = this.joined.get(room.nid);
      if (hit) return hit;
    }
    const rows = await this.store.members(room.nid, ['join'], q);
    if (!bypassCache) this.joined.set(room.nid, rows);
    return rows;
  }

  /** Synchronous, so the notification that announces a change drops the entry at once. */
  membershipChanged(roomId: string): void {
    const room = this.roomsById.get(roomId);
    if (room) this.joined.delete(room.nid);
  }

  // Events

  toStored(row: EventRow, roomId: string): StoredEvent {
    return {
      nid: row.event_nid,
      eventId: row.event_id,
      roomNid: row.room_nid,
      roomId,
      stream: row.stream_ordering === null ? null : num(row.stream_ordering),
      depth: num(row.depth),
      pdu: JSON.parse(row.json),
      stateGroup: row.state_group,
      outlier: bool(row.outlier),
      softFailed: bool(row.soft_failed),
      rejected: row.rejected_reason,
      redactedBy: row.redacted_by,
      replacesState: row.replaces_state,
      txnId: row.txn_id,
      deviceId: row.device_id,
    };
  }

  async fromRows(rows: readonly EventRow[], q: Knex = this.db): Promise<StoredEvent[]> {
    const out: StoredEvent[] = [];
    for (const row of rows) {
      const cached = this.events.get(row.event_id);
      if (cached && cached.stream === (row.stream_ordering === null ? null : num(row.stream_ordering)) && cached.redactedBy === row.redacted_by
        && cached.stateGroup === row.state_group && cached.outlier === bool(row.outlier)) {
        out.push(cached);
        continue;
      }
      const room = await this.roomByNid(row.room_nid, q);
      const ev = this.toStored(row, room?.roomId ?? '');
      this.events.set(ev.eventId, ev);
      out.push(ev);
    }
    return out;
  }

  async event(eventId: string, q: Knex = this.db): Promise<StoredEvent | undefined> {
    const cached = this.events.get(eventId);
    if (cached) return cached;
    const rows = await this.store.eventsByIds([eventId], q);
    return rows.length ? (await this.fromRows(rows, q))[0] : undefined;
  }

  /** Events by id; missing ones are absent from the map. */
  async eventsMap(ids: Iterable<string>, q: Knex = this.db): Promise<Map<string, StoredEvent>> {
    const out = new Map<string, StoredEvent>();
    const missing: string[] = [];
    for (const id of ids) {
      const c = this.events.get(id);
      if (c) out.set(id, c);
      else missing.push(id);
    }
    if (missing.length) for (const ev of await this.fromRows(await this.store.eventsByIds(missing, q), q)) out.set(ev.eventId, ev);
    return out;
  }

  remember(ev: StoredEvent): void {
    this.events.set(ev.eventId, ev);
  }

  /**
   * After a failed transaction: rows it read or wrote may sit in the caches though they were rolled
   * back (and SQLite may hand out their ids again), so everything cached goes.
   */
  dropCaches(): void {
    this.events.clear();
    this.groups.clear();
    this.joined.clear();
    this.roomsById.clear();
    this.roomsByNid.clear();
  }

  forget(eventIds: readonly string[]): void {
    for (const id of eventIds) this.events.delete(id);
  }

  // State

  /** The state map (state key → event id) of a state group. */
  async stateOfGroup(group: number | null, q: Knex = this.db): Promise<StateMap> {
    if (group === null) return new Map();
    const cached = this.groups.get(group);
    if (cached) return cached;
    const chain = await this.store.stateGroupChain(group, q);
    // Start from the nearest cached ancestor, if any, and apply the deltas after it.
    let base: StateMap | undefined;
    let cut = chain.length;
    for (let i = 1; i < chain.length; i++) {
      const c = this.groups.get(chain[i]);
      if (c) {
        base = c;
        cut = i;
        break;
      }
    }
    const needed = chain.slice(0, cut);
    const entries = await this.store.stateGroupEntries(needed, q);
    const byGroup = new Map<number, typeof entries>();
    for (const e of entries) {
      const list = byGroup.get(Number(e.group_id));
      if (list) list.push(e);
      else byGroup.set(Number(e.group_id), [e]);
    }
    const state: StateMap = new Map(base ?? []);
    for (let i = needed.length - 1; i >= 0; i--) {
      for (const e of byGroup.get(needed[i]) ?? []) {
        const k = stateKey(e.type, e.state_key);
        if (e.event_id === null) state.delete(k);
        else state.set(k, e.event_id);
      }
    }
    this.groups.set(group, state);
    return state;
  }

  /**
   * Writes a state group for `state`, as a delta against `prevGroup` when the chain is short
   * enough, else as a snapshot.
   */
  async writeStateGroup(room: RoomInfo, state: StateMap, prevGroup: number | null, q: Knex): Promise<number> {
    let prevState: StateMap | undefined;
    let chain = 0;
    if (prevGroup !== null) {
      const info = await this.store.stateGroupInfo(prevGroup, q);
      if (info && info.chain_length < STATE_CHAIN_MAX) {
        prevState = await this.stateOfGroup(prevGroup, q);
        chain = info.chain_length + 1;
      }
    }
    const changes: { key: string; eventId: string | null }[] = [];
    if (prevState) {
      for (const [k, id] of state) if (prevState.get(k) !== id) changes.push({ key: k, eventId: id });
      for (const k of prevState.keys()) if (!state.has(k)) changes.push({ key: k, eventId: null });
    } else {
      for (const [k, id] of state) changes.push({ key: k, eventId: id });
    }
    const ids = changes.map((c) => c.eventId).filter((x): x is string => x !== null);
    const evs = await this.eventsMap(ids, q);
    const entries = changes.map((c) => {
      const sep = c.key.indexOf('\u0000');
      const nid = c.eventId === null ? null : evs.get(c.eventId)?.nid;
      if (nid === undefined) throw new Error(`state event ${c.eventId} is not stored`);
      return { type: c.key.slice(0, sep), state_key: c.key.slice(sep + 1), event_nid: nid };
    });
    const id = await this.store.insertStateGroup(room.nid, prevState ? prevGroup : null, prevState ? chain : 0, entries, q);
    this.groups.set(id, state);
    return id;
  }

  /**
   * The state before an event in the DAG: its group holds the state after it, so an accepted state
   * event's own entry goes back to what it replaced.
   */
  async stateBeforeEvent(ev: StoredEvent, q: Knex = this.db): Promise<StateMap> {
    const after = await this.stateOfGroup(ev.stateGroup, q);
    const k = eventStateKey(ev.pdu);
    if (!k || after.get(k) !== ev.eventId) return after;
    const before = new Map(after);
    if (ev.replacesState) before.set(k, ev.replacesState);
    else before.delete(k);
    return before;
  }

  /** The room's current state (resolved state after the forward extremities). */
  async currentState(room: RoomInfo, q: Knex = this.db): Promise<StateMap> {
    return this.stateOfGroup(await this.store.currentStateGroup(room.nid, q), q);
  }

  /** The state events of a state map that match `keys` (all when absent). */
  async stateEvents(state: StateMap, keys?: readonly string[], q: Knex = this.db): Promise<Map<string, StoredEvent>> {
    const ids = keys ? keys.map((k) => state.get(k)).filter((x): x is string => !!x) : [...state.values()];
    const evs = await this.eventsMap(ids, q);
    const out = new Map<string, StoredEvent>();
    for (const [k, id] of state) {
      const ev = evs.get(id);
      if (ev) out.set(k, ev);
    }
    return out;
  }

  async stateEvent(state: StateMap, type: string, key: string, q: Knex = this.db): Promise<StoredEvent | undefined> {
    const id = state.get(stateKey(type, key));
    return id ? this.event(id, q) : undefined;
  }
}
