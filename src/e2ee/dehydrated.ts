// Dehydrated devices (MSC3814, as matrix-js-sdk / Element use it): a hidden device with keys that
// receives to-device messages while the user has no client running. One per user; uploading a new
// one removes the old one with its keys and messages.
import type { Knex } from 'knex';
import { MatrixError, forbidden, notFound } from '../http/errors.js';
import type { UsersStore } from '../storage/users-store.js';
import type { E2eeStore } from '../storage/e2ee-store.js';
import type { DeviceLists } from './device-lists.js';
import type { Keys, KeysUpload } from './keys.js';
import type { ToDevice, ToDeviceEvent } from './to-device.js';

export interface DehydratedDeviceUpload extends KeysUpload {
  device_id: string;
  device_data: Record<string, unknown>;
  initial_device_display_name?: string;
}

const EVENTS_PAGE = 100;

export class DehydratedDevices {
  constructor(
    private readonly db: Knex,
    private readonly store: E2eeStore,
    private readonly users: UsersStore,
    private readonly keys: Keys,
    private readonly toDevice: ToDevice,
    private readonly deviceLists: DeviceLists,
  ) {}

  /** PUT /dehydrated_device */
  async put(userId: string, body: DehydratedDeviceUpload): Promise<{ device_id: string }> {
    const deviceId = body.device_id;
    const now = Date.now();
    const { position, removed } = await this.db.transaction(async (trx) => {
      const old = await this.store.dehydratedDevice(userId, trx);
      const clash = await this.users.device(userId, deviceId, trx);
      if (clash && old?.device_id !== deviceId) throw new MatrixError(400, 'M_INVALID_PARAM', 'Device ID already in use');
      if (old) await this.removeDevice(userId, old.device_id, trx);
      await this.users.upsertDevice({
        user_id: userId, device_id: deviceId, display_name: body.initial_device_display_name ?? null,
        last_seen_ip: null, last_seen_user_agent: null, last_seen_ts: null, created_ts: now, hidden: true,
      }, trx);
      await this.keys.uploadInTransaction(trx, userId, deviceId, {
        device_keys: body.device_keys, one_time_keys: body.one_time_keys, fallback_keys: body.fallback_keys,
      });
      await this.store.upsertDehydratedDevice({ user_id: userId, device_id: deviceId, device_data: JSON.stringify(body.device_data), ts_added_ms: now }, trx);
      const changed = old && old.device_id !== deviceId ? [old.device_id, deviceId] : [deviceId];
      return { position: await this.deviceLists.record(trx, userId, changed), removed: changed };
    });
    await this.deviceLists.notify(userId, removed, position);
    return { device_id: deviceId };
  }

  /** GET /dehydrated_device */
  async get(userId: string): Promise<{ device_id: string; device_data: Record<string, unknown> }> {
    const row = await this.store.dehydratedDevice(userId);
    if (!row) throw notFound('No dehydrated device available');
    return { device_id: row.device_id, device_data: JSON.parse(row.device_data) };
  }

  /** DELETE /dehydrated_device */
  async delete(userId: string): Promise<{ device_id: string }> {
    const result = await this.db.transaction(async (trx) => {
      const row = await this.store.dehydratedDevice(userId, trx);
      if (!row) return null;
      await this.removeDevice(userId, row.device_id, trx);
      return { deviceId: row.device_id, position: await this.deviceLists.record(trx, userId, [row.device_id]) };
    });
    if (!result) throw notFound('No dehydrated device available');
    await this.deviceLists.notify(userId, [result.deviceId], result.position);
    return { device_id: result.deviceId };
  }

  /**
   * POST /dehydrated_device/{deviceId}/events: pages through the device's to-device messages.
   * Unlike /sync nothing is deleted (MSC3814), so an interrupted rehydration can start again.
   */
  async events(userId: string, deviceId: string, nextBatch: string | undefined): Promise<{ events: ToDeviceEvent[]; next_batch: string }> {
    const row = await this.store.dehydratedDevice(userId);
    if (!row || row.device_id !== deviceId) throw forbidden('You may only fetch messages for your dehydrated device');
    let since = 0;
    if (nextBatch !== undefined) {
      if (!/^\d{1,15}$/.test(nextBatch)) throw new MatrixError(400, 'M_INVALID_PARAM', 'Invalid next_batch');
      since = Number(nextBatch);
    }
    const page = await this.toDevice.page(userId, deviceId, since, EVENTS_PAGE);
    return { events: page.events, next_batch: String(page.lastPosition) };
  }

  /** Removes the dehydrated device, its keys (by cascade), signatures on it and its messages. */
  private async removeDevice(userId: string, deviceId: string, trx: Knex): Promise<void> {
    await this.users.deleteDevices(userId, [deviceId], trx);
    await this.store.deleteDeviceKeys(userId, [deviceId], trx);
    await this.store.deleteSignaturesOn(userId, [deviceId], trx);
    await this.store.deleteSignaturesBy(userId, [`ed25519:${deviceId}`], trx);
    await this.store.deleteInboxOfDevices(userId, [deviceId], trx);
    await this.store.deleteDehydratedDevice(userId, deviceId, trx);
  }
}
