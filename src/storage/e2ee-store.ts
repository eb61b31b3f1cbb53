// Tables of end-to-end encryption: device keys, one-time and fallback keys, cross-signing keys and
// signatures, the device-list stream, the to-device inbox, key backups and dehydrated devices.
import type { Knex } from 'knex';

export interface DeviceKeysRow { user_id: string; device_id: string; key_json: string; ts_added_ms: number | string }
export interface DeviceKeysWithNameRow extends DeviceKeysRow { display_name: string | null }
export interface OneTimeKeyRow {
  id: number | string;
  user_id: string;
  device_id: string;
  algorithm: string;
  key_id: string;
  key_json: string;
  ts_added_ms: number | string;
}
export interface FallbackKeyRow { user_id: string; device_id: string; algorithm: string; key_id: string; key_json: string; used: boolean | number }
export type CrossSigningKeyType = 'master' | 'self_signing' | 'user_signing';
export interface CrossSigningKeyRow { user_id: string; key_type: CrossSigningKeyType; public_key: string; key_json: string; ts_added_ms: number | string }
export interface SignatureRow { signer_user_id: string; signer_key_id: string; target_user_id: string; target_key_id: string; signature: string }
export interface DeviceInboxRow {
  user_id: string;
  device_id: string;
  position: number | string;
  sender: string;
  type: string;
  content: string;
  ts_added_ms: number | string;
}
export interface BackupVersionRow {
  user_id: string;
  version: number | string;
  algorithm: string;
  auth_data: string;
  etag: number | string;
  deleted: boolean | number;
}
export interface BackupKeyRow {
  user_id: string;
  version: number | string;
  room_id: string;
  session_id: string;
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean | number;
  session_data: string;
}
export interface DehydratedDeviceRow { user_id: string; device_id: string; device_data: string; ts_added_ms: number | string }

export class E2eeStore {
  constructor(private readonly db: Knex) {}

  // Device keys

  async deviceKeys(userId: string, deviceId: string, q: Knex = this.db): Promise<DeviceKeysRow | undefined> {
    return q<DeviceKeysRow>('e2e_device_keys').where({ user_id: userId, device_id: deviceId }).first();
  }

  /** Device keys of these users (hidden devices included: a dehydrated device must be reachable), with display names. */
  async deviceKeysOfUsers(userIds: string[], q: Knex = this.db): Promise<DeviceKeysWithNameRow[]> {
    if (!userIds.length) return [];
    return q('e2e_device_keys as k')
      .leftJoin('devices as d', function joinDevice() {
        this.on('d.user_id', '=', 'k.user_id').andOn('d.device_id', '=', 'k.device_id');
      })
      .whereIn('k.user_id', userIds)
      .orderBy(['k.user_id', 'k.device_id'])
      .select('k.user_id', 'k.device_id', 'k.key_json', 'k.ts_added_ms', 'd.display_name');
  }

  async upsertDeviceKeys(row: DeviceKeysRow, q: Knex = this.db): Promise<void> {
    await q('e2e_device_keys').insert(row).onConflict(['user_id', 'device_id']).merge(['key_json']);
  }

  async deleteDeviceKeys(userId: string, deviceIds: string[], q: Knex = this.db): Promise<void> {
    if (!deviceIds.length) return;
    await q('e2e_device_keys').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
    await q('e2e_one_time_keys').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
    await q('e2e_fallback_keys').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
  }

  /**
   * The devices (user_id, device_id, hidden) of these users. Read from the accounts table here so
   * a to-device fan-out over many users is one query rather than one per device.
   */
  async devicesOfUsers(userIds: string[], q: Knex = this.db): Promise<{ user_id: string; device_id: string; hidden: boolean | number }[]> {
    if (!userIds.length) return [];
    return q('devices').whereIn('user_id', userIds).select('user_id', 'device_id', 'hidden');
  }

  // One-time keys

  async oneTimeKeysWithIds(userId: string, deviceId: string, keyIds: string[], q: Knex = this.db): Promise<OneTimeKeyRow[]> {
    if (!keyIds.length) return [];
    return q<OneTimeKeyRow>('e2e_one_time_keys').where({ user_id: userId, device_id: deviceId }).whereIn('key_id', keyIds);
  }

  /** Inserts keys; an identical (device, algorithm, key id) already present is left as it is. */
  async insertOneTimeKeys(rows: Omit<OneTimeKeyRow, 'id'>[], q: Knex = this.db): Promise<void> {
    for (let i = 0; i < rows.length; i += 200) {
      await q('e2e_one_time_keys').insert(rows.slice(i, i + 200)).onConflict(['user_id', 'device_id', 'algorithm', 'key_id']).ignore();
    }
  }

  async oneTimeKeyCounts(userId: string, deviceId: string, q: Knex = this.db): Promise<Record<string, number>> {
    const rows = await q('e2e_one_time_keys')
      .where({ user_id: userId, device_id: deviceId })
      .groupBy('algorithm')
      .select('algorithm')
      .count<{ algorithm: string; n: number | string }[]>({ n: '*' });
    const out: Record<string, number> = {};
    for (const r of rows) out[r.algorithm] = Number(r.n);
    return out;
  }

  /** The oldest unclaimed one-time keys of a device for an algorithm. */
  async oneTimeKeyCandidates(userId: string, deviceId: string, algorithm: string, limit: number, q: Knex = this.db): Promise<OneTimeKeyRow[]> {
    return q<OneTimeKeyRow>('e2e_one_time_keys')
      .where({ user_id: userId, device_id: deviceId, algorithm })
      .orderBy('id')
      .limit(limit);
  }

  /** Deletes one key by id; 1 means this caller claimed it, 0 that another claimer got there first. */
  async deleteOneTimeKey(id: number | string, q: Knex = this.db): Promise<number> {
    return q('e2e_one_time_keys').where({ id }).delete();
  }

  // Fallback keys

  async fallbackKeys(userId: string, deviceId: string, q: Knex = this.db): Promise<FallbackKeyRow[]> {
    return q<FallbackKeyRow>('e2e_fallback_keys').where({ user_id: userId, device_id: deviceId });
  }

  async fallbackKey(userId: string, deviceId: string, algorithm: string, q: Knex = this.db): Promise<FallbackKeyRow | undefined> {
    return q<FallbackKeyRow>('e2e_fallback_keys').where({ user_id: userId, device_id: deviceId, algorithm }).first();
  }

  async upsertFallbackKey(row: FallbackKeyRow, q: Knex = this.db): Promise<void> {
    await q('e2e_fallback_keys').insert(row).onConflict(['user_id', 'device_id', 'algorithm']).merge(['key_id', 'key_json', 'used']);
  }

  async markFallbackKeyUsed(userId: string, deviceId: string, algorithm: string, keyId: string, q: Knex = this.db): Promise<void> {
    await q('e2e_fallback_keys').where({ user_id: userId, device_id: deviceId, algorithm, key_id: keyId }).update({ used: true });
  }

  // Cross-signing keys and signatures

  async crossSigningKeys(userIds: string[], q: Knex = this.db): Promise<CrossSigningKeyRow[]> {
    if (!userIds.length) return [];
    return q<CrossSigningKeyRow>('e2e_cross_signing_keys').whereIn('user_id', userIds);
  }

  async upsertCrossSigningKey(row: CrossSigningKeyRow, q: Knex = this.db): Promise<void> {
    await q('e2e_cross_signing_keys').insert(row).onConflict(['user_id', 'key_type']).merge(['public_key', 'key_json', 'ts_added_ms']);
  }

  async deleteCrossSigningKeysOfUser(userId: string, q: Knex = this.db): Promise<void> {
    await q('e2e_cross_signing_keys').where({ user_id: userId }).delete();
  }

  async upsertSignatures(rows: SignatureRow[], q: Knex = this.db): Promise<void> {
    for (const row of rows) {
      await q('e2e_cross_signing_signatures')
        .insert(row)
        .onConflict(['signer_user_id', 'signer_key_id', 'target_user_id', 'target_key_id'])
        .merge(['signature']);
    }
  }

  /**
   * Signatures on these users' keys that `viewer` may see (spec: "Key and signature security"): those
   * the key's owner made, and the viewer's own (a user-signing signature); null sees only the former.
   */
  async visibleSignaturesOn(targetUserIds: string[], viewer: string | null, q: Knex = this.db): Promise<SignatureRow[]> {
    if (!targetUserIds.length) return [];
    return q<SignatureRow>('e2e_cross_signing_signatures')
      .whereIn('target_user_id', targetUserIds)
      .andWhere((w) => {
        w.whereRaw('signer_user_id = target_user_id');
        if (viewer) w.orWhere('signer_user_id', viewer);
      });
  }

  /** Removes signatures made with a key (it was replaced) or on keys (they were replaced or removed). */
  async deleteSignaturesBy(signerUserId: string, signerKeyIds: string[], q: Knex = this.db): Promise<void> {
    if (!signerKeyIds.length) return;
    await q('e2e_cross_signing_signatures').where({ signer_user_id: signerUserId }).whereIn('signer_key_id', signerKeyIds).delete();
  }

  async deleteSignaturesOn(targetUserId: string, targetKeyIds: string[], q: Knex = this.db): Promise<void> {
    if (!targetKeyIds.length) return;
    await q('e2e_cross_signing_signatures').where({ target_user_id: targetUserId }).whereIn('target_key_id', targetKeyIds).delete();
  }

  async deleteSignaturesOfUser(userId: string, q: Knex = this.db): Promise<void> {
    await q('e2e_cross_signing_signatures').where({ signer_user_id: userId }).orWhere({ target_user_id: userId }).delete();
  }

  // Device-list stream

  async insertDeviceListChanges(position: number, userId: string, deviceIds: string[], q: Knex = this.db): Promise<void> {
    const ids = deviceIds.length ? [...new Set(deviceIds)] : [''];
    await q('device_list_changes').insert(ids.map((device_id) => ({ position, user_id: userId, device_id })));
  }

  /** Users with a change in (from, to], optionally only among `userIds`. */
  async usersChangedBetween(from: number, to: number, userIds: string[] | undefined, q: Knex = this.db): Promise<string[]> {
    if (userIds && !userIds.length) return [];
    const query = q('device_list_changes').where('position', '>', from).andWhere('position', '<=', to).distinct('user_id');
    if (userIds) query.whereIn('user_id', userIds);
    return (await query).map((r: { user_id: string }) => r.user_id);
  }

  // To-device messages

  /** Records a transaction id; false when it was already recorded (the request is a retry). */
  async insertToDeviceTxn(row: { user_id: string; device_id: string; event_type: string; txn_id: string; ts_added_ms: number }, q: Knex = this.db): Promise<boolean> {
    const inserted = await q('to_device_txns').insert(row).onConflict(['user_id', 'device_id', 'event_type', 'txn_id']).ignore().returning('txn_id');
    return inserted.length > 0;
  }

  async deleteToDeviceTxnsBefore(ts: number, q: Knex = this.db): Promise<void> {
    await q('to_device_txns').where('ts_added_ms', '<', ts).delete();
  }

  async insertInboxMessages(rows: DeviceInboxRow[], q: Knex = this.db): Promise<void> {
    for (let i = 0; i < rows.length; i += 200) await q('device_inbox').insert(rows.slice(i, i + 200));
  }

  /** Messages for a device at positions in (since, upTo], oldest first. */
  async inboxMessages(userId: string, deviceId: string, since: number, upTo: number, limit: number, q: Knex = this.db): Promise<DeviceInboxRow[]> {
    return q<DeviceInboxRow>('device_inbox')
      .where({ user_id: userId, device_id: deviceId })
      .andWhere('position', '>', since)
      .andWhere('position', '<=', upTo)
      .orderBy('position')
      .limit(limit);
  }

  async deleteInboxUpTo(userId: string, deviceId: string, position: number, q: Knex = this.db): Promise<number> {
    return q('device_inbox').where({ user_id: userId, device_id: deviceId }).andWhere('position', '<=', position).delete();
  }

  async deleteInboxOfDevices(userId: string, deviceIds: string[], q: Knex = this.db): Promise<void> {
    if (!deviceIds.length) return;
    await q('device_inbox').where({ user_id: userId }).whereIn('device_id', deviceIds).delete();
  }

  // Key backup

  /** The given version (deleted or not), or the latest live version when `version` is undefined. */
  async backupVersion(userId: string, version: number | undefined, q: Knex = this.db): Promise<BackupVersionRow | undefined> {
    if (version !== undefined) return q<BackupVersionRow>('e2e_room_keys_versions').where({ user_id: userId, version }).first();
    return q<BackupVersionRow>('e2e_room_keys_versions').where({ user_id: userId, deleted: false }).orderBy('version', 'desc').first();
  }

  async maxBackupVersion(userId: string, q: Knex = this.db): Promise<number> {
    const r = await q('e2e_room_keys_versions').where({ user_id: userId }).max<{ v: number | string | null }[]>({ v: 'version' });
    return Number(r[0]?.v ?? 0);
  }

  async insertBackupVersion(row: BackupVersionRow, q: Knex = this.db): Promise<void> {
    await q('e2e_room_keys_versions').insert(row);
  }

  async updateBackupVersion(userId: string, version: number, patch: Partial<BackupVersionRow>, q: Knex = this.db): Promise<void> {
    await q('e2e_room_keys_versions').where({ user_id: userId, version }).update(patch);
  }

  async bumpBackupEtag(userId: string, version: number, q: Knex = this.db): Promise<void> {
    await q('e2e_room_keys_versions').where({ user_id: userId, version }).increment('etag', 1);
  }

  async backupKeys(userId: string, version: number, roomId: string | undefined, sessionIds: string[] | undefined, q: Knex = this.db): Promise<BackupKeyRow[]> {
    const query = q<BackupKeyRow>('e2e_room_keys').where({ user_id: userId, version });
    if (roomId !== undefined) query.andWhere({ room_id: roomId });
    if (sessionIds) query.whereIn('session_id', sessionIds);
    return query.orderBy(['room_id', 'session_id']);
  }

  async backupKeyCount(userId: string, version: number, q: Knex = this.db): Promise<number> {
    const r = await q('e2e_room_keys').where({ user_id: userId, version }).count<{ n: number | string }[]>({ n: '*' });
    return Number(r[0].n);
  }

  async upsertBackupKey(row: BackupKeyRow, q: Knex = this.db): Promise<void> {
    await q('e2e_room_keys')
      .insert(row)
      .onConflict(['user_id', 'version', 'room_id', 'session_id'])
      .merge(['first_message_index', 'forwarded_count', 'is_verified', 'session_data']);
  }

  async deleteBackupKeys(userId: string, version: number, roomId: string | undefined, sessionId: string | undefined, q: Knex = this.db): Promise<number> {
    const query = q('e2e_room_keys').where({ user_id: userId, version });
    if (roomId !== undefined) query.andWhere({ room_id: roomId });
    if (sessionId !== undefined) query.andWhere({ session_id: sessionId });
    return query.delete();
  }

  async deleteBackupsOfUser(userId: string, q: Knex = this.db): Promise<void> {
    await q('e2e_room_keys').where({ user_id: userId }).delete();
    await q('e2e_room_keys_versions').where({ user_id: userId }).update({ deleted: true });
  }

  // Dehydrated devices (MSC3814)

  async dehydratedDevice(userId: string, q: Knex = this.db): Promise<DehydratedDeviceRow | undefined> {
    return q<DehydratedDeviceRow>('e2e_dehydrated_devices').where({ user_id: userId }).first();
  }

  async upsertDehydratedDevice(row: DehydratedDeviceRow, q: Knex = this.db): Promise<void> {
    await q('e2e_dehydrated_devices').insert(row).onConflict('user_id').merge(['device_id', 'device_data', 'ts_added_ms']);
  }

  async deleteDehydratedDevice(userId: string, deviceId: string | undefined, q: Knex = this.db): Promise<void> {
    const query = q('e2e_dehydrated_devices').where({ user_id: userId });
    if (deviceId !== undefined) query.andWhere({ device_id: deviceId });
    await query.delete();
  }
}
