// Key management and cross-signing (spec: "End-to-End Encryption" → "Key management API",
// "Cross-signing").
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { MatrixError } from '../http/errors.js';
import { validateBody, queryString } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import type { CrossSigningUpload, DeviceKeysQuery, KeysUpload, OneTimeKeysClaim } from '../e2ee/keys.js';
import { DeviceSigningUploadBody, KeysClaimBody, KeysQueryBody, KeysUploadBody, SignaturesUploadBody } from './keys.schema.js';

const MAX_REMOTE_TIMEOUT_MS = 60_000;

export function keyRoutes(s: Services) {
  const { auth, uia, e2ee } = s;
  const uri = (ctx: Context) => `${ctx.method} ${ctx.path.replace(/^\/_matrix\/client\/[^/]+/, '')}`;
  const timeoutOf = (t: number | undefined) => Math.min(t ?? 10_000, MAX_REMOTE_TIMEOUT_MS);

  return (r: Router) => {
    // POST /keys/upload
    r.post('/keys/upload', auth.requireAuth({ allowGuest: true }), validateBody(KeysUploadBody), async (ctx) => {
      const req = requesterOf(ctx);
      ctx.body = { one_time_key_counts: await e2ee.keys.upload(req.userId, req.deviceId, ctx.request.body as KeysUpload) };
    });

    // POST /keys/query
    r.post('/keys/query', auth.requireAuth({ allowGuest: true }), validateBody(KeysQueryBody), async (ctx) => {
      const body = ctx.request.body as { device_keys: DeviceKeysQuery; timeout?: number };
      ctx.body = await e2ee.keys.query(requesterOf(ctx).userId, body.device_keys, timeoutOf(body.timeout));
    });

    // POST /keys/claim
    r.post('/keys/claim', auth.requireAuth({ allowGuest: true }), validateBody(KeysClaimBody), async (ctx) => {
      const body = ctx.request.body as { one_time_keys: OneTimeKeysClaim; timeout?: number };
      ctx.body = await e2ee.keys.claim(body.one_time_keys, timeoutOf(body.timeout));
    });

    // GET /keys/changes?from=&to=
    r.get('/keys/changes', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const from = queryString(ctx.query, 'from');
      if (!from) throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing from');
      const to = queryString(ctx.query, 'to');
      const fromPos = e2ee.deviceLists.positionOf(from, 'from');
      const toPos = to ? e2ee.deviceLists.positionOf(to, 'to') : await e2ee.deviceLists.currentPosition();
      // Narrowing to users who share a room with the requester, and `left`, need room membership:
      // the rooms module supplies that through deviceLists.hooks.
      ctx.body = { changed: await e2ee.changesBetween(fromPos, toPos), left: [] };
    });

    // POST /keys/device_signing/upload
    r.post('/keys/device_signing/upload', auth.requireAuth(), validateBody(DeviceSigningUploadBody), async (ctx) => {
      const req = requesterOf(ctx);
      const body = ctx.request.body as CrossSigningUpload & { auth?: Record<string, unknown> };
      const keys: CrossSigningUpload = { master_key: body.master_key, self_signing_key: body.self_signing_key, user_signing_key: body.user_signing_key };
      if ((await e2ee.keys.uploadCrossSigningKeys(req.userId, keys, false)) === 'needs-auth') {
        // Replacing existing keys needs the password (spec v1.11).
        await uia.check(body.auth as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
        await e2ee.keys.uploadCrossSigningKeys(req.userId, keys, true);
      }
      ctx.body = {};
    });

    // POST /keys/signatures/upload
    r.post('/keys/signatures/upload', auth.requireAuth(), validateBody(SignaturesUploadBody), async (ctx) => {
      ctx.body = await e2ee.keys.uploadSignatures(requesterOf(ctx).userId, ctx.request.body as Record<string, Record<string, unknown>>);
    });
  };
}
