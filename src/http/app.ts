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

const CLIENT_PREFIXES = ['/_matrix/client/v3', '/_matrix/client/r0', '/_matrix/client/v1', '/_matrix/client/unstable'];

export interface AppOptions {
  apis: readonly ApiName[];
  logger: Logger;
  maxBodyBytes: number;
  trustProxy: boolean;
  routes: ApiRoutes;
  /** Requests in flight, for graceful shutdown. */
  inflight: { count: number };
}

export function createApp(opts: AppOptions): Koa {
  const app = new Koa({ proxy: opts.trustProxy });
  const log = opts.logger;

  const root = new Router();
  if (opts.apis.includes('client')) {
    const client = new Router();
    for (const reg of opts.routes.client) reg(client);
    for (const prefix of CLIENT_PREFIXES) root.use(prefix, client.routes());
  }
  for (const api of opts.apis) for (const reg of opts.routes.rooted[api] ?? []) reg(root);

  // 1. Request id, access log (path only: query strings can carry access tokens) and error rendering.
  app.use(async (ctx, next) => {
    const started = process.hrtime.bigint();
    const reqId = randomBytes(6).toString('hex');
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

  // 3. Routes.
  app.use(root.routes());

  // 4. Nothing matched: M_UNRECOGNIZED, 405 when the path exists under another method.
  app.use(async (ctx) => {
    if (ctx.body !== undefined && ctx.body !== null) return;
    const match = root.match(ctx.path, ctx.method);
    if (match.path.some((l) => l.methods.length > 0)) throw unrecognized('Method not allowed', 405);
    throw unrecognized();
  });

  app.silent = true;
  return app;
}
