// Reading rooms: state, members, /messages, /context, /event, relations, threads, with history
// visibility applied and bundled aggregations added.
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { EventsStore, EventRow } from '../storage/events-store.js';
import { num } from '../storage/rows.js';
import { parseStateKey, stateKey, type StateMap } from './event.js';
import { toClientEvent, type ClientEvent } from './client-event.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';
import type { Visibility, UserRoomStatus } from './visibility.js';
import { parsePageToken, topoToken } from './tokens.js';

export interface Viewer { userId: string; deviceId?: string }

export interface EventFilterSpec {
  types?: string[];
  not_types?: string[];
  senders?: string[];
  not_senders?: string[];
  contains_url?: boolean;
  lazy_load_members?: boolean;
  include_redundant_members?: boolean;
}

function globMatch(pattern: string, value: string): boolean {
  if (!pattern.includes('*')) return pattern === value;
  const re = new RegExp(`^${pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
  return re.test(value);
}

export function matchesEventFilter(ev: StoredEvent, f: EventFilterSpec | undefined): boolean {
  if (!f) return true;
  const t = ev.pdu.type;
  if (f.not_types?.some((p) => globMatch(p, t))) return false;
  if (f.types && !f.types.some((p) => globMatch(p, t))) return false;
  if (f.not_senders?.includes(ev.pdu.sender)) return false;
  if (f.senders && !f.senders.includes(ev.pdu.sender)) return false;
  if (f.contains_url !== undefined) {
    const has = typeof ev.pdu.content?.url === 'string';
    if (has !== f.contains_url) return false;
  }
  return true;
}

export class RoomReads {
  /** Users the viewer ignores (m.ignored_user_list): their non-state events are hidden from them. */
  ignoredUsers: ((userId: string) => Promise<ReadonlySet<string>>) | null = null;

  /** Fetches older history from other servers when a client pages past what we have (federation). */
  backfill: ((room: RoomInfo, limit: number) => Promise<number>) | null = null;

  constructor(private readonly data: RoomData, private readonly store: EventsStore, private readonly visibility: Visibility) {}

  async requireRoom(roomId: string): Promise<RoomInfo> {
    const room = await this.data.room(roomId);
    if (!room) throw forbidden('You are not in this room');
    return room;
  }

  /**
   * The state a user may read: the current state when joined (or world-readable), the state at
   * their leave when they left. Throws M_FORBIDDEN otherwise.
   */
  async readableState(viewer: Viewer, room: RoomInfo): Promise<StateMap> {
    const st = await this.visibility.status(room, viewer.userId);
    if (st.membership === 'join') return this.data.currentState(room);
    if (st.membership === 'leave' || st.membership === 'ban') {
      const m = await this.store.membership(room.nid, viewer.userId);
      const ev = m ? (await this.store.eventsByNids([m.event_nid]))[0] : undefined;
      if (ev && ev.state_group !== null) return this.data.stateOfGroup(ev.state_group);
    }
    if (await this.visibility.isWorldReadable(room)) return this.data.currentState(room);
    throw forbidden('You are not in this room');
  }

  async state(viewer: Viewer, roomId: string): Promise<ClientEvent[]> {
    const room = await this.requireRoom(roomId);
    const state = await this.readableState(viewer, room);
    return this.formatState(viewer, state);
  }

  async formatState(viewer: Viewer, state: StateMap, keys?: readonly string[]): Promise<ClientEvent[]> {
    const events = await this.data.stateEvents(state, keys);
    return this.format(viewer, [...events.values()]);
  }

  async stateEvent(viewer: Viewer, roomId: string, type: string, key: string): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    const state = await this.readableState(viewer, room);
    const ev = await this.data.stateEvent(state, type, key);
    if (!ev) throw notFound('Event not found');
    return ev;
  }

  async members(viewer: Viewer, roomId: string, opts: { membership?: string; notMembership?: string; at?: string }): Promise<ClientEvent[]> {
    const room = await this.requireRoom(roomId);
    let state = await this.readableState(viewer, room);
    if (opts.at) {
      const p = parsePageToken(opts.at);
      const ev = await this.store.lastEventAtOrBefore(room.nid, p.stream);
      if (ev && ev.state_group !== null) {
        const st = await this.visibility.status(room, viewer.userId);
        // The member list at a point the user may see (not later than their leave).
        if (st.membership === 'join' || (st.membershipStream !== undefined && num(ev.stream_ordering) <= st.membershipStream)) {
          state = await this.data.stateOfGroup(ev.state_group);
        }
      }
    }
    const keys = [...state.keys()].filter((k) => k.startsWith('m.room.member\u0000'));
    const events = [...(await this.data.stateEvents(state, keys)).values()].filter((e) => {
      const m = e.pdu.content?.membership;
      if (opts.membership && m !== opts.membership) return false;
      if (opts.notMembership && m === opts.notMembership) return false;
      return true;
    });
    return this.format(viewer, events);
  }

  async joinedMembers(viewer: Viewer, roomId: string): Promise<Record<string, { display_name?: string; avatar_url?: string }>> {
    const room = await this.requireRoom(roomId);
    const st = await this.visibility.status(room, viewer.userId);
    if (st.membership !== 'join' && !(await this.visibility.isWorldReadable(room))) throw forbidden('You are not in this room');
    const out: Record<string, { display_name?: string; avatar_url?: string }> = {};
    for (const m of await this.store.members(room.nid, ['join'])) {
      out[m.user_id] = { ...(m.displayname !== null ? { display_name: m.displayname } : {}), ...(m.avatar_url !== null ? { avatar_url: m.avatar_url } : {}) };
    }
    return out;
  }

  /**
   * An event of the room's timeline that clients may be given (before visibility): not an outlier,
   * not rejected, and not soft-failed (server-server API "Rejection", "Soft failure": neither is
   * relayed to clients), unless state resolution put a soft-failed event in the current state.
   */
  private async timelineEvent(room: RoomInfo, eventId: string): Promise<StoredEvent & { stream: number }> {
    const ev = await this.data.event(eventId);
    if (!ev || ev.roomNid !== room.nid || ev.outlier || ev.stream === null || ev.rejected) throw notFound('Event not found');
    if (ev.softFailed) {
      const key = typeof ev.pdu.state_key === 'string' ? stateKey(ev.pdu.type, ev.pdu.state_key) : undefined;
      if (!key || (await this.data.currentState(room)).get(key) !== ev.eventId) throw notFound('Event not found');
    }
    return ev as StoredEvent & { stream: number };
  }

  /** GET /rooms/{roomId}/event/{eventId} */
  async event(viewer: Viewer, roomId: string, eventId: string): Promise<ClientEvent> {
    const room = await this.requireRoom(roomId);
    const ev = await this.timelineEvent(room, eventId);
    const visible = await this.visibility.filter(viewer.userId, room, [ev]);
    if (!visible.length) throw notFound('Event not found');
    return (await this.format(viewer, visible))[0];
  }

  /** GET /rooms/{roomId}/messages */
  private async storedFromClient(ids: string[]): Promise<StoredEvent[]> {
    const m = await this.data.eventsMap(ids);
    return ids.map((id) => m.get(id)).filter((e): e is StoredEvent => !!e);
  }

  async messages(viewer: Viewer, roomId: string, opts: { from?: string; to?: string; dir: 'b' | 'f'; limit: number; filter?: EventFilterSpec; noBackfill?: boolean }): Promise<{ chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] }> {
    const room = await this.requireRoom(roomId);
    const st = await this.visibility.status(room, viewer.userId);
    if (!st.membership && !(await this.visibility.isWorldReadable(room))) throw forbidden('You are not in this room');
    let from: { depth: number; stream: number };
    if (opts.from) {
      const p = parsePageToken(opts.from);
      if (p.kind === 'topo') from = { depth: p.depth, stream: p.stream };
      else {
        const ev = await this.store.lastEventAtOrBefore(room.nid, p.stream);
        from = ev ? (opts.dir === 'b' ? { depth: num(ev.depth), stream: num(ev.stream_ordering) + 1 } : { depth: num(ev.depth), stream: num(ev.stream_ordering) }) : { depth: 0, stream: 0 };
      }
    } else {
      from = opts.dir === 'b' ? { depth: Number.MAX_SAFE_INTEGER, stream: Number.MAX_SAFE_INTEGER } : { depth: -Number.MAX_SAFE_INTEGER, stream: -Number.MAX_SAFE_INTEGER };
    }
    // A user who left sees nothing after their leave.
    const cap = st.membership === 'leave' || st.membership === 'ban' ? st.membershipStream : undefined;
    const to = opts.to ? parsePageToken(opts.to) : undefined;

    const ignored = this.ignoredUsers ? await this.ignoredUsers(viewer.userId) : new Set<string>();
    const chunk: StoredEvent[] = [];
    let cursor = from;
    let exhausted = false;
    // Read in batches until `limit` visible, matching events are found or the room is exhausted.
    for (let round = 0; round < 20 && chunk.length < opts.limit && !exhausted; round++) {
      const want = Math.max(opts.limit * 2, 20);
      const rows = await this.store.roomEventsTopological(room.nid, cursor, opts.dir, want);
      if (rows.length < want) exhausted = true;
      if (!rows.length) break;
      const last = rows[rows.length - 1];
      cursor = { depth: num(last.depth), stream: num(last.stream_ordering) };
      let batch = await this.data.fromRows(rows.filter((r) => !beyond(r, to, opts.dir) && (cap === undefined || num(r.stream_ordering) <= cap)));
      if (batch.length < rows.length) exhausted = true;
      batch = batch.filter((e) => !e.softFailed && !e.rejected);
      batch = await this.visibility.filter(viewer.userId, room, batch, st);
      if (ignored.size) batch = batch.filter((e) => typeof e.pdu.state_key === 'string' || !ignored.has(e.pdu.sender));
      for (const e of batch) {
        if (!matchesEventFilter(e, opts.filter)) continue;
        chunk.push(e);
        if (chunk.length >= opts.limit) {
          cursor = { depth: e.depth, stream: e.stream! };
          exhausted = false;
          break;
        }
      }
    }
    if (exhausted && opts.dir === 'b' && chunk.length < opts.limit && !room.isLocal && this.backfill && !opts.noBackfill) {
      // Paged past the oldest event we have in a room joined from elsewhere: fetch older history, then
      // read on from where we stopped.
      const added = await this.backfill(room, Math.max(opts.limit - chunk.length, 10)).catch(() => 0);
      if (added) {
        const more = await this.messages(viewer, roomId, { ...opts, from: topoToken(cursor.depth, cursor.stream), limit: opts.limit - chunk.length, noBackfill: true });
        const rest = await this.storedFromClient(more.chunk.map((e) => e.event_id));
        chunk.push(...rest);
        if (more.end) {
          const last = rest[rest.length - 1];
          if (last) cursor = { depth: last.depth, stream: last.stream! };
          exhausted = false;
        }
      }
    }
    const start = opts.from ?? topoToken(from.depth, from.stream);
    const res: { chunk: ClientEvent[]; start: string; end?: string; state?: ClientEvent[] } = {
      chunk: await this.format(viewer, chunk),
      start,
    };
    if (!exhausted || chunk.length >= opts.limit) res.end = topoToken(cursor.depth, cursor.stream);
    if (opts.filter?.lazy_load_members) res.state = await this.lazyMembers(viewer, room, chunk);
    return res;
  }

  /** Member events of the senders of `events`, for lazy-loading clients. */
  async lazyMembers(viewer: Viewer, room: RoomInfo, events: readonly StoredEvent[]): Promise<ClientEvent[]> {
    const senders = new Set(events.map((e) => e.pdu.sender));
    if (!senders.size) return [];
    const state = await this.data.currentState(room);
    return this.formatState(viewer, state, [...senders].map((s) => stateKey('m.room.member', s)));
  }

  /** GET /rooms/{roomId}/context/{eventId} */
  async context(viewer: Viewer, roomId: string, eventId: string, limit: number, filter?: EventFilterSpec) {
    const room = await this.requireRoom(roomId);
    const ev = await this.timelineEvent(room, eventId);
    const st = await this.visibility.status(room, viewer.userId);
    if (!(await this.visibility.filter(viewer.userId, room, [ev], st)).length) throw notFound('Event not found');
    const before = Math.floor(limit / 2);
    const after = limit - before;
    const b = await this.messages(viewer, roomId, { from: topoToken(ev.depth, ev.stream), dir: 'b', limit: before, filter });
    const f = await this.messages(viewer, roomId, { from: topoToken(ev.depth, ev.stream), dir: 'f', limit: after, filter });
    const stateAt = ev.stateGroup !== null ? await this.data.stateOfGroup(ev.stateGroup) : new Map();
    let state: ClientEvent[];
    if (filter?.lazy_load_members) {
      const senders = new Set([ev.pdu.sender, ...b.chunk.map((e) => e.sender), ...f.chunk.map((e) => e.sender)]);
      const keys = [...stateAt.keys()].filter((k) => !k.startsWith('m.room.member\u0000') || senders.has(parseStateKey(k)[1]));
      state = await this.formatState(viewer, stateAt, keys);
    } else {
      state = await this.formatState(viewer, stateAt);
    }
    return {
      event: (await this.format(viewer, [ev]))[0],
      events_before: b.chunk,
      events_after: f.chunk,
      start: b.end ?? topoToken(ev.depth, ev.stream),
      end: f.end ?? topoToken(ev.depth, ev.stream),
      state,
    };
  }

  /** GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] */
  async relations(viewer: Viewer, roomId: string, eventId: string, opts: { relType?: string; eventType?: string; from?: string; dir: 'b' | 'f'; limit: number; recurse?: boolean }) {
    const room = await this.requireRoom(roomId);
    const parent = await this.data.event(eventId);
    if (!parent || parent.roomNid !== room.nid) throw notFound('Event not found');
    const st = await this.visibility.status(room, viewer.userId);
    if (!(await this.visibility.filter(viewer.userId, room, [parent], st)).length) throw notFound('Event not found');
    let fromStream: number | undefined;
    if (opts.from) {
      const m = /^r(\d+)$/.exec(opts.from);
      if (m) fromStream = Number(m[1]);
      else fromStream = parsePageToken(opts.from).stream;
    }
    const rows = await this.store.relationsOf(eventId, { relType: opts.relType, eventType: opts.eventType, from: fromStream, dir: opts.dir, limit: opts.limit + 1 });
    let events = await this.data.fromRows(rows.slice(0, opts.limit));
    if (opts.recurse) {
      // Recursion (spec v1.10): relations of relations, up to a few levels, merged in order.
      const seen = new Set(events.map((e) => e.eventId));
      let frontier = events;
      for (let depth = 0; depth < 3 && frontier.length; depth++) {
        const next: StoredEvent[] = [];
        for (const e of frontier) {
          const more = await this.data.fromRows(await this.store.relationsOf(e.eventId, { relType: opts.relType, eventType: opts.eventType, dir: opts.dir, limit: opts.limit }));
          for (const m of more) if (!seen.has(m.eventId)) {
            seen.add(m.eventId);
            next.push(m);
          }
        }
        events = events.concat(next);
        frontier = next;
      }
      events.sort((a, b) => (opts.dir === 'b' ? b.stream! - a.stream! : a.stream! - b.stream!));
      events = events.slice(0, opts.limit);
    }
    const visible = await this.visibility.filter(viewer.userId, room, events, st);
    const res: { chunk: ClientEvent[]; next_batch?: string; recursion_depth?: number } = { chunk: await this.format(viewer, visible) };
    if (rows.length > opts.limit) res.next_batch = `r${events[events.length - 1].stream}`;
    if (opts.recurse) res.recursion_depth = 3;
    return res;
  }

  /**
   * GET /rooms/{roomId}/timestamp_to_event (v1): the event nearest `ts` in direction `dir` that the
   * user may see. Members and, for world-readable rooms, anyone may ask.
   */
  async timestampToEvent(viewer: Viewer, roomId: string, ts: number, dir: 'f' | 'b'): Promise<{ event_id: string; origin_server_ts: number }> {
    const room = await this.requireRoom(roomId);
    const st = await this.visibility.status(room, viewer.userId);
    if (!st.membership && !(await this.visibility.isWorldReadable(room))) throw forbidden('You are not in this room');
    let after: { ts: number; stream: number } | undefined;
    for (let round = 0; round < 20; round++) {
      const rows = await this.store.eventsNearTs(room.nid, ts, dir, 50, after);
      if (!rows.length) break;
      const visible = await this.visibility.filter(viewer.userId, room, await this.data.fromRows(rows), st);
      if (visible.length) return { event_id: visible[0].eventId, origin_server_ts: visible[0].pdu.origin_server_ts };
      const last = rows[rows.length - 1];
      after = { ts: num(last.origin_server_ts), stream: num(last.stream_ordering) };
      if (rows.length < 50) break;
    }
    throw notFound(`Unable to find event from ${ts} in ${dir === 'f' ? 'forward' : 'backward'} direction`);
  }

  /** GET /rooms/{roomId}/threads */
  async threads(viewer: Viewer, roomId: string, opts: { include: 'all' | 'participated'; from?: string; limit: number }) {
    const room = await this.requireRoom(roomId);
    const st = await this.visibility.status(room, viewer.userId);
    if (!st.membership && !(await this.visibility.isWorldReadable(room))) throw forbidden('You are not in this room');
    const from = opts.from ? Number(/^th(\d+)$/.exec(opts.from)?.[1] ?? NaN) : undefined;
    if (from !== undefined && Number.isNaN(from)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid from token');
    const roots = await this.store.threadRoots(room.nid, { from, limit: opts.limit + 1, participatedBy: opts.include === 'participated' ? viewer.userId : undefined });
    const page = roots.slice(0, opts.limit);
    const evs = await this.data.eventsMap(page.map((r) => r.relates_to));
    const ordered = page.map((r) => evs.get(r.relates_to)).filter((e): e is StoredEvent => !!e);
    const visible = await this.visibility.filter(viewer.userId, room, ordered, st);
    const res: { chunk: ClientEvent[]; next_batch?: string } = { chunk: await this.format(viewer, visible) };
    if (roots.length > opts.limit) res.next_batch = `th${num(page[page.length - 1].last)}`;
    return res;
  }

  /**
   * Formats events for a client: prev_content, redacted_because, bundled aggregations.
   */
  async format(viewer: Viewer, events: readonly StoredEvent[]): Promise<ClientEvent[]> {
    if (!events.length) return [];
    const now = Date.now();
    const extra = new Set<string>();
    for (const e of events) {
      if (e.replacesState) extra.add(e.replacesState);
      if (e.redactedBy) extra.add(e.redactedBy);
    }
    const related = extra.size ? await this.data.eventsMap(extra) : new Map<string, StoredEvent>();
    const aggregations = await this.aggregations(viewer, events.filter((e) => !e.redactedBy));
    return events.map((e) => {
      const redaction = e.redactedBy ? related.get(e.redactedBy) : undefined;
      return toClientEvent(e, {
        userId: viewer.userId,
        deviceId: viewer.deviceId,
        now,
        prevContent: e.replacesState ? related.get(e.replacesState)?.pdu.content : undefined,
        redactedBecause: redaction ? toClientEvent(redaction, { now }) : undefined,
        relations: aggregations.get(e.eventId),
      });
    });
  }

  /** Bundled aggregations (spec: "Aggregations of child events"): m.thread, m.replace, m.reference. */
  private async aggregations(viewer: Viewer, events: readonly StoredEvent[]): Promise<Map<string, Record<string, unknown>>> {
    const out = new Map<string, Record<string, unknown>>();
    if (!events.length) return out;
    const summaries = await this.store.relationSummaries(events.map((e) => e.eventId));
    if (!summaries.length) return out;
    const byParent = new Map<string, typeof summaries>();
    for (const s of summaries) {
      const l = byParent.get(s.relates_to);
      if (l) l.push(s);
      else byParent.set(s.relates_to, [s]);
    }
    for (const [parentId, list] of byParent) {
      const parent = events.find((e) => e.eventId === parentId)!;
      const rel: Record<string, unknown> = {};
      const thread = list.filter((s) => s.rel_type === 'm.thread');
      if (thread.length) {
        const count = thread.reduce((n, s) => n + Number(s.n), 0);
        const latestRows = await this.store.relationsOf(parentId, { relType: 'm.thread', dir: 'b', limit: 1 });
        const latest = (await this.data.fromRows(latestRows))[0];
        const participated = parent.pdu.sender === viewer.userId ||
          (await this.store.relationsOf(parentId, { relType: 'm.thread', dir: 'b', limit: 1000 })).some((r) => r.sender === viewer.userId);
        rel['m.thread'] = {
          latest_event: latest ? toClientEvent(latest, { userId: viewer.userId, deviceId: viewer.deviceId }) : undefined,
          count,
          current_user_participated: participated,
        };
      }
      if (list.some((s) => s.rel_type === 'm.replace')) {
        // The most recent valid edit: same sender and type as the original (spec: "Event replacements").
        const edits = await this.data.fromRows(await this.store.relationsOf(parentId, { relType: 'm.replace', dir: 'b', limit: 50 }));
        const latest = edits.find((e) => e.pdu.sender === parent.pdu.sender && e.pdu.type === parent.pdu.type && typeof parent.pdu.state_key !== 'string');
        if (latest) rel['m.replace'] = toClientEvent(latest, { userId: viewer.userId, deviceId: viewer.deviceId });
      }
      if (list.some((s) => s.rel_type === 'm.reference')) {
        const refs = await this.store.relationsOf(parentId, { relType: 'm.reference', dir: 'f', limit: 100 });
        rel['m.reference'] = { chunk: refs.map((r: EventRow) => ({ event_id: r.event_id })) };
      }
      if (Object.keys(rel).length) out.set(parentId, rel);
    }
    return out;
  }
}

function beyond(row: EventRow, to: ReturnType<typeof parsePageToken> | undefined, dir: 'b' | 'f'): boolean {
  if (!to) return false;
  const depth = num(row.depth);
  const stream = num(row.stream_ordering);
  if (to.kind === 'stream') return dir === 'b' ? stream <= to.stream : stream > to.stream;
  if (dir === 'b') return depth < to.depth || (depth === to.depth && stream < to.stream);
  return depth > to.depth || (depth === to.depth && stream >= to.stream);
}
