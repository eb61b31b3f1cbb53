// History visibility (spec: "Room History Visibility"): which events a user may see.
import type { Knex } from 'knex';
import type { EventsStore } from '../storage/events-store.js';
import { num } from '../storage/rows.js';
import { stateKey, type StateMap } from './event.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';

export interface UserRoomStatus {
  /** Current membership, if any. */
  membership?: string;
  /** Stream position of the current membership event. */
  membershipStream?: number;
}

export class Visibility {
  constructor(private readonly data: RoomData, private readonly store: EventsStore) {}

  async status(room: RoomInfo, userId: string, q?: Knex): Promise<UserRoomStatus> {
    const m = await this.store.membership(room.nid, userId, q);
    return m ? { membership: m.membership, membershipStream: num(m.stream_ordering) } : {};
  }

  private async valueAt(state: StateMap, type: string, key: string, field: string): Promise<string | undefined> {
    const id = state.get(stateKey(type, key));
    if (!id) return undefined;
    const v = (await this.data.event(id))?.pdu.content?.[field];
    return typeof v === 'string' ? v : undefined;
  }

  /** Filters events to those `userId` may see (rules of the spec's history visibility section). */
  async filter(userId: string, room: RoomInfo, events: readonly StoredEvent[], status?: UserRoomStatus): Promise<StoredEvent[]> {
    const st = status ?? (await this.status(room, userId));
    const out: StoredEvent[] = [];
    const perGroup = new Map<number | null, { hv: string; membership?: string }>();
    for (const ev of events) {
      if (ev.pdu.type === 'm.room.member' && ev.pdu.state_key === userId) {
        out.push(ev);
        continue;
      }
      let at = perGroup.get(ev.stateGroup);
      if (!at) {
        const state = await this.data.stateOfGroup(ev.stateGroup);
        at = {
          hv: (await this.valueAt(state, 'm.room.history_visibility', '', 'history_visibility')) ?? 'shared',
          membership: await this.valueAt(state, 'm.room.member', userId, 'membership'),
        };
        perGroup.set(ev.stateGroup, at);
      }
      if (this.allowed(at.hv, at.membership, st, ev)) out.push(ev);
    }
    return out;
  }

  private allowed(hv: string, membershipAtEvent: string | undefined, st: UserRoomStatus, ev: StoredEvent): boolean {
    if (hv === 'world_readable') return true;
    if (membershipAtEvent === 'join') return true;
    if (hv === 'shared') {
      // "the user joined the room at any point after the event": currently joined, or left later.
      if (st.membership === 'join') return true;
      if ((st.membership === 'leave' || st.membership === 'ban') && ev.stream !== null && st.membershipStream !== undefined && ev.stream <= st.membershipStream && membershipAtEvent !== undefined) return true;
    }
    if (membershipAtEvent === 'invite' && (hv === 'invited' || hv === 'shared')) return true;
    return false;
  }

  /** Whether the room's current history visibility is world_readable (peeking, /event for non-members). */
  async isWorldReadable(room: RoomInfo): Promise<boolean> {
    const state = await this.data.currentState(room);
    return (await this.valueAt(state, 'm.room.history_visibility', '', 'history_visibility')) === 'world_readable';
  }
}
