// Client config / account data (spec: "Client Config").
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import { validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';

// Types the server manages through other endpoints; setting them here is refused (spec v1.10).
const SERVER_MANAGED = new Set(['m.fully_read', 'm.push_rules']);

export interface AccountDataHooks {
  /** Room account data needs the room to exist for the user; the rooms issue supplies the check. */
  canAccessRoom?(userId: string, roomId: string): Promise<boolean>;
}

export function accountDataRoutes(s: Services, hooks: AccountDataHooks = {}) {
  const { auth, accountData } = s;
  const own = (ctx: import('koa').Context) => {
    const req = requesterOf(ctx);
    if (req.userId !== ctx.params.userId) throw forbidden('Cannot access account data of another user');
    return req;
  };
  const checkRoom = async (userId: string, roomId: string) => {
    if (!roomId.startsWith('!')) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid room id');
    if (hooks.canAccessRoom && !(await hooks.canAccessRoom(userId, roomId))) throw forbidden('You are not in this room');
  };

  return (r: Router) => {
    // GET /user/{userId}/account_data/{type}
    r.get('/user/:userId/account_data/:type', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const req = own(ctx);
      const content = await accountData.get(req.userId, '', ctx.params.type);
      if (!content) throw notFound('Account data not found');
      ctx.body = content;
    });

    // PUT /user/{userId}/account_data/{type}
    r.put('/user/:userId/account_data/:type', auth.requireAuth({ allowGuest: true }), validateBody({ type: 'object' }), async (ctx) => {
      const req = own(ctx);
      if (SERVER_MANAGED.has(ctx.params.type)) throw new MatrixError(405, 'M_BAD_JSON', `Cannot set ${ctx.params.type} through this API`);
      await accountData.put(req.userId, '', ctx.params.type, ctx.request.body as Record<string, unknown>);
      ctx.body = {};
    });

    // GET /user/{userId}/rooms/{roomId}/account_data/{type}
    r.get('/user/:userId/rooms/:roomId/account_data/:type', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const req = own(ctx);
      await checkRoom(req.userId, ctx.params.roomId);
      const content = await accountData.get(req.userId, ctx.params.roomId, ctx.params.type);
      if (!content) throw notFound('Account data not found');
      ctx.body = content;
    });

    // PUT /user/{userId}/rooms/{roomId}/account_data/{type}
    r.put('/user/:userId/rooms/:roomId/account_data/:type', auth.requireAuth({ allowGuest: true }), validateBody({ type: 'object' }), async (ctx) => {
      const req = own(ctx);
      await checkRoom(req.userId, ctx.params.roomId);
      if (SERVER_MANAGED.has(ctx.params.type)) throw new MatrixError(405, 'M_BAD_JSON', `Cannot set ${ctx.params.type} through this API`);
      await accountData.put(req.userId, ctx.params.roomId, ctx.params.type, ctx.request.body as Record<string, unknown>);
      ctx.body = {};
    });
  };
}
