// /sync, filters, typing, receipts, read markers, presence, tags.
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import { validateBody, queryInt, queryString, queryBool } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { FilterSchema, parseInlineFilter, type Filter } from '../sync/filters.js';

const MAX_TIMEOUT_MS = 5 * 60_000;

export function syncRoutes(s: Services) {
  const { auth, syncService, ephemeral, syncStore } = s;
  const ownUser = (ctx: Context) => {
    const r = requesterOf(ctx);
    if (r.userId !== ctx.params.userId) throw forbidden('Cannot act for another user');
    return r;
  };

  async function loadFilter(userId: string, raw: string | undefined): Promise<Filter> {
    if (!raw) return {};
    if (raw.trimStart().startsWith('{')) return parseInlineFilter(raw);
    if (!/^\d+$/.test(raw)) throw new MatrixError(400, 'M_INVALID_PARAM', 'filter must be a filter id or a JSON object');
    const json = await syncStore.filter(userId, Number(raw));
    if (!json) throw new MatrixError(400, 'M_INVALID_PARAM', `No filter ${raw} for this user`);
    return JSON.parse(json) as Filter;
  }

  return (r: Router) => {
    // GET /sync
    r.get('/sync', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const req = requesterOf(ctx);
      const timeout = queryInt(ctx.query, 'timeout', { min: 0, def: 0 })!;
      const setPresence = queryString(ctx.query, 'set_presence') ?? 'online';
      if (!['online', 'offline', 'unavailable'].includes(setPresence)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid set_presence');
      const abort = new AbortController();
      const onClose = () => abort.abort();
      ctx.req.once('close', onClose);
      try {
        ctx.body = await syncService.sync({
          userId: req.userId,
          deviceId: req.deviceId,
          since: queryString(ctx.query, 'since'),
          timeoutMs: Math.min(timeout, MAX_TIMEOUT_MS),
          fullState: queryBool(ctx.query, 'full_state', false),
          filter: await loadFilter(req.userId, queryString(ctx.query, 'filter')),
          setPresence: setPresence as 'online',
          useStateAfter: queryBool(ctx.query, 'use_state_after', false) || queryBool(ctx.query, 'org.matrix.msc4222.use_state_after', false),
          stateAfterField: queryBool(ctx.query, 'use_state_after', false) ? 'state_after' : 'org.matrix.msc4222.state_after',
          signal: abort.signal,
        });
      } finally {
        ctx.req.off('close', onClose);
      }
    });

    // POST /user/{userId}/filter
    r.post('/user/:userId/filter', auth.requireAuth({ allowGuest: true }), validateBody(FilterSchema), async (ctx) => {
      const req = ownUser(ctx);
      const id = await syncStore.insertFilter(req.userId, JSON.stringify(ctx.request.body));
      ctx.body = { filter_id: String(id) };
    });

    // GET /user/{userId}/filter/{filterId}
    r.get('/user/:userId/filter/:filterId', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const req = ownUser(ctx);
      const json = /^\d+$/.test(ctx.params.filterId) ? await syncStore.filter(req.userId, Number(ctx.params.filterId)) : undefined;
      if (!json) throw notFound('No such filter');
      ctx.body = JSON.parse(json);
    });

    // PUT /rooms/{roomId}/typing/{userId}
    r.put('/rooms/:roomId/typing/:userId', auth.requireAuth(), validateBody({ type: 'object', required: ['typing'], properties: { typing: { type: 'boolean' }, timeout: { type: 'integer', minimum: 0 } } }), async (ctx) => {
      const req = ownUser(ctx);
      const body = ctx.request.body as { typing: boolean; timeout?: number };
      await ephemeral.setTyping(req.userId, ctx.params.roomId, body.typing, body.timeout);
      ctx.body = {};
    });

    // POST /rooms/{roomId}/receipt/{receiptType}/{eventId}
    r.post('/rooms/:roomId/receipt/:receiptType/:eventId', auth.requireAuth(), validateBody({ type: 'object', properties: { thread_id: { type: 'string' } } }), async (ctx) => {
      const req = requesterOf(ctx);
      await ephemeral.receipt(req.userId, ctx.params.roomId, ctx.params.receiptType, ctx.params.eventId, (ctx.request.body as { thread_id?: string }).thread_id);
      ctx.body = {};
    });

    // POST /rooms/{roomId}/read_markers
    r.post('/rooms/:roomId/read_markers', auth.requireAuth(), validateBody({
      type: 'object',
      properties: { 'm.fully_read': { type: 'string' }, 'm.read': { type: 'string' }, 'm.read.private': { type: 'string' } },
    }), async (ctx) => {
      const req = requesterOf(ctx);
      const b = ctx.request.body as Record<string, string | undefined>;
      await ephemeral.readMarkers(req.userId, ctx.params.roomId, { fullyRead: b['m.fully_read'], read: b['m.read'], readPrivate: b['m.read.private'] });
      ctx.body = {};
    });

    // PUT /presence/{userId}/status
    r.put('/presence/:userId/status', auth.requireAuth(), validateBody({ type: 'object', required: ['presence'], properties: { presence: { enum: ['online', 'offline', 'unavailable', 'busy'] }, status_msg: { type: ['string', 'null'] } } }), async (ctx) => {
      const req = ownUser(ctx);
      if (!s.config.presence.enabled) throw forbidden('Presence is disabled on this server');
      const b = ctx.request.body as { presence: string; status_msg?: string | null };
      await ephemeral.setPresence(req.userId, b.presence, b.status_msg);
      ctx.body = {};
    });

    // GET /presence/{userId}/status
    r.get('/presence/:userId/status', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      if (!s.config.presence.enabled) throw forbidden('Presence is disabled on this server');
      const target = ctx.params.userId;
      if (!(await s.accounts.user(target)) && s.accounts.isLocalUser(target)) throw notFound('Unknown user');
      ctx.body = await ephemeral.getPresence(target);
    });

    // GET /user/{userId}/rooms/{roomId}/tags
    r.get('/user/:userId/rooms/:roomId/tags', auth.requireAuth(), async (ctx) => {
      const req = ownUser(ctx);
      const content = await s.accountData.get(req.userId, ctx.params.roomId, 'm.tag');
      ctx.body = { tags: (content?.tags as Record<string, unknown>) ?? {} };
    });

    // PUT /user/{userId}/rooms/{roomId}/tags/{tag}
    r.put('/user/:userId/rooms/:roomId/tags/:tag', auth.requireAuth(), validateBody({ type: 'object', properties: { order: { type: 'number', minimum: 0, maximum: 1 } } }), async (ctx) => {
      const req = ownUser(ctx);
      if (ctx.params.tag.length > 255) throw new MatrixError(400, 'M_INVALID_PARAM', 'Tag name too long');
      const content = (await s.accountData.get(req.userId, ctx.params.roomId, 'm.tag')) ?? {};
      const tags = { ...((content.tags as Record<string, unknown>) ?? {}), [ctx.params.tag]: ctx.request.body };
      await s.accountData.put(req.userId, ctx.params.roomId, 'm.tag', { tags });
      ctx.body = {};
    });

    // DELETE /user/{userId}/rooms/{roomId}/tags/{tag}
    r.delete('/user/:userId/rooms/:roomId/tags/:tag', auth.requireAuth(), async (ctx) => {
      const req = ownUser(ctx);
      const content = (await s.accountData.get(req.userId, ctx.params.roomId, 'm.tag')) ?? {};
      const tags = { ...((content.tags as Record<string, unknown>) ?? {}) };
      delete tags[ctx.params.tag];
      await s.accountData.put(req.userId, ctx.params.roomId, 'm.tag', { tags });
      ctx.body = {};
    });
  };
}
