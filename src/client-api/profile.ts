// Profiles (spec: "Profiles"), including the custom fields of spec v1.16.
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import { validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { bool } from '../storage/rows.js';

const MAX_PROFILE_BYTES = 64 * 1024;
const KEY_NAME = /^[A-Za-z0-9_.\-]{1,255}$/;

export interface ProfileHooks {
  /** Displayname or avatar changed: the rooms issue updates member events. */
  profileChanged?(userId: string, profile: { displayname: string | null; avatar_url: string | null }): Promise<void>;
}

export function profileOf(row: { displayname: string | null; avatar_url: string | null; profile_fields: string | null }): Record<string, unknown> {
  const out: Record<string, unknown> = row.profile_fields ? JSON.parse(row.profile_fields) : {};
  if (row.displayname !== null) out.displayname = row.displayname;
  if (row.avatar_url !== null) out.avatar_url = row.avatar_url;
  return out;
}

export function profileRoutes(s: Services, hooks: ProfileHooks = {}) {
  const { accounts, auth } = s;

  async function load(userId: string) {
    const row = await accounts.user(userId);
    if (!row || (bool(row.deactivated) && !row.displayname && !row.avatar_url)) throw notFound('Profile not found');
    return row;
  }

  async function write(ctx: import('koa').Context, key: string, value: unknown) {
    const req = requesterOf(ctx);
    const userId = ctx.params.userId;
    if (req.userId !== userId && !req.isAdmin) throw forbidden('You cannot change the profile of another user');
    if (!KEY_NAME.test(key)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid profile key name');
    const row = await load(userId);
    if (key === 'displayname' || key === 'avatar_url') {
      if (value !== null && value !== undefined && typeof value !== 'string') throw new MatrixError(400, 'M_BAD_JSON', `${key} must be a string`);
      if (typeof value === 'string' && value.length > 256 && key === 'displayname') throw new MatrixError(400, 'M_TOO_LARGE', 'Display name is too long');
      if (key === 'avatar_url' && typeof value === 'string' && value !== '' && !value.startsWith('mxc://')) {
        throw new MatrixError(400, 'M_INVALID_PARAM', 'avatar_url must be an mxc:// URI');
      }
      const v = typeof value === 'string' && value !== '' ? value : null;
      await s.stores.users.updateUser(userId, { [key]: v });
      const after = { displayname: row.displayname, avatar_url: row.avatar_url, [key]: v };
      await hooks.profileChanged?.(userId, after);
      return;
    }
    const fields: Record<string, unknown> = row.profile_fields ? JSON.parse(row.profile_fields) : {};
    if (value === undefined) delete fields[key];
    else fields[key] = value;
    const text = JSON.stringify(fields);
    if (Buffer.byteLength(text) > MAX_PROFILE_BYTES) throw new MatrixError(400, 'M_PROFILE_TOO_LARGE', 'Profile would exceed 64 KiB');
    await s.stores.users.updateUser(userId, { profile_fields: Object.keys(fields).length ? text : null });
  }

  return (r: Router) => {
    /** A local user's profile from the database; another server's user's from that server. */
    async function lookup(userId: string, field?: string): Promise<Record<string, unknown>> {
      const server = userId.startsWith('@') && userId.includes(':') ? userId.slice(userId.indexOf(':') + 1) : '';
      if (!server) throw notFound('Profile not found');
      if (server === s.config.server_name) return profileOf(await load(userId));
      if (!s.federationQueries) throw notFound('Profile not found');
      return s.federationQueries.profile(server, userId, field);
    }

    // GET /profile/{userId}
    r.get('/profile/:userId', async (ctx) => {
      ctx.body = await lookup(ctx.params.userId);
    });

    // GET /profile/{userId}/{keyName}
    r.get('/profile/:userId/:keyName', async (ctx) => {
      const key = ctx.params.keyName;
      const profile = await lookup(ctx.params.userId, key);
      if (!(key in profile)) throw notFound(`Profile has no ${key}`);
      ctx.body = { [key]: profile[key] };
    });

    // PUT /profile/{userId}/{keyName}
    r.put('/profile/:userId/:keyName', auth.requireAuth(), validateBody({ type: 'object' }), async (ctx) => {
      const key = ctx.params.keyName;
      const body = ctx.request.body as Record<string, unknown>;
      if (!(key in body)) throw new MatrixError(400, 'M_MISSING_PARAM', `Missing ${key}`);
      await write(ctx, key, body[key]);
      ctx.body = {};
    });

    // DELETE /profile/{userId}/{keyName}
    r.delete('/profile/:userId/:keyName', auth.requireAuth(), async (ctx) => {
      const key = ctx.params.keyName;
      await write(ctx, key, key === 'displayname' || key === 'avatar_url' ? null : undefined);
      ctx.body = {};
    });
  };
}
