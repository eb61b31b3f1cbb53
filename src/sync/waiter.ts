// Parked long-polls, indexed by room and by user so that a change wakes only the requests whose
// user may see it. Also tracks the newest committed position of each stream (from local commits and
// the Redis bus), which is what a sync answers up to.
import type { StreamName } from '../storage/streams-store.js';
import type { Notifier, StreamChange } from './notifier.js';
import { SYNC_STREAMS, type SyncToken } from './token.js';

interface Parked {
  userId: string;
  rooms: ReadonlySet<string>;
  wake: () => void;
}

export class SyncWaiter {
  private readonly byRoom = new Map<string, Set<Parked>>();
  private readonly byUser = new Map<string, Set<Parked>>();
  readonly current: SyncToken;
  /** Rooms of a user whose membership changed: the sync service drops its cached room list. */
  onMembershipChange: ((userIds: readonly string[]) => void) | null = null;
  /** Streams whose changes concern users who share a room with `userIds` (device lists, presence). */
  sharedRoomsOf: ((userId: string) => Promise<readonly string[]>) | null = null;

  constructor(notifier: Notifier, initial: Record<StreamName, number>) {
    this.current = Object.fromEntries(SYNC_STREAMS.map((s) => [s, initial[s] ?? 0])) as SyncToken;
    notifier.subscribe((c) => this.dispatch(c));
  }

  get parkedCount(): number {
    let n = 0;
    for (const set of this.byUser.values()) n += set.size;
    return n;
  }

  private dispatch(c: StreamChange): void {
    const stream = c.stream as keyof SyncToken;
    if (stream in this.current && c.position > this.current[stream]) this.current[stream] = c.position;
    if (c.stream === 'events' && c.userIds) this.onMembershipChange?.(c.userIds);
    const woken = new Set<Parked>();
    for (const r of c.roomIds ?? []) for (const p of this.byRoom.get(r) ?? []) woken.add(p);
    for (const u of c.userIds ?? []) for (const p of this.byUser.get(u) ?? []) woken.add(p);
    for (const p of woken) p.wake();
    if ((c.stream === 'device_lists' || c.stream === 'presence') && c.userIds && !c.roomIds && this.sharedRoomsOf) {
      // Users who share a room with the changed user see the change too.
      const resolve = this.sharedRoomsOf;
      void Promise.all(c.userIds.map((u) => resolve(u))).then((lists) => {
        for (const rooms of lists) for (const r of rooms) for (const p of this.byRoom.get(r) ?? []) p.wake();
      }, () => undefined);
    }
  }

  /** Parks until a change for this user or their rooms, the timeout, or the abort signal. */
  wait(userId: string, rooms: ReadonlySet<string>, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      let done = false;
      const p: Parked = { userId, rooms, wake: () => finish(true) };
      const timer = setTimeout(() => finish(false), timeoutMs);
      const onAbort = () => finish(false);
      const finish = (woken: boolean) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        for (const r of rooms) {
          const set = this.byRoom.get(r);
          set?.delete(p);
          if (set && !set.size) this.byRoom.delete(r);
        }
        const us = this.byUser.get(userId);
        us?.delete(p);
        if (us && !us.size) this.byUser.delete(userId);
        resolve(woken);
      };
      for (const r of rooms) {
        let set = this.byRoom.get(r);
        if (!set) this.byRoom.set(r, (set = new Set()));
        set.add(p);
      }
      let us = this.byUser.get(userId);
      if (!us) this.byUser.set(userId, (us = new Set()));
      us.add(p);
      signal?.addEventListener('abort', onAbort);
    });
  }

  private closed = false;

  /** Shutdown: wakes every parked request and answers new ones at once. */
  close(): void {
    this.closed = true;
    for (const set of [...this.byUser.values()]) for (const p of [...set]) p.wake();
  }
}
