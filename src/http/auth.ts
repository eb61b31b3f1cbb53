// Access-token authentication for client routes (spec: "Using access tokens").
import type { Context, Middleware } from 'koa';
import { MatrixError, missingToken } from './errors.js';
import type { Accounts, Requester } from '../accounts/accounts.js';

export function accessTokenOf(ctx: Context): string | undefined {
  const header = ctx.get('authorization');
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new MatrixError(401, 'M_MISSING_TOKEN', 'Malformed Authorization header');
    return m[1];
  }
  const q = ctx.query.access_token;
  return typeof q === 'string' && q ? q : undefined;
}

export function makeAuth(accounts: Accounts) {
  async function authenticate(ctx: Context, required: boolean): Promise<Requester | undefined> {
    const token = accessTokenOf(ctx);
    if (!token) {
      if (required) throw missingToken();
      return undefined;
    }
    const requester = await accounts.authenticate(token);
    ctx.state.requester = requester;
    void accounts.touchDevice(requester, ctx.ip, ctx.get('user-agent') || undefined).catch(() => undefined);
    return requester;
  }

  return {
    requireAuth(opts: { allowGuest?: boolean } = {}): Middleware {
      return async (ctx, next) => {
        const r = (await authenticate(ctx, true))!;
        if (r.isGuest && !opts.allowGuest) throw new MatrixError(403, 'M_GUEST_ACCESS_FORBIDDEN', 'Guest access is not allowed here');
        await next();
      };
    },
    optionalAuth(): Middleware {
      return async (ctx, next) => {
        await authenticate(ctx, false);
        await next();
      };
    },
    requireAdmin(): Middleware {
      return async (ctx, next) => {
        const r = (await authenticate(ctx, true))!;
        if (!r.isAdmin) throw new MatrixError(403, 'M_FORBIDDEN', 'You are not a server admin');
        await next();
      };
    },
  };
}

export type AuthMiddleware = ReturnType<typeof makeAuth>;

export function requesterOf(ctx: Context): Requester {
  const r = ctx.state.requester as Requester | undefined;
  if (!r) throw missingToken();
  return r;
}
