// Builds the koa application for one listener: the middleware chain, then the routers of the APIs
// that listener serves.
import Koa from 'koa';
import Router from '@koa/router';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { renderError, unrecognized } from './errors.js';
import type { ApiName } from '../config/schema.js';

export type RouteRegistrar = (router: Router) => void;

export interface ApiRoutes {
  /** Client-Server API routes, mounted under each version prefix (/r0, /v3, /v1, /unstable). */
  client: RouteRegistrar[];
  /** Routes with full paths, keyed by the API that serves them. */
  rooted: Partial<Record<ApiName, RouteRegistrar[]>>;
}

// One client router serves every version prefix: the prefix is stripped before matching, so a
// request is matched against each route once, not once per prefix.
const CLIENT_PREFIX = /^\/_matrix\/client\/(?:v3|r0|v1|unstable)(\/.*)$/;

export interface AppOptions {
  apis: readonly ApiName[];
  logger: Logger;
  maxBodyBytes: number;
  trustProxy: boolean;
  routes: ApiRoutes;
  /** Requests in flight, for graceful shutdown. */
  inflight: { count: number };
}

const processTag = randomBytes(3).toString('hex');

export function createApp(opts: AppOptions): Koa {
  const app = new Koa({ proxy: opts.trustProxy });
  const log = opts.logger;

  const root = new Router();
  const client = opts.apis.includes('client') ? new Router() : null;
  if (client) for (const reg of opts.routes.client) reg(client);
  for (const api of opts.apis) for (const reg of opts.routes.rooted[api] ?? []) reg(root);
  const rootRoutes = root.routes();
  const clientRoutes = client?.routes();
  let nonce = 0;

  // 1. Request id, access log (path only: query strings can carry access tokens) and error rendering.
  app.use(async (ctx, next) => {
    const started = process.hrtime.bigint();
    const reqId = `${processTag}${(nonce++).toString(36)}`;
    ctx.state.reqId = reqId;
    ctx.state.maxBodyBytes = opts.maxBodyBytes;
    opts.inflight.count++;
    try {
      await next();
    } catch (err) {
      const r = renderError(err);
      if (r.unexpected) log.error({ reqId, err, method: ctx.method, path: ctx.path }, 'unhandled error');
      ctx.status = r.status;
      ctx.body = r.body;
      for (const [k, v] of Object.entries(r.headers)) ctx.set(k, v);
    } finally {
      opts.inflight.count--;
      if (log.isLevelEnabled('debug') || ctx.status >= 500) {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const level = ctx.status >= 500 ? 'warn' : 'debug';
        log[level]({ reqId, method: ctx.method, path: ctx.path, status: ctx.status, ms: Math.round(ms * 10) / 10, user: (ctx.state.requester as { userId?: string } | undefined)?.userId }, 'request');
      }
    }
  });

  // 2. CORS, as the spec requires of every client-facing response; OPTIONS answered here.
  app.use(async (ctx, next) => {
    ctx.set('Access-Control-Allow-Origin', '*');
    ctx.set('Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, DELETE, OPTIONS');
    ctx.set('Access-Control-Allow-Headers', 'X-Requested-With, Content-Type, Authorization');
    if (ctx.method === 'OPTIONS') {
      ctx.status = 204;
      return;
    }
    await next();
  });

  // 3. Routes: client routes by their unprefixed path, then the rooted ones by the full path.
  // 4. Nothing matched: M_UNRECOGNIZED, 405 when the path exists under another method.
  const unmatched = async (ctx: Koa.Context) => {
    if (ctx.body !== undefined && ctx.body !== null) return;
    const m = CLIENT_PREFIX.exec(ctx.path);
    const known = (r: Router | null, p: string) => !!r && r.match(p, ctx.method).path.some((l) => l.methods.length > 0);
    if (known(root, ctx.path) || (m && known(client, m[1]))) throw unrecognized('Method not allowed', 405);
    throw unrecognized();
  };
  const rooted = (ctx: Koa.Context) => rootRoutes(ctx as never, () => unmatched(ctx));
  app.use(async (ctx) => {
    const m = clientRoutes ? CLIENT_PREFIX.exec(ctx.path) : null;
    if (!m) return rooted(ctx);
    (ctx as { newRouterPath?: string }).newRouterPath = m[1];
    await clientRoutes!(ctx as never, async () => {
      (ctx as { newRouterPath?: string }).newRouterPath = undefined;
      await rooted(ctx);
    });
  });

  app.silent = true;
  return app;
}
