// Persisting events that arrive from other servers (or that this server learns of while joining):
// outliers (known only as auth/state events), and events placed in the DAG with the state before
// them given by the caller. Shares the per-room lock with the local send path.
import type { Knex } from 'knex';
import type { EventRow, EventsStore, MemberRow } from '../storage/events-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';
import { authEventIds, eventStateKey, parseStateKey, type PDU, type StateMap } from './event.js';
import { eventIdOf } from './hashing.js';
import { resolveState } from './state-res.js';
import type { EventPersister } from './persist.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';
import type { RoomVersion } from './versions.js';

type RoomHead = Awaited<ReturnType<EventsStore['roomHead']>>;

export interface PlaceOptions {
  /** State before the event (resolved from its prev events by the caller). */
  stateBefore: StateMap;
  /** Set when the event failed auth: stored for reference, never served or used as state. */
  rejectedReason?: string | null;
  /** Passed auth at the event but not against the current state: kept out of timeline and extremities. */
  softFailed?: boolean;
  /** Events learnt through backfill get positions below every live event (not "new" to /sync). */
  backfilled?: boolean;
  /**
   * null: the caller looked the event up inside the same transaction and it is not stored (saves
   * the lookup).
   */
  lookedUp?: StoredEvent | null;
}

export class ReceivedEvents {
  constructor(
    private readonly db: Knex,
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
    private readonly persister: EventPersister,
  ) {}

  /** The room's head as placeIn left it, per transaction of inRoomTransaction. */
  private readonly heads = new WeakMap<Knex, RoomHead>();

  /** The current state as seen inside a transaction of inRoomTransaction. */
  async currentStateIn(room: RoomInfo, trx: Knex): Promise<StateMap> {
    const head = this.heads.get(trx);
    return head ? this.data.stateOfGroup(head.stateGroup, trx) : this.data.currentState(room, trx);
  }

  get knex(): Knex {
    return this.db;
  }

  /** Creates the row for a room this server learns of from elsewhere (join, invite). */
  async ensureRoom(roomId: string, version: RoomVersion, creator: string | null): Promise<RoomInfo> {
    const existing = await this.data.room(roomId);
    if (existing) return existing;
    await this.db.transaction(async (trx) => {
      if (await this.store.roomById(roomId, trx)) return;
      await this.store.insertRoom({ room_id: roomId, room_version: version.id, creator, created_ts: Date.now(), is_public: false, current_state_group: null, is_local: false }, trx);
    }).catch(async (err) => {
      if (!(await this.store.roomById(roomId))) throw err;
    });
    return (await this.data.room(roomId))!;
  }

  /** Stores events as outliers (no place in the DAG or timeline) unless already known. */
  async storeOutliers(room: RoomInfo, pdus: readonly PDU[], rejected?: ReadonlyMap<string, string>): Promise<void> {
    if (!pdus.length) return;
    const ids = pdus.map((p) => eventIdOf(p, room.version));
    const known = await this.data.eventsMap(ids);
    const rows = new Map<string, ReturnType<ReceivedEvents['row']>>();
    pdus.forEach((pdu, i) => {
      const id = ids[i];
      if (known.has(id) || rows.has(id)) return;
      rows.set(id, this.row(room, pdu, id, { stream: null, outlier: true, stateGroup: null, rejected: rejected?.get(id) ?? null, softFailed: false, replacesState: null }));
    });
    if (!rows.size) return;
    await this.db.transaction((trx) => this.store.insertEventsIfNew([...rows.values()], trx));
  }

  private row(room: RoomInfo, pdu: PDU, eventId: string, o: { stream: number | null; outlier: boolean; stateGroup: number | null; rejected: string | null; softFailed: boolean; replacesState: string | null }) {
    const { unsigned: _u, ...withoutUnsigned } = pdu;
    return {
      event_id: eventId,
      room_nid: room.nid,
      stream_ordering: o.stream,
      depth: typeof pdu.depth === 'number' ? pdu.depth : 0,
      type: pdu.type,
      state_key: pdu.state_key ?? null,
      sender: pdu.sender,
      origin_server_ts: pdu.origin_server_ts,
      json: JSON.stringify(withoutUnsigned),
      state_group: o.stateGroup,
      outlier: o.outlier,
      soft_failed: o.softFailed,
      rejected_reason: o.rejected,
      redacted_by: null,
      replaces_state: o.replacesState,
      txn_id: null,
      device_id: null,
      contains_url: typeof pdu.content?.url === 'string',
    };
  }

  /**
   * Places an event in the room's DAG with the given state before it, updating forward
   * extremities and the current state (resolving across extremities when they fork). Rejected and
   * soft-failed events are stored but change neither.
   */
  async place(room: RoomInfo, pdu: PDU, opts: PlaceOptions): Promise<StoredEvent> {
    return this.inRoomTransaction(room, (put) => put(pdu, opts));
  }

  /**
   * Runs `fn` under the room's lock inside one database transaction; `put` places events as
   * place() does. Several events then share one commit (a federation transaction's PDUs); they are
   * announced to /sync and the after-commit hooks once it has committed. When the transaction
   * fails, the caches that may hold its uncommitted rows are dropped.
   */
  async inRoomTransaction<T>(room: RoomInfo, fn: (put: (pdu: PDU, opts: PlaceOptions) => Promise<StoredEvent>, trx: Knex) => Promise<T>): Promise<T> {
    return this.persister.withRoomLock(room.roomId, async () => {
      const placed: { stored: StoredEvent; pdu: PDU; opts: PlaceOptions }[] = [];
      let result!: T;
      try {
        await this.db.transaction(async (trx) => {
          await this.store.lockRoom(room.roomId, trx);
          result = await fn(async (pdu, opts) => {
            const { stored, fresh } = await this.placeIn(trx, room, pdu, opts);
            if (fresh) placed.push({ stored, pdu, opts });
            return stored;
          }, trx);
        });
      } catch (err) {
        this.data.dropCaches();
        throw err;
      }
      for (const { stored, pdu, opts } of placed) {
        if (stored.stream === null || stored.rejected || stored.softFailed || opts.backfilled) continue;
        const userIds = pdu.type === 'm.room.member' && typeof pdu.state_key === 'string' ? [pdu.state_key] : undefined;
        this.notifier.notify({ stream: 'events', position: stored.stream, roomIds: [room.roomId], userIds });
        for (const h of this.persister.hooks) h.afterCommit?.(stored, room);
      }
      return result;
    });
  }

  private async placeIn(trx: Knex, room: RoomInfo, pdu: PDU, opts: PlaceOptions): Promise<{ stored: StoredEvent; fresh: boolean }> {
    const eventId = eventIdOf(pdu, room.version);
    // (A cached outlier may have been placed by another process since: only absence is trusted.)
    const existing = opts.lookedUp === null ? undefined : (await this.store.eventsByIds([eventId], trx))[0];
    if (existing && !existing.outlier) return { stored: (await this.data.fromRows([existing], trx))[0], fresh: false };
    const sk = eventStateKey(pdu);
    const accepted = !opts.rejectedReason;
    const groupBefore = await this.groupFor(room, opts.stateBefore, pdu, trx);
    // A state event gets a new group after it; that group references the event's row, so it is
    // written after the row.
    const newGroup = !!sk && accepted;
    const position = opts.backfilled ? await this.backfillPosition(trx) : await this.streams.nextPosition(trx, 'events');
    const replacesState = sk ? opts.stateBefore.get(sk) ?? null : null;
    const rowData = this.row(room, pdu, eventId, {
      stream: position, outlier: false, stateGroup: newGroup ? null : groupBefore,
      rejected: opts.rejectedReason ?? null, softFailed: !!opts.softFailed, replacesState,
    });
    let nid: number;
    if (existing) {
      // An outlier we knew becomes part of the DAG.
      nid = existing.event_nid;
      const { event_id: _id, ...update } = rowData;
      await trx('events').where({ event_nid: nid }).update(update);
      this.data.forget([eventId]);
    } else {
      nid = await this.store.insertEvent(rowData, trx);
    }
    let groupAfter = groupBefore;
    if (newGroup) {
      const after = new Map(opts.stateBefore);
      after.set(sk!, eventId);
      groupAfter = await this.data.writeStateGroup(room, after, groupBefore, trx);
      await this.store.setEventStateGroup(nid, groupAfter, trx);
    }
    const stored = this.data.toStored({ ...rowData, event_id: eventId, event_nid: nid, state_group: groupAfter } as EventRow, room.roomId);
    this.data.remember(stored);
    if (!accepted) return { stored, fresh: true };

    const rel = pdu.content?.['m.relates_to'] as { rel_type?: unknown; event_id?: unknown; key?: unknown } | undefined;
    if (rel && typeof rel.rel_type === 'string' && typeof rel.event_id === 'string') {
      await this.store.insertRelation({ event_nid: nid, room_nid: room.nid, relates_to: rel.event_id, rel_type: rel.rel_type, aggregation_key: typeof rel.key === 'string' ? rel.key : null }, trx);
    }
    if (opts.softFailed || opts.backfilled) return { stored, fresh: true };

    // Forward extremities: this event replaces those of its prev events.
    const prevIds = new Set(prevIdsOf(pdu));
    const head = this.heads.get(trx) ?? await this.store.roomHead(room.nid, trx);
    const keep = head.extremities.filter((x) => !prevIds.has(x.event_id));
    await this.store.advanceForwardExtremities(room.nid, head.extremities.filter((x) => prevIds.has(x.event_id)).map((x) => x.event_nid), nid, trx);

    // Current state: the state after the new event, resolved with the other extremities.
    let current: StateMap = await this.data.stateOfGroup(groupAfter, trx);
    let currentGroup = groupAfter;
    if (keep.length) {
      const others = await this.data.eventsMap(keep.map((k) => k.event_id), trx);
      const sets = [current];
      for (const o of others.values()) sets.push(await this.data.stateOfGroup(o.stateGroup, trx));
      current = await this.resolve(room, sets, trx);
      currentGroup = await this.data.writeStateGroup(room, current, groupAfter, trx);
    }
    await this.applyCurrentState(room, current, currentGroup, position, trx, head.stateGroup);
    // Nobody else writes the room until this transaction ends (room lock), so its head is known.
    this.heads.set(trx, { stateGroup: currentGroup ?? head.stateGroup, extremities: [...keep, { event_id: eventId, event_nid: nid, depth: rowData.depth }] });

    if (pdu.type === 'm.room.redaction') await this.persister.applyRedaction(trx, room, pdu, eventId, opts.stateBefore);
    for (const h of this.persister.hooks) await h.inTransaction?.(trx, stored, room, opts.stateBefore);
    return { stored, fresh: true };
  }

  /** The state group holding `state`: the group of a prev event when equal, else a new delta. */
  private async groupFor(room: RoomInfo, state: StateMap, pdu: PDU, trx: Knex): Promise<number | null> {
    const prevs = await this.data.eventsMap(prevIdsOf(pdu), trx);
    let parent: number | null = null;
    for (const p of prevs.values()) {
      if (p.stateGroup === null) continue;
      const s = await this.data.stateOfGroup(p.stateGroup, trx);
      if (sameState(s, state)) return p.stateGroup;
      parent ??= p.stateGroup;
    }
    if (!state.size) return null;
    return this.data.writeStateGroup(room, state, parent, trx);
  }

  private async backfillPosition(trx: Knex): Promise<number> {
    const r = await trx('events').min({ m: 'stream_ordering' }).first();
    return Math.min(0, Number(r?.m ?? 0)) - 1;
  }

  /** Rewrites current_state and room_members to match `state` (diffing against what is stored). */
  async applyCurrentState(room: RoomInfo, state: StateMap, group: number | null, position: number, trx: Knex, oldGroup?: number | null): Promise<void> {
    if (oldGroup === undefined) oldGroup = await this.store.currentStateGroup(room.nid, trx);
    if (group !== null && group === oldGroup) return;
    const old = await this.data.stateOfGroup(oldGroup, trx);
    if (group !== null) await this.store.setCurrentStateGroup(room.nid, group, trx);
    const changed = [...state].filter(([k, id]) => old.get(k) !== id);
    const removed = [...old.keys()].filter((k) => !state.has(k));
    if (!changed.length && !removed.length) return;
    const evs = await this.data.eventsMap(changed.map(([, id]) => id), trx);
    const entries: { type: string; state_key: string; event_nid: number }[] = [];
    const members: MemberRow[] = [];
    for (const [k, id] of changed) {
      const ev = evs.get(id);
      if (!ev) continue;
      const [type, key] = parseStateKey(k);
      entries.push({ type, state_key: key, event_nid: ev.nid });
      if (type === 'm.room.member') {
        const c = ev.pdu.content ?? {};
        members.push({
          room_nid: room.nid, user_id: key, membership: String(c.membership), event_nid: ev.nid, stream_ordering: ev.stream ?? position,
          displayname: typeof c.displayname === 'string' ? c.displayname : null,
          avatar_url: typeof c.avatar_url === 'string' ? c.avatar_url : null, forgotten: false,
        });
      }
    }
    if (entries.length === 1) await this.store.upsertCurrentState(room.nid, entries[0].type, entries[0].state_key, entries[0].event_nid, trx);
    else if (entries.length) await this.store.upsertCurrentStateMany(room.nid, entries, trx);
    if (members.length === 1) await this.store.upsertMember(members[0], trx);
    else if (members.length) await this.store.upsertMembers(members, trx);
    for (const k of removed) {
      const [type, key] = parseStateKey(k);
      await trx('current_state').where({ room_nid: room.nid, type, state_key: key }).delete();
    }
  }

  /** Resolves state sets, loading the events the algorithm needs (conflicted events and auth chains). */
  async resolve(room: RoomInfo, sets: StateMap[], q: Knex = this.db): Promise<StateMap> {
    if (sets.length <= 1) return new Map(sets[0] ?? []);
    const all = new Set<string>();
    for (const s of sets) for (const id of s.values()) all.add(id);
    const events = new Map<string, PDU>();
    const rejected = new Set<string>();
    const tried = new Set<string>();
    let frontier = [...all];
    while (frontier.length) {
      for (const id of frontier) tried.add(id);
      const loaded = await this.data.eventsMap(frontier, q);
      const next = new Set<string>();
      for (const [id, ev] of loaded) {
        events.set(id, ev.pdu);
        if (ev.rejected) rejected.add(id);
        for (const a of authEventIds(ev.pdu)) if (!tried.has(a)) next.add(a);
      }
      frontier = [...next];
    }
    return resolveState(room.version, sets, { getEvent: (id) => events.get(id), isRejected: (id) => rejected.has(id) });
  }
}

export function prevIdsOf(pdu: PDU): string[] {
  return (pdu.prev_events as unknown[]).map((p) => (Array.isArray(p) ? String(p[0]) : String(p)));
}

function sameState(a: StateMap, b: StateMap): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}
