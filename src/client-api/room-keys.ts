// Server-side key backups (spec: "Server-side key backups" → /room_keys/version, /room_keys/keys).
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError } from '../http/errors.js';
import { validateBody, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import type { KeyBackupData } from '../e2ee/backup.js';
import { CreateVersionBody, PutAllKeysBody, PutRoomKeysBody, PutSessionKeyBody, UpdateVersionBody } from './room-keys.schema.js';

export function roomKeyRoutes(s: Services) {
  const { auth, e2ee } = s;
  const backup = e2ee.backup;
  const user = (ctx: Context) => requesterOf(ctx).userId;
  const version = (ctx: Context) => {
    const v = queryString(ctx.query, 'version');
    if (!v) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing version');
    return v;
  };

  return (r: Router) => {
    // POST /room_keys/version
    r.post('/room_keys/version', auth.requireAuth(), validateBody(CreateVersionBody), async (ctx) => {
      const body = ctx.request.body as { algorithm: string; auth_data: Record<string, unknown> };
      ctx.body = { version: await backup.createVersion(user(ctx), body.algorithm, body.auth_data) };
    });

    // GET /room_keys/version
    r.get('/room_keys/version', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.versionInfo(user(ctx));
    });

    // GET /room_keys/version/{version}
    r.get('/room_keys/version/:version', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.versionInfo(user(ctx), ctx.params.version);
    });

    // PUT /room_keys/version/{version}
    r.put('/room_keys/version/:version', auth.requireAuth(), validateBody(UpdateVersionBody), async (ctx) => {
      await backup.updateVersion(user(ctx), ctx.params.version, ctx.request.body as { algorithm: string; auth_data: Record<string, unknown>; version?: string });
      ctx.body = {};
    });

    // DELETE /room_keys/version/{version}
    r.delete('/room_keys/version/:version', auth.requireAuth(), async (ctx) => {
      await backup.deleteVersion(user(ctx), ctx.params.version);
      ctx.body = {};
    });

    // PUT /room_keys/keys
    r.put('/room_keys/keys', auth.requireAuth(), validateBody(PutAllKeysBody), async (ctx) => {
      const body = ctx.request.body as { rooms: Record<string, { sessions: Record<string, KeyBackupData> }> };
      const rooms = Object.fromEntries(Object.entries(body.rooms).map(([roomId, r]) => [roomId, r.sessions]));
      ctx.body = await backup.putKeys(user(ctx), version(ctx), rooms);
    });

    // PUT /room_keys/keys/{roomId}
    r.put('/room_keys/keys/:roomId', auth.requireAuth(), validateBody(PutRoomKeysBody), async (ctx) => {
      const body = ctx.request.body as { sessions: Record<string, KeyBackupData> };
      ctx.body = await backup.putKeys(user(ctx), version(ctx), { [ctx.params.roomId]: body.sessions });
    });

    // PUT /room_keys/keys/{roomId}/{sessionId}
    r.put('/room_keys/keys/:roomId/:sessionId', auth.requireAuth(), validateBody(PutSessionKeyBody), async (ctx) => {
      const key = ctx.request.body as KeyBackupData;
      ctx.body = await backup.putKeys(user(ctx), version(ctx), { [ctx.params.roomId]: { [ctx.params.sessionId]: key } });
    });

    // GET /room_keys/keys
    r.get('/room_keys/keys', auth.requireAuth(), async (ctx) => {
      const rooms = await backup.getKeys(user(ctx), version(ctx));
      ctx.body = { rooms: Object.fromEntries(Object.entries(rooms).map(([roomId, sessions]) => [roomId, { sessions }])) };
    });

    // GET /room_keys/keys/{roomId}
    r.get('/room_keys/keys/:roomId', auth.requireAuth(), async (ctx) => {
      const rooms = await backup.getKeys(user(ctx), version(ctx), ctx.params.roomId);
      ctx.body = { sessions: rooms[ctx.params.roomId] ?? {} };
    });

    // GET /room_keys/keys/{roomId}/{sessionId}
    r.get('/room_keys/keys/:roomId/:sessionId', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.getKey(user(ctx), version(ctx), ctx.params.roomId, ctx.params.sessionId);
    });

    // DELETE /room_keys/keys
    r.delete('/room_keys/keys', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.deleteKeys(user(ctx), version(ctx));
    });

    // DELETE /room_keys/keys/{roomId}
    r.delete('/room_keys/keys/:roomId', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.deleteKeys(user(ctx), version(ctx), ctx.params.roomId);
    });

    // DELETE /room_keys/keys/{roomId}/{sessionId}
    r.delete('/room_keys/keys/:roomId/:sessionId', auth.requireAuth(), async (ctx) => {
      ctx.body = await backup.deleteKeys(user(ctx), version(ctx), ctx.params.roomId, ctx.params.sessionId);
    });
  };
}
