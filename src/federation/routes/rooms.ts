// Federation endpoints about rooms: transactions, joins, invites, leaves, knocks, and reading state
// and events. Each requires X-Matrix authentication; the room's ACL and history decide access.
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { MatrixError, forbidden, notFound } from '../../http/errors.js';
import { queryString, queryInt } from '../../http/validate.js';
import { domainOf, stateKey, type PDU } from '../../rooms/event.js';
import type { RoomData, RoomInfo, StoredEvent } from '../../rooms/room-data.js';
import type { EventsStore } from '../../storage/events-store.js';
import type { UsersStore } from '../../storage/users-store.js';
import type { FederationReceiver } from '../receiver.js';
import type { FederatedMembership } from '../membership.js';
import { serverAllowedByAcl } from '../acl.js';
import { strippedState } from '../../rooms/client-event.js';
import { eventIdOf } from '../../rooms/hashing.js';

export interface FederationRoomDeps {
  serverName: string;
  auth: Middleware;
  data: RoomData;
  store: EventsStore;
  users: UsersStore;
  receiver: FederationReceiver;
  membership: FederatedMembership;
  /** Queue an event for the other servers of the room (the resident server relays joins). */
  broadcast(ev: StoredEvent, room: RoomInfo, except: string): Promise<void>;
  onTransactionFrom?(origin: string): void;
}

const origin = (ctx: Context) => ctx.state.origin as string;
const body = <T>(ctx: Context) => (ctx.request.body ?? {}) as T;

export function federationRoomRoutes(d: FederationRoomDeps) {
  async function roomFor(ctx: Context, roomId: string): Promise<RoomInfo> {
    const room = await d.data.room(roomId);
    if (!room) throw notFound('Unknown room');
    const state = await d.data.currentState(room);
    if (!(await serverAllowedByAcl(d.data, state, origin(ctx)))) throw forbidden('Server denied by the room ACL');
    return room;
  }

  /** A server may read a room when one of its users is (or was, for shared history) in it, or it is world-readable. */
  async function requireServerInRoom(room: RoomInfo, server: string): Promise<void> {
    const members = await d.store.members(room.nid);
    if (members.some((m) => domainOf(m.user_id) === server && (m.membership === 'join' || m.membership === 'leave' || m.membership === 'ban' || m.membership === 'invite'))) return;
    const state = await d.data.currentState(room);
    const hv = (await d.data.stateEvent(state, 'm.room.history_visibility', ''))?.pdu.content?.history_visibility;
    if (hv === 'world_readable') return;
    throw forbidden('Your server has no users in this room');
  }

  return (r: Router) => {
    // PUT /_matrix/federation/v1/send/{txnId}
    r.put('/_matrix/federation/v1/send/:txnId', d.auth, async (ctx) => {
      const b = body<{ pdus?: unknown[]; edus?: unknown[]; origin?: string }>(ctx);
      if (typeof b !== 'object' || (b.pdus !== undefined && !Array.isArray(b.pdus)) || (b.edus !== undefined && !Array.isArray(b.edus))) throw new MatrixError(400, 'M_BAD_JSON', 'Bad transaction');
      if ((b.pdus?.length ?? 0) > 50 || (b.edus?.length ?? 0) > 100) throw new MatrixError(400, 'M_BAD_JSON', 'Too many PDUs or EDUs in one transaction');
      d.onTransactionFrom?.(origin(ctx));
      ctx.body = await d.receiver.onTransaction(origin(ctx), ctx.params.txnId, b);
    });

    // GET /_matrix/federation/v1/make_join/{roomId}/{userId}
    r.get('/_matrix/federation/v1/make_join/:roomId/:userId', d.auth, async (ctx) => {
      await roomFor(ctx, ctx.params.roomId);
      const v = ctx.query.ver;
      const versions = Array.isArray(v) ? v : typeof v === 'string' ? [v] : ['1'];
      ctx.body = await d.membership.makeJoin(origin(ctx), ctx.params.roomId, ctx.params.userId, versions);
    });

    const sendJoin = async (ctx: Context) => {
      await roomFor(ctx, ctx.params.roomId);
      const res = await d.membership.sendMembership(origin(ctx), ctx.params.roomId, ctx.params.eventId, ctx.request.body, 'join');
      await d.broadcast(res.stored, res.room, origin(ctx));
      const servers = [...new Set((await d.store.members(res.room.nid, ['join'])).map((m) => domainOf(m.user_id)).filter((x): x is string => !!x))];
      return { origin: d.serverName, state: res.state, auth_chain: res.authChain, event: res.event, members_omitted: false, servers_in_room: servers };
    };
    // PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
    r.put('/_matrix/federation/v2/send_join/:roomId/:eventId', d.auth, async (ctx) => {
      ctx.body = await sendJoin(ctx);
    });
    // PUT /_matrix/federation/v1/send_join/{roomId}/{eventId} (deprecated: [200, body])
    r.put('/_matrix/federation/v1/send_join/:roomId/:eventId', d.auth, async (ctx) => {
      ctx.body = [200, await sendJoin(ctx)];
    });

    // GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
    r.get('/_matrix/federation/v1/make_leave/:roomId/:userId', d.auth, async (ctx) => {
      await roomFor(ctx, ctx.params.roomId);
      ctx.body = await d.membership.makeMembership(origin(ctx), ctx.params.roomId, ctx.params.userId, 'leave');
    });
    const sendLeave = async (ctx: Context) => {
      await roomFor(ctx, ctx.params.roomId);
      const res = await d.membership.sendMembership(origin(ctx), ctx.params.roomId, ctx.params.eventId, ctx.request.body, 'leave');
      await d.broadcast(res.stored, res.room, origin(ctx));
      return {};
    };
    r.put('/_matrix/federation/v2/send_leave/:roomId/:eventId', d.auth, async (ctx) => { ctx.body = await sendLeave(ctx); });
    r.put('/_matrix/federation/v1/send_leave/:roomId/:eventId', d.auth, async (ctx) => { ctx.body = [200, await sendLeave(ctx)]; });

    // GET /_matrix/federation/v1/make_knock/{roomId}/{userId}
    r.get('/_matrix/federation/v1/make_knock/:roomId/:userId', d.auth, async (ctx) => {
      await roomFor(ctx, ctx.params.roomId);
      const v = ctx.query.ver;
      const versions = Array.isArray(v) ? v : typeof v === 'string' ? [v] : ['1'];
      ctx.body = await d.membership.makeMembership(origin(ctx), ctx.params.roomId, ctx.params.userId, 'knock', versions);
    });
    // PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
    r.put('/_matrix/federation/v1/send_knock/:roomId/:eventId', d.auth, async (ctx) => {
      await roomFor(ctx, ctx.params.roomId);
      const res = await d.membership.sendMembership(origin(ctx), ctx.params.roomId, ctx.params.eventId, ctx.request.body, 'knock');
      await d.broadcast(res.stored, res.room, origin(ctx));
      const state = await d.data.currentState(res.room);
      const keys = ['m.room.create', 'm.room.join_rules', 'm.room.name', 'm.room.avatar', 'm.room.canonical_alias', 'm.room.encryption', 'm.room.topic'].map((t) => stateKey(t, ''));
      ctx.body = { knock_room_state: [...(await d.data.stateEvents(state, keys)).values()].map(strippedState) };
    });

    const invite = async (ctx: Context) => {
      const b = body<{ event?: unknown; room_version?: string; invite_room_state?: unknown[] }>(ctx);
      return { event: await d.membership.receiveInvite(origin(ctx), ctx.params.roomId, ctx.params.eventId, b) };
    };
    // PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
    r.put('/_matrix/federation/v2/invite/:roomId/:eventId', d.auth, async (ctx) => { ctx.body = await invite(ctx); });
    // PUT /_matrix/federation/v1/invite/{roomId}/{eventId} (body is the event itself; room v1/v2)
    r.put('/_matrix/federation/v1/invite/:roomId/:eventId', d.auth, async (ctx) => {
      const ev = ctx.request.body as Record<string, unknown>;
      const res = await d.membership.receiveInvite(origin(ctx), ctx.params.roomId, ctx.params.eventId, { event: ev, room_version: '1', invite_room_state: (ev?.unsigned as { invite_room_state?: unknown[] })?.invite_room_state });
      ctx.body = [200, { event: res }];
    });

    // GET /_matrix/federation/v1/state/{roomId}?event_id and /state_ids
    const stateAt = async (ctx: Context) => {
      const room = await roomFor(ctx, ctx.params.roomId);
      await requireServerInRoom(room, origin(ctx));
      const eventId = queryString(ctx.query, 'event_id');
      if (!eventId) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing event_id');
      const ev = await d.data.event(eventId);
      if (!ev || ev.roomNid !== room.nid || ev.outlier) throw notFound('Event not found');
      const before = await d.membership.stateBeforeEvent(ev);
      const stateEvents = [...(await d.data.stateEvents(before)).values()];
      const chain = await d.membership.authChain(stateEvents.map((e) => e.eventId));
      return { stateEvents, chain };
    };
    r.get('/_matrix/federation/v1/state/:roomId', d.auth, async (ctx) => {
      const { stateEvents, chain } = await stateAt(ctx);
      ctx.body = { pdus: stateEvents.map((e) => e.pdu), auth_chain: chain };
    });
    r.get('/_matrix/federation/v1/state_ids/:roomId', d.auth, async (ctx) => {
      const { stateEvents, chain } = await stateAt(ctx);
      const ids = new Set(stateEvents.map((e) => e.eventId));
      const room = (await d.data.room(ctx.params.roomId))!;
      ctx.body = { pdu_ids: [...ids], auth_chain_ids: chain.map((p) => eventIdOf(p, room.version)) };
    });

    // GET /_matrix/federation/v1/event/{eventId}
    r.get('/_matrix/federation/v1/event/:eventId', d.auth, async (ctx) => {
      const ev = await d.data.event(ctx.params.eventId);
      if (!ev) throw notFound('Event not found');
      const room = (await d.data.roomByNid(ev.roomNid))!;
      await roomFor(ctx, room.roomId);
      await requireServerInRoom(room, origin(ctx));
      ctx.body = { origin: d.serverName, origin_server_ts: Date.now(), pdus: [ev.pdu] };
    });

    // GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
    r.get('/_matrix/federation/v1/event_auth/:roomId/:eventId', d.auth, async (ctx) => {
      const room = await roomFor(ctx, ctx.params.roomId);
      await requireServerInRoom(room, origin(ctx));
      const ev = await d.data.event(ctx.params.eventId);
      if (!ev || ev.roomNid !== room.nid) throw notFound('Event not found');
      ctx.body = { auth_chain: await d.membership.authChain([ev.eventId]) };
    });

    // GET /_matrix/federation/v1/backfill/{roomId}?v=...&limit=
    r.get('/_matrix/federation/v1/backfill/:roomId', d.auth, async (ctx) => {
      const room = await roomFor(ctx, ctx.params.roomId);
      await requireServerInRoom(room, origin(ctx));
      const v = ctx.query.v;
      const from = Array.isArray(v) ? v : typeof v === 'string' ? [v] : [];
      if (!from.length) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing v');
      const limit = queryInt(ctx.query, 'limit', { min: 1, max: 100, def: 10 })!;
      ctx.body = { origin: d.serverName, origin_server_ts: Date.now(), pdus: await walkBack(d.data, room, from, limit, new Set()) };
    });

    // POST /_matrix/federation/v1/get_missing_events/{roomId}
    r.post('/_matrix/federation/v1/get_missing_events/:roomId', d.auth, async (ctx) => {
      const room = await roomFor(ctx, ctx.params.roomId);
      await requireServerInRoom(room, origin(ctx));
      const b = body<{ earliest_events?: string[]; latest_events?: string[]; limit?: number; min_depth?: number }>(ctx);
      if (!Array.isArray(b.latest_events)) throw new MatrixError(400, 'M_BAD_JSON', 'latest_events is required');
      const limit = Math.min(Math.max(Number(b.limit ?? 10), 1), 100);
      const earliest = new Set(Array.isArray(b.earliest_events) ? b.earliest_events : []);
      const latest = await d.data.eventsMap(b.latest_events);
      const start = [...latest.values()].flatMap((e) => (e.pdu.prev_events as unknown[]).map((p) => (Array.isArray(p) ? String(p[0]) : String(p))));
      const events = await walkBack(d.data, room, start, limit, earliest, Number(b.min_depth ?? 0));
      events.sort((a, b2) => a.depth - b2.depth);
      ctx.body = { events };
    });

    // GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir=: the closest event of our copy
    // of the room's timeline (not outliers, rejected or soft-failed events), for servers that may
    // read the room.
    r.get('/_matrix/federation/v1/timestamp_to_event/:roomId', d.auth, async (ctx) => {
      const room = await roomFor(ctx, ctx.params.roomId);
      await requireServerInRoom(room, origin(ctx));
      const ts = queryInt(ctx.query, 'ts', { min: 0 });
      if (ts === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing ts');
      const dir = queryString(ctx.query, 'dir');
      if (dir !== 'f' && dir !== 'b') throw new MatrixError(400, dir === undefined ? 'M_MISSING_PARAM' : 'M_INVALID_PARAM', "dir must be 'f' or 'b'");
      const [row] = await d.store.eventsNearTs(room.nid, ts, dir, 1);
      if (!row) throw notFound(`Unable to find event from ${ts} in ${dir === 'f' ? 'forward' : 'backward'} direction`);
      ctx.body = { event_id: row.event_id, origin_server_ts: Number(row.origin_server_ts) };
    });

    // GET /_matrix/federation/v1/query/directory?room_alias=
    r.get('/_matrix/federation/v1/query/directory', d.auth, async (ctx) => {
      const alias = queryString(ctx.query, 'room_alias');
      if (!alias) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing room_alias');
      const roomId = await d.store.roomIdByAlias(alias);
      if (!roomId) throw notFound('Room alias not found');
      const room = await d.data.room(roomId);
      const servers = room ? [...new Set((await d.store.members(room.nid, ['join'])).map((m) => domainOf(m.user_id)).filter((x): x is string => !!x))] : [];
      ctx.body = { room_id: roomId, servers: [d.serverName, ...servers.filter((s) => s !== d.serverName)] };
    });

    // GET /_matrix/federation/v1/query/profile?user_id=&field=
    r.get('/_matrix/federation/v1/query/profile', d.auth, async (ctx) => {
      const userId = queryString(ctx.query, 'user_id');
      if (!userId) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing user_id');
      if (domainOf(userId) !== d.serverName) throw new MatrixError(400, 'M_INVALID_PARAM', 'Not a user of this server');
      const u = await d.users.userById(userId);
      if (!u) throw notFound('User not found');
      const field = queryString(ctx.query, 'field');
      const profile: Record<string, unknown> = { ...(u.profile_fields ? JSON.parse(u.profile_fields) : {}) };
      if (u.displayname !== null) profile.displayname = u.displayname;
      if (u.avatar_url !== null) profile.avatar_url = u.avatar_url;
      if (field) {
        if (!(field in profile)) throw notFound('No such field');
        ctx.body = { [field]: profile[field] };
      } else ctx.body = profile;
    });
  };
}

/** Walks prev_events back from `start` (inclusive), newest first, up to `limit` events. */
async function walkBack(data: RoomData, room: RoomInfo, start: readonly string[], limit: number, stop: ReadonlySet<string>, minDepth = 0): Promise<PDU[]> {
  const out: PDU[] = [];
  const seen = new Set<string>();
  let frontier = start.filter((id) => !stop.has(id));
  while (frontier.length && out.length < limit) {
    const evs = [...(await data.eventsMap(frontier)).values()].filter((e) => e.roomNid === room.nid && !e.outlier);
    evs.sort((a, b) => b.depth - a.depth);
    const next: string[] = [];
    for (const e of evs) {
      if (seen.has(e.eventId) || out.length >= limit || e.depth < minDepth) continue;
      seen.add(e.eventId);
      out.push(e.pdu);
      for (const p of e.pdu.prev_events as unknown[]) {
        const id = Array.isArray(p) ? String(p[0]) : String(p);
        if (!seen.has(id) && !stop.has(id)) next.push(id);
      }
    }
    frontier = next;
  }
  return out;
}
