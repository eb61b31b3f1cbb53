// Spaces (client-server API "Spaces"): the hierarchy of rooms under a space.
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { MatrixError } from '../http/errors.js';
import { queryBool, queryInt, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';

export function spaceRoutes(s: Services) {
  const { auth, hierarchy } = s;
  return (r: Router) => {
    // GET /rooms/{roomId}/hierarchy (v1)
    r.get('/rooms/:roomId/hierarchy', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const roomId = ctx.params.roomId;
      if (!/^![^\s]+$/.test(roomId)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid room id');
      ctx.body = await hierarchy.forUser(requesterOf(ctx).userId, roomId, {
        from: queryString(ctx.query, 'from'),
        limit: queryInt(ctx.query, 'limit', { min: 1 }),
        maxDepth: queryInt(ctx.query, 'max_depth', { min: 0 }),
        suggestedOnly: queryString(ctx.query, 'suggested_only') === undefined ? undefined : queryBool(ctx.query, 'suggested_only'),
      });
    });
  };
}
