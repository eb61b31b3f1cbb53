// Device lists of users on other servers (server-server API "Device Management", "End-to-End
// Encryption"): m.device_list_update and m.signing_key_update EDUs keep a cache of the devices of
// remote users who share a room with ours, applied in order by stream_id/prev_id, resynced with
// GET /user/devices/{userId} when an update was lost. Every change is recorded in the device_lists
// stream for the remote user, so local clients see it in /sync `device_lists.changed`.
//
// Also the federation side of local /keys/query and /keys/claim (e2ee's RemoteKeys): tracked users
// are answered from the cache, everyone else by POST /user/keys/query on their server.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { domainOf } from '../rooms/event.js';
import { bool, num } from '../storage/rows.js';
import type { FederationEdusStore } from '../storage/federation-edus-store.js';
import type { DeviceLists } from '../e2ee/device-lists.js';
import type { DeviceKeysQuery, KeysClaimResult, KeysQueryResult, OneTimeKeysClaim, RemoteKeys } from '../e2ee/keys.js';
import { isObject } from '../e2ee/key-json.js';
import type { FederationRequester } from './interfaces.js';

const RESYNC_TIMEOUT_MS = 30_000;
/** A failed resync of a user is not tried again (from queries) for this long. */
const RESYNC_RETRY_MS = 60_000;

export interface RemoteDeviceListsDeps {
  db: Knex;
  store: FederationEdusStore;
  client: FederationRequester;
  deviceLists: DeviceLists;
  /** Joined members of a room (to find whose tracking a local user's leave may end). */
  joinedMembers(roomNid: number): Promise<string[]>;
  serverName: string;
  logger: Logger;
}

type RemoteQueryResult = Partial<Omit<KeysQueryResult, 'user_signing_keys'>> & { failures: Record<string, Record<string, unknown>> };

/** Device keys as their owner signed them, checked to belong to `userId`/`deviceId`. */
export function deviceKeysFor(v: unknown, userId: string, deviceId: string): Record<string, unknown> | null {
  if (!isObject(v) || v.user_id !== userId || v.device_id !== deviceId || !isObject(v.keys)) return null;
  return v;
}

/** A cross-signing key of `userId` with the given usage. */
export function crossSigningKeyFor(v: unknown, userId: string, usage: string): Record<string, unknown> | null {
  if (!isObject(v) || v.user_id !== userId || !Array.isArray(v.usage) || !v.usage.includes(usage) || !isObject(v.keys)) return null;
  return v;
}

const isStreamId = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

export class RemoteDeviceLists implements RemoteKeys {
  /** Per remote user: the tail of its queue of updates, so one user's updates apply in order. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly lastResyncAttempt = new Map<string, number>();
  private readonly log: Logger;

  constructor(private readonly d: RemoteDeviceListsDeps) {
    this.log = d.logger.child({ module: 'remote-devices' });
  }

  /** Runs `fn` after the user's queued work; errors are logged, not thrown. */
  private enqueue(userId: string, fn: () => Promise<void>): Promise<void> {
    const prev = this.queues.get(userId) ?? Promise.resolve();
    const next = prev.then(fn).catch((err) => this.log.warn({ userId, err: (err as Error).message }, 'remote device list update failed'));
    this.queues.set(userId, next);
    void next.finally(() => {
      if (this.queues.get(userId) === next) this.queues.delete(userId);
    });
    return next;
  }

  /** Resolves once every queued update has been handled (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.queues.size) await Promise.all([...this.queues.values()]);
  }

  // Incoming EDUs. The work is queued, not awaited, so that a resync (a request to the origin) never
  // holds up the transaction that carried the EDU.

  /** m.device_list_update */
  async onDeviceListUpdate(origin: string, c: Record<string, unknown>): Promise<void> {
    const userId = c.user_id;
    const deviceId = c.device_id;
    if (typeof userId !== 'string' || typeof deviceId !== 'string' || !deviceId || !isStreamId(c.stream_id)) return;
    if (domainOf(userId) !== origin) {
      this.log.info({ origin, userId }, 'ignored m.device_list_update for a user of another server');
      return;
    }
    const streamId = c.stream_id;
    const prevIds = Array.isArray(c.prev_id) ? c.prev_id.filter(isStreamId) : [];
    const deleted = c.deleted === true;
    const keys = deleted ? null : deviceKeysFor(c.keys, userId, deviceId);
    void this.enqueue(userId, async () => {
      if (!(await this.stillShared(userId))) return;
      const [row] = await this.d.store.remoteDeviceLists([userId]);
      if (!row || bool(row.stale)) {
        await this.resyncNow(userId);
        return;
      }
      const known = num(row.stream_id);
      if (streamId < known) return; // older than what we have
      // Every update this one follows must be one we have applied (or one our snapshot covers).
      if (!prevIds.length || prevIds.some((p) => p > known)) {
        this.log.info({ userId, streamId, prevIds, known }, 'gap in a remote device list; resyncing');
        await this.resyncNow(userId);
        return;
      }
      const position = await this.d.db.transaction(async (trx) => {
        if (deleted) await this.d.store.deleteRemoteDevice(userId, deviceId, trx);
        else await this.d.store.upsertRemoteDevice(userId, deviceId, keys ? JSON.stringify(keys) : null, trx);
        await this.d.store.updateRemoteDeviceList(userId, { stream_id: Math.max(streamId, known), updated_ts: Date.now() }, trx);
        return this.d.deviceLists.record(trx, userId, [deviceId]);
      });
      await this.d.deviceLists.notify(userId, [deviceId], position);
    });
  }

  /** m.signing_key_update: new cross-signing keys (a device-list change for clients). */
  async onSigningKeyUpdate(origin: string, c: Record<string, unknown>): Promise<void> {
    const userId = c.user_id;
    if (typeof userId !== 'string') return;
    if (domainOf(userId) !== origin) {
      this.log.info({ origin, userId }, 'ignored m.signing_key_update for a user of another server');
      return;
    }
    const master = c.master_key === undefined ? undefined : crossSigningKeyFor(c.master_key, userId, 'master');
    const ssk = c.self_signing_key === undefined ? undefined : crossSigningKeyFor(c.self_signing_key, userId, 'self_signing');
    if (master === null || ssk === null) return; // present but malformed
    void this.enqueue(userId, async () => {
      if (!(await this.stillShared(userId))) return;
      const position = await this.d.db.transaction(async (trx) => {
        const [row] = await this.d.store.remoteDeviceLists([userId], trx);
        if (row && !bool(row.stale)) {
          const patch: { master_key?: string; self_signing_key?: string; updated_ts: number } = { updated_ts: Date.now() };
          if (master) patch.master_key = JSON.stringify(master);
          if (ssk) patch.self_signing_key = JSON.stringify(ssk);
          await this.d.store.updateRemoteDeviceList(userId, patch, trx);
        }
        return this.d.deviceLists.record(trx, userId, []);
      });
      await this.d.deviceLists.notify(userId, [], position);
    });
  }

  /** Whether the user shares a room with one of ours; if not, we stop tracking them. */
  private async stillShared(userId: string): Promise<boolean> {
    if (await this.d.store.sharesRoomWithServer(userId, this.d.serverName)) return true;
    await this.d.store.deleteRemoteDeviceList(userId);
    return false;
  }

  // Resync

  /**
   * Replaces the cached device list of `userId` with GET /user/devices/{userId} from their server
   * and records a change. On failure the list is marked stale (queries go to the server) and a
   * change is recorded anyway, so clients fetch the keys again. Call from the user's queue.
   */
  private async resyncNow(userId: string): Promise<boolean> {
    const server = domainOf(userId)!;
    this.lastResyncAttempt.set(userId, Date.now());
    let ok = false;
    let position: number;
    try {
      const res = await this.d.client.request<Record<string, unknown>>(server, 'GET', `/_matrix/federation/v1/user/devices/${encodeURIComponent(userId)}`, { timeoutMs: RESYNC_TIMEOUT_MS });
      if (!isObject(res) || res.user_id !== userId || !isStreamId(res.stream_id) || !Array.isArray(res.devices)) throw new Error('malformed /user/devices response');
      const devices = new Map<string, string | null>();
      for (const dev of res.devices) {
        if (!isObject(dev) || typeof dev.device_id !== 'string' || !dev.device_id) continue;
        const keys = deviceKeysFor(dev.keys, userId, dev.device_id);
        devices.set(dev.device_id, keys ? JSON.stringify(keys) : null);
      }
      const master = crossSigningKeyFor(res.master_key, userId, 'master');
      const ssk = crossSigningKeyFor(res.self_signing_key, userId, 'self_signing');
      position = await this.d.db.transaction(async (trx) => {
        await this.d.store.replaceRemoteDeviceList(
          { user_id: userId, stream_id: res.stream_id as number, master_key: master && JSON.stringify(master), self_signing_key: ssk && JSON.stringify(ssk), updated_ts: Date.now() },
          [...devices].map(([device_id, keys]) => ({ device_id, keys })),
          trx,
        );
        return this.d.deviceLists.record(trx, userId, []);
      });
      this.lastResyncAttempt.delete(userId);
      ok = true;
    } catch (err) {
      this.log.info({ userId, err: (err as Error).message }, 'device list resync failed');
      position = await this.d.db.transaction(async (trx) => {
        await this.d.store.markRemoteDeviceListStale(userId, Date.now(), trx);
        return this.d.deviceLists.record(trx, userId, []);
      });
    }
    await this.d.deviceLists.notify(userId, [], position);
    return ok;
  }

  /** Starts tracking (or retries a stale list) in the background, at most once a minute per user. */
  private resyncSoon(userId: string): void {
    const last = this.lastResyncAttempt.get(userId);
    if (this.queues.has(userId) || (last !== undefined && Date.now() - last < RESYNC_RETRY_MS)) return;
    this.lastResyncAttempt.set(userId, Date.now());
    if (this.lastResyncAttempt.size > 10_000) this.lastResyncAttempt.delete(this.lastResyncAttempt.keys().next().value as string);
    void this.enqueue(userId, async () => {
      if (!(await this.stillShared(userId))) return;
      const [row] = await this.d.store.remoteDeviceLists([userId]);
      if (!row || bool(row.stale)) await this.resyncNow(userId);
    });
  }

  // Membership: a user we no longer share a room with sends us no more updates, so their cached
  // list would go stale unnoticed; forget it (a later query or update starts over).

  /** After a leave, kick or ban in a room: forgets remote users who no longer share a room with ours. */
  async afterLeave(roomNid: number, target: string): Promise<void> {
    const candidates = domainOf(target) === this.d.serverName
      ? (await this.d.joinedMembers(roomNid)).filter((u) => domainOf(u) !== this.d.serverName)
      : [target];
    const tracked = await this.d.store.trackedRemoteUsers(candidates);
    if (!tracked.length) return;
    const shared = await this.d.store.usersSharingRoomWithServer(tracked, this.d.serverName);
    for (const u of tracked) if (!shared.has(u)) void this.enqueue(u, async () => { await this.stillShared(u); });
  }

  // RemoteKeys: local /keys/query and /keys/claim for users of `server`

  async queryKeys(server: string, query: DeviceKeysQuery, timeoutMs: number): Promise<RemoteQueryResult> {
    const result: RemoteQueryResult = { device_keys: {}, master_keys: {}, self_signing_keys: {}, failures: {} };
    const userIds = Object.keys(query).filter((u) => domainOf(u) === server);
    if (!userIds.length) return result;
    const shared = await this.d.store.usersSharingRoomWithServer(userIds, this.d.serverName);
    const rows = new Map((await this.d.store.remoteDeviceLists([...shared])).map((r) => [r.user_id, r]));
    const cached = userIds.filter((u) => shared.has(u) && rows.has(u) && !bool(rows.get(u)!.stale));
    const fetch = userIds.filter((u) => !cached.includes(u));

    if (cached.length) {
      for (const u of cached) {
        result.device_keys![u] = {};
        const row = rows.get(u)!;
        if (row.master_key) result.master_keys![u] = JSON.parse(row.master_key);
        if (row.self_signing_key) result.self_signing_keys![u] = JSON.parse(row.self_signing_key);
      }
      for (const dev of await this.d.store.remoteDevices(cached)) {
        const wanted = query[dev.user_id];
        if (!dev.keys || (wanted.length && !wanted.includes(dev.device_id))) continue;
        result.device_keys![dev.user_id][dev.device_id] = JSON.parse(dev.keys);
      }
    }

    if (fetch.length) {
      try {
        const body = { device_keys: Object.fromEntries(fetch.map((u) => [u, query[u]])) };
        const res = await this.d.client.request<Record<string, unknown>>(server, 'POST', '/_matrix/federation/v1/user/keys/query', { body, timeoutMs });
        // Only what the server may speak for: its own users, as asked.
        const wantedUsers = new Set(fetch);
        const dk = isObject(res?.device_keys) ? res.device_keys : {};
        for (const [u, devices] of Object.entries(dk)) {
          if (!wantedUsers.has(u) || !isObject(devices)) continue;
          const out: Record<string, Record<string, unknown>> = {};
          for (const [deviceId, keys] of Object.entries(devices)) {
            const k = deviceKeysFor(keys, u, deviceId);
            if (k) out[deviceId] = k;
          }
          result.device_keys![u] = out;
        }
        for (const [field, usage] of [['master_keys', 'master'], ['self_signing_keys', 'self_signing']] as const) {
          const m = isObject(res?.[field]) ? res[field] as Record<string, unknown> : {};
          for (const [u, key] of Object.entries(m)) {
            const k = wantedUsers.has(u) ? crossSigningKeyFor(key, u, usage) : null;
            if (k) result[field]![u] = k;
          }
        }
      } catch (err) {
        // With nothing from the cache this is the server's failure as a whole.
        if (!cached.length) throw err;
        result.failures[server] = { status: 503, message: (err as Error).message };
      }
      // Users who share a room with ours are worth tracking: their later queries hit the cache.
      for (const u of fetch) if (shared.has(u)) this.resyncSoon(u);
    }
    return result;
  }

  async claimKeys(server: string, claim: OneTimeKeysClaim, timeoutMs: number): Promise<Pick<KeysClaimResult, 'one_time_keys'>> {
    const mine = Object.fromEntries(Object.entries(claim).filter(([u]) => domainOf(u) === server));
    if (!Object.keys(mine).length) return { one_time_keys: {} };
    const res = await this.d.client.request<Record<string, unknown>>(server, 'POST', '/_matrix/federation/v1/user/keys/claim', { body: { one_time_keys: mine }, timeoutMs });
    const out: KeysClaimResult['one_time_keys'] = {};
    const otks = isObject(res?.one_time_keys) ? res.one_time_keys : {};
    for (const [u, devices] of Object.entries(otks)) {
      if (!(u in mine) || !isObject(devices)) continue;
      for (const [deviceId, keys] of Object.entries(devices)) {
        if (!(deviceId in mine[u]) || !isObject(keys)) continue;
        (out[u] ??= {})[deviceId] = keys;
      }
    }
    return { one_time_keys: out };
  }
}
