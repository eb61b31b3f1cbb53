// Server-side key backups (spec: "Server-side key backups", /room_keys/*). Versions are per-user
// integers, never reused; keys can only be written to the latest live version; the etag moves
// whenever the stored keys change.
import type { Knex } from 'knex';
import { MatrixError, notFound } from '../http/errors.js';
import { isUniqueViolation } from '../storage/db.js';
import { bool, num } from '../storage/rows.js';
import type { BackupKeyRow, BackupVersionRow, E2eeStore } from '../storage/e2ee-store.js';
import { shouldReplaceBackupKey } from './key-json.js';

export interface KeyBackupData {
  first_message_index: number;
  forwarded_count: number;
  is_verified: boolean;
  session_data: Record<string, unknown>;
}

export interface BackupVersionInfo {
  algorithm: string;
  auth_data: Record<string, unknown>;
  count: number;
  etag: string;
  version: string;
}

/** room id → session id → key. */
export type BackupKeys = Record<string, Record<string, KeyBackupData>>;

const MEGOLM_BACKUP_V1 = 'm.megolm_backup.v1.curve25519-aes-sha2';
const unknownVersion = () => notFound('Unknown backup version');

export class KeyBackup {
  constructor(private readonly db: Knex, private readonly store: E2eeStore) {}

  /** Versions are decimal integers; anything else names no backup. */
  private parseVersion(version: string | undefined): number {
    if (version === undefined || version === '') throw new MatrixError(400, 'M_MISSING_PARAM', 'Missing version');
    if (!/^\d{1,15}$/.test(version)) throw unknownVersion();
    return Number(version);
  }

  private async info(row: BackupVersionRow, q: Knex = this.db): Promise<BackupVersionInfo> {
    return {
      algorithm: row.algorithm,
      auth_data: JSON.parse(row.auth_data),
      count: await this.store.backupKeyCount(row.user_id, num(row.version), q),
      etag: String(num(row.etag)),
      version: String(num(row.version)),
    };
  }

  /** POST /room_keys/version */
  async createVersion(userId: string, algorithm: string, authData: Record<string, unknown>): Promise<string> {
    checkAuthData(algorithm, authData);
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction(async (trx) => {
          const version = (await this.store.maxBackupVersion(userId, trx)) + 1;
          await this.store.insertBackupVersion({ user_id: userId, version, algorithm, auth_data: JSON.stringify(authData), etag: 0, deleted: false }, trx);
          return String(version);
        });
      } catch (err) {
        // Two devices creating a backup at once picked the same number: take the next one.
        if (!isUniqueViolation(err) || attempt >= 5) throw err;
      }
    }
  }

  /** GET /room_keys/version and GET /room_keys/version/{version} */
  async versionInfo(userId: string, version?: string): Promise<BackupVersionInfo> {
    const row = await this.store.backupVersion(userId, version === undefined ? undefined : this.parseVersion(version));
    if (!row || bool(row.deleted)) throw version === undefined ? notFound('No current backup version') : unknownVersion();
    return this.info(row);
  }

  /** PUT /room_keys/version/{version}: only auth_data may change. */
  async updateVersion(userId: string, version: string, body: { algorithm: string; auth_data: Record<string, unknown>; version?: string }): Promise<void> {
    const v = this.parseVersion(version);
    if (body.version !== undefined && body.version !== version) throw new MatrixError(400, 'M_INVALID_PARAM', 'Version in body does not match the path');
    const row = await this.store.backupVersion(userId, v);
    if (!row || bool(row.deleted)) throw unknownVersion();
    if (row.algorithm !== body.algorithm) throw new MatrixError(400, 'M_INVALID_PARAM', 'Algorithm does not match');
    checkAuthData(body.algorithm, body.auth_data);
    await this.store.updateBackupVersion(userId, v, { auth_data: JSON.stringify(body.auth_data) });
  }

  /** DELETE /room_keys/version/{version}: deleting an already deleted version succeeds. */
  async deleteVersion(userId: string, version: string): Promise<void> {
    const v = this.parseVersion(version);
    await this.db.transaction(async (trx) => {
      const row = await this.store.backupVersion(userId, v, trx);
      if (!row) throw unknownVersion();
      if (bool(row.deleted)) return;
      await this.store.deleteBackupKeys(userId, v, undefined, undefined, trx);
      await this.store.updateBackupVersion(userId, v, { deleted: true }, trx);
    });
  }

  /**
   * PUT /room_keys/keys[/{roomId}[/{sessionId}]]: for each session keeps the better of the stored
   * and the new key. Writes go only to the latest version (403 M_WRONG_ROOM_KEYS_VERSION otherwise).
   */
  async putKeys(userId: string, version: string, rooms: BackupKeys): Promise<{ etag: string; count: number }> {
    const v = this.parseVersion(version);
    return this.db.transaction(async (trx) => {
      const row = await this.store.backupVersion(userId, v, trx);
      if (!row || bool(row.deleted)) throw unknownVersion();
      // Serialise writers of this backup: a no-op update takes the version row's lock until commit,
      // so the compare-and-replace below sees every earlier writer's keys.
      await this.store.updateBackupVersion(userId, v, { algorithm: row.algorithm }, trx);
      const current = await this.store.backupVersion(userId, undefined, trx);
      if (!current || num(current.version) !== v) {
        throw new MatrixError(403, 'M_WRONG_ROOM_KEYS_VERSION', 'Wrong backup version', { current_version: current ? String(num(current.version)) : null });
      }
      let changed = false;
      for (const [roomId, sessions] of Object.entries(rooms)) {
        const ids = Object.keys(sessions);
        if (!ids.length) continue;
        const existing = new Map((await this.store.backupKeys(userId, v, roomId, ids, trx)).map((k) => [k.session_id, k]));
        for (const [sessionId, key] of Object.entries(sessions)) {
          const old = existing.get(sessionId);
          if (!shouldReplaceBackupKey(old && { is_verified: bool(old.is_verified), first_message_index: old.first_message_index, forwarded_count: old.forwarded_count }, key)) continue;
          await this.store.upsertBackupKey({
            user_id: userId, version: v, room_id: roomId, session_id: sessionId,
            first_message_index: key.first_message_index, forwarded_count: key.forwarded_count,
            is_verified: key.is_verified, session_data: JSON.stringify(key.session_data),
          }, trx);
          changed = true;
        }
      }
      if (changed) await this.store.bumpBackupEtag(userId, v, trx);
      const after = (await this.store.backupVersion(userId, v, trx))!;
      return { etag: String(num(after.etag)), count: await this.store.backupKeyCount(userId, v, trx) };
    });
  }

  /** GET /room_keys/keys[/{roomId}]: all keys, or one room's ({sessions: {}} when none). */
  async getKeys(userId: string, version: string, roomId?: string): Promise<BackupKeys> {
    const v = await this.liveVersion(userId, version);
    const out: BackupKeys = {};
    if (roomId !== undefined) out[roomId] = {};
    for (const k of await this.store.backupKeys(userId, v, roomId, undefined)) (out[k.room_id] ??= {})[k.session_id] = keyJson(k);
    return out;
  }

  /** GET /room_keys/keys/{roomId}/{sessionId} */
  async getKey(userId: string, version: string, roomId: string, sessionId: string): Promise<KeyBackupData> {
    const v = await this.liveVersion(userId, version);
    const [k] = await this.store.backupKeys(userId, v, roomId, [sessionId]);
    if (!k) throw notFound('Key not found');
    return keyJson(k);
  }

  /** DELETE /room_keys/keys[/{roomId}[/{sessionId}]] */
  async deleteKeys(userId: string, version: string, roomId?: string, sessionId?: string): Promise<{ etag: string; count: number }> {
    const v = this.parseVersion(version);
    return this.db.transaction(async (trx) => {
      const row = await this.store.backupVersion(userId, v, trx);
      if (!row || bool(row.deleted)) throw unknownVersion();
      const n = await this.store.deleteBackupKeys(userId, v, roomId, sessionId, trx);
      if (n) await this.store.bumpBackupEtag(userId, v, trx);
      const after = (await this.store.backupVersion(userId, v, trx))!;
      return { etag: String(num(after.etag)), count: await this.store.backupKeyCount(userId, v, trx) };
    });
  }

  private async liveVersion(userId: string, version: string): Promise<number> {
    const v = this.parseVersion(version);
    const row = await this.store.backupVersion(userId, v);
    if (!row || bool(row.deleted)) throw unknownVersion();
    return v;
  }

  async deleteAllOfUser(userId: string, q: Knex = this.db): Promise<void> {
    await this.store.deleteBackupsOfUser(userId, q);
  }
}

/** The one algorithm the spec defines needs the backup's Curve25519 public key. */
function checkAuthData(algorithm: string, authData: Record<string, unknown>): void {
  if (algorithm === MEGOLM_BACKUP_V1 && typeof authData.public_key !== 'string') {
    throw new MatrixError(400, 'M_BAD_JSON', 'auth_data.public_key is required for ' + MEGOLM_BACKUP_V1);
  }
}

function keyJson(k: BackupKeyRow): KeyBackupData {
  return {
    first_message_index: k.first_message_index,
    forwarded_count: k.forwarded_count,
    is_verified: bool(k.is_verified),
    session_data: JSON.parse(k.session_data),
  };
}
