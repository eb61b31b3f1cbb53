// Registration, login, refresh, logout, whoami, password, deactivation, 3PIDs.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError, forbidden } from '../http/errors.js';
import { validateBody, queryString } from '../http/validate.js';
import { rateLimit } from '../http/rate-limit.js';
import { requesterOf } from '../http/auth.js';
import type { Stage } from '../accounts/uia.js';
import {
  RegisterBody, type RegisterRequest, LoginBody, type LoginRequest, RefreshBody, PasswordBody, DeactivateBody, AuthOnlyBody,
} from './account.schema.js';

const LOGIN_TOKEN_TTL_MS = 2 * 60_000;

export function accountRoutes(s: Services) {
  const { accounts, uia, auth, config } = s;
  const rl = (limiter: typeof s.limiters.login) =>
    rateLimit(limiter, { enabled: config.rate_limits.enabled, exempt: new Set(config.rate_limits.exempt_user_ids) });

  const registrationFlows = (): Stage[][] => (config.registration.mode === 'token' ? [['m.login.registration_token']] : [['m.login.dummy']]);
  const uri = (ctx: Context) => `${ctx.method} ${ctx.path.replace(/^\/_matrix\/client\/[^/]+/, '')}`;
  const authBody = (ctx: Context) => (ctx.request as { body?: { auth?: Record<string, unknown> } }).body?.auth;

  return (r: Router) => {
    // GET /register/available
    r.get('/register/available', rl(s.limiters.registration), async (ctx) => {
      const username = queryString(ctx.query, 'username');
      if (!username) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing username');
      await accounts.checkUsernameAvailable(username);
      ctx.body = { available: true };
    });

    // GET /register/m.login.registration_token/validity
    r.get('/register/m.login.registration_token/validity', rl(s.limiters.registration), async (ctx) => {
      const token = queryString(ctx.query, 'token');
      if (!token) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing token');
      if (config.registration.mode !== 'token') throw forbidden('Registration tokens are not in use');
      ctx.body = { valid: await accounts.registrationTokenValid(token) };
    });

    // POST /register
    r.post('/register', rl(s.limiters.registration), validateBody<RegisterRequest>(RegisterBody), async (ctx) => {
      const body = ctx.request.body as RegisterRequest;
      const kind = queryString(ctx.query, 'kind') ?? 'user';
      if (kind !== 'user') throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'Guest access is disabled');
      if (config.registration.mode === 'closed') throw forbidden('Registration has been disabled');
      // Check the name before the auth stages, so a client learns at once that it is taken.
      if (body.username !== undefined) await accounts.checkUsernameAvailable(body.username);
      const result = await uia.check(body.auth as never, { flows: registrationFlows(), uri: uri(ctx) });
      const userId = await accounts.register({ localpart: body.username, password: body.password });
      if (typeof result.data.registrationToken === 'string') {
        await s.stores.users.incrementRegistrationToken(result.data.registrationToken, 'completed', 1);
      }
      s.logger.info({ userId }, 'registered user');
      if (body.inhibit_login) {
        ctx.body = { user_id: userId };
        return;
      }
      ctx.body = await accounts.login(userId, {
        deviceId: body.device_id,
        displayName: body.initial_device_display_name,
        refreshToken: body.refresh_token,
        ip: ctx.ip,
        userAgent: ctx.get('user-agent'),
      });
    });

    // GET /login
    r.get('/login', (ctx) => {
      ctx.body = { flows: [{ type: 'm.login.password' }, { type: 'm.login.token', get_login_token: true }] };
    });

    // POST /login
    r.post('/login', rl(s.limiters.login), validateBody<LoginRequest>(LoginBody), async (ctx) => {
      const body = ctx.request.body as LoginRequest;
      let userId: string;
      if (body.type === 'm.login.password') {
        let who: string | undefined;
        if (body.identifier) {
          if (body.identifier.type !== 'm.id.user') throw new MatrixError(400, 'M_UNKNOWN', `Unsupported identifier type ${body.identifier.type}`);
          who = body.identifier.user;
        } else {
          who = body.user; // the legacy top-level field
        }
        if (!who) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing user identifier');
        if (typeof body.password !== 'string') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing password');
        const ok = await accounts.checkPassword(accounts.resolveUser(who), body.password);
        if (!ok) throw forbidden('Invalid username or password');
        userId = ok;
      } else if (body.type === 'm.login.token') {
        if (!body.token) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing token');
        userId = await accounts.redeemLoginToken(body.token);
      } else {
        throw new MatrixError(400, 'M_UNKNOWN', `Unknown login type ${body.type}`);
      }
      const result = await accounts.login(userId, {
        deviceId: body.device_id,
        displayName: body.initial_device_display_name,
        refreshToken: body.refresh_token,
        ip: ctx.ip,
        userAgent: ctx.get('user-agent'),
      });
      ctx.body = { ...result, home_server: config.server_name, well_known: { 'm.homeserver': { base_url: config.well_known.client_base_url ?? config.public_baseurl } } };
    });

    // POST /login/get_token (v1): a short-lived token to log in another client.
    r.post('/login/get_token', auth.requireAuth(), rl(s.limiters.login), validateBody(AuthOnlyBody), async (ctx) => {
      const req = requesterOf(ctx);
      await uia.check(authBody(ctx) as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
      ctx.body = { login_token: await accounts.createLoginToken(req.userId, LOGIN_TOKEN_TTL_MS), expires_in_ms: LOGIN_TOKEN_TTL_MS };
    });

    // POST /refresh
    r.post('/refresh', rl(s.limiters.login), validateBody<{ refresh_token: string }>(RefreshBody), async (ctx) => {
      ctx.body = await accounts.refresh((ctx.request.body as { refresh_token: string }).refresh_token);
    });

    // POST /logout
    r.post('/logout', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      await accounts.logout(requesterOf(ctx));
      ctx.body = {};
    });

    // POST /logout/all
    r.post('/logout/all', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      await accounts.logoutAll(requesterOf(ctx).userId);
      ctx.body = {};
    });

    // GET /account/whoami
    r.get('/account/whoami', auth.requireAuth({ allowGuest: true }), (ctx) => {
      const req = requesterOf(ctx);
      ctx.body = { user_id: req.userId, device_id: req.deviceId, is_guest: req.isGuest };
    });

    // POST /account/password
    r.post('/account/password', auth.requireAuth(), validateBody(PasswordBody), async (ctx) => {
      const req = requesterOf(ctx);
      const body = ctx.request.body as { new_password: string; logout_devices?: boolean; auth?: Record<string, unknown> };
      await uia.check(body.auth as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
      await accounts.changePassword(req.userId, body.new_password, body.logout_devices ?? true, req.deviceId);
      ctx.body = {};
    });

    // POST /account/deactivate
    r.post('/account/deactivate', auth.requireAuth(), validateBody(DeactivateBody), async (ctx) => {
      const req = requesterOf(ctx);
      const body = ctx.request.body as { erase?: boolean; auth?: Record<string, unknown> };
      await uia.check(body.auth as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
      await accounts.deactivate(req.userId, body.erase ?? false);
      s.logger.info({ userId: req.userId, erase: body.erase ?? false }, 'deactivated user');
      ctx.body = { id_server_unbind_result: 'no-support' };
    });

    // GET /account/3pid: this server does not bind third-party identifiers.
    r.get('/account/3pid', auth.requireAuth(), (ctx) => {
      ctx.body = { threepids: [] };
    });
    const no3pid = async () => {
      throw new MatrixError(400, 'M_THREEPID_DENIED', 'Third-party identifiers are not supported on this server');
    };
    for (const p of ['/account/3pid/add', '/account/3pid/bind', '/account/3pid/delete', '/account/3pid/unbind']) r.post(p, auth.requireAuth(), no3pid);
    for (const p of ['/account/3pid/email/requestToken', '/account/3pid/msisdn/requestToken', '/register/email/requestToken',
      '/register/msisdn/requestToken', '/account/password/email/requestToken', '/account/password/msisdn/requestToken']) r.post(p, no3pid);
  };
}
