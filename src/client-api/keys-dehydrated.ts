// Dehydrated devices (MSC3814), at the unstable prefix matrix-js-sdk uses. Full paths, so they are
// served under /_matrix/client/unstable only.
import type Router from '@koa/router';
import type { Services } from '../services.js';
import { validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import type { DehydratedDeviceUpload } from '../e2ee/dehydrated.js';
import { DehydratedDevicePutBody, DehydratedEventsBody } from './keys.schema.js';

export const MSC3814_PREFIX = '/_matrix/client/unstable/org.matrix.msc3814.v1';

export function dehydratedDeviceRoutes(s: Services) {
  const { auth, e2ee } = s;
  return (r: Router) => {
    // PUT /dehydrated_device
    r.put(`${MSC3814_PREFIX}/dehydrated_device`, auth.requireAuth(), validateBody(DehydratedDevicePutBody), async (ctx) => {
      ctx.body = await e2ee.dehydrated.put(requesterOf(ctx).userId, ctx.request.body as DehydratedDeviceUpload);
    });

    // GET /dehydrated_device
    r.get(`${MSC3814_PREFIX}/dehydrated_device`, auth.requireAuth(), async (ctx) => {
      ctx.body = await e2ee.dehydrated.get(requesterOf(ctx).userId);
    });

    // DELETE /dehydrated_device
    r.delete(`${MSC3814_PREFIX}/dehydrated_device`, auth.requireAuth(), async (ctx) => {
      ctx.body = await e2ee.dehydrated.delete(requesterOf(ctx).userId);
    });

    // POST /dehydrated_device/{deviceId}/events
    r.post(`${MSC3814_PREFIX}/dehydrated_device/:deviceId/events`, auth.requireAuth(), validateBody(DehydratedEventsBody), async (ctx) => {
      const body = ctx.request.body as { next_batch?: string };
      ctx.body = await e2ee.dehydrated.events(requesterOf(ctx).userId, ctx.params.deviceId, body.next_batch);
    });
  };
}
