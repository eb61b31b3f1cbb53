// Device management (spec: "Device Management").
import type Router from '@koa/router';
import type { Context } from 'koa';
import type { Services } from '../services.js';
import { notFound } from '../http/errors.js';
import { validateBody } from '../http/validate.js';
import { requesterOf } from '../http/auth.js';
import { num, type DeviceRow } from '../storage/rows.js';
import { AuthOnlyBody, DeleteDevicesBody, RenameDeviceBody } from './account.schema.js';

export function deviceJson(d: DeviceRow) {
  return {
    device_id: d.device_id,
    display_name: d.display_name ?? undefined,
    last_seen_ip: d.last_seen_ip ?? undefined,
    last_seen_ts: d.last_seen_ts === null ? undefined : num(d.last_seen_ts),
  };
}

export function deviceRoutes(s: Services) {
  const { accounts, uia, auth } = s;
  const uri = (ctx: Context) => `${ctx.method} ${ctx.path.replace(/^\/_matrix\/client\/[^/]+/, '')}`;

  return (r: Router) => {
    // GET /devices
    r.get('/devices', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      ctx.body = { devices: (await accounts.devices(requesterOf(ctx).userId)).map(deviceJson) };
    });

    // GET /devices/{deviceId}
    r.get('/devices/:deviceId', auth.requireAuth({ allowGuest: true }), async (ctx) => {
      const d = await accounts.device(requesterOf(ctx).userId, ctx.params.deviceId);
      if (!d) throw notFound('Device not found');
      ctx.body = deviceJson(d);
    });

    // PUT /devices/{deviceId}
    r.put('/devices/:deviceId', auth.requireAuth({ allowGuest: true }), validateBody(RenameDeviceBody), async (ctx) => {
      const body = ctx.request.body as { display_name?: string | null };
      const userId = requesterOf(ctx).userId;
      if (!(await accounts.device(userId, ctx.params.deviceId))) throw notFound('Device not found');
      if (body.display_name !== undefined) await accounts.renameDevice(userId, ctx.params.deviceId, body.display_name);
      ctx.body = {};
    });

    // DELETE /devices/{deviceId}
    r.delete('/devices/:deviceId', auth.requireAuth(), validateBody(AuthOnlyBody), async (ctx) => {
      const req = requesterOf(ctx);
      const body = ctx.request.body as { auth?: Record<string, unknown> };
      if (!(await accounts.device(req.userId, ctx.params.deviceId))) throw notFound('Device not found');
      await uia.check(body.auth as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
      await accounts.deleteDevices(req.userId, [ctx.params.deviceId]);
      ctx.body = {};
    });

    // POST /delete_devices
    r.post('/delete_devices', auth.requireAuth(), validateBody(DeleteDevicesBody), async (ctx) => {
      const req = requesterOf(ctx);
      const body = ctx.request.body as { devices: string[]; auth?: Record<string, unknown> };
      await uia.check(body.auth as never, { flows: [['m.login.password']], userId: req.userId, uri: uri(ctx) });
      await accounts.deleteDevices(req.userId, body.devices);
      ctx.body = {};
    });
  };
}
