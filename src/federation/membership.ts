// Joining, inviting and leaving across servers: this server as the joining server (make_join /
// send_join to a resident server), as the resident server (answering them), and invites both ways.
import type { Logger } from 'pino';
import { MatrixError, forbidden } from '../http/errors.js';
import type { SigningKey } from '../crypto/signing.js';
import type { EventsStore } from '../storage/events-store.js';
import type { EventPersister } from '../rooms/persist.js';
import { AuthError, authEventTypesFor, checkAuth, namedPowerLevel, powerLevelOf } from '../rooms/auth-rules.js';
import { authEventIds, domainOf, eventStateKey, isPlainObject, stateKey, type PDU, type StateMap } from '../rooms/event.js';
import { eventIdOf, roomIdFromCreateEvent, signEvent } from '../rooms/hashing.js';
import { getRoomVersion, ROOM_VERSIONS, type RoomVersion } from '../rooms/versions.js';
import type { RoomData, RoomInfo, StoredEvent } from '../rooms/room-data.js';
import type { ReceivedEvents } from '../rooms/received.js';
import type { FederationReceiver } from './receiver.js';
import type { FederationRequester, KeyLookup } from './interfaces.js';
import { checkReceivedPdu, PduRejected } from './pdu-checks.js';

const SUPPORTED_VERSIONS = Object.keys(ROOM_VERSIONS);

export interface OutboxLike {
  /** Queue an event (already persisted) for these destinations. */
  sendEventTo?(eventId: string, roomId: string, destinations: string[]): Promise<void>;
}

export class FederatedMembership {
  outbox: OutboxLike = {};

  constructor(
    private readonly data: RoomData,
    private readonly store: EventsStore,
    private readonly persister: EventPersister,
    private readonly received: ReceivedEvents,
    private readonly receiver: FederationReceiver,
    private readonly client: FederationRequester,
    private readonly keys: KeyLookup,
    private readonly serverName: string,
    private readonly signingKey: () => SigningKey,
    private readonly logger: Logger,
  ) {}

  private sign(pdu: PDU, version: RoomVersion): PDU {
    const { hashes: _h, signatures: _s, unsigned: _u, ...rest } = pdu;
    return signEvent(rest as Record<string, unknown>, this.serverName, this.signingKey(), version) as unknown as PDU;
  }

  // ---------------------------------------------------------------- as the joining server

  /** Joins a room this server is not in, through one of `servers`. */
  async joinRemote(userId: string, roomId: string, servers: readonly string[], content: Record<string, unknown>): Promise<StoredEvent> {
    const candidates = [...new Set(servers.filter((s) => s && s !== this.serverName))];
    if (!candidates.length) throw new MatrixError(404, 'M_NOT_FOUND', 'No known servers to join this room through');
    let lastError: unknown;
    for (const server of candidates) {
      try {
        return await this.joinVia(server, userId, roomId, content);
      } catch (err) {
        lastError = err;
        this.logger.info({ server, roomId, err: (err as Error).message }, 'remote join attempt failed');
        if (err instanceof MatrixError && err.status === 403) throw err;
      }
    }
    if (lastError instanceof MatrixError) throw lastError;
    throw new MatrixError(502, 'M_UNKNOWN', `Could not join through any server: ${(lastError as Error)?.message ?? 'unknown error'}`);
  }

  private async joinVia(server: string, userId: string, roomId: string, content: Record<string, unknown>): Promise<StoredEvent> {
    let made: { event?: PDU; room_version?: string };
    try {
      made = await this.client.request(server, 'GET', `/_matrix/federation/v1/make_join/${encodeURIComponent(roomId)}/${encodeURIComponent(userId)}`, { query: { ver: SUPPORTED_VERSIONS } });
    } catch (err) {
      throw remoteError(err);
    }
    const version = getRoomVersion(made.room_version ?? '1');
    if (!version || !isPlainObject(made.event)) throw new MatrixError(400, 'M_UNSUPPORTED_ROOM_VERSION', 'The room version is not supported');
    const template = made.event as PDU;
    if (template.type !== 'm.room.member' || template.state_key !== userId || template.sender !== userId) throw new MatrixError(502, 'M_UNKNOWN', 'Bad make_join template');
    const draft: PDU = {
      ...template,
      content: { ...(isPlainObject(template.content) ? template.content : {}), ...content, membership: 'join' },
      origin_server_ts: Date.now(),
      room_id: roomId,
    };
    if (version.redaction !== 'v11') draft.origin = this.serverName;
    if (version.eventIdFormat === 'v1') draft.event_id = `$${Math.random().toString(36).slice(2)}${Date.now().toString(36)}:${this.serverName}`;
    const joinEvent = this.sign(draft, version);
    const eventId = eventIdOf(joinEvent, version);
    let res: { state?: unknown[]; auth_chain?: unknown[]; event?: unknown; origin?: string };
    try {
      res = await this.client.request(server, 'PUT', `/_matrix/federation/v2/send_join/${encodeURIComponent(roomId)}/${encodeURIComponent(eventId)}`, { body: joinEvent, timeoutMs: 120_000 });
    } catch (err) {
      throw remoteError(err);
    }
    // A restricted join comes back with the authorising server's signature added.
    const finalEvent = isPlainObject(res.event) && eventIdOf(res.event as PDU, version) === eventId ? (res.event as PDU) : joinEvent;
    const creator = this.creatorFromState(res.state, version);
    const room = await this.received.ensureRoom(roomId, version, creator);
    const authChain = await this.receiver.storeCheckedOutliers(room, Array.isArray(res.auth_chain) ? res.auth_chain : []);
    const stateEvents = await this.receiver.storeCheckedOutliers(room, Array.isArray(res.state) ? res.state : []);
    void authChain;
    const state: StateMap = new Map();
    const storedState = await this.data.eventsMap(stateEvents.keys());
    for (const [id, ev] of storedState) {
      const k = eventStateKey(ev.pdu);
      if (k && !ev.rejected) state.set(k, id);
    }
    if (!state.has(stateKey('m.room.create', '')) && !version.roomIdFromCreateEvent) throw new MatrixError(502, 'M_UNKNOWN', 'send_join state has no create event');
    // The join must be allowed by the state the resident server gave us.
    const se = await this.data.stateEvents(state);
    const lookup = (t: string, k: string) => se.get(stateKey(t, k))?.pdu ?? (t === 'm.room.create' && version.roomIdFromCreateEvent ? createFor(se, roomId) : undefined);
    try {
      checkAuth(finalEvent, lookup, version);
    } catch (err) {
      if (err instanceof AuthError) throw new MatrixError(403, 'M_FORBIDDEN', `Join not allowed: ${err.reason}`);
      throw err;
    }
    return this.received.place(room, finalEvent, { stateBefore: state });
  }

  private creatorFromState(state: unknown, version: RoomVersion): string | null {
    if (!Array.isArray(state)) return null;
    const create = state.find((e) => isPlainObject(e) && e.type === 'm.room.create') as PDU | undefined;
    if (!create) return null;
    if (version.implicitRoomCreator) return create.sender;
    return typeof create.content?.creator === 'string' ? create.content.creator : create.sender;
  }

  /** Invites a user of another server: their server countersigns the invite before we persist it. */
  async signInviteRemotely(room: RoomInfo, invite: PDU, strippedState: unknown[]): Promise<PDU> {
    const target = typeof invite.state_key === 'string' ? domainOf(invite.state_key) : undefined;
    if (!target) throw new MatrixError(400, 'M_INVALID_PARAM', 'Bad invitee');
    const eventId = eventIdOf(invite, room.version);
    let res: { event?: PDU };
    try {
      res = await this.client.request(target, 'PUT', `/_matrix/federation/v2/invite/${encodeURIComponent(room.roomId)}/${encodeURIComponent(eventId)}`, {
        body: { event: invite, room_version: room.version.id, invite_room_state: strippedState },
      });
    } catch (err) {
      throw remoteError(err);
    }
    if (!isPlainObject(res.event)) throw new MatrixError(502, 'M_UNKNOWN', 'Invalid invite response');
    const signed = res.event as PDU;
    if (eventIdOf(signed, room.version) !== eventId) throw new MatrixError(502, 'M_UNKNOWN', 'The invited server changed the invite');
    await checkReceivedPdu(signed, room.version, this.keys).catch((err) => {
      throw new MatrixError(502, 'M_UNKNOWN', `The invited server's signature is bad: ${(err as Error).message}`);
    });
    return signed;
  }

  /** Leaves (or rejects an invite to) a room this server is not joined to, through `server`. */
  async leaveRemote(userId: string, room: RoomInfo, server: string): Promise<void> {
    const made = await this.client.request<{ event?: PDU; room_version?: string }>(server, 'GET', `/_matrix/federation/v1/make_leave/${encodeURIComponent(room.roomId)}/${encodeURIComponent(userId)}`);
    if (!isPlainObject(made.event)) throw new MatrixError(502, 'M_UNKNOWN', 'Bad make_leave response');
    const draft: PDU = { ...(made.event as PDU), origin_server_ts: Date.now(), room_id: room.roomId, content: { membership: 'leave' } };
    if (room.version.redaction !== 'v11') draft.origin = this.serverName;
    const ev = this.sign(draft, room.version);
    await this.client.request(server, 'PUT', `/_matrix/federation/v2/send_leave/${encodeURIComponent(room.roomId)}/${encodeURIComponent(eventIdOf(ev, room.version))}`, { body: ev });
  }

  // ---------------------------------------------------------------- as the resident server

  /** GET /make_join/{roomId}/{userId}: a join template for a user of `origin`. */
  async makeJoin(origin: string, roomId: string, userId: string, versions: readonly string[]): Promise<{ event: PDU; room_version: string }> {
    if (domainOf(userId) !== origin) throw forbidden('The user is not from the requesting server');
    const room = await this.data.room(roomId);
    if (!room) throw new MatrixError(404, 'M_NOT_FOUND', 'Unknown room');
    if (!versions.includes(room.version.id)) {
      throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', 'Your server does not support this room version', { room_version: room.version.id });
    }
    const content: Record<string, unknown> = { membership: 'join' };
    const state = await this.data.currentState(room);
    const current = (await this.data.stateEvent(state, 'm.room.member', userId))?.pdu.content?.membership;
    if (room.version.restrictedJoin && current !== 'invite' && current !== 'join') {
      const via = await this.authoriserFor(room, state, userId);
      if (via) content.join_authorised_via_users_server = via;
    }
    const event = await this.template(room, state, { type: 'm.room.member', sender: userId, state_key: userId, content });
    return { event, room_version: room.version.id };
  }

  async makeMembership(origin: string, roomId: string, userId: string, membership: 'leave' | 'knock', versions?: readonly string[]): Promise<{ event: PDU; room_version: string }> {
    if (domainOf(userId) !== origin) throw forbidden('The user is not from the requesting server');
    const room = await this.data.room(roomId);
    if (!room) throw new MatrixError(404, 'M_NOT_FOUND', 'Unknown room');
    if (versions && !versions.includes(room.version.id)) throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', 'Unsupported room version', { room_version: room.version.id });
    const state = await this.data.currentState(room);
    const event = await this.template(room, state, { type: 'm.room.member', sender: userId, state_key: userId, content: { membership } });
    return { event, room_version: room.version.id };
  }

  /** An unsigned event template on top of the room's current extremities, checked against its state. */
  private async template(room: RoomInfo, state: StateMap, e: { type: string; sender: string; state_key: string; content: Record<string, unknown> }): Promise<PDU> {
    const head = await this.store.roomHead(room.nid);
    const prev = head.extremities.sort((a, b) => b.depth - a.depth).slice(0, 10);
    const draft: PDU = {
      type: e.type, sender: e.sender, state_key: e.state_key, content: e.content, room_id: room.roomId,
      depth: (prev[0]?.depth ?? 0) + 1, origin_server_ts: Date.now(), prev_events: prev.map((p) => p.event_id), auth_events: [],
      hashes: { sha256: '' }, signatures: {},
    };
    delete (draft as Partial<PDU>).hashes;
    delete (draft as Partial<PDU>).signatures;
    if (room.version.redaction !== 'v11') draft.origin = domainOf(e.sender);
    const authKeys = authEventTypesFor(draft, room.version).map(([t, k]) => stateKey(t, k));
    const authIds = authKeys.map((k) => state.get(k)).filter((x): x is string => !!x);
    const authMap = await this.data.eventsMap([...authIds, ...prev.map((p) => p.event_id)]);
    if (room.version.eventIdFormat === 'v1') {
      const ref = (id: string): [string, Record<string, string>] => [id, { sha256: authMap.get(id)?.pdu.hashes?.sha256 ?? '' }];
      draft.auth_events = authIds.map(ref);
      draft.prev_events = prev.map((p) => ref(p.event_id));
    } else {
      draft.auth_events = authIds;
    }
    const se = await this.data.stateEvents(state, [...authKeys, stateKey('m.room.create', '')]);
    try {
      // Signatures are not there yet; the restricted-join signature rule is checked at send_join.
      checkAuth(draft, (t, k) => se.get(stateKey(t, k))?.pdu, room.version, { isSignedBy: () => true });
    } catch (err) {
      if (err instanceof AuthError) throw forbidden(`Not allowed: ${err.reason}`);
      throw err;
    }
    return draft;
  }

  private async authoriserFor(room: RoomInfo, state: StateMap, userId: string): Promise<string | undefined> {
    const jr = (await this.data.stateEvent(state, 'm.room.join_rules', ''))?.pdu.content;
    if (jr?.join_rule !== 'restricted' && jr?.join_rule !== 'knock_restricted') return undefined;
    const allow = Array.isArray(jr.allow) ? (jr.allow as { type?: string; room_id?: string }[]) : [];
    let allowed = false;
    for (const a of allow) {
      if (a.type !== 'm.room_membership' || typeof a.room_id !== 'string') continue;
      const other = await this.data.room(a.room_id);
      if (other && (await this.store.membership(other.nid, userId))?.membership === 'join') allowed = true;
    }
    if (!allowed) throw new MatrixError(400, 'M_UNABLE_TO_AUTHORISE_JOIN', 'The user is not in any room that allows joining');
    const se = await this.data.stateEvents(state, [stateKey('m.room.power_levels', ''), stateKey('m.room.create', '')]);
    const lookup = (t: string, k: string) => se.get(stateKey(t, k))?.pdu;
    const need = namedPowerLevel('invite', lookup, room.version);
    const local = (await this.store.members(room.nid, ['join'])).filter((m) => domainOf(m.user_id) === this.serverName && powerLevelOf(m.user_id, lookup, room.version) >= need);
    if (!local.length) throw new MatrixError(400, 'M_UNABLE_TO_GRANT_JOIN', 'No user here can authorise the join');
    return local[0].user_id;
  }

  /**
   * PUT /v2/send_join (and send_leave / send_knock): checks the event, adds our signature when we
   * authorised a restricted join, persists it and returns the state before it with its auth chain.
   */
  async sendMembership(origin: string, roomId: string, eventId: string, raw: unknown, membership: 'join' | 'leave' | 'knock'): Promise<{ event: PDU; state: PDU[]; authChain: PDU[]; room: RoomInfo; stored: StoredEvent }> {
    const room = await this.data.room(roomId);
    if (!room) throw new MatrixError(404, 'M_NOT_FOUND', 'Unknown room');
    let { pdu } = await checkReceivedPdu(raw, room.version, this.keys).catch((err) => {
      throw new MatrixError(400, 'M_BAD_JSON', `Invalid event: ${(err as Error).message}`);
    });
    if (eventIdOf(pdu, room.version) !== eventId) throw new MatrixError(400, 'M_BAD_JSON', 'Event id does not match');
    if (pdu.type !== 'm.room.member' || pdu.content?.membership !== membership || pdu.state_key !== pdu.sender || pdu.room_id !== roomId) {
      throw new MatrixError(400, 'M_BAD_JSON', `Not a ${membership} event for this room`);
    }
    if (domainOf(pdu.sender) !== origin) throw forbidden('The event is not from the requesting server');
    const via = pdu.content?.join_authorised_via_users_server;
    if (membership === 'join' && typeof via === 'string' && domainOf(via) === this.serverName) {
      pdu = signEvent(pdu as unknown as Record<string, unknown>, this.serverName, this.signingKey(), room.version) as unknown as PDU;
    }
    try {
      await this.receiver.receivePdu(origin, pdu, { fetchMissing: false });
    } catch (err) {
      if (err instanceof PduRejected) throw forbidden(`Event not allowed: ${err.message}`);
      throw err;
    }
    const stored = (await this.data.event(eventId))!;
    if (stored.softFailed) throw forbidden('Event not allowed by the current state');
    const stateBefore = await this.stateBeforeEvent(stored);
    const stateEvents = [...(await this.data.stateEvents(stateBefore)).values()];
    const authChain = await this.authChain([...stateEvents.map((e) => e.eventId), eventId]);
    return { event: pdu, state: stateEvents.map((e) => e.pdu), authChain, room, stored };
  }

  /** The state before an event: its group minus its own change. */
  stateBeforeEvent(ev: StoredEvent): Promise<StateMap> {
    return this.data.stateBeforeEvent(ev);
  }

  /** Every event reachable through auth_events from `ids` (not including `ids` themselves unless reached). */
  async authChain(ids: readonly string[]): Promise<PDU[]> {
    const seen = new Map<string, PDU>();
    let frontier = [...new Set(ids)];
    const visited = new Set<string>(frontier);
    while (frontier.length) {
      const evs = await this.data.eventsMap(frontier);
      const next: string[] = [];
      for (const ev of evs.values()) {
        for (const a of authEventIds(ev.pdu)) {
          if (visited.has(a)) continue;
          visited.add(a);
          next.push(a);
        }
      }
      const loaded = await this.data.eventsMap(next);
      for (const [id, ev] of loaded) seen.set(id, ev.pdu);
      frontier = next;
    }
    // Room v12 events never list the create event (the room id implies it); the chain still needs it.
    const first = ids.length ? await this.data.event(ids[0]) : undefined;
    const room = first ? await this.data.roomByNid(first.roomNid) : undefined;
    if (room?.version.roomIdFromCreateEvent) {
      const createId = `$${room.roomId.slice(1)}`;
      if (!seen.has(createId) && !ids.includes(createId)) {
        const create = await this.data.event(createId);
        if (create) seen.set(createId, create.pdu);
      }
    }
    return [...seen.values()];
  }

  /** PUT /v2/invite: a user of ours is invited to a room elsewhere. Countersign and record it. */
  async receiveInvite(origin: string, roomId: string, eventId: string, body: { event?: unknown; room_version?: string; invite_room_state?: unknown[] }): Promise<PDU> {
    const version = getRoomVersion(body.room_version ?? '1');
    if (!version) throw new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', 'Unsupported room version', { room_version: body.room_version });
    const { pdu } = await checkReceivedPdu(body.event, version, this.keys).catch((err) => {
      throw new MatrixError(400, 'M_BAD_JSON', `Invalid invite: ${(err as Error).message}`);
    });
    if (eventIdOf(pdu, version) !== eventId) throw new MatrixError(400, 'M_BAD_JSON', 'Event id does not match');
    if (pdu.type !== 'm.room.member' || pdu.content?.membership !== 'invite' || typeof pdu.state_key !== 'string' || pdu.room_id !== roomId) {
      throw new MatrixError(400, 'M_BAD_JSON', 'Not an invite event');
    }
    if (domainOf(pdu.state_key) !== this.serverName) throw new MatrixError(400, 'M_BAD_JSON', 'The invitee is not on this server');
    if (domainOf(pdu.sender) !== origin) throw forbidden('The invite is not from the requesting server');
    const signed = signEvent(pdu as unknown as Record<string, unknown>, this.serverName, this.signingKey(), version) as unknown as PDU;
    const room = await this.received.ensureRoom(roomId, version, null);
    const existing = await this.data.event(eventId);
    if (!existing) await this.received.storeOutliers(room, [signed]);
    const stored = (await this.data.event(eventId))!;
    const stripped = Array.isArray(body.invite_room_state) ? body.invite_room_state.filter(isPlainObject) : [];
    await this.recordOutOfRoomMembership(room, stored, stripped);
    return signed;
  }

  /**
   * Records an invite for a room this server is not in: the membership row gets a fresh
   * events-stream position so /sync shows it, with the stripped state kept alongside.
   */
  async recordOutOfRoomMembership(room: RoomInfo, ev: StoredEvent, stripped: unknown[]): Promise<void> {
    const userId = ev.pdu.state_key!;
    await this.received.knex('remote_invites').insert({ room_nid: room.nid, user_id: userId, event_id: ev.eventId, invite_state: JSON.stringify(stripped) })
      .onConflict(['room_nid', 'user_id']).merge(['event_id', 'invite_state']);
    await this.persister.recordMembership(room, {
      room_nid: room.nid, user_id: userId, membership: String(ev.pdu.content?.membership), event_nid: ev.nid, stream_ordering: 0,
      displayname: typeof ev.pdu.content?.displayname === 'string' ? ev.pdu.content.displayname : null, avatar_url: null, forgotten: false,
    });
  }
}

function createFor(se: Map<string, StoredEvent>, roomId: string): PDU | undefined {
  for (const e of se.values()) if (e.pdu.type === 'm.room.create' && roomIdFromCreateEvent(e.pdu as unknown as Record<string, unknown>) === roomId) return e.pdu;
  return undefined;
}

/** Maps a remote server's error to what our client sees. */
function remoteError(err: unknown): Error {
  const e = err as { status?: number; errcode?: string; body?: { errcode?: string; error?: string }; message?: string };
  const status = e?.status;
  const errcode = e?.errcode ?? e?.body?.errcode;
  if (status === 403) return new MatrixError(403, 'M_FORBIDDEN', e?.body?.error ?? 'The remote server refused');
  if (status === 404) return new MatrixError(404, 'M_NOT_FOUND', e?.body?.error ?? 'The remote server does not know this room');
  if (errcode === 'M_INCOMPATIBLE_ROOM_VERSION') return new MatrixError(400, 'M_INCOMPATIBLE_ROOM_VERSION', 'Incompatible room version');
  return err instanceof Error ? err : new Error(String(err));
}
