// GET /sync: builds the response from the streams between `since` and the current positions, and
// parks the request until something the user may see changes.
import type { EventsStore } from '../storage/events-store.js';
import type { SyncStore, ReceiptRow } from '../storage/sync-store.js';
import type { AccountDataStore } from '../storage/account-data-store.js';
import { num } from '../storage/rows.js';
import type { RoomData, RoomInfo, StoredEvent } from '../rooms/room-data.js';
import type { RoomReads } from '../rooms/room-reads.js';
import type { Visibility } from '../rooms/visibility.js';
import { parseStateKey, stateKey, type StateMap } from '../rooms/event.js';
import { strippedState, type ClientEvent } from '../rooms/client-event.js';
import { topoToken } from '../rooms/tokens.js';
import { applyEventFields, passesFilter, roomAllowed, type Filter, type RoomEventFilter } from './filters.js';
import { formatSyncToken, parseSyncToken, SYNC_STREAMS, tokenEquals, type SyncToken } from './token.js';
import type { SyncWaiter } from './waiter.js';

export interface ReadUpTo { unthreaded?: number; main?: number; threads: Record<string, number> }

/** What other areas contribute to /sync (E2EE, push); wired in main.ts. */
export interface SyncExtensions {
  toDevice?(userId: string, deviceId: string, since: number, upTo: number, limit: number): Promise<{ events: unknown[]; position: number }>;
  ackToDevice?(userId: string, deviceId: string, upTo: number): Promise<void>;
  deviceListChanges?(since: number, upTo: number): Promise<string[]>;
  oneTimeKeyCounts?(userId: string, deviceId: string): Promise<Record<string, number>>;
  unusedFallbackKeyTypes?(userId: string, deviceId: string): Promise<string[]>;
  unreadCounts?(userId: string, roomNid: number, readUpTo: ReadUpTo): Promise<{ notification_count: number; highlight_count: number; threads: Record<string, { notification_count: number; highlight_count: number }> }>;
  pushRulesChanged?(userId: string, since: number, upTo: number): Promise<boolean>;
  pushRules?(userId: string): Promise<unknown>;
  /** Called when a device syncs (presence: set_presence). */
  onSync?(userId: string, setPresence: string): Promise<void>;
  presenceEnabled?: boolean;
}

export interface SyncRequest {
  userId: string;
  deviceId: string;
  since?: string;
  timeoutMs: number;
  fullState: boolean;
  filter: Filter;
  setPresence: 'online' | 'offline' | 'unavailable';
  useStateAfter: boolean;
  /**
   * The field state_after is sent in: `state_after` (spec v1.16) or, when the client asked with
   * MSC4222's unstable `org.matrix.msc4222.use_state_after`, `org.matrix.msc4222.state_after`
   * (which is what such a client reads). Default `state_after`.
   */
  stateAfterField?: 'state_after' | 'org.matrix.msc4222.state_after';
  signal?: AbortSignal;
  /** The user's ignored users, read once per request. */
  ignored?: Promise<ReadonlySet<string>>;
}

interface Membership { room: RoomInfo; membership: string; stream: number; eventNid: number; forgotten: boolean }

const DEFAULT_TIMELINE_LIMIT = 10;
const TO_DEVICE_LIMIT = 100;

export class SyncService {
  private readonly userRooms = new Map<string, Set<string>>();
  ext: SyncExtensions = {};

  constructor(
    private readonly data: RoomData,
    private readonly events: EventsStore,
    private readonly syncStore: SyncStore,
    private readonly accountData: AccountDataStore,
    private readonly reads: RoomReads,
    private readonly visibility: Visibility,
    private readonly waiter: SyncWaiter,
  ) {
    waiter.onMembershipChange = (users) => {
      for (const u of users) this.userRooms.delete(u);
    };
    waiter.sharedRoomsOf = async (u) => [...(await this.roomsForWake(u))];
  }

  /** Rooms whose changes should wake this user's long-poll (joined, invited, knocked). */
  private async roomsForWake(userId: string): Promise<Set<string>> {
    let set = this.userRooms.get(userId);
    if (!set) {
      const rows = await this.events.roomsOfUser(userId, ['join', 'invite', 'knock']);
      set = new Set(rows.map((r: { room_id: string }) => r.room_id));
      this.userRooms.set(userId, set);
      if (this.userRooms.size > 100_000) this.userRooms.clear();
    }
    return set;
  }

  async sync(req: SyncRequest): Promise<Record<string, unknown>> {
    const since = req.since ? parseSyncToken(req.since) : undefined;
    if (since) {
      for (const s of SYNC_STREAMS) {
        if (since[s] > this.waiter.current[s] + 1_000_000) throw new Error('token from the future');
      }
    }
    if (this.ext.onSync) await this.ext.onSync(req.userId, req.setPresence);
    if (since && !req.fullState && req.timeoutMs > 0) {
      const rooms = await this.roomsForWake(req.userId);
      // Only park when nothing is pending for this user; the build below decides, so try once first.
      const deadline = Date.now() + req.timeoutMs;
      let snapshot = { ...this.waiter.current };
      // Nothing has moved since the client's token: park without reading anything.
      let res = tokenEquals(since, snapshot) ? null : await this.build(req, since, snapshot);
      if (res) return res;
      while (Date.now() < deadline && !req.signal?.aborted) {
        // Anything committed while we were building moved `current`: look again before parking
        // (no await between this check and parking, so no wake-up can slip through).
        if (tokenEquals(snapshot, this.waiter.current)) {
          const woken = await this.waiter.wait(req.userId, rooms, deadline - Date.now(), req.signal);
          if (!woken) break;
        }
        snapshot = { ...this.waiter.current };
        res = await this.build(req, since, snapshot);
        if (res) return res;
      }
      // Up to what was examined, not `current`: a later change must not be skipped.
      return this.emptyResponse(req, since, snapshot);
    }
    return (await this.build(req, since, { ...this.waiter.current }, true))!;
  }

  private async emptyResponse(req: SyncRequest, since: SyncToken, upTo: SyncToken): Promise<Record<string, unknown>> {
    const next = { ...upTo };
    next.to_device = since.to_device; // nothing delivered: keep the client's to-device position
    const res: Record<string, unknown> = { next_batch: formatSyncToken(next), rooms: { join: {}, invite: {}, leave: {}, knock: {} }, account_data: { events: [] }, presence: { events: [] }, to_device: { events: [] }, device_lists: { changed: [], left: [] } };
    await this.addKeyCounts(req, res);
    return res;
  }

  /**
   * Every response carries the device's key counts: claims by others move no stream, so a long-poll
   * that times out is how a client learns that its one-time keys ran out or its fallback key was used.
   */
  private async addKeyCounts(req: SyncRequest, res: Record<string, unknown>): Promise<void> {
    if (this.ext.oneTimeKeyCounts) res.device_one_time_keys_count = await this.ext.oneTimeKeyCounts(req.userId, req.deviceId);
    if (this.ext.unusedFallbackKeyTypes) res.device_unused_fallback_key_types = await this.ext.unusedFallbackKeyTypes(req.userId, req.deviceId);
  }

  /**
   * Builds the response for (since, upTo]. Returns null when an incremental sync has nothing to
   * say (the caller then waits), unless `force`.
   */
  private async build(req: SyncRequest, since: SyncToken | undefined, upTo: SyncToken, force = false): Promise<Record<string, unknown> | null> {
    const initial = !since || req.fullState;
    const from = since ?? (Object.fromEntries(SYNC_STREAMS.map((s) => [s, 0])) as SyncToken);
    const filter = req.filter;
    const roomFilter = filter.room ?? {};
    const memberships = await this.memberships(req.userId);
    let hasContent = false;

    const join: Record<string, unknown> = {};
    const invite: Record<string, unknown> = {};
    const knock: Record<string, unknown> = {};
    const leave: Record<string, unknown> = {};

    const joined = memberships.filter((m) => m.membership === 'join' && roomAllowed(roomFilter, m.room.roomId));
    const joinedNids = joined.map((m) => m.room.nid);

    // Which joined rooms have anything new.
    const changedRooms = new Set<number>();
    if (!initial) {
      for (const nid of await this.events.roomsWithEventsBetween(joinedNids, from.events, upTo.events)) changedRooms.add(nid);
    }
    const receiptRows = upTo.receipts > from.receipts || initial ? await this.syncStore.receiptsBetween(joinedNids, initial ? 0 : from.receipts, upTo.receipts) : [];
    const typingRooms = upTo.typing > from.typing || initial ? new Set(await this.syncStore.typingRoomsChanged(joinedNids, initial ? 0 : from.typing, upTo.typing)) : new Set<number>();
    const typingUsers = typingRooms.size ? await this.syncStore.typingUsers([...typingRooms], Date.now()) : [];
    const adRows = upTo.account_data > from.account_data || initial ? await this.accountData.changedSince(req.userId, initial ? 0 : from.account_data, upTo.account_data) : [];
    const roomAd = new Map<string, { type: string; content: unknown }[]>();
    const globalAd: { type: string; content: unknown }[] = [];
    for (const r of adRows) {
      const ev = { type: r.type, content: JSON.parse(r.content) };
      if (!r.room_id) {
        if (passesFilter(filter.account_data, { type: r.type })) globalAd.push(ev);
      } else {
        const list = roomAd.get(r.room_id);
        if (list) list.push(ev);
        else roomAd.set(r.room_id, [ev]);
      }
    }
    const myReceipts = joinedNids.length && this.ext.unreadCounts ? await this.syncStore.receiptsOfUser(req.userId, joinedNids) : [];

    for (const m of joined) {
      const room = m.room;
      const newlyJoined = !initial && m.stream > from.events;
      const fullRoom = initial || newlyJoined;
      const hasEvents = fullRoom || changedRooms.has(room.nid);
      const receipts = receiptRows.filter((r) => r.room_nid === room.nid);
      const typing = typingRooms.has(room.nid);
      const ad = roomAd.get(room.roomId) ?? [];
      if (!hasEvents && !receipts.length && !typing && !ad.length && !initial) continue;

      const section: Record<string, unknown> = {};
      if (hasEvents) {
        const tl = await this.timeline(req, room, fullRoom ? 0 : from.events, upTo.events, roomFilter.timeline, fullRoom);
        section.timeline = { events: tl.events, limited: tl.limited, prev_batch: tl.prevBatch };
        const stateEvents = await this.roomState(req, room, tl, fullRoom ? undefined : from.events, upTo.events, roomFilter.state);
        section[stateField(req)] = { events: stateEvents };
        if (tl.events.length || stateEvents.length || fullRoom) hasContent = true;
        if (fullRoom || tl.memberChanged) section.summary = await this.summary(room, req.userId);
      } else {
        section.timeline = { events: [], limited: false, prev_batch: formatSyncToken(upTo) };
        section[stateField(req)] = { events: [] };
      }
      const ephemeral: Record<string, unknown>[] = [];
      if (typing && passesFilter(roomFilter.ephemeral, { type: 'm.typing' })) {
        ephemeral.push({ type: 'm.typing', content: { user_ids: typingUsers.filter((t) => t.room_nid === room.nid).map((t) => t.user_id) } });
      }
      if (receipts.length && passesFilter(roomFilter.ephemeral, { type: 'm.receipt' })) {
        const content = receiptContent(receipts, req.userId);
        if (Object.keys(content).length) ephemeral.push({ type: 'm.receipt', content });
      }
      section.ephemeral = { events: ephemeral };
      section.account_data = { events: ad.filter((e) => passesFilter(roomFilter.account_data, { type: e.type })) };
      if (ephemeral.length || ad.length) hasContent = true;
      if (this.ext.unreadCounts) {
        const counts = await this.ext.unreadCounts(req.userId, room.nid, readUpTo(myReceipts.filter((r) => r.room_nid === room.nid)));
        section.unread_notifications = { notification_count: counts.notification_count, highlight_count: counts.highlight_count };
        if (roomFilter.timeline?.unread_thread_notifications) section.unread_thread_notifications = counts.threads;
      } else {
        section.unread_notifications = { notification_count: 0, highlight_count: 0 };
      }
      join[room.roomId] = section;
    }

    for (const m of memberships) {
      if (!roomAllowed(roomFilter, m.room.roomId)) continue;
      const changed = initial || m.stream > from.events;
      if (!changed) continue;
      if (m.membership === 'invite' || m.membership === 'knock') {
        const ev = (await this.data.fromRows(await this.events.eventsByNids([m.eventNid])))[0];
        if (!ev) continue;
        // Invites from ignored users are not shown.
        if (m.membership === 'invite' && (await (req.ignored ??= this.ignoredUsers(req.userId))).has(ev.pdu.sender)) continue;
        const stateKeys = ['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'].map((t) => stateKey(t, ''));
        stateKeys.push(stateKey('m.room.member', ev.pdu.sender));
        let stripped: unknown[];
        if (ev.outlier) {
          // An invite to a room this server is not in: the inviting server sent the stripped state.
          stripped = ((await this.syncStore.remoteInviteState(m.room.nid, req.userId)) ?? []).filter((e) => (e as { type?: string }).type !== 'm.room.member' || (e as { state_key?: string }).state_key !== req.userId);
        } else {
          const state = await this.data.stateOfGroup(ev.stateGroup);
          stripped = [...(await this.data.stateEvents(state, stateKeys)).values()].filter((e) => e.eventId !== ev.eventId).map(strippedState);
        }
        stripped.push(strippedState(ev));
        if (m.membership === 'invite') invite[m.room.roomId] = { invite_state: { events: stripped } };
        else knock[m.room.roomId] = { knock_state: { events: stripped } };
        hasContent = true;
      } else if ((m.membership === 'leave' || m.membership === 'ban') && !m.forgotten) {
        if (initial && !roomFilter.include_leave) continue;
        if (!initial && since && m.stream <= from.events) continue;
        const tl = await this.timeline(req, m.room, initial ? 0 : from.events, m.stream, roomFilter.timeline, initial);
        const stateEvents = await this.roomState(req, m.room, tl, initial ? undefined : from.events, m.stream, roomFilter.state);
        leave[m.room.roomId] = {
          timeline: { events: tl.events, limited: tl.limited, prev_batch: tl.prevBatch },
          [stateField(req)]: { events: stateEvents },
          account_data: { events: roomAd.get(m.room.roomId) ?? [] },
        };
        hasContent = true;
      }
    }

    // Top level.
    const accountData = globalAd;
    if (this.ext.pushRulesChanged && this.ext.pushRules && (initial || (upTo.push_rules > from.push_rules && (await this.ext.pushRulesChanged(req.userId, from.push_rules, upTo.push_rules))))) {
      if (passesFilter(filter.account_data, { type: 'm.push_rules' })) accountData.push({ type: 'm.push_rules', content: await this.ext.pushRules(req.userId) });
    }
    if (accountData.length) hasContent = true;

    const presence = await this.presence(req.userId, joinedNids, initial ? 0 : from.presence, upTo.presence, filter);
    if (presence.length) hasContent = true;

    const next = { ...upTo };
    let toDevice: unknown[] = [];
    if (this.ext.toDevice) {
      if (since && this.ext.ackToDevice) await this.ext.ackToDevice(req.userId, req.deviceId, since.to_device);
      const td = await this.ext.toDevice(req.userId, req.deviceId, since?.to_device ?? 0, upTo.to_device, TO_DEVICE_LIMIT);
      toDevice = td.events;
      next.to_device = td.position;
      if (toDevice.length) hasContent = true;
    }

    const deviceLists = await this.deviceLists(req.userId, memberships, from, upTo, initial);
    if (deviceLists.changed.length || deviceLists.left.length) hasContent = true;

    if (!hasContent && !force && !initial) return null;

    const res: Record<string, unknown> = {
      next_batch: formatSyncToken(next),
      rooms: { join, invite, leave, knock },
      account_data: { events: accountData },
      presence: { events: presence },
      to_device: { events: toDevice },
      device_lists: deviceLists,
    };
    await this.addKeyCounts(req, res);
    return res;
  }

  private async memberships(userId: string): Promise<Membership[]> {
    const rows = await this.events.roomsOfUser(userId, ['join', 'invite', 'knock', 'leave', 'ban']);
    const out: Membership[] = [];
    for (const r of rows) {
      const room = await this.data.room(r.room_id);
      if (!room) continue;
      out.push({ room, membership: r.membership, stream: num(r.stream_ordering), eventNid: r.event_nid, forgotten: r.forgotten === true || r.forgotten === 1 });
    }
    return out;
  }

  /** The timeline of one room between two stream positions (newest `limit` events, oldest first). */
  private async timeline(req: SyncRequest, room: RoomInfo, from: number, to: number, f: RoomEventFilter | undefined, initial: boolean) {
    const limit = Math.min(f?.limit ?? DEFAULT_TIMELINE_LIMIT, 1000);
    const ignored = await (req.ignored ??= this.ignoredUsers(req.userId));
    const status = await this.visibility.status(room, req.userId);
    const picked: StoredEvent[] = [];
    let cursor = to;
    let limited = false;
    let exhausted = false;
    for (let round = 0; round < 10 && !exhausted; round++) {
      const want = Math.max(limit + 1, 20);
      const rows = await this.events.roomEventsBetween(room.nid, from, cursor, want);
      if (rows.length < want) exhausted = true;
      if (!rows.length) break;
      cursor = num(rows[rows.length - 1].stream_ordering) - 1;
      let batch = (await this.data.fromRows(rows)).filter((e) => !e.softFailed && !e.rejected && !e.outlier);
      batch = await this.visibility.filter(req.userId, room, batch, status);
      // Ignored users' messages stay hidden (spec: "Ignoring Users"); state is kept so rooms stay coherent.
      if (ignored.size) batch = batch.filter((e) => typeof e.pdu.state_key === 'string' || !ignored.has(e.pdu.sender));
      for (const e of batch) {
        if (!passesFilter(f, { type: e.pdu.type, sender: e.pdu.sender, content: e.pdu.content })) continue;
        if (picked.length === limit) {
          limited = true;
          exhausted = true;
          break;
        }
        picked.push(e);
      }
    }
    if (initial && !limited && picked.length) {
      // An initial sync is limited when there is older history than what we return.
      const oldest = picked[picked.length - 1];
      limited = !!(await this.events.roomEventsBetween(room.nid, 0, oldest.stream! - 1, 1)).length;
    }
    picked.reverse();
    const formatted = await this.reads.format({ userId: req.userId, deviceId: req.deviceId }, picked);
    const events = formatted.map((e) => applyEventFields(e as unknown as Record<string, unknown>, req.filter.event_fields));
    const first = picked[0];
    const prevBatch = first ? topoToken(first.depth, first.stream!) : formatSyncToken({ ...Object.fromEntries(SYNC_STREAMS.map((s) => [s, 0])), events: to } as SyncToken);
    const memberChanged = picked.some((e) => e.pdu.type === 'm.room.member');
    return { events, stored: picked, limited, prevBatch, memberChanged, from, to };
  }

  /**
   * The state section: the full state at the start of the timeline for an initial (or newly
   * joined, or full_state) sync; for an incremental limited sync, what changed between `since` and
   * the start of the timeline. With use_state_after, the state at the end of the timeline instead.
   */
  private async roomState(req: SyncRequest, room: RoomInfo, tl: { stored: StoredEvent[]; limited: boolean; to: number }, since: number | undefined, upTo: number, f: RoomEventFilter | undefined): Promise<ClientEvent[]> {
    // An incremental, unlimited timeline carries every state change itself.
    if (since !== undefined && !req.fullState && !tl.limited && !req.useStateAfter) return [];
    let target: StateMap;
    if (req.useStateAfter) {
      const last = tl.stored[tl.stored.length - 1];
      target = last ? await this.data.stateOfGroup(last.stateGroup) : await this.stateAtStream(room, upTo);
    } else if (tl.stored.length) {
      // The state before the first timeline event (for a room joined over federation, the state
      // the resident server gave: no earlier event of the room is in this server's stream).
      target = await this.data.stateBeforeEvent(tl.stored[0]);
    } else {
      target = await this.stateAtStream(room, upTo);
    }
    let keys: string[];
    if (since === undefined || req.fullState) {
      keys = [...target.keys()];
    } else {
      if (!tl.limited && !req.useStateAfter) return [];
      const before = await this.stateAtStream(room, since);
      keys = [...target.keys()].filter((k) => before.get(k) !== target.get(k));
      if (req.useStateAfter) {
        // state_after carries the changes not already visible in the timeline... and the timeline's
        // own state events are part of it too; clients apply state_after last.
        keys = [...target.keys()].filter((k) => before.get(k) !== target.get(k));
      }
    }
    const timelineIds = new Set(tl.stored.map((e) => e.eventId));
    if (f?.lazy_load_members) {
      const senders = new Set(tl.stored.map((e) => e.pdu.sender));
      senders.add(req.userId);
      keys = keys.filter((k) => {
        if (!k.startsWith('m.room.member\u0000')) return true;
        return senders.has(parseStateKey(k)[1]);
      });
      // Members of timeline senders that did not change still need to be sent for lazy loading.
      for (const s of senders) {
        const k = stateKey('m.room.member', s);
        if (target.has(k) && !keys.includes(k)) keys.push(k);
      }
    }
    const events = [...(await this.data.stateEvents(target, keys)).values()]
      .filter((e) => req.useStateAfter || !timelineIds.has(e.eventId))
      .filter((e) => passesFilter(f, { type: e.pdu.type, sender: e.pdu.sender, content: e.pdu.content }));
    const formatted = await this.reads.format({ userId: req.userId, deviceId: req.deviceId }, events);
    return formatted.map((e) => applyEventFields(e as unknown as Record<string, unknown>, req.filter.event_fields) as unknown as ClientEvent);
  }

  private async stateAtStream(room: RoomInfo, stream: number): Promise<StateMap> {
    const ev = await this.events.lastEventAtOrBefore(room.nid, stream);
    return ev ? this.data.stateOfGroup(ev.state_group) : new Map();
  }

  /** m.heroes and member counts (spec: "Room summary"). */
  private async summary(room: RoomInfo, userId: string): Promise<Record<string, unknown>> {
    const members = await this.events.members(room.nid, ['join', 'invite', 'leave', 'ban']);
    let joined = 0;
    let invited = 0;
    for (const m of members) {
      if (m.membership === 'join') joined++;
      else if (m.membership === 'invite') invited++;
    }
    const current = members.filter((m) => (m.membership === 'join' || m.membership === 'invite') && m.user_id !== userId);
    const pool = current.length ? current : members.filter((m) => m.user_id !== userId);
    pool.sort((a, b) => num(a.stream_ordering) - num(b.stream_ordering));
    return {
      'm.heroes': pool.slice(0, 5).map((m) => m.user_id),
      'm.joined_member_count': joined,
      'm.invited_member_count': invited,
    };
  }

  private async presence(userId: string, roomNids: number[], from: number, to: number, filter: Filter): Promise<Record<string, unknown>[]> {
    if (this.ext.presenceEnabled === false || (to <= from && from !== 0)) return [];
    const peers = new Set<string>([userId]);
    for (const nid of roomNids) for (const m of await this.events.members(nid, ['join'])) peers.add(m.user_id);
    const rows = await this.syncStore.presenceChanged([...peers], from, to);
    const now = Date.now();
    return rows
      .filter((p) => passesFilter(filter.presence, { type: 'm.presence', sender: p.user_id }))
      .map((p) => ({
        type: 'm.presence',
        sender: p.user_id,
        content: {
          presence: p.state,
          last_active_ago: Math.max(0, now - num(p.last_active_ts)),
          currently_active: p.currently_active === true || p.currently_active === 1,
          ...(p.status_msg !== null ? { status_msg: p.status_msg } : {}),
        },
      }))
      .slice(0, filter.presence?.limit ?? 1000);
  }

  /** device_lists.changed / left (spec: "Tracking the device list for a user"). */
  private async deviceLists(userId: string, memberships: Membership[], from: SyncToken, upTo: SyncToken, initial: boolean): Promise<{ changed: string[]; left: string[] }> {
    if (initial) return { changed: [], left: [] };
    // Nothing that could change device lists moved: no need to look at members at all.
    if (upTo.device_lists <= from.device_lists && upTo.events <= from.events) return { changed: [], left: [] };
    const peers = new Set<string>();
    for (const m of memberships) {
      if (m.membership !== 'join') continue;
      for (const j of await this.data.joinedMembers(m.room)) peers.add(j.user_id);
    }
    const changed = new Set<string>();
    if (this.ext.deviceListChanges && upTo.device_lists > from.device_lists) {
      for (const u of await this.ext.deviceListChanges(from.device_lists, upTo.device_lists)) if (peers.has(u) || u === userId) changed.add(u);
    }
    const left = new Set<string>();
    if (upTo.events > from.events) {
      // Membership changes since `from` in rooms the user is or was in.
      const nids = memberships.map((m) => m.room.nid);
      for (const nid of nids) {
        for (const m of await this.events.members(nid)) {
          if (num(m.stream_ordering) <= from.events || num(m.stream_ordering) > upTo.events || m.user_id === userId) continue;
          if (m.membership === 'join') {
            if (peers.has(m.user_id)) changed.add(m.user_id);
          } else if (!peers.has(m.user_id)) left.add(m.user_id);
        }
        // The user themselves joined a room since: everyone in it is newly shared.
        const mine = memberships.find((x) => x.room.nid === nid);
        if (mine && mine.membership === 'join' && mine.stream > from.events) {
          for (const m of await this.events.members(nid, ['join'])) if (m.user_id !== userId) changed.add(m.user_id);
        }
        if (mine && (mine.membership === 'leave' || mine.membership === 'ban') && mine.stream > from.events) {
          for (const m of await this.events.members(nid, ['join'])) if (!peers.has(m.user_id)) left.add(m.user_id);
        }
      }
    }
    for (const u of changed) left.delete(u);
    return { changed: [...changed], left: [...left] };
  }

  /** The user's m.ignored_user_list. */
  async ignoredUsers(userId: string): Promise<ReadonlySet<string>> {
    const content = await this.accountData.get(userId, '', 'm.ignored_user_list');
    const users = content && typeof content.ignored_users === 'object' && content.ignored_users !== null ? Object.keys(content.ignored_users) : [];
    return new Set(users);
  }

  dropCaches(userId: string): void {
    this.userRooms.delete(userId);
  }
}

/** m.receipt content from receipt rows; private receipts only for their owner. */
export function receiptContent(rows: readonly ReceiptRow[], viewer: string): Record<string, Record<string, Record<string, unknown>>> {
  const content: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const r of rows) {
    if (r.receipt_type === 'm.read.private' && r.user_id !== viewer) continue;
    const byType = (content[r.event_id] ??= {});
    const byUser = (byType[r.receipt_type] ??= {});
    byUser[r.user_id] = { ts: num(r.ts), ...(r.thread_id ? { thread_id: r.thread_id } : {}) };
  }
  return content;
}

/** The user's read positions in a room, from their receipts (public or private, whichever is later). */
export function readUpTo(rows: readonly ReceiptRow[]): ReadUpTo {
  const out: ReadUpTo = { threads: {} };
  for (const r of rows) {
    const pos = num(r.event_stream);
    if (r.thread_id === '') out.unthreaded = Math.max(out.unthreaded ?? 0, pos);
    else if (r.thread_id === 'main') out.main = Math.max(out.main ?? 0, pos);
    else out.threads[r.thread_id] = Math.max(out.threads[r.thread_id] ?? 0, pos);
  }
  return out;
}

/** Where a room's state goes in the response: `state`, or state_after under the name the client asked with. */
function stateField(req: SyncRequest): string {
  return req.useStateAfter ? (req.stateAfterField ?? 'state_after') : 'state';
}
