// End-to-end encryption support, built once by main.ts. Also the functions /sync calls: device-list
// changes, one-time key counts, unused fallback key types and the to-device inbox.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import type { Accounts } from '../accounts/accounts.js';
import type { UsersStore } from '../storage/users-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';
import { E2eeStore } from '../storage/e2ee-store.js';
import { DeviceLists } from './device-lists.js';
import { Keys } from './keys.js';
import { KeyBackup } from './backup.js';
import { ToDevice, type ToDeviceEvent } from './to-device.js';
import { DehydratedDevices } from './dehydrated.js';

export class E2ee {
  readonly store: E2eeStore;
  readonly deviceLists: DeviceLists;
  readonly keys: Keys;
  readonly backup: KeyBackup;
  readonly toDevice: ToDevice;
  readonly dehydrated: DehydratedDevices;

  constructor(
    private readonly db: Knex,
    users: UsersStore,
    streams: StreamsStore,
    notifier: Notifier,
    serverName: string,
    logger?: Logger,
  ) {
    this.store = new E2eeStore(db);
    this.deviceLists = new DeviceLists(db, this.store, streams, notifier);
    this.keys = new Keys(db, this.store, this.deviceLists, serverName);
    this.backup = new KeyBackup(db, this.store);
    this.toDevice = new ToDevice(db, this.store, streams, notifier, serverName, logger);
    this.dehydrated = new DehydratedDevices(db, this.store, users, this.keys, this.toDevice, this.deviceLists);
  }

  /**
   * Follows device changes made through the accounts service: new, renamed and removed devices are
   * device-list changes; a removed device loses its keys, signatures on it and pending messages.
   * Hooks already installed by other modules keep running.
   */
  attachTo(accounts: Accounts): void {
    const prevChanged = accounts.hooks.devicesChanged;
    accounts.hooks.devicesChanged = async (userId, deviceIds, removed) => {
      await prevChanged?.(userId, deviceIds, removed);
      await this.devicesChanged(userId, deviceIds, removed);
    };
    const prevDeactivating = accounts.hooks.deactivating;
    accounts.hooks.deactivating = async (userId, erase) => {
      await prevDeactivating?.(userId, erase);
      await this.deactivating(userId);
    };
  }

  async devicesChanged(userId: string, deviceIds: string[], removed: boolean): Promise<void> {
    if (!deviceIds.length) return;
    const position = await this.db.transaction(async (trx) => {
      if (removed) {
        await this.store.deleteDeviceKeys(userId, deviceIds, trx);
        await this.store.deleteSignaturesOn(userId, deviceIds, trx);
        await this.store.deleteSignaturesBy(userId, deviceIds.map((d) => `ed25519:${d}`), trx);
        await this.store.deleteInboxOfDevices(userId, deviceIds, trx);
        for (const d of deviceIds) await this.store.deleteDehydratedDevice(userId, d, trx);
      }
      return this.deviceLists.record(trx, userId, deviceIds);
    });
    await this.deviceLists.notify(userId, deviceIds, position);
  }

  /** Account deactivation: cross-signing identity, signatures, backups and the dehydrated device go. */
  async deactivating(userId: string): Promise<void> {
    const position = await this.db.transaction(async (trx) => {
      await this.store.deleteCrossSigningKeysOfUser(userId, trx);
      await this.store.deleteSignaturesOfUser(userId, trx);
      await this.backup.deleteAllOfUser(userId, trx);
      return this.deviceLists.record(trx, userId, []);
    });
    await this.deviceLists.notify(userId, [], position);
    if (await this.store.dehydratedDevice(userId)) await this.dehydrated.delete(userId);
  }

  // The functions the /sync module calls.

  /** `device_one_time_keys_count` for the syncing device. */
  oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    return this.keys.oneTimeKeyCounts(userId, deviceId);
  }

  /** `device_unused_fallback_key_types` for the syncing device. */
  unusedFallbackKeyTypes(userId: string, deviceId: string): Promise<string[]> {
    return this.keys.unusedFallbackKeyTypes(userId, deviceId);
  }

  /**
   * Users whose devices or keys changed at device-list positions in (sincePos, upTo]; optionally
   * only among `userIds` (e.g. those sharing a room with the syncing user). Raw: no room filtering.
   */
  deviceListChanges(sincePos: number, upTo: number, userIds?: string[]): Promise<string[]> {
    return this.deviceLists.changesBetween(sincePos, upTo, userIds);
  }

  /** Same as deviceListChanges; the name /keys/changes uses. */
  changesBetween(fromPos: number, toPos: number, userIds?: string[]): Promise<string[]> {
    return this.deviceLists.changesBetween(fromPos, toPos, userIds);
  }

  /** Pending to-device messages of a device in (sincePos, upTo], oldest first, at most `limit`. */
  toDeviceMessages(userId: string, deviceId: string, sincePos: number, upTo: number, limit = 100): Promise<{ events: ToDeviceEvent[]; position: number; limited: boolean }> {
    return this.toDevice.messages(userId, deviceId, sincePos, upTo, limit);
  }

  /** Deletes a device's messages up to `pos` once the client has synced past it. */
  deleteToDeviceUpTo(userId: string, deviceId: string, pos: number): Promise<number> {
    return this.toDevice.deleteUpTo(userId, deviceId, pos);
  }
}
