// GET /notifications (spec: "Listing notifications").
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { queryInt, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';

export function notificationsRoutes(s: Services) {
  const { auth, pushNotifications } = s;
  return (r: Router) => {
    // GET /notifications?from=&limit=&only=highlight
    r.get('/notifications', auth.requireAuth(), async (ctx) => {
      ctx.body = await pushNotifications.notifications(requesterOf(ctx).userId, {
        from: queryString(ctx.query, 'from'),
        limit: queryInt(ctx.query, 'limit', { min: 1, max: 100, def: 20 })!,
        only: queryString(ctx.query, 'only'),
      });
    });
  };
}
