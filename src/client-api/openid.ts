// OpenID (client-server API "OpenID"): a token proving the user's identity to a third party, which
// checks it with GET /_matrix/federation/v1/openid/userinfo (federation/routes/queries.ts).
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { forbidden } from '../http/errors.js';
import { validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';

export function openIdRoutes(s: Services) {
  const { accounts, auth } = s;
  return (r: Router) => {
    // POST /user/{userId}/openid/request_token (the body is an empty object, reserved)
    r.post('/user/:userId/openid/request_token', auth.requireAuth(), validateBody({ type: 'object' }), async (ctx) => {
      const req = requesterOf(ctx);
      if (ctx.params.userId !== req.userId) throw forbidden('Cannot request OpenID tokens for other users');
      ctx.body = await accounts.createOpenIdToken(req.userId);
    });
  };
}
