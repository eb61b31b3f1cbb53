// Room aliases, the published room directory and room summaries.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError } from '../http/errors.js';
import { validateBody, queryInt, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { AliasBody, VisibilityBody } from './rooms.schema.js';
import { PublicRoomsBody } from './directory.schema.js';
import type { PublicRoomsQuery } from '../rooms/room-directory.js';
import type { Requester } from '../accounts/accounts.js';
import { isValidServerName } from '../federation/server-name.js';

const roomIdParam = (ctx: Context) => {
  const id = ctx.params.roomId;
  if (!/^![^\s]+$/.test(id)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid room id');
  return id;
};

/** The `server` query parameter of /publicRooms, when given: a server name. */
const serverParam = (ctx: Context) => {
  const server = queryString(ctx.query, 'server');
  if (server !== undefined && !isValidServerName(server)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid server name');
  return server;
};

export function directoryRoutes(s: Services) {
  const { auth, directory } = s;

  return (r: Router) => {
    // PUT /directory/room/{roomAlias}
    r.put('/directory/room/:alias', auth.requireAuth(), validateBody(AliasBody), async (ctx) => {
      await directory.createAlias(requesterOf(ctx), ctx.params.alias, (ctx.request.body as { room_id: string }).room_id);
      ctx.body = {};
    });

    // GET /directory/room/{roomAlias}
    r.get('/directory/room/:alias', async (ctx) => {
      ctx.body = await directory.resolveAlias(ctx.params.alias);
    });

    // DELETE /directory/room/{roomAlias}
    r.delete('/directory/room/:alias', auth.requireAuth(), async (ctx) => {
      await directory.deleteAlias(requesterOf(ctx), ctx.params.alias);
      ctx.body = {};
    });

    // GET /rooms/{roomId}/aliases
    r.get('/rooms/:roomId/aliases', auth.requireAuth(), async (ctx) => {
      ctx.body = { aliases: await directory.localAliases(requesterOf(ctx), roomIdParam(ctx)) };
    });

    // GET /directory/list/room/{roomId}
    r.get('/directory/list/room/:roomId', async (ctx) => {
      ctx.body = { visibility: await directory.getVisibility(roomIdParam(ctx)) };
    });

    // PUT /directory/list/room/{roomId}
    r.put('/directory/list/room/:roomId', auth.requireAuth(), validateBody(VisibilityBody), async (ctx) => {
      const body = ctx.request.body as { visibility?: 'public' | 'private' };
      await directory.setVisibility(requesterOf(ctx), roomIdParam(ctx), body.visibility ?? 'public');
      ctx.body = {};
    });

    // GET /publicRooms (the spec needs no access token here; asking another server does, so that
    // anonymous callers cannot make this server send federation requests)
    r.get('/publicRooms', auth.optionalAuth(), async (ctx) => {
      const server = serverParam(ctx);
      if (server !== undefined && server !== s.config.server_name) requesterOf(ctx);
      ctx.body = await directory.publicRooms({
        limit: queryInt(ctx.query, 'limit', { min: 0 }),
        since: queryString(ctx.query, 'since'),
        server,
      });
    });

    // POST /publicRooms
    r.post('/publicRooms', auth.requireAuth(), validateBody(PublicRoomsBody), async (ctx) => {
      const body = ctx.request.body as PublicRoomsQuery;
      ctx.body = await directory.publicRooms({ ...body, server: serverParam(ctx) });
    });

    // GET /room_summary/{roomIdOrAlias} (v1)
    r.get('/room_summary/:roomIdOrAlias', auth.optionalAuth(), async (ctx) => {
      ctx.body = await directory.summary((ctx.state.requester as Requester | undefined)?.userId, ctx.params.roomIdOrAlias);
    });
  };
}

/** MSC3266's unstable paths, which matrix-js-sdk's getRoomSummary still calls. */
export function roomSummaryUnstableRoutes(s: Services) {
  const { auth, directory } = s;
  return (r: Router) => {
    const handler = async (ctx: Context) => {
      ctx.body = await directory.summary((ctx.state.requester as Requester | undefined)?.userId, ctx.params.roomIdOrAlias);
    };
    r.get('/_matrix/client/unstable/im.nheko.summary/summary/:roomIdOrAlias', auth.optionalAuth(), handler);
    r.get('/_matrix/client/unstable/im.nheko.summary/rooms/:roomIdOrAlias/summary', auth.optionalAuth(), handler);
  };
}
