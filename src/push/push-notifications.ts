// Reads of the push actions the persist hook recorded: unread notification counts for /sync
// (spec: "Receiving notifications", threaded read receipts) and GET /notifications.
//
// Read state comes from receipts, which this module does not own: callers pass, per room, the stream
// orderings of the events the user's receipts point at (`ReadUpTo`), or install a `ReadUpToLookup`
// for GET /notifications. An event counts as read when its stream ordering is at or below the
// unthreaded receipt, or below/at the receipt of its own thread ('main' for the main timeline).
import type { Knex } from 'knex';
import { MatrixError } from '../http/errors.js';
import type { PushStore, UnreadThresholds } from '../storage/push-store.js';
import type { RoomData } from '../rooms/room-data.js';
import { toClientEvent, type ClientEvent } from '../rooms/client-event.js';
import { num } from '../storage/rows.js';
import type { PushAction } from './rules.js';

export interface UnreadCount {
  notification_count: number;
  highlight_count: number;
}

/** Stream orderings of the events a user's read receipts (m.read / m.read.private) point at. */
export interface ReadUpTo {
  /** The unthreaded receipt: covers the main timeline and every thread. */
  unthreaded?: number;
  /** The receipt with thread_id "main". */
  main?: number;
  /** Receipts per thread root event id. */
  threads?: Record<string, number>;
}

export interface UnreadCounts {
  /** Main timeline (events not in a thread): `unread_notifications` for thread-aware clients. */
  main: UnreadCount;
  /** Threads with unread notifications only: `unread_thread_notifications`. */
  threads: Record<string, UnreadCount>;
  /** main + all threads: `unread_notifications` for clients without unread_thread_notifications. */
  total: UnreadCount;
}

/** Provides read positions for GET /notifications' `read` flag (receipts live in the sync module). */
export type ReadUpToLookup = (userId: string, roomNids: readonly number[]) => Promise<Map<number, ReadUpTo>>;

/** Structural receipt row (the sync module's `receipts` table) for {@link readUpToFromReceipts}. */
export interface ReceiptLike {
  room_nid: number;
  receipt_type: string;
  thread_id: string | null;
  event_stream: number | string;
}

/**
 * Folds a user's read receipts into ReadUpTo per room: m.read and m.read.private both count (the
 * later one wins); thread_id '' (or null) is unthreaded, 'main' the main timeline, else a thread root.
 */
export function readUpToFromReceipts(rows: Iterable<ReceiptLike>): Map<number, ReadUpTo> {
  const out = new Map<number, ReadUpTo>();
  for (const r of rows) {
    if (r.receipt_type !== 'm.read' && r.receipt_type !== 'm.read.private') continue;
    const pos = Number(r.event_stream);
    let e = out.get(r.room_nid);
    if (!e) out.set(r.room_nid, (e = {}));
    if (!r.thread_id) e.unthreaded = Math.max(e.unthreaded ?? pos, pos);
    else if (r.thread_id === 'main') e.main = Math.max(e.main ?? pos, pos);
    else {
      const threads = (e.threads ??= {});
      threads[r.thread_id] = Math.max(threads[r.thread_id] ?? pos, pos);
    }
  }
  return out;
}

/** Whether an event at `stream` in `threadId` (null: main timeline) is read. */
export function isRead(readUpTo: ReadUpTo | undefined, stream: number, threadId: string | null): boolean {
  if (!readUpTo) return false;
  if (readUpTo.unthreaded !== undefined && stream <= readUpTo.unthreaded) return true;
  const own = threadId === null ? readUpTo.main : readUpTo.threads?.[threadId];
  return own !== undefined && stream <= own;
}

export interface Notification {
  actions: PushAction[];
  event: ClientEvent;
  read: boolean;
  room_id: string;
  ts: number;
}

export interface NotificationsPage {
  notifications: Notification[];
  next_token?: string;
}

const zero = (): UnreadCount => ({ notification_count: 0, highlight_count: 0 });

export class PushNotifications {
  /** Installed by the sync module (receipts); without it every notification is unread. */
  readUpToLookup: ReadUpToLookup | null = null;

  constructor(
    private readonly db: Knex,
    private readonly store: PushStore,
    private readonly data: RoomData,
  ) {}

  /** Unread counts of one room (see {@link unreadCountsForRooms}). */
  async unreadCounts(userId: string, roomNid: number, readUpTo: ReadUpTo = {}, q: Knex = this.db): Promise<UnreadCounts> {
    return (await this.unreadCountsForRooms(userId, new Map([[roomNid, readUpTo]]), q)).get(roomNid)!;
  }

  /**
   * Unread notification/highlight counts for many rooms at once (one query per ~400 rooms). Every
   * requested room is in the result, with zero counts when nothing is unread.
   */
  async unreadCountsForRooms(userId: string, rooms: ReadonlyMap<number, ReadUpTo>, q: Knex = this.db): Promise<Map<number, UnreadCounts>> {
    const out = new Map<number, UnreadCounts>();
    const thresholds: UnreadThresholds[] = [];
    for (const [roomNid, r] of rooms) {
      out.set(roomNid, { main: zero(), threads: {}, total: zero() });
      thresholds.push({ roomNid, unthreaded: r.unthreaded, main: r.main, threads: r.threads });
    }
    if (!thresholds.length) return out;
    for (const row of await this.store.unreadCounts(userId, thresholds, q)) {
      const c = out.get(Number(row.room_nid));
      if (!c) continue;
      const n = num(row.n);
      const h = num(row.h);
      if (!n) continue;
      const target = row.thread_id === null ? c.main : (c.threads[row.thread_id] ??= zero());
      target.notification_count += n;
      target.highlight_count += h;
      c.total.notification_count += n;
      c.total.highlight_count += h;
    }
    return out;
  }

  /** GET /notifications: newest first; `from` is a previous page's next_token. */
  async notifications(userId: string, opts: { from?: string; limit: number; only?: string }): Promise<NotificationsPage> {
    let beforeNid: number | undefined;
    if (opts.from !== undefined && opts.from !== '') {
      if (!/^[0-9]+$/.test(opts.from)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid from token');
      beforeNid = Number(opts.from);
    }
    const limit = Math.max(1, opts.limit);
    const rows = await this.store.notifications(userId, { beforeNid, limit: limit + 1, onlyHighlight: opts.only === 'highlight' });
    const more = rows.length > limit;
    const page = more ? rows.slice(0, limit) : rows;
    const roomNids = [...new Set(page.map((r) => r.room_nid))];
    const reads = this.readUpToLookup && roomNids.length ? await this.readUpToLookup(userId, roomNids) : new Map<number, ReadUpTo>();
    const events = await this.data.fromRows(page);
    const now = Date.now();
    const notifications: Notification[] = page.map((row, i) => {
      const ev = events[i];
      let actions: PushAction[] = [];
      try {
        actions = JSON.parse(row.push_actions);
      } catch { /* stored by us; never malformed */ }
      return {
        actions,
        event: toClientEvent(ev, { userId, now }),
        read: isRead(reads.get(row.room_nid), num(row.stream_ordering), row.push_thread_id),
        room_id: ev.roomId,
        ts: num(row.push_ts),
      };
    });
    const res: NotificationsPage = { notifications };
    if (more) res.next_token = String(page[page.length - 1].event_nid);
    return res;
  }
}
