// Room endpoints: create, membership, send, state, redact, read.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import { validateBody, queryInt, queryString, queryBool } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { rateLimit } from '../http/rate-limit.js';
import { CreateRoomBody, MembershipBody, InviteBody, ReasonBody, UpgradeBody } from './rooms.schema.js';
import type { CreateRoomRequest } from '../rooms/room-service.js';
import type { EventFilterSpec } from '../rooms/room-reads.js';

const ROOM_ID = /^![^\s]+$/;

function parseFilterParam(raw: string | undefined): EventFilterSpec | undefined {
  if (!raw) return undefined;
  try {
    const f = JSON.parse(raw);
    if (typeof f !== 'object' || f === null || Array.isArray(f)) throw new Error();
    return f as EventFilterSpec;
  } catch {
    throw new MatrixError(400, 'M_BAD_JSON', 'filter is not a JSON object');
  }
}

export function roomRoutes(s: Services) {
  const { auth, rooms, roomReads } = s;
  const viewer = (ctx: Context) => {
    const r = requesterOf(ctx);
    return { userId: r.userId, deviceId: r.deviceId };
  };
  const roomIdParam = (ctx: Context) => {
    const id = ctx.params.roomId;
    if (!ROOM_ID.test(id)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid room id');
    return id;
  };
  const sendLimit = rateLimit(s.limiters.messages, { enabled: s.config.rate_limits.enabled, exempt: new Set(s.config.rate_limits.exempt_user_ids) });

  return (r: Router) => {
    // POST /createRoom
    r.post('/createRoom', auth.requireAuth(), validateBody(CreateRoomBody), async (ctx) => {
      const res = await rooms.createRoom(requesterOf(ctx).userId, ctx.request.body as CreateRoomRequest);
      ctx.body = { room_id: res.roomId, ...(res.alias ? { room_alias: res.alias } : {}) };
    });

    // POST /join/{roomIdOrAlias}
    r.post('/join/:roomIdOrAlias', auth.requireAuth(), validateBody(ReasonBody), async (ctx) => {
      const { roomId, servers } = await rooms.resolveWithServers(ctx.params.roomIdOrAlias);
      // `via` (v1.12) and the deprecated `server_name` name servers to join through.
      const list = (k: string) => { const v = ctx.query[k]; return Array.isArray(v) ? v : typeof v === 'string' ? [v] : []; };
      const via = [...list('via'), ...list('server_name'), ...servers];
      await rooms.join(requesterOf(ctx).userId, roomId, { reason: (ctx.request.body as { reason?: string }).reason, servers: via });
      ctx.body = { room_id: roomId };
    });

    // POST /rooms/{roomId}/join
    r.post('/rooms/:roomId/join', auth.requireAuth(), validateBody(ReasonBody), async (ctx) => {
      const roomId = roomIdParam(ctx);
      await rooms.join(requesterOf(ctx).userId, roomId, { reason: (ctx.request.body as { reason?: string }).reason });
      ctx.body = { room_id: roomId };
    });

    // POST /knock/{roomIdOrAlias}
    r.post('/knock/:roomIdOrAlias', auth.requireAuth(), validateBody(ReasonBody), async (ctx) => {
      const roomId = await rooms.resolveRoomIdOrAlias(ctx.params.roomIdOrAlias);
      const me = requesterOf(ctx).userId;
      await rooms.setMembership(me, roomId, me, 'knock', { reason: (ctx.request.body as { reason?: string }).reason });
      ctx.body = { room_id: roomId };
    });

    // POST /rooms/{roomId}/invite
    r.post('/rooms/:roomId/invite', auth.requireAuth(), validateBody(InviteBody), async (ctx) => {
      const body = ctx.request.body as { user_id?: string; reason?: string; medium?: string };
      if (!body.user_id) {
        if (body.medium) throw new MatrixError(400, 'M_THREEPID_DENIED', 'Third-party invites are not supported');
        throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing user_id');
      }
      await rooms.setMembership(requesterOf(ctx).userId, roomIdParam(ctx), body.user_id, 'invite', { reason: body.reason });
      ctx.body = {};
    });

    // POST /rooms/{roomId}/leave
    r.post('/rooms/:roomId/leave', auth.requireAuth({ allowGuest: true }), validateBody(ReasonBody), async (ctx) => {
      const me = requesterOf(ctx).userId;
      await rooms.setMembership(me, roomIdParam(ctx), me, 'leave', { reason: (ctx.request.body as { reason?: string }).reason });
      ctx.body = {};
    });

    // POST /rooms/{roomId}/forget
    r.post('/rooms/:roomId/forget', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      await rooms.forget(requesterOf(ctx).userId, roomIdParam(ctx));
      ctx.body = {};
    });

    // POST /rooms/{roomId}/kick, /ban, /unban
    r.post('/rooms/:roomId/kick', auth.requireAuth(), validateBody(MembershipBody), async (ctx) => {
      const body = ctx.request.body as { user_id: string; reason?: string };
      const room = await rooms.requireRoom(roomIdParam(ctx));
      const m = await rooms.membership(room, body.user_id);
      if (m !== 'join' && m !== 'invite' && m !== 'knock') throw forbidden(`${body.user_id} is not in the room`);
      await rooms.setMembership(requesterOf(ctx).userId, room.roomId, body.user_id, 'leave', { reason: body.reason });
      ctx.body = {};
    });
    r.post('/rooms/:roomId/ban', auth.requireAuth(), validateBody(MembershipBody), async (ctx) => {
      const body = ctx.request.body as { user_id: string; reason?: string };
      await rooms.setMembership(requesterOf(ctx).userId, roomIdParam(ctx), body.user_id, 'ban', { reason: body.reason });
      ctx.body = {};
    });
    r.post('/rooms/:roomId/unban', auth.requireAuth(), validateBody(MembershipBody), async (ctx) => {
      const body = ctx.request.body as { user_id: string; reason?: string };
      await rooms.unban(requesterOf(ctx).userId, roomIdParam(ctx), body.user_id, body.reason);
      ctx.body = {};
    });

    // PUT /rooms/{roomId}/send/{eventType}/{txnId}
    r.put('/rooms/:roomId/send/:eventType/:txnId', auth.requireAuth({ allowGuest: true }), sendLimit, validateBody({ type: 'object' }), async (ctx) => {
      const req = requesterOf(ctx);
      const ev = await rooms.send(req.userId, req.deviceId, roomIdParam(ctx), ctx.params.eventType, ctx.request.body as Record<string, unknown>, ctx.params.txnId);
      ctx.body = { event_id: ev.eventId };
    });

    // PUT /rooms/{roomId}/state/{eventType}/{stateKey}
    const putState = async (ctx: Context) => {
      const ev = await rooms.sendState(requesterOf(ctx).userId, roomIdParam(ctx), ctx.params.eventType, ctx.params.stateKey ?? '', ctx.request.body as Record<string, unknown>);
      ctx.body = { event_id: ev.eventId };
    };
    r.put('/rooms/:roomId/state/:eventType', auth.requireAuth(), sendLimit, validateBody({ type: 'object' }), putState);
    r.put('/rooms/:roomId/state/:eventType/', auth.requireAuth(), sendLimit, validateBody({ type: 'object' }), putState);
    r.put('/rooms/:roomId/state/:eventType/:stateKey', auth.requireAuth(), sendLimit, validateBody({ type: 'object' }), putState);

    // GET /rooms/{roomId}/state/{eventType}/{stateKey}
    const getState = async (ctx: Context) => {
      const ev = await roomReads.stateEvent(viewer(ctx), roomIdParam(ctx), ctx.params.eventType, ctx.params.stateKey ?? '');
      if (queryString(ctx.query, 'format') === 'event') ctx.body = (await roomReads.format(viewer(ctx), [ev]))[0];
      else ctx.body = ev.pdu.content;
    };
    r.get('/rooms/:roomId/state/:eventType', auth.requireAuth({ allowGuest: true }), getState);
    r.get('/rooms/:roomId/state/:eventType/', auth.requireAuth({ allowGuest: true }), getState);
    r.get('/rooms/:roomId/state/:eventType/:stateKey', auth.requireAuth({ allowGuest: true }), getState);

    // GET /rooms/{roomId}/state
    r.get('/rooms/:roomId/state', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = await roomReads.state(viewer(ctx), roomIdParam(ctx));
    });

    // PUT /rooms/{roomId}/redact/{eventId}/{txnId}
    r.put('/rooms/:roomId/redact/:eventId/:txnId', auth.requireAuth(), sendLimit, validateBody(ReasonBody), async (ctx) => {
      const req = requesterOf(ctx);
      const ev = await rooms.redact(req.userId, req.deviceId, roomIdParam(ctx), ctx.params.eventId, (ctx.request.body as { reason?: string }).reason, ctx.params.txnId);
      ctx.body = { event_id: ev.eventId };
    });

    // GET /rooms/{roomId}/event/{eventId}
    r.get('/rooms/:roomId/event/:eventId', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = await roomReads.event(viewer(ctx), roomIdParam(ctx), ctx.params.eventId);
    });

    // GET /rooms/{roomId}/messages
    r.get('/rooms/:roomId/messages', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const dir = queryString(ctx.query, 'dir') ?? 'b';
      if (dir !== 'b' && dir !== 'f') throw new MatrixError(400, 'M_INVALID_PARAM', "dir must be 'b' or 'f'");
      ctx.body = await roomReads.messages(viewer(ctx), roomIdParam(ctx), {
        from: queryString(ctx.query, 'from'),
        to: queryString(ctx.query, 'to'),
        dir,
        limit: queryInt(ctx.query, 'limit', { min: 0, max: 1000, def: 10 })!,
        filter: parseFilterParam(queryString(ctx.query, 'filter')),
      });
    });

    // GET /rooms/{roomId}/context/{eventId}
    r.get('/rooms/:roomId/context/:eventId', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = await roomReads.context(viewer(ctx), roomIdParam(ctx), ctx.params.eventId,
        queryInt(ctx.query, 'limit', { min: 0, max: 1000, def: 10 })!, parseFilterParam(queryString(ctx.query, 'filter')));
    });

    // GET /rooms/{roomId}/members
    r.get('/rooms/:roomId/members', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = {
        chunk: await roomReads.members(viewer(ctx), roomIdParam(ctx), {
          membership: queryString(ctx.query, 'membership'),
          notMembership: queryString(ctx.query, 'not_membership'),
          at: queryString(ctx.query, 'at'),
        }),
      };
    });

    // GET /rooms/{roomId}/joined_members
    r.get('/rooms/:roomId/joined_members', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = { joined: await roomReads.joinedMembers(viewer(ctx), roomIdParam(ctx)) };
    });

    // GET /joined_rooms
    r.get('/joined_rooms', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const rows = await s.stores.events.roomsOfUser(requesterOf(ctx).userId, ['join']);
      ctx.body = { joined_rooms: rows.map((x: { room_id: string }) => x.room_id) };
    });

    // GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] (v1)
    const relations = async (ctx: Context) => {
      const dir = queryString(ctx.query, 'dir') ?? 'b';
      if (dir !== 'b' && dir !== 'f') throw new MatrixError(400, 'M_INVALID_PARAM', "dir must be 'b' or 'f'");
      ctx.body = await roomReads.relations(viewer(ctx), roomIdParam(ctx), ctx.params.eventId, {
        relType: ctx.params.relType,
        eventType: ctx.params.eventType,
        from: queryString(ctx.query, 'from'),
        dir,
        limit: queryInt(ctx.query, 'limit', { min: 1, max: 1000, def: 50 })!,
        recurse: queryBool(ctx.query, 'recurse', false),
      });
    };
    r.get('/rooms/:roomId/relations/:eventId', auth.requireAuth({ allowGuest: true }), relations);
    r.get('/rooms/:roomId/relations/:eventId/:relType', auth.requireAuth({ allowGuest: true }), relations);
    r.get('/rooms/:roomId/relations/:eventId/:relType/:eventType', auth.requireAuth({ allowGuest: true }), relations);

    // GET /rooms/{roomId}/threads (v1)
    r.get('/rooms/:roomId/threads', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const include = queryString(ctx.query, 'include') ?? 'all';
      if (include !== 'all' && include !== 'participated') throw new MatrixError(400, 'M_INVALID_PARAM', 'include must be all or participated');
      ctx.body = await roomReads.threads(viewer(ctx), roomIdParam(ctx), {
        include,
        from: queryString(ctx.query, 'from'),
        limit: queryInt(ctx.query, 'limit', { min: 1, max: 1000, def: 50 })!,
      });
    });

    // POST /rooms/{roomId}/upgrade
    r.post('/rooms/:roomId/upgrade', auth.requireAuth(), validateBody(UpgradeBody), async (ctx) => {
      const body = ctx.request.body as { new_version: string; additional_creators?: string[] };
      ctx.body = { replacement_room: await s.upgrades.upgrade(requesterOf(ctx).userId, roomIdParam(ctx), body.new_version, body.additional_creators) };
    });

    // GET /rooms/{roomId}/timestamp_to_event (v1)
    r.get('/rooms/:roomId/timestamp_to_event', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const ts = queryInt(ctx.query, 'ts');
      if (ts === undefined) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing ts');
      const dir = queryString(ctx.query, 'dir');
      if (dir !== 'b' && dir !== 'f') throw new MatrixError(400, dir === undefined ? 'M_MISSING_PARAM' : 'M_INVALID_PARAM', "dir must be 'b' or 'f'");
      ctx.body = await roomReads.timestampToEvent(viewer(ctx), roomIdParam(ctx), ts, dir);
    });

    // PUT /rooms/{roomId}/typing/{userId} and receipts live in the sync area.
    void notFound;
  };
}
