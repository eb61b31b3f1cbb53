// Room aliases, the published room directory and room summaries (spec: "Room aliases",
// "Published room directory", "Room summaries" of the Client-Server API).
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { EventsStore } from '../storage/events-store.js';
import { domainOf, stateKey } from './event.js';
import type { EventPersister } from './persist.js';
import type { RoomData, RoomInfo } from './room-data.js';
import type { RoomService } from './room-service.js';
import type { Visibility } from './visibility.js';

export interface Requester { userId: string; isAdmin?: boolean }

/** A room as the directory and summaries describe it (PublishedRoomsChunk / RoomSummary). */
export interface RoomDescription {
  room_id: string;
  num_joined_members: number;
  world_readable: boolean;
  guest_can_join: boolean;
  name?: string;
  topic?: string;
  avatar_url?: string;
  canonical_alias?: string;
  join_rule?: string;
  room_type?: string;
}

export interface RoomSummary extends RoomDescription {
  room_version: string;
  encryption?: 'm.megolm.v1.aes-sha2';
  allowed_room_ids?: string[];
  membership?: string;
}

export interface PublicRoomsQuery {
  limit?: number;
  since?: string;
  server?: string;
  filter?: { generic_search_term?: string; room_types?: (string | null)[] };
  include_all_networks?: boolean;
  third_party_instance_id?: string;
}

export interface PublicRoomsResponse {
  chunk: RoomDescription[];
  next_batch?: string;
  prev_batch?: string;
  total_room_count_estimate: number;
}

const MAX_ALIAS_BYTES = 255;
const MAX_PUBLIC_ROOMS_PAGE = 1000;

const DESCRIBE_KEYS = [
  'm.room.create', 'm.room.name', 'm.room.topic', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.join_rules',
  'm.room.history_visibility', 'm.room.guest_access', 'm.room.encryption',
].map((t) => stateKey(t, ''));

/** The plain-text topic: the text/plain entry of `m.topic` (spec v1.15), else `topic`. */
function plainTopic(content: Record<string, unknown> | undefined): string | undefined {
  if (!content) return undefined;
  const rich = content['m.topic'];
  if (Array.isArray(rich)) {
    const plain = rich.find((t) => t && typeof t === 'object' && typeof t.body === 'string' && (t.mimetype === undefined || t.mimetype === 'text/plain'));
    if (plain) return plain.body as string;
  }
  return typeof content.topic === 'string' ? content.topic : undefined;
}

export class RoomDirectory {
  /** Another server's directory, asked over federation (null without federation). */
  remotePublicRooms: ((server: string, q: Omit<PublicRoomsQuery, 'server'>) => Promise<PublicRoomsResponse>) | null = null;

  constructor(
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly rooms: RoomService,
    private readonly persister: EventPersister,
    private readonly visibility: Visibility,
    private readonly serverName: string,
  ) {}

  // Aliases

  /** Parses `#localpart:server`, throwing 400 M_INVALID_PARAM when malformed (appendix "Room aliases"). */
  parseAlias(alias: string): { localpart: string; server: string } {
    const m = /^#([^:]+):(.+)$/.exec(alias);
    if (!m || /[\s\u0000]/.test(alias) || Buffer.byteLength(alias) > MAX_ALIAS_BYTES) throw new MatrixError(400, 'M_INVALID_PARAM', 'Room alias invalid');
    return { localpart: m[1], server: m[2] };
  }

  private isLocalAlias(alias: string): boolean {
    return this.parseAlias(alias).server === this.serverName;
  }

  /** PUT /directory/room/{roomAlias} */
  async createAlias(req: Requester, alias: string, roomId: string): Promise<void> {
    if (!this.isLocalAlias(alias)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Room alias must be on this server');
    const room = await this.data.room(roomId);
    if (!room) throw notFound('Unknown room');
    // Synapse requires membership; so do we, except for server admins.
    if (!req.isAdmin && (await this.rooms.membership(room, req.userId)) !== 'join') throw forbidden('You must be in the room to create an alias for it');
    if (!(await this.store.insertAlias(alias, roomId, req.userId))) {
      throw new MatrixError(409, 'M_UNKNOWN', `Room alias ${alias} already exists`);
    }
  }

  /** GET /directory/room/{roomAlias}: the room and the servers of its joined members. */
  async resolveAlias(alias: string): Promise<{ room_id: string; servers: string[] }> {
    const { server } = this.parseAlias(alias);
    const roomId = await this.store.roomIdByAlias(alias);
    if (!roomId && server !== this.serverName && this.rooms.federation) {
      // Spec: the server "will use the federation API to resolve the alias if the domain part of
      // the alias does not correspond to the server's own domain".
      try {
        const res = await this.rooms.federation.queryAlias(alias);
        if (typeof res?.room_id !== 'string' || !Array.isArray(res.servers)) throw new Error('bad query/directory response');
        return { room_id: res.room_id, servers: res.servers.filter((x): x is string => typeof x === 'string') };
      } catch (err) {
        if ((err as { status?: unknown }).status === 404) throw notFound(`Room alias ${alias} not found`);
        throw new MatrixError(502, 'M_UNKNOWN', `Could not resolve ${alias} through ${server}`);
      }
    }
    if (!roomId) throw notFound(`Room alias ${alias} not found`);
    const servers = new Set<string>([this.serverName]);
    const room = await this.data.room(roomId);
    if (room) for (const m of await this.store.members(room.nid, ['join'])) {
      const d = domainOf(m.user_id);
      if (d) servers.add(d);
    }
    return { room_id: roomId, servers: [...servers] };
  }

  /**
   * DELETE /directory/room/{roomAlias}: by the alias's creator, a user who may change the room's
   * canonical alias, or a server admin. The alias also leaves `m.room.canonical_alias` when the
   * user may send that (the spec recommends deleting anyway when they may not).
   */
  async deleteAlias(req: Requester, alias: string): Promise<void> {
    this.parseAlias(alias);
    const row = await this.store.aliasRow(alias);
    if (!row) throw notFound(`Room alias ${alias} not found`);
    const room = await this.data.room(row.room_id);
    let allowed = req.isAdmin || row.creator === req.userId;
    if (!allowed && room && (await this.rooms.membership(room, req.userId)) === 'join') {
      const pl = await this.rooms.powerLevels(room);
      allowed = pl.of(req.userId) >= pl.required('m.room.canonical_alias', true);
    }
    if (!allowed) throw forbidden('You may not delete this alias');
    await this.store.deleteAlias(alias);
    if (room) await this.removeFromCanonicalAlias(room, req.userId, [alias]);
  }

  /** Drops `aliases` from the room's m.room.canonical_alias, as `sender`; ignored when not allowed. */
  async removeFromCanonicalAlias(room: RoomInfo, sender: string, aliases: readonly string[]): Promise<void> {
    const ev = await this.data.stateEvent(await this.data.currentState(room), 'm.room.canonical_alias', '');
    if (!ev) return;
    const content = { ...ev.pdu.content };
    let changed = false;
    if (typeof content.alias === 'string' && aliases.includes(content.alias)) {
      delete content.alias;
      changed = true;
    }
    if (Array.isArray(content.alt_aliases)) {
      const alt = content.alt_aliases.filter((a) => !aliases.includes(a as string));
      if (alt.length !== content.alt_aliases.length) {
        content.alt_aliases = alt;
        changed = true;
      }
    }
    if (!changed) return;
    try {
      await this.persister.send(room, { sender, type: 'm.room.canonical_alias', stateKey: '', content });
    } catch (err) {
      if (!(err instanceof MatrixError && err.status === 403)) throw err;
    }
  }

  /** GET /rooms/{roomId}/aliases: members, anyone for world-readable rooms, and admins. */
  async localAliases(req: Requester, roomId: string): Promise<string[]> {
    const room = await this.data.room(roomId);
    if (!room) throw forbidden('You are not in this room');
    if (!req.isAdmin && (await this.rooms.membership(room, req.userId)) !== 'join' && !(await this.visibility.isWorldReadable(room))) {
      throw forbidden('You are not in this room');
    }
    return (await this.store.aliasesOfRoom(roomId)).sort();
  }

  // Published room directory

  /** GET /directory/list/room/{roomId} */
  async getVisibility(roomId: string): Promise<'public' | 'private'> {
    const room = await this.data.room(roomId);
    if (!room) throw notFound('Room not found');
    return (await this.store.isRoomPublic(room.nid)) ? 'public' : 'private';
  }

  /**
   * PUT /directory/list/room/{roomId}: server admins, or joined users who could change the room's
   * canonical alias (as Synapse decides who may publish a room).
   */
  async setVisibility(req: Requester, roomId: string, visibility: 'public' | 'private'): Promise<void> {
    const room = await this.data.room(roomId);
    if (!room) throw notFound('Room not found');
    if (!req.isAdmin) {
      if ((await this.rooms.membership(room, req.userId)) !== 'join') throw forbidden('You are not in this room');
      const pl = await this.rooms.powerLevels(room);
      if (pl.of(req.userId) < pl.required('m.room.canonical_alias', true)) throw forbidden('You may not change the directory visibility of this room');
    }
    await this.store.setRoomPublic(room.nid, visibility === 'public');
  }

  /**
   * GET and POST /publicRooms (the order is most joined members first). Another server's directory
   * (`server`) is that server's answer to the federation endpoint of the same name.
   */
  async publicRooms(q: PublicRoomsQuery): Promise<PublicRoomsResponse> {
    if (q.server !== undefined && q.server !== this.serverName) {
      if (!this.remotePublicRooms) throw notFound(`Cannot list the rooms of ${q.server}`);
      const { server, ...rest } = q;
      return this.remotePublicRooms(server, rest);
    }
    if (q.include_all_networks && q.third_party_instance_id !== undefined) {
      throw new MatrixError(400, 'M_INVALID_PARAM', "Can't use include_all_networks with an explicit network");
    }
    let offset = 0;
    let backwards = false;
    if (q.since !== undefined && q.since !== '') {
      const m = /^([np])(\d+)$/.exec(q.since);
      if (!m) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid since token');
      backwards = m[1] === 'p';
      offset = Number(m[2]);
    }
    const limit = Math.min(Math.max(q.limit ?? MAX_PUBLIC_ROOMS_PAGE, 0), MAX_PUBLIC_ROOMS_PAGE);
    // No application service networks exist here, so a specific network has no rooms.
    const rows = q.third_party_instance_id !== undefined ? [] : await this.store.publicRoomsByJoinedMembers();

    const term = q.filter?.generic_search_term?.trim().toLowerCase() || undefined;
    const types = q.filter?.room_types;
    const all: RoomDescription[] = [];
    for (const row of rows) {
      const room = await this.data.room(row.room_id);
      if (!room) continue;
      const { room_version: _v, encryption: _e, allowed_room_ids: _a, ...d } = await this.describe(room, row.joined);
      if (types && !types.includes(d.room_type ?? null)) continue;
      if (term && ![d.name, d.topic, d.canonical_alias, d.room_id].some((v) => v?.toLowerCase().includes(term))) continue;
      all.push(d);
    }
    const start = backwards ? Math.max(0, offset - limit) : Math.min(offset, all.length);
    const end = backwards ? offset : Math.min(start + limit, all.length);
    const res: PublicRoomsResponse = { chunk: all.slice(start, end), total_room_count_estimate: all.length };
    if (end < all.length) res.next_batch = `n${end}`;
    if (start > 0) res.prev_batch = `p${start}`;
    return res;
  }

  /** The directory entry of a room, from its current state. */
  async describe(room: RoomInfo, joined?: number): Promise<Omit<RoomSummary, 'membership'>> {
    const state = await this.data.currentState(room);
    const evs = await this.data.stateEvents(state, DESCRIBE_KEYS);
    const c = (type: string): Record<string, unknown> | undefined => evs.get(stateKey(type, ''))?.pdu.content;
    const str = (v: unknown) => (typeof v === 'string' && v !== '' ? v : undefined);
    const out: Omit<RoomSummary, 'membership'> = {
      room_id: room.roomId,
      num_joined_members: joined ?? (await this.store.memberCounts(room.nid)).joined,
      world_readable: c('m.room.history_visibility')?.history_visibility === 'world_readable',
      guest_can_join: c('m.room.guest_access')?.guest_access === 'can_join',
      room_version: room.version.id,
    };
    const name = str(c('m.room.name')?.name);
    if (name !== undefined) out.name = name;
    const topic = plainTopic(c('m.room.topic'));
    if (topic !== undefined && topic !== '') out.topic = topic;
    const avatar = str(c('m.room.avatar')?.url);
    if (avatar !== undefined) out.avatar_url = avatar;
    const alias = str(c('m.room.canonical_alias')?.alias);
    if (alias !== undefined && alias.startsWith('#')) out.canonical_alias = alias;
    const jr = c('m.room.join_rules');
    const rule = str(jr?.join_rule);
    if (rule !== undefined) out.join_rule = rule;
    if ((rule === 'restricted' || rule === 'knock_restricted') && Array.isArray(jr?.allow)) {
      out.allowed_room_ids = (jr!.allow as { type?: string; room_id?: unknown }[])
        .filter((a) => a && a.type === 'm.room_membership' && typeof a.room_id === 'string').map((a) => a.room_id as string);
    }
    const type = str(c('m.room.create')?.type);
    if (type !== undefined) out.room_type = type;
    const enc = c('m.room.encryption')?.algorithm;
    if (enc === 'm.megolm.v1.aes-sha2') out.encryption = enc;
    return out;
  }

  // Room summaries

  /**
   * GET /room_summary/{roomIdOrAlias} (v1, spec v1.15): for rooms anyone may see (public, knock,
   * world-readable), or where the user is joined, invited or knocking, or may join (restricted and
   * in an allowed room). Anything else is 404, so the answer does not reveal that a room exists.
   */
  async summary(userId: string | undefined, roomIdOrAlias: string): Promise<RoomSummary> {
    let roomId: string;
    if (roomIdOrAlias.startsWith('#')) {
      this.parseAlias(roomIdOrAlias);
      const id = await this.store.roomIdByAlias(roomIdOrAlias);
      if (!id) throw notFound('Room not found');
      roomId = id;
    } else if (roomIdOrAlias.startsWith('!')) {
      roomId = roomIdOrAlias;
    } else {
      throw new MatrixError(400, 'M_INVALID_PARAM', `${roomIdOrAlias} is not a room id or alias`);
    }
    const room = await this.data.room(roomId);
    if (!room) throw notFound('Room not found');
    const d = await this.describe(room);
    const membership = userId ? (await this.store.membership(room.nid, userId))?.membership : undefined;
    const open = d.join_rule === 'public' || d.join_rule === 'knock' || d.join_rule === 'knock_restricted' || d.world_readable;
    let accessible = open || membership === 'join' || membership === 'invite' || membership === 'knock';
    if (!accessible && userId && d.allowed_room_ids?.length) {
      for (const other of d.allowed_room_ids) {
        const r = await this.data.room(other);
        if (r && (await this.store.membership(r.nid, userId))?.membership === 'join') {
          accessible = true;
          break;
        }
      }
    }
    if (!accessible) throw notFound('Room not found or is not accessible');
    const out: RoomSummary = { ...d };
    if (userId) out.membership = membership ?? 'leave';
    return out;
  }

}
