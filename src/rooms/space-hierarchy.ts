// Space hierarchies (client-server API "Spaces", server-server API "Spaces"): the rooms a space's
// m.space.child events point at, walked depth first. Rooms this server takes part in are described
// from their state; others are asked of a server in the child event's `via` list, whose answers
// (room, children, inaccessible children) are cached for a minute, as the spec recommends.
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { EventsStore } from '../storage/events-store.js';
import { domainOf, parseStateKey } from './event.js';
import { Lru } from './lru.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';
import type { RoomDirectory, RoomSummary } from './room-directory.js';

/** An m.space.child event as stripped state plus its origin_server_ts. */
export interface ChildState {
  type: string;
  state_key: string;
  content: Record<string, unknown>;
  sender: string;
  origin_server_ts: number;
}

/** A room summary as the hierarchy gives it (other servers may omit `room_version`). */
export type HierarchySummary = Omit<RoomSummary, 'membership' | 'room_version'> & { room_version?: string };
export type HierarchyRoom = HierarchySummary & { children_state: ChildState[] };

export interface FederationHierarchy {
  room: HierarchyRoom;
  children: HierarchySummary[];
  inaccessible_children: string[];
}

export interface HierarchyPage {
  rooms: HierarchyRoom[];
  next_batch?: string;
}

export interface HierarchyQuery {
  from?: string;
  limit?: number;
  maxDepth?: number;
  suggestedOnly?: boolean;
}

const DEFAULT_LIMIT = 50;
export const MAX_HIERARCHY_LIMIT = 100;
export const MAX_HIERARCHY_DEPTH = 20;
/** Rooms one request may look at (every page walks the tree from the top again). */
const MAX_ROOMS_WALKED = 2000;
const REMOTE_CACHE_MS = 60_000;

const SPACE = 'm.space';

/** Who asks: a local user (client API) or another server (federation). */
type Asker = { userId: string } | { server: string };

interface QueueEntry { roomId: string; via: string[]; depth: number }

/** The spec's "Ordering of children within a space": `order` strings must be printable ASCII, at most 50 characters. */
function validOrder(v: unknown): v is string {
  return typeof v === 'string' && v.length <= 50 && /^[\x20-\x7E]*$/.test(v);
}

/** A child event counts only with a non-empty `via` of server names (an empty content removes the child). */
function viaOf(content: Record<string, unknown> | undefined): string[] | undefined {
  const via = content?.via;
  if (!Array.isArray(via)) return undefined;
  const servers = via.filter((s): s is string => typeof s === 'string' && s !== '');
  return servers.length ? servers : undefined;
}

/** By `order` (rooms with one first), then the event's origin_server_ts, then room ID. */
export function sortChildren(children: ChildState[]): ChildState[] {
  const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  return [...children].sort((a, b) => {
    const oa = validOrder(a.content.order) ? a.content.order : undefined;
    const ob = validOrder(b.content.order) ? b.content.order : undefined;
    if (oa !== undefined && ob !== undefined && oa !== ob) return cmp(oa, ob);
    if (oa !== undefined && ob === undefined) return -1;
    if (oa === undefined && ob !== undefined) return 1;
    if (a.origin_server_ts !== b.origin_server_ts) return a.origin_server_ts - b.origin_server_ts;
    return cmp(a.state_key, b.state_key);
  });
}

interface PageToken { r: string; s: boolean; d: number; n: number }

function encodeToken(t: PageToken): string {
  return Buffer.from(JSON.stringify(t)).toString('base64url');
}

function decodeToken(token: string): PageToken {
  try {
    const t = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as PageToken;
    if (typeof t.r === 'string' && typeof t.s === 'boolean' && Number.isInteger(t.d) && Number.isInteger(t.n) && t.n >= 0) return t;
  } catch { /* fall through */ }
  throw new MatrixError(400, 'M_INVALID_PARAM', 'Unknown pagination token');
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const optString = (v: unknown) => (typeof v === 'string' ? v : undefined);

/** A remote room summary with the keys and types the response schema wants, or null when unusable. */
function cleanSummary(x: unknown): HierarchySummary | null {
  if (!isObject(x) || typeof x.room_id !== 'string' || !x.room_id.startsWith('!')) return null;
  const out: HierarchySummary = {
    room_id: x.room_id,
    num_joined_members: typeof x.num_joined_members === 'number' && Number.isInteger(x.num_joined_members) ? x.num_joined_members : 0,
    world_readable: x.world_readable === true,
    guest_can_join: x.guest_can_join === true,
  };
  for (const k of ['name', 'topic', 'avatar_url', 'join_rule', 'room_type', 'room_version'] as const) {
    const v = optString(x[k]);
    if (v !== undefined) out[k] = v;
  }
  const alias = optString(x.canonical_alias);
  if (alias?.startsWith('#')) out.canonical_alias = alias;
  if (x.encryption === 'm.megolm.v1.aes-sha2') out.encryption = x.encryption;
  if (Array.isArray(x.allowed_room_ids)) out.allowed_room_ids = x.allowed_room_ids.filter((r): r is string => typeof r === 'string' && r.startsWith('!'));
  return out;
}

function cleanChildren(x: unknown): ChildState[] {
  if (!Array.isArray(x)) return [];
  return x.filter((c): c is ChildState => isObject(c) && c.type === 'm.space.child' && typeof c.state_key === 'string' && isObject(c.content)
    && typeof c.sender === 'string' && typeof c.origin_server_ts === 'number')
    .map((c) => ({ type: c.type, state_key: c.state_key, content: c.content, sender: c.sender, origin_server_ts: c.origin_server_ts }));
}

export class SpaceHierarchy {
  /** Asks `server` for GET /_matrix/federation/v1/hierarchy/{roomId} (null without federation). */
  remote: ((server: string, roomId: string, suggestedOnly: boolean) => Promise<unknown>) | null = null;

  private readonly remoteCache = new Lru<string, { until: number; value: { room: HierarchyRoom; children: HierarchySummary[]; inaccessible: string[] } }>(500);

  constructor(
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly directory: RoomDirectory,
    private readonly serverName: string,
  ) {}

  /** A room whose state this server has and keeps current: it created it or has a member joined. */
  private async localRoom(roomId: string): Promise<RoomInfo | undefined> {
    const room = await this.data.room(roomId);
    if (!room) return undefined;
    if (room.isLocal) return room;
    const joined = await this.store.members(room.nid, ['join']);
    return joined.some((m) => domainOf(m.user_id) === this.serverName) ? room : undefined;
  }

  /** The valid m.space.child events of a room, in the spec's order (only suggested ones if asked). */
  private async childEvents(room: RoomInfo, suggestedOnly: boolean): Promise<ChildState[]> {
    const state = await this.data.currentState(room);
    const keys = [...state.keys()].filter((k) => parseStateKey(k)[0] === 'm.space.child');
    const evs: StoredEvent[] = [...(await this.data.stateEvents(state, keys)).values()];
    const children = evs
      .filter((ev) => viaOf(ev.pdu.content) && (!suggestedOnly || ev.pdu.content?.suggested === true))
      .map((ev) => ({ type: ev.pdu.type, state_key: ev.pdu.state_key ?? '', content: ev.pdu.content ?? {}, sender: ev.pdu.sender, origin_server_ts: ev.pdu.origin_server_ts }));
    return sortChildren(children);
  }

  /** The room's summary, with its children when it is a space. */
  private async describeLocal(room: RoomInfo, suggestedOnly: boolean): Promise<HierarchyRoom> {
    const d = await this.directory.describe(room);
    return { ...d, children_state: d.room_type === SPACE ? await this.childEvents(room, suggestedOnly) : [] };
  }

  /**
   * Whether the asker may see a room (spec: the hierarchy's `rooms`): world-readable, public or
   * knockable rooms to anyone; otherwise a user joined or invited (a server with a user joined),
   * or, for restricted rooms, one joined to a room the join rules allow.
   */
  private async accessible(asker: Asker, d: HierarchySummary, room?: RoomInfo): Promise<boolean> {
    if (d.world_readable) return true;
    if (d.join_rule === 'public' || d.join_rule === 'knock' || d.join_rule === 'knock_restricted') return true;
    if (room && (await this.isIn(asker, room, ['join', 'invite']))) return true;
    if (d.join_rule === 'restricted' || d.join_rule === 'knock_restricted') {
      for (const allowed of d.allowed_room_ids ?? []) {
        const r = await this.data.room(allowed);
        if (r && (await this.isIn(asker, r, ['join']))) return true;
      }
    }
    return false;
  }

  private async isIn(asker: Asker, room: RoomInfo, memberships: readonly string[]): Promise<boolean> {
    if ('userId' in asker) {
      const m = (await this.store.membership(room.nid, asker.userId))?.membership;
      return m !== undefined && memberships.includes(m);
    }
    // A server "is in" a room through its joined users (invites are a user's, not a server's).
    return (await this.store.members(room.nid, ['join'])).some((m) => domainOf(m.user_id) === asker.server);
  }

  /** GET /_matrix/federation/v1/hierarchy/{roomId}: the room and its children `origin` may see. */
  async forServer(origin: string, roomId: string, suggestedOnly: boolean): Promise<FederationHierarchy> {
    const room = await this.localRoom(roomId);
    if (!room) throw notFound('Room does not exist');
    const entry = await this.describeLocal(room, suggestedOnly);
    if (!(await this.accessible({ server: origin }, entry, room))) throw notFound('Room does not exist or is not accessible');
    const children: HierarchySummary[] = [];
    const inaccessible: string[] = [];
    for (const child of entry.children_state) {
      const childRoom = await this.localRoom(child.state_key);
      // Rooms we cannot describe are left out; the asking server may try another `via`.
      if (!childRoom) continue;
      const d = await this.directory.describe(childRoom);
      if (await this.accessible({ server: origin }, d, childRoom)) children.push(d);
      else inaccessible.push(childRoom.roomId);
    }
    return { room: entry, children, inaccessible_children: inaccessible };
  }

  /**
   * GET /rooms/{roomId}/hierarchy: a page of the tree under a space this server knows, the rooms
   * the user may see, depth first. The token records the query and how many rooms came before;
   * each page walks from the top again (remote answers are cached for a minute, so paging does not
   * ask a server again).
   */
  async forUser(userId: string, roomId: string, q: HierarchyQuery): Promise<HierarchyPage> {
    let skip = 0;
    let suggestedOnly = q.suggestedOnly;
    let maxDepth = q.maxDepth;
    if (q.from !== undefined) {
      const t = decodeToken(q.from);
      if (t.r !== roomId) throw new MatrixError(400, 'M_INVALID_PARAM', 'The pagination token is for another room');
      if ((suggestedOnly !== undefined && suggestedOnly !== t.s) || (maxDepth !== undefined && Math.min(maxDepth, MAX_HIERARCHY_DEPTH) !== t.d)) {
        throw new MatrixError(400, 'M_INVALID_PARAM', 'suggested_only and max_depth cannot change on paginated requests');
      }
      suggestedOnly = t.s;
      maxDepth = t.d;
      skip = t.n;
    }
    const suggested = suggestedOnly ?? false;
    const depthLimit = Math.min(maxDepth ?? MAX_HIERARCHY_DEPTH, MAX_HIERARCHY_DEPTH);
    const limit = Math.min(Math.max(q.limit ?? DEFAULT_LIMIT, 1), MAX_HIERARCHY_LIMIT);
    const asker: Asker = { userId };

    const root = await this.localRoom(roomId);
    const rootEntry = root ? await this.describeLocal(root, suggested) : undefined;
    if (!root || !rootEntry || !(await this.accessible(asker, rootEntry, root))) {
      throw forbidden(`User ${userId} may not see room ${roomId}, or it does not exist`);
    }

    const queue: QueueEntry[] = [{ roomId, via: [], depth: 0 }];
    const done = new Set<string>();
    /** Child summaries other servers sent along with their space (used for children that are not spaces). */
    const known = new Map<string, HierarchySummary>();
    const rooms: HierarchyRoom[] = [];
    let seen = 0;
    while (queue.length && done.size < MAX_ROOMS_WALKED) {
      const next = queue.shift()!;
      if (done.has(next.roomId)) continue;
      done.add(next.roomId);
      const entry = next.depth === 0 ? rootEntry : await this.entryFor(asker, next, suggested, depthLimit, known, done);
      if (!entry) continue;
      if (rooms.length === limit) {
        // One more visible room exists: there is a next page.
        return { rooms, next_batch: encodeToken({ r: roomId, s: suggested, d: depthLimit, n: skip + limit }) };
      }
      if (seen++ >= skip) rooms.push(entry);
      if (next.depth < depthLimit) {
        const children = entry.children_state
          .filter((c) => !done.has(c.state_key))
          .map((c) => ({ roomId: c.state_key, via: viaOf(c.content) ?? [], depth: next.depth + 1 }));
        queue.unshift(...children);
      }
    }
    return { rooms };
  }

  /** One room of the walk, when the user may see it: from local state, or from a server in `via`. */
  private async entryFor(asker: Asker, e: QueueEntry, suggestedOnly: boolean, depthLimit: number, known: Map<string, HierarchySummary>, done: Set<string>): Promise<HierarchyRoom | null> {
    const room = await this.localRoom(e.roomId);
    if (room) {
      const entry = await this.describeLocal(room, suggestedOnly);
      return (await this.accessible(asker, entry, room)) ? entry : null;
    }
    // A child another server already described needs no request of its own, unless it is a space
    // whose children the walk still has to reach.
    const pre = known.get(e.roomId);
    if (pre && (pre.room_type !== SPACE || e.depth >= depthLimit)) {
      return (await this.accessible(asker, pre, await this.data.room(e.roomId))) ? { ...pre, children_state: [] } : null;
    }
    const res = await this.fetchRemote(e.roomId, e.via, suggestedOnly);
    if (!res) {
      // No server answered for the space itself: show what its parent's server told us, if anything.
      return pre && (await this.accessible(asker, pre, await this.data.room(e.roomId))) ? { ...pre, children_state: [] } : null;
    }
    for (const c of res.children) if (!known.has(c.room_id)) known.set(c.room_id, c);
    // The server says we could not peek or join these from anywhere: do not ask about them (rooms
    // we take part in ourselves are still described from our own state).
    for (const id of res.inaccessible) if (!(await this.localRoom(id))) done.add(id);
    const entry = { ...res.room, children_state: res.room.room_type === SPACE ? res.room.children_state : [] };
    return (await this.accessible(asker, entry, await this.data.room(e.roomId))) ? entry : null;
  }

  /** The hierarchy of a room we do not take part in, from the first `via` server that answers. */
  private async fetchRemote(roomId: string, via: readonly string[], suggestedOnly: boolean): Promise<{ room: HierarchyRoom; children: HierarchySummary[]; inaccessible: string[] } | null> {
    if (!this.remote) return null;
    const key = `${roomId}\u0000${suggestedOnly}`;
    const cached = this.remoteCache.get(key);
    if (cached && cached.until > Date.now()) return cached.value;
    for (const server of via) {
      if (server === this.serverName) continue;
      let res: unknown;
      try {
        res = await this.remote(server, roomId, suggestedOnly);
      } catch {
        continue; // unreachable, or it does not know the room (or will not tell us): try the next
      }
      if (!isObject(res)) continue;
      const summary = cleanSummary(res.room);
      if (!summary || summary.room_id !== roomId) continue;
      const children = Array.isArray(res.children) ? res.children.map(cleanSummary).filter((c): c is HierarchySummary => c !== null) : [];
      const inaccessible = Array.isArray(res.inaccessible_children) ? res.inaccessible_children.filter((r): r is string => typeof r === 'string') : [];
      const childrenState = sortChildren(cleanChildren(isObject(res.room) ? res.room.children_state : undefined)
        .filter((c) => viaOf(c.content) && (!suggestedOnly || c.content.suggested === true)));
      const value = { room: { ...summary, children_state: childrenState }, children, inaccessible };
      this.remoteCache.set(key, { until: Date.now() + REMOTE_CACHE_MS, value });
      return value;
    }
    return null;
  }
}
