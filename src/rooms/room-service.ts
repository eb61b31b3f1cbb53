// Room operations clients perform: create, membership, send, state, redact. Each event goes
// through the persister (build → auth → sign → persist → notify).
import { randomBytes } from 'node:crypto';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { EventsStore } from '../storage/events-store.js';
import type { UsersStore } from '../storage/users-store.js';
import { stateKey, type PDU, type StateMap } from './event.js';
import { getRoomVersion, type RoomVersion } from './versions.js';
import { powerLevelOf, requiredPowerLevelFor, namedPowerLevel, creatorsOf } from './auth-rules.js';
import type { EventPersister, NewEvent } from './persist.js';
import type { RoomData, RoomInfo, StoredEvent } from './room-data.js';

export interface CreateRoomRequest {
  visibility?: 'public' | 'private';
  room_alias_name?: string;
  name?: string;
  topic?: string;
  invite?: string[];
  room_version?: string;
  creation_content?: Record<string, unknown>;
  initial_state?: { type: string; state_key?: string; content: Record<string, unknown> }[];
  preset?: 'private_chat' | 'public_chat' | 'trusted_private_chat';
  is_direct?: boolean;
  power_level_content_override?: Record<string, unknown>;
}

/** What the room service needs from federation (absent: rooms are local only). */
export interface RoomFederation {
  joinRemote(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<StoredEvent>;
  /** The invitee's server countersigns an invite before it is stored (spec: "Inviting to a room"). */
  signInvite(room: RoomInfo, invite: PDU, strippedState: unknown[]): Promise<PDU>;
  /** Rejects an invite / rescinds a knock for a room this server is not in. */
  leaveRemote(userId: string, room: RoomInfo, server: string): Promise<void>;
  /** Resolves a room alias of another server. */
  queryAlias(alias: string): Promise<{ room_id: string; servers: string[] }>;
}

export interface RoomServiceHooks {
  /** A new room alias was created (directory). */
  aliasCreated?(alias: string, roomId: string): Promise<void>;
}

const PRESETS = {
  private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join', trustInvitees: false },
  trusted_private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join', trustInvitees: true },
  public_chat: { join_rule: 'public', history_visibility: 'shared', guest_access: 'forbidden', trustInvitees: false },
} as const;

export class RoomService {
  constructor(
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly users: UsersStore,
    private readonly persister: EventPersister,
    private readonly serverName: string,
    private readonly defaultVersion: string,
  ) {}

  federation: RoomFederation | null = null;

  /** Whether this server takes part in the room (has a joined member), so it can build events. */
  private async participating(room: RoomInfo): Promise<boolean> {
    if (room.isLocal) return true;
    const joined = await this.store.members(room.nid, ['join']);
    return joined.some((m) => this.isLocalUser(m.user_id));
  }

  isLocalUser(userId: string): boolean {
    return userId.endsWith(`:${this.serverName}`);
  }

  async requireRoom(roomId: string): Promise<RoomInfo> {
    const room = await this.data.room(roomId);
    if (!room) throw notFound('Unknown room');
    return room;
  }

  async membership(room: RoomInfo, userId: string): Promise<string | undefined> {
    return (await this.store.membership(room.nid, userId))?.membership;
  }

  async requireJoined(room: RoomInfo, userId: string): Promise<void> {
    if ((await this.membership(room, userId)) !== 'join') throw forbidden(`User ${userId} is not in room ${room.roomId}`);
  }

  // Create

  async createRoom(userId: string, req: CreateRoomRequest): Promise<{ roomId: string; alias?: string }> {
    const versionId = req.room_version ?? this.defaultVersion;
    const version = getRoomVersion(versionId);
    if (!version) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', `Room version ${versionId} is not supported`);
    const presetName = req.preset ?? (req.visibility === 'public' ? 'public_chat' : 'private_chat');
    const preset = PRESETS[presetName];
    if (!preset) throw new MatrixError(400, 'M_BAD_JSON', `Unknown preset ${presetName}`);
    const invites = [...new Set(req.invite ?? [])].filter((u) => u !== userId);
    for (const u of invites) if (!/^@[^:]+:.+$/.test(u)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid user id ${u}`);

    let alias: string | undefined;
    if (req.room_alias_name !== undefined) {
      if (!/^[^:\s#]+$/.test(req.room_alias_name)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid room_alias_name');
      alias = `#${req.room_alias_name}:${this.serverName}`;
      if (await this.store.roomIdByAlias(alias)) throw new MatrixError(400, 'M_ROOM_IN_USE', 'Room alias already taken');
    }

    // v12: creators have unlimited power and may not be listed in power levels (checked before any
    // event is created, so a bad request leaves no half-made room).
    if (version.privilegedCreators) {
      const users = (req.power_level_content_override as { users?: Record<string, unknown> } | undefined)?.users;
      const extra = Array.isArray(req.creation_content?.additional_creators) ? (req.creation_content!.additional_creators as string[]) : [];
      const creatorIds = [userId, ...extra, ...(req.preset === 'trusted_private_chat' ? invites : [])];
      if (users && creatorIds.some((c) => c in users)) {
        throw new MatrixError(400, 'M_BAD_JSON', 'Room creators cannot be given a power level in this room version');
      }
    }

    // m.room.create
    const creationContent: Record<string, unknown> = { ...(req.creation_content ?? {}), room_version: version.id };
    if (!version.implicitRoomCreator) creationContent.creator = userId;
    else delete creationContent.creator;
    const trustedCreators = version.additionalCreators && preset.trustInvitees ? invites : [];
    if (trustedCreators.length) {
      const extra = Array.isArray(creationContent.additional_creators) ? (creationContent.additional_creators as string[]) : [];
      creationContent.additional_creators = [...new Set([...extra, ...trustedCreators])];
    }
    const roomId = version.roomIdFromCreateEvent ? null : `!${randomBytes(12).toString('base64url').replace(/[-_]/g, 'x')}:${this.serverName}`;
    const { room } = await this.persister.createRoomWithCreateEvent({ roomId, version, sender: userId, content: creationContent });
    const send = (e: Omit<NewEvent, 'sender'> & { sender?: string }) => this.persister.send(room, { sender: userId, ...e });

    // The creator's join.
    await send({ type: 'm.room.member', stateKey: userId, content: { membership: 'join', ...(await this.profileContent(userId)) } });

    // m.room.power_levels
    const creators = creatorsOf((await this.data.stateEvent(await this.data.currentState(room), 'm.room.create', ''))?.pdu, version);
    const users: Record<string, number> = {};
    if (!version.privilegedCreators) users[userId] = 100;
    if (preset.trustInvitees) for (const u of invites) if (!creators.has(u)) users[u] = 100;
    const pl: Record<string, unknown> = {
      users,
      users_default: 0,
      events: {
        'm.room.name': 50,
        'm.room.power_levels': 100,
        'm.room.history_visibility': 100,
        'm.room.canonical_alias': 50,
        'm.room.avatar': 50,
        'm.room.tombstone': 100,
        'm.room.server_acl': 100,
        'm.room.encryption': 100,
      },
      events_default: 0,
      state_default: 50,
      ban: 50,
      kick: 50,
      redact: 50,
      invite: 0,
      notifications: { room: 50 },
      ...(req.power_level_content_override ?? {}),
    };
    const initialPl = req.initial_state?.find((e) => e.type === 'm.room.power_levels' && (e.state_key ?? '') === '');
    await send({ type: 'm.room.power_levels', stateKey: '', content: initialPl ? initialPl.content : pl });

    if (alias) await send({ type: 'm.room.canonical_alias', stateKey: '', content: { alias } });

    const initial = new Map<string, { type: string; state_key: string; content: Record<string, unknown> }>();
    for (const e of req.initial_state ?? []) {
      if (e.type === 'm.room.power_levels' && (e.state_key ?? '') === '') continue;
      initial.set(stateKey(e.type, e.state_key ?? ''), { type: e.type, state_key: e.state_key ?? '', content: e.content });
    }
    const presetEvents: [string, Record<string, unknown>][] = [
      ['m.room.join_rules', { join_rule: preset.join_rule }],
      ['m.room.history_visibility', { history_visibility: preset.history_visibility }],
      ['m.room.guest_access', { guest_access: preset.guest_access }],
    ];
    for (const [type, content] of presetEvents) {
      if (!initial.has(stateKey(type, ''))) await send({ type, stateKey: '', content });
    }
    for (const e of initial.values()) await send({ type: e.type, stateKey: e.state_key, content: e.content });
    if (req.name !== undefined) await send({ type: 'm.room.name', stateKey: '', content: { name: req.name } });
    if (req.topic !== undefined) {
      await send({ type: 'm.room.topic', stateKey: '', content: { topic: req.topic, 'm.topic': [{ body: req.topic, mimetype: 'text/plain' }] } });
    }
    for (const invitee of invites) {
      // Through setMembership, so users of other servers get their server's countersigned invite.
      await this.setMembership(userId, room.roomId, invitee, 'invite', { isDirect: req.is_direct });
    }
    if (alias) await this.store.insertAlias(alias, room.roomId, userId);
    if (req.visibility === 'public') await this.store.setRoomPublic(room.nid, true);
    return { roomId: room.roomId, alias };
  }

  /** The displayname and avatar_url a local user's member events carry. */
  async profileContent(userId: string): Promise<Record<string, unknown>> {
    if (!this.isLocalUser(userId)) return {};
    const u = await this.users.userById(userId);
    const out: Record<string, unknown> = {};
    if (u?.displayname) out.displayname = u.displayname;
    if (u?.avatar_url) out.avatar_url = u.avatar_url;
    return out;
  }

  // Membership

  async resolveRoomIdOrAlias(idOrAlias: string): Promise<string> {
    return (await this.resolveWithServers(idOrAlias)).roomId;
  }

  /** A room id (and servers to join through) for a room id or alias, asking the alias's server when remote. */
  async resolveWithServers(idOrAlias: string): Promise<{ roomId: string; servers: string[] }> {
    if (idOrAlias.startsWith('!')) return { roomId: idOrAlias, servers: [] };
    if (idOrAlias.startsWith('#')) {
      const id = await this.store.roomIdByAlias(idOrAlias);
      if (id) return { roomId: id, servers: [] };
      const server = idOrAlias.slice(idOrAlias.indexOf(':') + 1);
      if (this.federation && idOrAlias.includes(':') && server !== this.serverName) {
        const res = await this.federation.queryAlias(idOrAlias);
        return { roomId: res.room_id, servers: res.servers };
      }
      throw notFound(`Room alias ${idOrAlias} not found`);
    }
    throw new MatrixError(400, 'M_INVALID_PARAM', `${idOrAlias} is not a room id or alias`);
  }

  async join(userId: string, roomId: string, opts: { reason?: string; servers?: readonly string[] } = {}): Promise<StoredEvent> {
    const room = await this.data.room(roomId);
    const content: Record<string, unknown> = { membership: 'join', ...(await this.profileContent(userId)) };
    if (opts.reason) content.reason = opts.reason;
    if (!room || !(await this.participating(room))) {
      // Not in the room: join through a resident server (given, the room id's, or the inviter's).
      if (!this.federation) throw notFound('No known servers to join this room through');
      const servers = [...(opts.servers ?? [])];
      if (room) {
        const m = await this.store.membership(room.nid, userId);
        const inv = m ? (await this.data.fromRows(await this.store.eventsByNids([m.event_nid])))[0] : undefined;
        const inviter = inv?.pdu.sender.split(':').slice(1).join(':');
        if (inviter) servers.push(inviter);
      }
      const own = roomId.includes(':') ? roomId.slice(roomId.indexOf(':') + 1) : undefined;
      if (own) servers.push(own);
      return this.federation.joinRemote(userId, roomId, servers, content);
    }
    const state = await this.data.currentState(room);
    const current = await this.membershipIn(state, userId);
    if (current === 'join') {
      // Already joined: nothing changes unless the profile did (avoids a redundant event).
      const ev = await this.data.stateEvent(state, 'm.room.member', userId);
      if (ev && ev.pdu.content.displayname === content.displayname && ev.pdu.content.avatar_url === content.avatar_url) return ev;
    }
    if (room.version.restrictedJoin && current !== 'invite' && current !== 'join') {
      const via = await this.restrictedJoinAuthoriser(room, state, userId);
      if (via) content.join_authorised_via_users_server = via;
    }
    return this.persister.send(room, { sender: userId, type: 'm.room.member', stateKey: userId, content });
  }

  /**
   * For restricted rooms (v8+): when the user is in a room of the allow list, a local member with
   * invite power authorises the join (spec: "Restricted rooms").
   */
  private async restrictedJoinAuthoriser(room: RoomInfo, state: StateMap, userId: string): Promise<string | undefined> {
    const jr = (await this.data.stateEvent(state, 'm.room.join_rules', ''))?.pdu.content;
    const rule = jr?.join_rule;
    if (rule !== 'restricted' && rule !== 'knock_restricted') return undefined;
    const allow = Array.isArray(jr?.allow) ? (jr!.allow as { type?: string; room_id?: string }[]) : [];
    let allowed = false;
    for (const a of allow) {
      if (a.type !== 'm.room_membership' || typeof a.room_id !== 'string') continue;
      const other = await this.data.room(a.room_id);
      if (other && (await this.membership(other, userId)) === 'join') {
        allowed = true;
        break;
      }
    }
    if (!allowed) return undefined;
    const events = await this.data.stateEvents(state, [stateKey('m.room.power_levels', ''), stateKey('m.room.create', '')]);
    const lookup = (t: string, k: string) => events.get(stateKey(t, k))?.pdu;
    const invitePl = namedPowerLevel('invite', lookup, room.version);
    const joined = await this.store.members(room.nid, ['join']);
    const candidates = joined.filter((m) => this.isLocalUser(m.user_id) && powerLevelOf(m.user_id, lookup, room.version) >= invitePl);
    candidates.sort((a, b) => powerLevelOf(b.user_id, lookup, room.version) - powerLevelOf(a.user_id, lookup, room.version));
    return candidates[0]?.user_id;
  }

  private async membershipIn(state: StateMap, userId: string): Promise<string | undefined> {
    const ev = await this.data.stateEvent(state, 'm.room.member', userId);
    const m = ev?.pdu.content?.membership;
    return typeof m === 'string' ? m : undefined;
  }

  async setMembership(sender: string, roomId: string, target: string, membership: 'invite' | 'leave' | 'ban' | 'knock', opts: { reason?: string; isDirect?: boolean; txn?: NewEvent['txn'] } = {}): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    if (!(await this.participating(room))) return this.leaveUnjoinedRoom(sender, room, target, membership);
    const state = await this.data.currentState(room);
    const current = await this.membershipIn(state, target);
    if (membership === 'invite') {
      if (current === 'join') throw forbidden(`${target} is already in the room`);
      if (current === 'ban') throw forbidden(`${target} is banned from the room`);
    }
    if (membership === 'leave' && sender === target && current === undefined) {
      throw forbidden('You are not in this room');
    }
    const content: Record<string, unknown> = { membership };
    if (opts.reason) content.reason = opts.reason;
    if (opts.isDirect) content.is_direct = true;
    if (membership === 'invite' || (membership === 'knock')) Object.assign(content, await this.profileContent(target));
    const remoteInvitee = membership === 'invite' && !this.isLocalUser(target);
    if (remoteInvitee && !this.federation) throw forbidden('Federation is disabled');
    const transform = remoteInvitee
      ? async (pdu: PDU) => this.federation!.signInvite(room, pdu, await this.strippedInviteState(room, sender))
      : undefined;
    return this.persister.send(room, { sender, type: 'm.room.member', stateKey: target, content, txn: opts.txn, transform });
  }

  /** Stripped state for an invitee's server (spec: "Stripped state"). */
  private async strippedInviteState(room: RoomInfo, sender: string): Promise<unknown[]> {
    const state = await this.data.currentState(room);
    const keys = ['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'].map((t) => stateKey(t, ''));
    keys.push(stateKey('m.room.member', sender));
    return [...(await this.data.stateEvents(state, keys)).values()].map((e) => ({ type: e.pdu.type, state_key: e.pdu.state_key ?? '', content: e.pdu.content, sender: e.pdu.sender }));
  }

  /** Leaving a room this server is not joined to: rejecting an invite or rescinding a knock. */
  private async leaveUnjoinedRoom(sender: string, room: RoomInfo, target: string, membership: string): Promise<StoredEvent> {
    if (membership !== 'leave' || sender !== target) throw forbidden('This server is not in the room');
    const m = await this.store.membership(room.nid, target);
    if (!m || (m.membership !== 'invite' && m.membership !== 'knock')) throw forbidden('You are not in this room');
    const ev = (await this.data.fromRows(await this.store.eventsByNids([m.event_nid])))[0];
    const server = ev?.pdu.sender.slice(ev.pdu.sender.indexOf(':') + 1);
    if (this.federation && server && server !== this.serverName) {
      await this.federation.leaveRemote(target, room, server).catch(() => undefined); // best effort: the invite is gone for us anyway
    }
    await this.persister.recordMembership(room, { ...m, membership: 'leave' });
    return ev;
  }

  async unban(sender: string, roomId: string, target: string, reason?: string): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    const current = await this.membershipIn(await this.data.currentState(room), target);
    if (current !== 'ban') throw forbidden(`${target} is not banned`);
    return this.persister.send(room, { sender, type: 'm.room.member', stateKey: target, content: { membership: 'leave', ...(reason ? { reason } : {}) } });
  }

  /**
   * After a profile change: a fresh join event with the new displayname/avatar_url in every room the
   * user is joined to (as Synapse does). One room failing does not stop the others.
   */
  async propagateProfile(userId: string): Promise<void> {
    for (const r of await this.store.roomsOfUser(userId, ['join'])) {
      try {
        await this.join(userId, r.room_id);
      } catch {
        // e.g. the room's power levels no longer allow the user's member event; skip that room.
      }
    }
  }

  /** Account deactivation: leave every joined room, reject invites and withdraw knocks. */
  async leaveAllRooms(userId: string): Promise<void> {
    for (const r of await this.store.roomsOfUser(userId, ['join', 'invite', 'knock'])) {
      try {
        await this.setMembership(userId, r.room_id, userId, 'leave');
      } catch {
        // Leaving is always allowed for one's own membership; a failure here must not block deactivation.
      }
    }
  }

  /** Whether the room exists and the user has (or had) a membership in it (room account data). */
  async hasMembership(userId: string, roomId: string): Promise<boolean> {
    const room = await this.data.room(roomId);
    return !!room && !!(await this.store.membership(room.nid, userId));
  }

  async forget(userId: string, roomId: string): Promise<void> {
    const room = await this.requireRoom(roomId);
    const m = await this.store.membership(room.nid, userId);
    if (!m) throw notFound('You have never been in this room');
    if (m.membership === 'join' || m.membership === 'invite' || m.membership === 'knock') {
      throw new MatrixError(400, 'M_UNKNOWN', 'You must leave the room before forgetting it');
    }
    await this.store.setForgotten(room.nid, userId);
  }

  // Sending

  async send(userId: string, deviceId: string, roomId: string, type: string, content: Record<string, unknown>, txnId: string): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    return this.persister.send(room, { sender: userId, type, content, txn: { deviceId, txnId } });
  }

  async sendState(userId: string, roomId: string, type: string, key: string, content: Record<string, unknown>): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    if (type === 'm.room.member') throw forbidden('Use the membership endpoints to change membership');
    const state = await this.data.currentState(room);
    const existing = await this.data.stateEvent(state, type, key);
    // Repeating the same state with the same content is a no-op that returns the current event.
    if (existing && existing.pdu.sender === userId && JSON.stringify(existing.pdu.content) === JSON.stringify(content)) return existing;
    if (type === 'm.room.canonical_alias') await this.checkCanonicalAlias(room, content);
    return this.persister.send(room, { sender: userId, type, content, stateKey: key });
  }

  private async checkCanonicalAlias(room: RoomInfo, content: Record<string, unknown>): Promise<void> {
    const aliases = [content.alias, ...(Array.isArray(content.alt_aliases) ? content.alt_aliases : [])].filter((a) => a !== undefined && a !== null);
    for (const a of aliases) {
      if (typeof a !== 'string' || !/^#[^:]+:.+$/.test(a)) throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid alias ${String(a)}`);
      if (a.endsWith(`:${this.serverName}`) && (await this.store.roomIdByAlias(a)) !== room.roomId) {
        throw new MatrixError(400, 'M_BAD_ALIAS', `Alias ${a} does not point to this room`);
      }
    }
  }

  async redact(userId: string, deviceId: string, roomId: string, eventId: string, reason: string | undefined, txnId: string): Promise<StoredEvent> {
    const room = await this.requireRoom(roomId);
    // A user may redact their own events, or others' with the `redact` power level (spec:
    // "Redactions"); the server-name rule of the auth rules is for federation.
    const target = await this.data.event(eventId);
    if (target && target.roomNid === room.nid && target.pdu.sender !== userId) {
      const pl = await this.powerLevels(room);
      if (pl.of(userId) < pl.named('redact')) throw forbidden('You cannot redact other users\' events');
    }
    const content: Record<string, unknown> = {};
    if (reason !== undefined) content.reason = reason;
    return this.persister.send(room, { sender: userId, type: 'm.room.redaction', content, redacts: eventId, txn: { deviceId, txnId } });
  }

  // Power levels, for endpoint checks that happen before building an event.

  async powerLevels(room: RoomInfo, state?: StateMap): Promise<{ of(userId: string): number; required(type: string, isState: boolean): number; named(n: 'invite' | 'kick' | 'ban' | 'redact'): number; version: RoomVersion }> {
    const s = state ?? (await this.data.currentState(room));
    const events = await this.data.stateEvents(s, [stateKey('m.room.power_levels', ''), stateKey('m.room.create', '')]);
    const lookup = (t: string, k: string) => events.get(stateKey(t, k))?.pdu;
    return {
      of: (u) => powerLevelOf(u, lookup, room.version),
      required: (t, isState) => requiredPowerLevelFor(t, isState, lookup, room.version),
      named: (n) => namedPowerLevel(n, lookup, room.version),
      version: room.version,
    };
  }
}
