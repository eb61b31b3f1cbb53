// Typing notifications, receipts, read markers and presence: per-user data /sync carries.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { PresenceRow, SyncStore } from '../storage/sync-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { EventsStore } from '../storage/events-store.js';
import { num } from '../storage/rows.js';
import type { RoomData, RoomInfo } from '../rooms/room-data.js';
import type { Notifier } from './notifier.js';
import type { AccountData } from '../accounts/account-data.js';

const MAX_TYPING_TIMEOUT_MS = 120_000;
const PRESENCE_SYNC_TIMEOUT_MS = 30_000; // no sync for this long: offline
const PRESENCE_IDLE_MS = 5 * 60_000; // no activity for this long: unavailable
const PRESENCE_SYNC_TOUCH_MS = 10_000; // how stale last_sync_ts may get (well under the timeout)
const REMOTE_PRESENCE_TIMEOUT_MS = 30 * 60_000; // a remote user not updated for this long: offline

/** Called after a change committed; federation sends the changes of local users to other servers. */
export interface EphemeralHooks {
  typing?(room: RoomInfo, userId: string, typing: boolean): Promise<void>;
  /** Public receipts only (m.read.private stays on this server). */
  receipt?(room: RoomInfo, userId: string, receiptType: string, eventId: string, threadId: string | undefined, ts: number): Promise<void>;
  presence?(userId: string, presence: PresenceRow): Promise<void>;
}

export class Ephemeral {
  private sweeper: NodeJS.Timeout | null = null;
  private readonly recentSyncs = new Map<string, number>();
  hooks: EphemeralHooks = {};
  /** Decides whose presence this server times out itself; others come from their servers (set with federation). */
  isLocalUser: (userId: string) => boolean = () => true;

  constructor(
    private readonly db: Knex,
    private readonly store: SyncStore,
    private readonly streams: StreamsStore,
    private readonly events: EventsStore,
    private readonly data: RoomData,
    private readonly notifier: Notifier,
    private readonly accountData: AccountData,
    private readonly presenceEnabled: boolean,
    private readonly logger: Logger,
  ) {}

  private async joinedRoom(roomId: string, userId: string): Promise<RoomInfo> {
    const room = await this.data.room(roomId);
    if (!room) throw forbidden('You are not in this room');
    const m = await this.events.membership(room.nid, userId);
    if (m?.membership !== 'join') throw forbidden('You are not in this room');
    return room;
  }

  // Typing (spec: "Typing Notifications")

  async setTyping(userId: string, roomId: string, typing: boolean, timeoutMs: number | undefined): Promise<void> {
    const room = await this.joinedRoom(roomId, userId);
    const expires = typing ? Date.now() + Math.min(timeoutMs ?? 30_000, MAX_TYPING_TIMEOUT_MS) : null;
    if (!typing && !(await this.store.isTyping(room.nid, userId))) return;
    const pos = await this.db.transaction(async (trx) => {
      const p = await this.streams.nextPosition(trx, 'typing');
      await this.store.setTyping(room.nid, userId, expires, p, trx);
      return p;
    });
    this.notifier.notify({ stream: 'typing', position: pos, roomIds: [roomId] });
    await this.runHook('typing', () => this.hooks.typing?.(room, userId, typing));
  }

  private async runHook(name: string, fn: () => Promise<void> | undefined): Promise<void> {
    try {
      await fn();
    } catch (err) {
      // The local change stands; only its federation copy is lost.
      this.logger.warn({ err: (err as Error).message, hook: name }, 'ephemeral hook failed');
    }
  }

  /** Ends typing notifications whose timeout passed (each process sweeps; a row is ended once). */
  async expireTyping(now = Date.now()): Promise<void> {
    for (const t of await this.store.expiredTyping(now)) {
      const pos = await this.db.transaction(async (trx) => {
        if (!(await this.store.deleteTypingIfExpired(t.room_nid, t.user_id, now, trx))) return null;
        const p = await this.streams.nextPosition(trx, 'typing');
        await trx('typing_rooms').insert({ room_nid: t.room_nid, stream_id: p }).onConflict('room_nid').merge(['stream_id']);
        return p;
      });
      if (pos !== null) {
        const room = await this.data.roomByNid(t.room_nid);
        if (room) {
          this.notifier.notify({ stream: 'typing', position: pos, roomIds: [room.roomId] });
          await this.runHook('typing', () => this.hooks.typing?.(room, t.user_id, false));
        }
      }
    }
  }

  // Receipts (spec: "Receipts")

  async receipt(userId: string, roomId: string, type: string, eventId: string, threadId: string | undefined, opts: { ts?: number } = {}): Promise<void> {
    if (type !== 'm.read' && type !== 'm.read.private' && type !== 'm.fully_read') {
      throw new MatrixError(400, 'M_INVALID_PARAM', `Unknown receipt type ${type}`);
    }
    const room = await this.joinedRoom(roomId, userId);
    if (type === 'm.fully_read') {
      await this.fullyRead(userId, room, eventId);
      return;
    }
    const ev = await this.data.event(eventId);
    if (!ev || ev.roomNid !== room.nid || ev.stream === null) throw notFound('Event not found');
    if (threadId !== undefined) {
      if (threadId === '') throw new MatrixError(400, 'M_INVALID_PARAM', 'thread_id must not be empty');
      if (threadId !== 'main') {
        const root = await this.data.event(threadId);
        if (!root || root.roomNid !== room.nid) throw new MatrixError(400, 'M_INVALID_PARAM', 'thread_id is not a thread root in this room');
      }
    }
    const ts = opts.ts ?? Date.now();
    const pos = await this.db.transaction(async (trx) => {
      const p = await this.streams.nextPosition(trx, 'receipts');
      const stored = await this.store.upsertReceipt({
        room_nid: room.nid, user_id: userId, receipt_type: type, thread_id: threadId ?? '', event_id: eventId,
        event_stream: ev.stream!, ts, stream_id: p,
      }, trx);
      if (!stored) throw new NoChange();
      return p;
    }).catch((err) => {
      if (err instanceof NoChange) return null;
      throw err;
    });
    if (pos !== null) {
      // Private receipts concern their owner only.
      this.notifier.notify(type === 'm.read.private' ? { stream: 'receipts', position: pos, userIds: [userId] } : { stream: 'receipts', position: pos, roomIds: [roomId] });
      if (type === 'm.read') await this.runHook('receipt', () => this.hooks.receipt?.(room, userId, type, eventId, threadId, ts));
    }
  }

  private async fullyRead(userId: string, room: RoomInfo, eventId: string): Promise<void> {
    const ev = await this.data.event(eventId);
    if (!ev || ev.roomNid !== room.nid) throw notFound('Event not found');
    await this.accountData.put(userId, room.roomId, 'm.fully_read', { event_id: eventId });
  }

  /** POST /rooms/{roomId}/read_markers */
  async readMarkers(userId: string, roomId: string, markers: { fullyRead?: string; read?: string; readPrivate?: string }): Promise<void> {
    const room = await this.joinedRoom(roomId, userId);
    if (markers.fullyRead) await this.fullyRead(userId, room, markers.fullyRead);
    if (markers.read) await this.receipt(userId, roomId, 'm.read', markers.read, undefined);
    if (markers.readPrivate) await this.receipt(userId, roomId, 'm.read.private', markers.readPrivate, undefined);
  }

  // Presence (spec: "Presence")

  private async writePresence(userId: string, patch: { state?: string; statusMsg?: string | null; active?: boolean; synced?: boolean }): Promise<void> {
    if (!this.presenceEnabled) return;
    const now = Date.now();
    const written = await this.db.transaction(async (trx) => {
      const cur = await this.store.presence(userId, trx);
      const state = patch.state ?? cur?.state ?? 'offline';
      const statusMsg = patch.statusMsg !== undefined ? patch.statusMsg : cur?.status_msg ?? null;
      const lastActive = patch.active ? now : num(cur?.last_active_ts ?? now);
      // Syncing alone does not change activity; an explicit state or activity does.
      const currentlyActive = state === 'online' && (patch.active ?? (patch.state === undefined && !!cur?.currently_active));
      const lastSync = patch.synced ? now : num(cur?.last_sync_ts ?? 0);
      const unchanged = cur && cur.state === state && cur.status_msg === statusMsg && !!cur.currently_active === currentlyActive && !patch.active;
      if (unchanged) {
        if (patch.synced) await this.store.touchPresenceSync(userId, now, trx);
        return null;
      }
      const p = await this.streams.nextPosition(trx, 'presence');
      const row: PresenceRow = { user_id: userId, state, status_msg: statusMsg, last_active_ts: lastActive, last_sync_ts: lastSync, currently_active: currentlyActive, stream_id: p };
      await this.store.upsertPresence(row, trx);
      return row;
    });
    if (written !== null) {
      this.notifier.notify({ stream: 'presence', position: Number(written.stream_id), userIds: [userId] });
      await this.runHook('presence', () => this.hooks.presence?.(userId, written));
    }
  }

  /**
   * Presence of a user of another server, as its server reported it (an m.presence EDU). Stored like
   * local presence; `last_sync_ts` is when we heard, so a server that goes quiet times its users out.
   */
  async applyRemotePresence(userId: string, p: { presence: string; statusMsg: string | null; lastActiveAgo: number; currentlyActive: boolean }): Promise<void> {
    if (!this.presenceEnabled) return;
    const now = Date.now();
    const pos = await this.db.transaction(async (trx) => {
      const p2 = await this.streams.nextPosition(trx, 'presence');
      await this.store.upsertPresence({
        user_id: userId, state: p.presence, status_msg: p.statusMsg, last_active_ts: now - Math.max(0, p.lastActiveAgo), last_sync_ts: now,
        currently_active: p.presence === 'online' && p.currentlyActive, stream_id: p2,
      }, trx);
      return p2;
    });
    this.notifier.notify({ stream: 'presence', position: pos, userIds: [userId] });
  }

  async setPresence(userId: string, state: string, statusMsg: string | null | undefined): Promise<void> {
    for (const k of [...this.recentSyncs.keys()]) if (k.startsWith(`${userId}|`)) this.recentSyncs.delete(k);
    if (!['online', 'offline', 'unavailable', 'busy'].includes(state)) throw new MatrixError(400, 'M_INVALID_PARAM', `Unknown presence ${state}`);
    await this.writePresence(userId, { state, statusMsg, active: state === 'online' });
  }

  async getPresence(userId: string): Promise<Record<string, unknown>> {
    const p = await this.store.presence(userId);
    if (!p) return { presence: 'offline' };
    return {
      presence: p.state,
      last_active_ago: Math.max(0, Date.now() - num(p.last_active_ts)),
      currently_active: p.currently_active === true || p.currently_active === 1,
      ...(p.status_msg !== null ? { status_msg: p.status_msg } : {}),
    };
  }

  /** /sync with set_presence: a syncing client keeps its user online (unless it says otherwise). */
  async onSync(userId: string, setPresence: string): Promise<void> {
    if (!this.presenceEnabled) return;
    // A client syncing in a loop with the same presence changes nothing but the time of its last
    // sync, which only needs to be fresher than the 30 s offline timeout: skip most of those writes.
    const key = `${userId}|${setPresence}`;
    const now = Date.now();
    if ((this.recentSyncs.get(key) ?? 0) > now - PRESENCE_SYNC_TOUCH_MS) return;
    if (this.recentSyncs.size > 100_000) this.recentSyncs.clear();
    this.recentSyncs.set(key, now);
    if (setPresence === 'offline') {
      await this.writePresence(userId, { synced: true });
      return;
    }
    const cur = await this.store.presence(userId);
    if (setPresence === 'unavailable') await this.writePresence(userId, { state: 'unavailable', synced: true });
    else if (!cur || cur.state === 'offline' || (cur.state === 'unavailable' && setPresence === 'online')) await this.writePresence(userId, { state: 'online', active: true, synced: true });
    else await this.writePresence(userId, { synced: true });
  }

  /** online → unavailable after idling, → offline without syncs. */
  async timeOutPresence(now = Date.now()): Promise<void> {
    if (!this.presenceEnabled) return;
    for (const p of await this.store.presenceToTimeOut(now, PRESENCE_SYNC_TIMEOUT_MS, PRESENCE_IDLE_MS)) {
      if (!this.isLocalUser(p.user_id)) {
        // Other servers time out their own users and tell us; we only give up on a silent server.
        if (p.state !== 'offline' && num(p.last_sync_ts) < now - REMOTE_PRESENCE_TIMEOUT_MS) {
          await this.applyRemotePresence(p.user_id, { presence: 'offline', statusMsg: p.status_msg, lastActiveAgo: now - num(p.last_active_ts), currentlyActive: false });
        }
        continue;
      }
      const next = num(p.last_sync_ts) < now - PRESENCE_SYNC_TIMEOUT_MS ? 'offline' : 'unavailable';
      if (next !== p.state) await this.writePresence(p.user_id, { state: next });
    }
  }

  start(intervalMs = 1000): void {
    let ticks = 0;
    this.sweeper = setInterval(() => {
      ticks++;
      void this.expireTyping().catch((err) => this.logger.warn({ err }, 'typing expiry failed'));
      if (ticks % 10 === 0) void this.timeOutPresence().catch((err) => this.logger.warn({ err }, 'presence timeout failed'));
    }, intervalMs);
    this.sweeper.unref();
  }

  stop(): void {
    if (this.sweeper) clearInterval(this.sweeper);
  }
}

class NoChange extends Error {}
