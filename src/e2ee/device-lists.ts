// The device-list stream (spec: "Tracking the device list for a user", /keys/changes, the
// `device_lists` section of /sync). A user's devices, device keys or cross-signing keys changing
// moves the `device_lists` position; /sync and /keys/changes ask which users changed in a range.
import type { Knex } from 'knex';
import type { E2eeStore } from '../storage/e2ee-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';
import { MatrixError } from '../http/errors.js';
import { parseSyncToken } from '../sync/token.js';

export interface DeviceListHooks {
  /**
   * Who to wake when `userId`'s keys change, beyond the user's own devices. The rooms module sets
   * this to the user's joined rooms once it exists; until then only the user is woken.
   */
  audience?(userId: string): Promise<{ userIds?: string[]; roomIds?: string[] }>;
  /** Called after a change committed, e.g. to queue m.device_list_update EDUs for federation. */
  changed?(userId: string, deviceIds: string[], position: number): Promise<void>;
}

export class DeviceLists {
  hooks: DeviceListHooks = {};

  constructor(
    private readonly db: Knex,
    private readonly store: E2eeStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
  ) {}

  /**
   * Records a change of `userId`'s devices inside the caller's transaction and returns its position.
   * `deviceIds` empty means the user's cross-signing keys changed. Call `notify` after commit.
   */
  async record(trx: Knex, userId: string, deviceIds: string[]): Promise<number> {
    const position = await this.streams.nextPosition(trx, 'device_lists');
    await this.store.insertDeviceListChanges(position, userId, deviceIds, trx);
    return position;
  }

  /** Wakes whoever may see a change committed at `position`. */
  async notify(userId: string, deviceIds: string[], position: number): Promise<void> {
    let extra: { userIds?: string[]; roomIds?: string[] } = {};
    try {
      extra = (await this.hooks.audience?.(userId)) ?? {};
    } catch { /* waking fewer listeners only delays them until their timeout */ }
    const userIds = [...new Set([userId, ...(extra.userIds ?? [])])];
    this.notifier.notify({ stream: 'device_lists', position, userIds, ...(extra.roomIds ? { roomIds: extra.roomIds } : {}) });
    await this.hooks.changed?.(userId, deviceIds, position);
  }

  /** Records and notifies in one step, for changes that are not part of a larger transaction. */
  async recordAndNotify(userId: string, deviceIds: string[]): Promise<number> {
    const position = await this.db.transaction((trx) => this.record(trx, userId, deviceIds));
    await this.notify(userId, deviceIds, position);
    return position;
  }

  /**
   * Users whose devices or keys changed at positions in (fromPos, toPos], optionally only among
   * `userIds`. The caller filters by who shares a room with the requester.
   */
  async changesBetween(fromPos: number, toPos: number, userIds?: string[]): Promise<string[]> {
    if (toPos <= fromPos) return [];
    return this.store.usersChangedBetween(fromPos, toPos, userIds);
  }

  async currentPosition(): Promise<number> {
    return (await this.streams.currentPositions())['device_lists'] ?? 0;
  }

  /** Parses a /keys/changes token: a /sync `next_batch`, or a bare device-list position. */
  positionOf(token: string, name: string): number {
    if (/^\d{1,15}$/.test(token)) return Number(token);
    if (token.startsWith('s')) return parseSyncToken(token).device_lists;
    throw new MatrixError(400, 'M_INVALID_PARAM', `Invalid '${name}' token`);
  }
}
