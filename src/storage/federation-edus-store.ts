// Tables behind federation EDUs: our outgoing device-list sequence per local user, the device
// lists of remote users we track, delivered to-device message ids, and the "who shares a room with
// whom" questions EDU routing asks of room_members.
import type { Knex } from 'knex';
import { dialectOf } from './db.js';

export interface RemoteDeviceListRow {
  user_id: string;
  stream_id: number | string;
  master_key: string | null;
  self_signing_key: string | null;
  stale: boolean | number;
  updated_ts: number | string;
}
export interface RemoteDeviceRow { user_id: string; device_id: string; keys: string | null }

/** The server part of room_members.user_id (everything after the first ':'), per dialect. */
function serverOf(q: Knex, column: string): string {
  // SQLite spells "position of" instr(), PostgreSQL strpos().
  return dialectOf(q) === 'pg' ? `substr(${column}, strpos(${column}, ':') + 1)` : `substr(${column}, instr(${column}, ':') + 1)`;
}

export class FederationEdusStore {
  constructor(private readonly db: Knex) {}

  // Who shares rooms

  /** Servers with a joined member in some room `userId` is joined to (our own included). */
  async serversSharingRoomWith(userId: string, q: Knex = this.db): Promise<string[]> {
    const rows = await q('room_members as a')
      .join('room_members as b', 'b.room_nid', 'a.room_nid')
      .where({ 'a.user_id': userId, 'a.membership': 'join', 'b.membership': 'join' })
      .select(q.raw(`DISTINCT ${serverOf(q, 'b.user_id')} AS server`));
    return rows.map((r: { server: string }) => r.server);
  }

  /** Whether `userId` is joined to a room in which a user of `server` (ours) is joined too. */
  async sharesRoomWithServer(userId: string, server: string, q: Knex = this.db): Promise<boolean> {
    const row = await q('room_members as a')
      .join('room_members as b', 'b.room_nid', 'a.room_nid')
      .where({ 'a.user_id': userId, 'a.membership': 'join', 'b.membership': 'join' })
      .andWhereRaw(`${serverOf(q, 'b.user_id')} = ?`, [server])
      .first('a.room_nid');
    return !!row;
  }

  /** Of `userIds`, those joined to a room in which a user of `server` is joined. */
  async usersSharingRoomWithServer(userIds: readonly string[], server: string, q: Knex = this.db): Promise<Set<string>> {
    const out = new Set<string>();
    for (let i = 0; i < userIds.length; i += 500) {
      const rows = await q('room_members as a')
        .join('room_members as b', 'b.room_nid', 'a.room_nid')
        .whereIn('a.user_id', userIds.slice(i, i + 500) as string[])
        .andWhere({ 'a.membership': 'join', 'b.membership': 'join' })
        .andWhereRaw(`${serverOf(q, 'b.user_id')} = ?`, [server])
        .distinct('a.user_id');
      for (const r of rows as { user_id: string }[]) out.add(r.user_id);
    }
    return out;
  }

  // Outgoing device-list sequence

  /**
   * Takes the next stream_id of a local user's m.device_list_update sequence. The upsert locks the
   * row until the caller's transaction ends, so one user's updates are numbered and queued in order.
   */
  async nextOutboundDeviceStream(userId: string, trx: Knex): Promise<number> {
    const rows = await trx('device_list_outbound').insert({ user_id: userId, stream_id: 1 })
      .onConflict('user_id').merge({ stream_id: trx.raw('device_list_outbound.stream_id + 1') })
      .returning('stream_id');
    const r = rows[0] as { stream_id: number | string } | number;
    return Number(typeof r === 'object' ? r.stream_id : r);
  }

  async outboundDeviceStream(userId: string, q: Knex = this.db): Promise<number> {
    const r = await q('device_list_outbound').where({ user_id: userId }).first('stream_id');
    return r ? Number(r.stream_id) : 0;
  }

  // Remote device lists

  async remoteDeviceLists(userIds: readonly string[], q: Knex = this.db): Promise<RemoteDeviceListRow[]> {
    if (!userIds.length) return [];
    return q<RemoteDeviceListRow>('remote_device_lists').whereIn('user_id', userIds as string[]);
  }

  async remoteDevices(userIds: readonly string[], q: Knex = this.db): Promise<RemoteDeviceRow[]> {
    if (!userIds.length) return [];
    return q<RemoteDeviceRow>('remote_devices').whereIn('user_id', userIds as string[]).orderBy(['user_id', 'device_id']);
  }

  /** Replaces everything known about a remote user's devices with a snapshot (a resync). */
  async replaceRemoteDeviceList(row: Omit<RemoteDeviceListRow, 'stale'>, devices: readonly Omit<RemoteDeviceRow, 'user_id'>[], trx: Knex): Promise<void> {
    await trx('remote_devices').where({ user_id: row.user_id }).delete();
    for (let i = 0; i < devices.length; i += 200) {
      await trx('remote_devices').insert(devices.slice(i, i + 200).map((d) => ({ user_id: row.user_id, device_id: d.device_id, keys: d.keys })));
    }
    await trx('remote_device_lists').insert({ ...row, stale: false }).onConflict('user_id')
      .merge(['stream_id', 'master_key', 'self_signing_key', 'stale', 'updated_ts']);
  }

  async upsertRemoteDevice(userId: string, deviceId: string, keys: string | null, trx: Knex): Promise<void> {
    await trx('remote_devices').insert({ user_id: userId, device_id: deviceId, keys }).onConflict(['user_id', 'device_id']).merge(['keys']);
  }

  async deleteRemoteDevice(userId: string, deviceId: string, trx: Knex): Promise<void> {
    await trx('remote_devices').where({ user_id: userId, device_id: deviceId }).delete();
  }

  async updateRemoteDeviceList(userId: string, patch: Partial<Omit<RemoteDeviceListRow, 'user_id'>>, q: Knex = this.db): Promise<void> {
    await q('remote_device_lists').where({ user_id: userId }).update(patch);
  }

  /** Marks a remote user's list as unreliable (an update was lost and could not be resynced). */
  async markRemoteDeviceListStale(userId: string, now: number, q: Knex = this.db): Promise<void> {
    await q('remote_device_lists').insert({ user_id: userId, stream_id: 0, stale: true, updated_ts: now }).onConflict('user_id').merge(['stale', 'updated_ts']);
  }

  /** Stops tracking a remote user (no shared room any more: their updates stop reaching us). */
  async deleteRemoteDeviceList(userId: string, q: Knex = this.db): Promise<void> {
    await q('remote_devices').where({ user_id: userId }).delete();
    await q('remote_device_lists').where({ user_id: userId }).delete();
  }

  /** Of `userIds`, those whose device lists we track. */
  async trackedRemoteUsers(userIds: readonly string[], q: Knex = this.db): Promise<string[]> {
    if (!userIds.length) return [];
    return (await q('remote_device_lists').whereIn('user_id', userIds as string[]).select('user_id')).map((r: { user_id: string }) => r.user_id);
  }

  // Incoming to-device messages

  /** Records a delivered message id; false when it was delivered before (a repeated EDU). */
  async insertToDeviceSeen(origin: string, messageId: string, now: number, q: Knex): Promise<boolean> {
    const inserted = await q('federation_to_device_seen').insert({ origin, message_id: messageId, received_ts: now })
      .onConflict(['origin', 'message_id']).ignore().returning('message_id');
    return inserted.length > 0;
  }

  async deleteToDeviceSeenBefore(ts: number, q: Knex = this.db): Promise<void> {
    await q('federation_to_device_seen').where('received_ts', '<', ts).delete();
  }
}
