// Send-to-device messaging (spec: "Send-to-Device messaging"). Each message is a row of the
// recipient device's inbox at a `to_device` position; /sync returns a device's messages in order and
// deletes them once the client syncs with a later token.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { parseUserId, splitByServer } from '../accounts/ids.js';
import { bool, num } from '../storage/rows.js';
import type { DeviceInboxRow, E2eeStore } from '../storage/e2ee-store.js';
import type { StreamsStore } from '../storage/streams-store.js';
import type { Notifier } from '../sync/notifier.js';

export interface ToDeviceEvent { sender: string; type: string; content: Record<string, unknown> }

/** user id → device id (or `*`) → content. */
export type ToDeviceMessages = Record<string, Record<string, Record<string, unknown>>>;

export interface ToDeviceHooks {
  /**
   * Messages for users of other servers, grouped by server, after the local part committed. The
   * federation sender supplies this (an outbox row per destination); until then they are dropped.
   */
  sendRemote?(sender: string, senderDeviceId: string, type: string, messageId: string, byServer: Map<string, ToDeviceMessages>): Promise<void>;
}

const TXN_RETENTION_MS = 24 * 3600_000;

export class ToDevice {
  hooks: ToDeviceHooks = {};

  constructor(
    private readonly db: Knex,
    private readonly store: E2eeStore,
    private readonly streams: StreamsStore,
    private readonly notifier: Notifier,
    private readonly serverName: string,
    private readonly logger?: Logger,
  ) {}

  /**
   * PUT /sendToDevice/{eventType}/{txnId}. Idempotent per (sender device, event type, txn id): a
   * retry delivers nothing new. `*` addresses all the recipient's (visible) devices; messages to
   * devices that do not exist are dropped.
   */
  async send(sender: { userId: string; deviceId: string }, type: string, txnId: string, messages: ToDeviceMessages): Promise<void> {
    const { local, remote } = splitByServer(messages, this.serverName);
    const now = Date.now();
    const outcome = await this.db.transaction(async (trx) => {
      const fresh = await this.store.insertToDeviceTxn({ user_id: sender.userId, device_id: sender.deviceId, event_type: type, txn_id: txnId, ts_added_ms: now }, trx);
      if (!fresh) return null;
      const rows = await this.localRows(sender.userId, type, local, trx);
      if (!rows.length) return { position: null, recipients: [] as string[] };
      // The position is allocated last, right before the rows that carry it (see StreamsStore).
      const position = await this.streams.nextPosition(trx, 'to_device');
      await this.store.insertInboxMessages(rows.map((r) => ({ ...r, position, ts_added_ms: now })), trx);
      return { position, recipients: [...new Set(rows.map((r) => r.user_id))] };
    });
    if (!outcome) return; // a retried transaction
    if (outcome.position !== null) this.notifier.notify({ stream: 'to_device', position: outcome.position, userIds: outcome.recipients });
    if (remote.size) {
      if (this.hooks.sendRemote) await this.hooks.sendRemote(sender.userId, sender.deviceId, type, `${sender.deviceId}:${txnId}`, remote);
      else this.logger?.debug({ servers: [...remote.keys()] }, 'to-device messages for remote users dropped: no federation');
    }
    if (Math.random() < 0.01) await this.store.deleteToDeviceTxnsBefore(now - TXN_RETENTION_MS);
  }

  /**
   * Messages from a user of another server (an m.direct_to_device EDU) for local users; others are
   * ignored. `firstDelivery` runs in the transaction and returns false for a repeated message id,
   * which then delivers nothing. Returns how many device messages were stored.
   */
  async deliverFromRemote(sender: string, type: string, messages: ToDeviceMessages, firstDelivery: (trx: Knex) => Promise<boolean>): Promise<number> {
    const local: ToDeviceMessages = {};
    for (const [userId, devices] of Object.entries(messages)) {
      if (parseUserId(userId)?.server === this.serverName) local[userId] = devices;
    }
    const now = Date.now();
    const outcome = await this.db.transaction(async (trx) => {
      if (!(await firstDelivery(trx))) return null;
      const rows = await this.localRows(sender, type, local, trx);
      if (!rows.length) return null;
      const position = await this.streams.nextPosition(trx, 'to_device');
      await this.store.insertInboxMessages(rows.map((r) => ({ ...r, position, ts_added_ms: now })), trx);
      return { position, recipients: [...new Set(rows.map((r) => r.user_id))], count: rows.length };
    });
    if (!outcome) return 0;
    this.notifier.notify({ stream: 'to_device', position: outcome.position, userIds: outcome.recipients });
    return outcome.count;
  }

  private async localRows(sender: string, type: string, messages: ToDeviceMessages, trx: Knex): Promise<Omit<DeviceInboxRow, 'position' | 'ts_added_ms'>[]> {
    const userIds = Object.keys(messages);
    if (!userIds.length) return [];
    const devicesOf = new Map<string, { all: string[]; visible: string[] }>();
    for (const d of await this.store.devicesOfUsers(userIds, trx)) {
      if (!devicesOf.has(d.user_id)) devicesOf.set(d.user_id, { all: [], visible: [] });
      const e = devicesOf.get(d.user_id)!;
      e.all.push(d.device_id);
      if (!bool(d.hidden)) e.visible.push(d.device_id);
    }
    const rows: Omit<DeviceInboxRow, 'position' | 'ts_added_ms'>[] = [];
    for (const [userId, byDevice] of Object.entries(messages)) {
      const devices = devicesOf.get(userId);
      if (!devices) continue;
      // An explicit device id wins over `*` for that device: one message per device per request.
      const target = new Map<string, Record<string, unknown>>();
      if (byDevice['*']) for (const d of devices.visible) target.set(d, byDevice['*']);
      for (const [deviceId, content] of Object.entries(byDevice)) {
        if (deviceId !== '*' && devices.all.includes(deviceId)) target.set(deviceId, content);
      }
      for (const [deviceId, content] of target) rows.push({ user_id: userId, device_id: deviceId, sender, type, content: JSON.stringify(content) });
    }
    return rows;
  }

  /**
   * For /sync: the device's messages at positions in (sincePos, upTo], at most `limit`, oldest first.
   * `position` is where the client has caught up to: the last message returned when `limited`,
   * `upTo` otherwise. Put it in the next sync token.
   */
  async messages(userId: string, deviceId: string, sincePos: number, upTo: number, limit = 100): Promise<{ events: ToDeviceEvent[]; position: number; limited: boolean }> {
    if (upTo <= sincePos) return { events: [], position: sincePos, limited: false };
    const rows = await this.store.inboxMessages(userId, deviceId, sincePos, upTo, limit + 1);
    const limited = rows.length > limit;
    const page = limited ? rows.slice(0, limit) : rows;
    return {
      events: page.map(eventOf),
      position: limited ? num(page[page.length - 1].position) : upTo,
      limited,
    };
  }

  /** For /sync: the client synced with a token past `pos`, so everything up to it was delivered. */
  async deleteUpTo(userId: string, deviceId: string, pos: number): Promise<number> {
    return this.store.deleteInboxUpTo(userId, deviceId, pos);
  }

  async currentPosition(): Promise<number> {
    return (await this.streams.currentPositions())['to_device'] ?? 0;
  }

  /** Raw inbox page with positions, for the dehydrated-device events endpoint. */
  async page(userId: string, deviceId: string, sincePos: number, limit: number): Promise<{ events: ToDeviceEvent[]; lastPosition: number }> {
    const rows = await this.store.inboxMessages(userId, deviceId, sincePos, Number.MAX_SAFE_INTEGER, limit);
    return { events: rows.map(eventOf), lastPosition: rows.length ? num(rows[rows.length - 1].position) : sincePos };
  }
}

function eventOf(r: DeviceInboxRow): ToDeviceEvent {
  return { sender: r.sender, type: r.type, content: JSON.parse(r.content) };
}
