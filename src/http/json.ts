import type { Context } from 'koa';

/** Sets a JSON response body (koa serialises objects as JSON). */
export function reply(ctx: Context, body: unknown, status = 200): void {
  ctx.status = status;
  ctx.body = body as object;
}
