// Ephemeral data between servers (server-server API "Typing Notifications", "Receipts",
// "Presence", "Device Management", "Send-to-device messaging"): the EDUs our users' changes send to
// the servers that share rooms with them, and the handlers for the EDUs other servers send us.
//
// Outgoing EDUs go through the federation outbox (FederationSender.enqueueEdu). Typing, receipts,
// presence and signing-key updates carry the whole current state of one thing, so each has a dedupe
// key and a newer one replaces a queued older one; device-list updates form a per-user sequence
// (stream_id, prev_id) and are all kept. They are queued after the local change commits (the hooks
// of Ephemeral, DeviceLists and ToDevice): a crash in between loses the EDU, and a device-list
// receiver notices the gap at the next update and resyncs.
//
// Incoming EDUs speak only for users of the origin server; anything else is dropped.
import { randomBytes } from 'node:crypto';
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { domainOf } from '../rooms/event.js';
import type { RoomData, RoomInfo } from '../rooms/room-data.js';
import type { FederationEdusStore } from '../storage/federation-edus-store.js';
import type { PresenceRow } from '../storage/sync-store.js';
import { bool, num } from '../storage/rows.js';
import type { Ephemeral } from '../sync/ephemeral.js';
import type { E2ee } from '../e2ee/index.js';
import type { ToDeviceMessages } from '../e2ee/to-device.js';
import { isObject, withSignatures, type DeviceKeys } from '../e2ee/key-json.js';
import type { Edu } from './sender.js';
import type { EduHandler } from './receiver.js';
import { serverAllowedByAcl } from './acl.js';
import type { RemoteDeviceLists } from './remote-devices.js';

/** How long a remote user's typing lasts unless their server says it stopped (as Synapse). */
const REMOTE_TYPING_TIMEOUT_MS = 60_000;
const TO_DEVICE_SEEN_RETENTION_MS = 7 * 24 * 3600_000;
const PRESENCE_STATES = new Set(['online', 'unavailable', 'offline']);

/** Where EDUs are queued: FederationSender. */
export interface EduQueue {
  enqueueEdu(destinations: string | readonly string[], edu: Edu, opts?: { dedupeKey?: string; trx?: Knex }): Promise<void>;
  destinationsForRoom(roomNid: number): Promise<string[]>;
}

export interface FederationEdusDeps {
  db: Knex;
  store: FederationEdusStore;
  queue: EduQueue;
  data: RoomData;
  ephemeral: Ephemeral;
  e2ee: E2ee;
  remoteDevices: RemoteDeviceLists;
  serverName: string;
  presenceEnabled: boolean;
  logger: Logger;
}

export class FederationEdus {
  private readonly log: Logger;

  constructor(private readonly d: FederationEdusDeps) {
    this.log = d.logger.child({ module: 'federation-edus' });
  }

  private isLocal(userId: string): boolean {
    return domainOf(userId) === this.d.serverName;
  }

  /** Hooks the local services (outgoing EDUs, remote keys) and registers the incoming handlers. */
  install(eduHandlers: Map<string, EduHandler>): void {
    const { ephemeral, e2ee } = this.d;
    ephemeral.isLocalUser = (u) => this.isLocal(u);
    ephemeral.hooks.typing = (room, userId, typing) => this.sendTyping(room, userId, typing);
    ephemeral.hooks.receipt = (room, userId, type, eventId, threadId, ts) => this.sendReceipt(room, userId, type, eventId, threadId, ts);
    ephemeral.hooks.presence = (userId, row) => this.sendPresence(userId, row);
    const prevChanged = e2ee.deviceLists.hooks.changed;
    e2ee.deviceLists.hooks.changed = async (userId, deviceIds, position) => {
      await prevChanged?.(userId, deviceIds, position);
      await this.sendDeviceListChange(userId, deviceIds).catch((err) => this.log.warn({ userId, err: (err as Error).message }, 'could not queue a device list update'));
    };
    e2ee.toDevice.hooks.sendRemote = (sender, _device, type, _messageId, byServer) => this.sendToDevice(sender, type, byServer);
    e2ee.keys.remote = this.d.remoteDevices;

    eduHandlers.set('m.typing', (origin, c) => this.onTyping(origin, c));
    eduHandlers.set('m.receipt', (origin, c) => this.onReceipt(origin, c));
    eduHandlers.set('m.presence', (origin, c) => this.onPresence(origin, c));
    eduHandlers.set('m.direct_to_device', (origin, c) => this.onToDevice(origin, c));
    eduHandlers.set('m.device_list_update', (origin, c) => this.d.remoteDevices.onDeviceListUpdate(origin, c));
    eduHandlers.set('m.signing_key_update', (origin, c) => this.d.remoteDevices.onSigningKeyUpdate(origin, c));
  }

  // Outgoing

  /** m.typing to the room's other servers; a newer state replaces a queued one. */
  async sendTyping(room: RoomInfo, userId: string, typing: boolean): Promise<void> {
    if (!this.isLocal(userId)) return;
    const servers = await this.d.queue.destinationsForRoom(room.nid);
    await this.d.queue.enqueueEdu(servers, { edu_type: 'm.typing', content: { room_id: room.roomId, user_id: userId, typing } }, { dedupeKey: `typing:${room.roomId}:${userId}` });
  }

  /** m.receipt (public read receipts only) to the room's other servers. */
  async sendReceipt(room: RoomInfo, userId: string, type: string, eventId: string, threadId: string | undefined, ts: number): Promise<void> {
    if (type !== 'm.read' || !this.isLocal(userId)) return;
    const servers = await this.d.queue.destinationsForRoom(room.nid);
    const data: Record<string, unknown> = { ts };
    if (threadId !== undefined) data.thread_id = threadId;
    await this.d.queue.enqueueEdu(servers, {
      edu_type: 'm.receipt',
      content: { [room.roomId]: { 'm.read': { [userId]: { event_ids: [eventId], data } } } },
    }, { dedupeKey: `receipt:${room.roomId}:${userId}:${threadId ?? ''}` });
  }

  /** m.presence to every server sharing a room with the user. */
  async sendPresence(userId: string, p: PresenceRow): Promise<void> {
    if (!this.d.presenceEnabled || !this.isLocal(userId)) return;
    const servers = (await this.d.store.serversSharingRoomWith(userId)).filter((s) => s !== this.d.serverName);
    if (!servers.length) return;
    const update: Record<string, unknown> = {
      user_id: userId,
      // The federation schema knows online, unavailable and offline; busy is online to others.
      presence: PRESENCE_STATES.has(p.state) ? p.state : 'online',
      last_active_ago: Math.max(0, Date.now() - num(p.last_active_ts)),
      currently_active: bool(p.currently_active),
    };
    if (p.status_msg !== null) update.status_msg = p.status_msg;
    await this.d.queue.enqueueEdu(servers, { edu_type: 'm.presence', content: { push: [update] } }, { dedupeKey: `presence:${userId}` });
  }

  /**
   * A local user's devices (or, with no device ids, cross-signing keys) changed: an
   * m.device_list_update per device, or an m.signing_key_update, to every server sharing a room.
   * The device state is read after the user's sequence row is locked, so updates numbered later
   * never describe an older state.
   */
  async sendDeviceListChange(userId: string, deviceIds: string[]): Promise<void> {
    if (!this.isLocal(userId)) return;
    const servers = (await this.d.store.serversSharingRoomWith(userId)).filter((s) => s !== this.d.serverName);
    if (!servers.length) return;
    const e2eeStore = this.d.e2ee.store;
    await this.d.db.transaction(async (trx) => {
      if (!deviceIds.length) {
        const content: Record<string, unknown> = { user_id: userId };
        const sigs = await e2eeStore.visibleSignaturesOn([userId], null, trx);
        for (const k of await e2eeStore.crossSigningKeys([userId], trx)) {
          const on = sigs.filter((s) => s.target_key_id === k.public_key).map((s) => ({ signer: s.signer_user_id, keyId: s.signer_key_id, signature: s.signature }));
          if (k.key_type === 'master') content.master_key = withSignatures(JSON.parse(k.key_json), on);
          else if (k.key_type === 'self_signing') content.self_signing_key = withSignatures(JSON.parse(k.key_json), on);
        }
        await this.d.queue.enqueueEdu(servers, { edu_type: 'm.signing_key_update', content }, { dedupeKey: `signing_keys:${userId}`, trx });
        return;
      }
      const streams: number[] = [];
      for (let i = 0; i < deviceIds.length; i++) streams.push(await this.d.store.nextOutboundDeviceStream(userId, trx));
      const existing = new Set((await e2eeStore.devicesOfUsers([userId], trx)).map((r) => r.device_id));
      const keys = new Map((await e2eeStore.deviceKeysOfUsers([userId], trx)).map((r) => [r.device_id, JSON.parse(r.key_json) as DeviceKeys]));
      const sigs = await e2eeStore.visibleSignaturesOn([userId], null, trx);
      for (const [i, deviceId] of deviceIds.entries()) {
        const content: Record<string, unknown> = { user_id: userId, device_id: deviceId, stream_id: streams[i] };
        if (streams[i] > 1) content.prev_id = [streams[i] - 1];
        const k = keys.get(deviceId);
        if (!existing.has(deviceId)) content.deleted = true;
        else if (k) {
          const { unsigned: _u, ...signed } = withSignatures(k, sigs.filter((s) => s.target_key_id === deviceId).map((s) => ({ signer: s.signer_user_id, keyId: s.signer_key_id, signature: s.signature })));
          content.keys = signed;
        }
        // Device display names stay on this server (as Synapse's default): they often name people.
        await this.d.queue.enqueueEdu(servers, { edu_type: 'm.device_list_update', content }, { trx });
      }
    });
  }

  /** m.direct_to_device, one per destination with its own message id. */
  async sendToDevice(sender: string, type: string, byServer: Map<string, ToDeviceMessages>): Promise<void> {
    for (const [server, messages] of byServer) {
      const messageId = randomBytes(12).toString('base64url');
      await this.d.queue.enqueueEdu(server, { edu_type: 'm.direct_to_device', content: { sender, type, message_id: messageId, messages } });
    }
  }

  // Incoming

  /** The room, if we know it and its ACL lets `origin` take part. */
  private async roomFor(roomId: string, origin: string): Promise<RoomInfo | null> {
    const room = await this.d.data.room(roomId);
    if (!room) return null;
    if (!(await serverAllowedByAcl(this.d.data, await this.d.data.currentState(room), origin))) {
      this.log.info({ origin, roomId }, 'EDU from a server the room ACL denies');
      return null;
    }
    return room;
  }

  private fromOrigin(userId: unknown, origin: string, type: string): userId is string {
    if (typeof userId === 'string' && domainOf(userId) === origin) return true;
    this.log.info({ origin, userId, type }, 'ignored an EDU about a user of another server');
    return false;
  }

  /** m.typing: stored like local typing (with a timeout), so /sync shows it. */
  async onTyping(origin: string, c: Record<string, unknown>): Promise<void> {
    if (typeof c.room_id !== 'string' || typeof c.typing !== 'boolean' || !this.fromOrigin(c.user_id, origin, 'm.typing')) return;
    const room = await this.roomFor(c.room_id, origin);
    if (!room) return;
    // setTyping requires the user to be joined to the room.
    await this.d.ephemeral.setTyping(c.user_id, room.roomId, c.typing, REMOTE_TYPING_TIMEOUT_MS);
  }

  /** m.receipt: room id → receipt type → user id → { event_ids, data }. */
  async onReceipt(origin: string, c: Record<string, unknown>): Promise<void> {
    for (const [roomId, byType] of Object.entries(c)) {
      if (!isObject(byType) || !isObject(byType['m.read'])) continue;
      const room = await this.roomFor(roomId, origin);
      if (!room) continue;
      for (const [userId, r] of Object.entries(byType['m.read'])) {
        if (!this.fromOrigin(userId, origin, 'm.receipt') || !isObject(r) || !Array.isArray(r.event_ids)) continue;
        const eventId = r.event_ids.filter((e): e is string => typeof e === 'string').at(-1);
        if (!eventId) continue;
        const data = isObject(r.data) ? r.data : {};
        const threadId = typeof data.thread_id === 'string' && data.thread_id ? data.thread_id : undefined;
        const ts = typeof data.ts === 'number' && Number.isSafeInteger(data.ts) ? data.ts : undefined;
        // Membership, the event being in the room and the thread root are checked as for ours.
        await this.d.ephemeral.receipt(userId, room.roomId, 'm.read', eventId, threadId, { ts }).catch((err) => {
          this.log.info({ origin, roomId, userId, eventId, err: (err as Error).message }, 'remote receipt not stored');
        });
      }
    }
  }

  /** m.presence: updates of the origin's users who share a room with ours. */
  async onPresence(origin: string, c: Record<string, unknown>): Promise<void> {
    if (!this.d.presenceEnabled || !Array.isArray(c.push)) return;
    const updates = c.push.filter((u): u is Record<string, unknown> => isObject(u) && this.fromOrigin(u.user_id, origin, 'm.presence')
      && typeof u.presence === 'string' && PRESENCE_STATES.has(u.presence));
    const shared = await this.d.store.usersSharingRoomWithServer(updates.map((u) => u.user_id as string), this.d.serverName);
    for (const u of updates) {
      if (!shared.has(u.user_id as string)) continue;
      await this.d.ephemeral.applyRemotePresence(u.user_id as string, {
        presence: u.presence as string,
        statusMsg: typeof u.status_msg === 'string' ? u.status_msg : null,
        lastActiveAgo: typeof u.last_active_ago === 'number' && Number.isFinite(u.last_active_ago) ? u.last_active_ago : 0,
        currentlyActive: u.currently_active === true,
      });
    }
  }

  /** m.direct_to_device: into the inboxes of local devices, once per (origin, message_id). */
  async onToDevice(origin: string, c: Record<string, unknown>): Promise<void> {
    if (!this.fromOrigin(c.sender, origin, 'm.direct_to_device')) return;
    const { sender, type, message_id: messageId, messages } = c;
    if (typeof type !== 'string' || !type || typeof messageId !== 'string' || !messageId || messageId.length > 255 || !isObject(messages)) return;
    const clean: ToDeviceMessages = {};
    for (const [userId, devices] of Object.entries(messages)) {
      if (!isObject(devices)) continue;
      const byDevice: Record<string, Record<string, unknown>> = {};
      for (const [deviceId, content] of Object.entries(devices)) if (isObject(content)) byDevice[deviceId] = content;
      clean[userId] = byDevice;
    }
    const now = Date.now();
    await this.d.e2ee.toDevice.deliverFromRemote(sender, type, clean, (trx) => this.d.store.insertToDeviceSeen(origin, messageId, now, trx));
    if (Math.random() < 0.01) await this.d.store.deleteToDeviceSeenBefore(now - TO_DEVICE_SEEN_RETENTION_MS);
  }
}
