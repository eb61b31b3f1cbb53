// Federation endpoints about local users' devices and keys (server-server API "Device Management",
// "End-to-End Encryption"): what other servers' /keys/query, /keys/claim and device-list resyncs
// ask us. Only local users are answered; device display names are not shared (see edus.ts).
import type Router from '@koa/router';
import type { Context, Middleware } from 'koa';
import { MatrixError } from '../../http/errors.js';
import { domainOf } from '../../rooms/event.js';
import { isObject } from '../../e2ee/key-json.js';
import type { DeviceKeysQuery, Keys, OneTimeKeysClaim } from '../../e2ee/keys.js';
import type { FederationEdusStore } from '../../storage/federation-edus-store.js';

export interface FederationKeyDeps {
  serverName: string;
  auth: Middleware;
  keys: Keys;
  store: FederationEdusStore;
}

/** At most this many users per query or claim; a larger request is cut (the rest left out). */
const MAX_USERS = 1000;

/** Device keys for another server: `unsigned.device_display_name` removed. */
function forFederation(keys: Record<string, unknown>): Record<string, unknown> {
  if (!isObject(keys.unsigned) || !('device_display_name' in keys.unsigned)) return keys;
  const { device_display_name: _n, ...unsigned } = keys.unsigned;
  const { unsigned: _u, ...rest } = keys;
  return Object.keys(unsigned).length ? { ...rest, unsigned } : rest;
}

export function federationKeyRoutes(d: FederationKeyDeps) {
  const isLocal = (userId: string) => domainOf(userId) === d.serverName;

  return (r: Router) => {
    // GET /_matrix/federation/v1/user/devices/{userId}
    r.get('/_matrix/federation/v1/user/devices/:userId', d.auth, async (ctx: Context) => {
      const userId = ctx.params.userId as string;
      if (!isLocal(userId)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Not a user of this server');
      // The stream position first: a device change racing this request is then either in the
      // snapshot or in an update numbered after it (applied twice, harmlessly), never lost.
      const streamId = await d.store.outboundDeviceStream(userId);
      const res = await d.keys.queryLocal({ [userId]: [] }, null);
      const devices = Object.entries(res.device_keys[userId] ?? {}).map(([deviceId, keys]) => ({ device_id: deviceId, keys: forFederation(keys) }));
      ctx.body = {
        user_id: userId,
        stream_id: streamId,
        devices,
        ...(res.master_keys[userId] ? { master_key: res.master_keys[userId] } : {}),
        ...(res.self_signing_keys[userId] ? { self_signing_key: res.self_signing_keys[userId] } : {}),
      };
    });

    // POST /_matrix/federation/v1/user/keys/query
    r.post('/_matrix/federation/v1/user/keys/query', d.auth, async (ctx: Context) => {
      const b = ctx.request.body as { device_keys?: unknown } | undefined;
      if (!isObject(b) || !isObject(b.device_keys)) throw new MatrixError(400, 'M_BAD_JSON', 'device_keys is required');
      const query: DeviceKeysQuery = {};
      for (const [userId, devices] of Object.entries(b.device_keys).slice(0, MAX_USERS)) {
        if (!isLocal(userId)) continue;
        if (!Array.isArray(devices) || devices.some((x) => typeof x !== 'string')) throw new MatrixError(400, 'M_BAD_JSON', `device_keys.${userId} must be a list of device ids`);
        query[userId] = devices as string[];
      }
      const res = await d.keys.queryLocal(query, null);
      const deviceKeys: Record<string, Record<string, unknown>> = {};
      for (const [userId, devices] of Object.entries(res.device_keys)) {
        deviceKeys[userId] = Object.fromEntries(Object.entries(devices).map(([id, k]) => [id, forFederation(k)]));
      }
      ctx.body = { device_keys: deviceKeys, master_keys: res.master_keys, self_signing_keys: res.self_signing_keys };
    });

    // POST /_matrix/federation/v1/user/keys/claim
    r.post('/_matrix/federation/v1/user/keys/claim', d.auth, async (ctx: Context) => {
      const b = ctx.request.body as { one_time_keys?: unknown } | undefined;
      if (!isObject(b) || !isObject(b.one_time_keys)) throw new MatrixError(400, 'M_BAD_JSON', 'one_time_keys is required');
      const claim: OneTimeKeysClaim = {};
      for (const [userId, devices] of Object.entries(b.one_time_keys).slice(0, MAX_USERS)) {
        if (!isLocal(userId)) continue;
        if (!isObject(devices) || Object.values(devices).some((a) => typeof a !== 'string')) throw new MatrixError(400, 'M_BAD_JSON', `one_time_keys.${userId} must map device ids to algorithms`);
        claim[userId] = devices as Record<string, string>;
      }
      ctx.body = { one_time_keys: await d.keys.claimLocal(claim) };
    });
  };
}
