// Key distribution (spec: "End-to-End Encryption" → "Key management API", "Cross-signing"):
// device keys, one-time and fallback keys, /keys/query and /keys/claim, cross-signing keys and
// signatures. Remote users go through `RemoteKeys`, which federation supplies later.
import type { Knex } from 'knex';
import { MatrixError } from '../http/errors.js';
import { parseUserId, splitByServer } from '../accounts/ids.js';
import { canonicalJson } from '../crypto/canonical-json.js';
import { bool } from '../storage/rows.js';
import type { CrossSigningKeyRow, CrossSigningKeyType, E2eeStore, OneTimeKeyRow, SignatureRow } from '../storage/e2ee-store.js';
import type { DeviceLists } from './device-lists.js';
import {
  KeyJsonError, checkCrossSigningKey, checkDeviceKeys, checkKeyObject, isObject, signatureValid, signedContent,
  splitKeyId, withSignatures, type CrossSigningKey, type DeviceKeys, type KeyObject,
} from './key-json.js';

export interface KeysUpload {
  device_keys?: DeviceKeys;
  one_time_keys?: Record<string, KeyObject>;
  fallback_keys?: Record<string, KeyObject>;
}

export interface CrossSigningUpload {
  master_key?: CrossSigningKey;
  self_signing_key?: CrossSigningKey;
  user_signing_key?: CrossSigningKey;
}

/** user id → device ids (empty: all devices). */
export type DeviceKeysQuery = Record<string, string[]>;
/** user id → device id → algorithm. */
export type OneTimeKeysClaim = Record<string, Record<string, string>>;

export interface KeysQueryResult {
  device_keys: Record<string, Record<string, Record<string, unknown>>>;
  master_keys: Record<string, Record<string, unknown>>;
  self_signing_keys: Record<string, Record<string, unknown>>;
  user_signing_keys: Record<string, Record<string, unknown>>;
  failures: Record<string, Record<string, unknown>>;
}

export interface KeysClaimResult {
  one_time_keys: Record<string, Record<string, Record<string, unknown>>>;
  failures: Record<string, Record<string, unknown>>;
}

/** The federation side of key queries and claims, per remote server (set by the federation module). */
export interface RemoteKeys {
  /** May answer some users (e.g. from a cache) and still report the server in `failures`. */
  queryKeys(server: string, query: DeviceKeysQuery, timeoutMs: number): Promise<Partial<Omit<KeysQueryResult, 'user_signing_keys'>>>;
  claimKeys(server: string, claim: OneTimeKeysClaim, timeoutMs: number): Promise<Pick<KeysClaimResult, 'one_time_keys'>>;
}

const MAX_ID_LENGTH = 255;
const CLAIM_BATCH = 5;
const toMatrixError = (e: KeyJsonError) => new MatrixError(400, e.errcode, e.message);

export class Keys {
  remote: RemoteKeys | null = null;

  constructor(
    private readonly db: Knex,
    private readonly store: E2eeStore,
    private readonly deviceLists: DeviceLists,
    private readonly serverName: string,
  ) {}

  private isLocal(userId: string): boolean {
    return parseUserId(userId)?.server === this.serverName;
  }

  // Upload

  /** POST /keys/upload for the requester's device; returns its one-time key counts. */
  async upload(userId: string, deviceId: string, body: KeysUpload): Promise<Record<string, number>> {
    const position = await this.db.transaction(async (trx) => {
      const keysChanged = await this.uploadInTransaction(trx, userId, deviceId, body);
      return keysChanged ? this.deviceLists.record(trx, userId, [deviceId]) : null;
    });
    if (position !== null) await this.deviceLists.notify(userId, [deviceId], position);
    return this.oneTimeKeyCounts(userId, deviceId);
  }

  /**
   * Validates everything first and then writes, so a bad key anywhere leaves what is stored as it
   * was. Returns whether the device keys changed (a device-list change the caller records).
   */
  async uploadInTransaction(trx: Knex, userId: string, deviceId: string, body: KeysUpload): Promise<boolean> {
    const now = Date.now();
    let deviceEd25519: string | undefined;
    let deviceKeysChanged = false;
    try {
      const stored = await this.store.deviceKeys(userId, deviceId, trx);
      const storedKeys = stored ? (JSON.parse(stored.key_json) as DeviceKeys) : undefined;
      if (body.device_keys) {
        deviceEd25519 = checkDeviceKeys(body.device_keys, userId, deviceId);
        if (storedKeys) {
          // A device id names one set of identity keys for its lifetime; new keys need a new device.
          if (canonicalJson(storedKeys.keys, false) !== canonicalJson(body.device_keys.keys, false)) {
            throw new KeyJsonError('M_INVALID_PARAM', `Device ${deviceId} already has different identity keys; log in as a new device`);
          }
          deviceKeysChanged = canonicalJson(storedKeys, false) !== canonicalJson(body.device_keys, false);
        } else {
          deviceKeysChanged = true;
        }
      } else if (storedKeys) {
        deviceEd25519 = storedKeys.keys[`ed25519:${deviceId}`];
      }

      // One-time keys: a key id already present must carry the same key (a retried upload).
      const otks: Omit<OneTimeKeyRow, 'id'>[] = [];
      const otkEntries = Object.entries(body.one_time_keys ?? {});
      for (const [id, key] of otkEntries) {
        const parts = splitKeyId(id);
        if (!parts || id.length > MAX_ID_LENGTH) throw new KeyJsonError('M_INVALID_PARAM', `Invalid one-time key id ${id}`);
        checkKeyObject(id, key, userId, deviceId, deviceEd25519);
        otks.push({ user_id: userId, device_id: deviceId, algorithm: parts.algorithm, key_id: parts.keyId, key_json: JSON.stringify(key), ts_added_ms: now });
      }
      if (otks.length) {
        const existing = await this.store.oneTimeKeysWithIds(userId, deviceId, [...new Set(otks.map((k) => k.key_id))], trx);
        const byId = new Map(existing.map((e) => [`${e.algorithm}:${e.key_id}`, e]));
        for (const k of otks) {
          const old = byId.get(`${k.algorithm}:${k.key_id}`);
          if (old && canonicalOf(old.key_json) !== canonicalOf(k.key_json)) {
            throw new KeyJsonError('M_INVALID_PARAM', `One-time key ${k.algorithm}:${k.key_id} already exists with different content`);
          }
        }
      }

      // Fallback keys: at most one per algorithm; a new one replaces the old and is unused.
      const fallbacks = new Map<string, { keyId: string; json: string }>();
      for (const [id, key] of Object.entries(body.fallback_keys ?? {})) {
        const parts = splitKeyId(id);
        if (!parts || id.length > MAX_ID_LENGTH) throw new KeyJsonError('M_INVALID_PARAM', `Invalid fallback key id ${id}`);
        if (fallbacks.has(parts.algorithm)) throw new KeyJsonError('M_INVALID_PARAM', `Only one fallback key per algorithm (${parts.algorithm})`);
        checkKeyObject(id, key, userId, deviceId, deviceEd25519);
        fallbacks.set(parts.algorithm, { keyId: parts.keyId, json: JSON.stringify(key) });
      }

      if (body.device_keys && deviceKeysChanged) {
        await this.store.upsertDeviceKeys({ user_id: userId, device_id: deviceId, key_json: JSON.stringify(body.device_keys), ts_added_ms: now }, trx);
      }
      await this.store.insertOneTimeKeys(otks, trx);
      for (const [algorithm, fb] of fallbacks) {
        const old = await this.store.fallbackKey(userId, deviceId, algorithm, trx);
        if (old && old.key_id === fb.keyId && canonicalOf(old.key_json) === canonicalOf(fb.json)) continue; // a retry keeps `used`
        await this.store.upsertFallbackKey({ user_id: userId, device_id: deviceId, algorithm, key_id: fb.keyId, key_json: fb.json, used: false }, trx);
      }
    } catch (err) {
      if (err instanceof KeyJsonError) throw toMatrixError(err);
      throw err;
    }
    return deviceKeysChanged;
  }

  // For /sync

  /** Unclaimed one-time keys per algorithm (`device_one_time_keys_count`). */
  async oneTimeKeyCounts(userId: string, deviceId: string): Promise<Record<string, number>> {
    // Clients read a missing signed_curve25519 count as "unknown" rather than zero; say zero.
    return { signed_curve25519: 0, ...(await this.store.oneTimeKeyCounts(userId, deviceId)) };
  }

  /** Algorithms whose fallback key has not been claimed (`device_unused_fallback_key_types`). */
  async unusedFallbackKeyTypes(userId: string, deviceId: string): Promise<string[]> {
    return (await this.store.fallbackKeys(userId, deviceId)).filter((f) => !bool(f.used)).map((f) => f.algorithm).sort();
  }

  // Query

  /**
   * POST /keys/query: local users are answered from the database; remote users are grouped by
   * server for federation, and servers that cannot be asked are listed in `failures`.
   */
  async query(requesterUserId: string, query: DeviceKeysQuery, timeoutMs = 10_000): Promise<KeysQueryResult> {
    const { local, remote } = splitByServer(query, this.serverName);
    const result = await this.queryLocal(local, requesterUserId);
    await Promise.all([...remote].map(async ([server, q]) => {
      if (!this.remote) {
        result.failures[server] = { status: 503, message: 'Federation is not available' };
        return;
      }
      try {
        const r = await this.remote.queryKeys(server, q, timeoutMs);
        Object.assign(result.device_keys, r.device_keys ?? {});
        Object.assign(result.master_keys, r.master_keys ?? {});
        Object.assign(result.self_signing_keys, r.self_signing_keys ?? {});
        Object.assign(result.failures, r.failures ?? {});
      } catch (err) {
        result.failures[server] = { status: 503, message: (err as Error).message ?? 'Unreachable' };
      }
    }));
    return result;
  }

  /**
   * Keys of local users. `requesterUserId` decides which cross-signing signatures are visible
   * (spec: "Key and signature security"): the target's own, plus the requester's own user-signing
   * signatures; null (a remote server asking) sees only the target's own.
   */
  async queryLocal(query: DeviceKeysQuery, requesterUserId: string | null): Promise<KeysQueryResult> {
    const result: KeysQueryResult = { device_keys: {}, master_keys: {}, self_signing_keys: {}, user_signing_keys: {}, failures: {} };
    const userIds = Object.keys(query);
    if (!userIds.length) return result;
    const [devices, csKeys, sigs] = await Promise.all([
      this.store.deviceKeysOfUsers(userIds),
      this.store.crossSigningKeys(userIds),
      this.store.visibleSignaturesOn(userIds, requesterUserId),
    ]);
    const visibleSigs = new Map<string, { signer: string; keyId: string; signature: string }[]>();
    for (const s of sigs) {
      const k = `${s.target_user_id}|${s.target_key_id}`;
      if (!visibleSigs.has(k)) visibleSigs.set(k, []);
      visibleSigs.get(k)!.push({ signer: s.signer_user_id, keyId: s.signer_key_id, signature: s.signature });
    }
    const sigsOn = (userId: string, keyId: string) => visibleSigs.get(`${userId}|${keyId}`) ?? [];

    for (const userId of userIds) result.device_keys[userId] = {};
    for (const d of devices) {
      const wanted = query[d.user_id];
      if (wanted.length && !wanted.includes(d.device_id)) continue;
      const json = withSignatures(JSON.parse(d.key_json) as DeviceKeys, sigsOn(d.user_id, d.device_id));
      const unsigned = { ...(isObject(json.unsigned) ? json.unsigned : {}), ...(d.display_name ? { device_display_name: d.display_name } : {}) };
      result.device_keys[d.user_id][d.device_id] = { ...json, unsigned };
    }
    for (const k of csKeys) {
      const json = JSON.parse(k.key_json) as CrossSigningKey;
      if (k.key_type === 'master') result.master_keys[k.user_id] = withSignatures(json, sigsOn(k.user_id, k.public_key));
      else if (k.key_type === 'self_signing') result.self_signing_keys[k.user_id] = withSignatures(json, sigsOn(k.user_id, k.public_key));
      else if (k.user_id === requesterUserId) result.user_signing_keys[k.user_id] = json;
    }
    return result;
  }

  // Claim

  /** POST /keys/claim: local keys from the database, remote ones through federation. */
  async claim(claim: OneTimeKeysClaim, timeoutMs = 10_000): Promise<KeysClaimResult> {
    const { local, remote } = splitByServer(claim, this.serverName);
    const result: KeysClaimResult = { one_time_keys: await this.claimLocal(local), failures: {} };
    await Promise.all([...remote].map(async ([server, c]) => {
      if (!this.remote) {
        result.failures[server] = { status: 503, message: 'Federation is not available' };
        return;
      }
      try {
        Object.assign(result.one_time_keys, (await this.remote.claimKeys(server, c, timeoutMs)).one_time_keys ?? {});
      } catch (err) {
        result.failures[server] = { status: 503, message: (err as Error).message ?? 'Unreachable' };
      }
    }));
    return result;
  }

  /** Claims for local users (also what federation's /user/keys/claim answers with). */
  async claimLocal(claim: OneTimeKeysClaim): Promise<KeysClaimResult['one_time_keys']> {
    const out: KeysClaimResult['one_time_keys'] = {};
    for (const [userId, devices] of Object.entries(claim)) {
      for (const [deviceId, algorithm] of Object.entries(devices)) {
        const key = await this.claimOne(userId, deviceId, algorithm);
        if (!key) continue;
        ((out[userId] ??= {})[deviceId] ??= {})[`${algorithm}:${key.keyId}`] = JSON.parse(key.json);
      }
    }
    return out;
  }

  /**
   * Takes the oldest one-time key, else the fallback key (marked used, kept). The DELETE of one row
   * by id is the claim: of concurrent claimers of the same row exactly one deletes it, on SQLite and
   * PostgreSQL alike, and the others move on to the next key.
   */
  private async claimOne(userId: string, deviceId: string, algorithm: string): Promise<{ keyId: string; json: string } | null> {
    for (;;) {
      const candidates = await this.store.oneTimeKeyCandidates(userId, deviceId, algorithm, CLAIM_BATCH);
      if (!candidates.length) break;
      for (const c of candidates) {
        if ((await this.store.deleteOneTimeKey(c.id)) === 1) return { keyId: c.key_id, json: c.key_json };
      }
    }
    const fb = await this.store.fallbackKey(userId, deviceId, algorithm);
    if (!fb) return null;
    if (!bool(fb.used)) await this.store.markFallbackKeyUsed(userId, deviceId, algorithm, fb.key_id);
    return { keyId: fb.key_id, json: fb.key_json };
  }

  // Cross-signing

  /**
   * POST /keys/device_signing/upload. Returns 'needs-auth' when the upload would replace existing
   * keys and the caller has not done UIA (spec v1.11: the first upload, and re-uploading exactly the
   * stored keys, need none).
   */
  async uploadCrossSigningKeys(userId: string, body: CrossSigningUpload, authenticated: boolean): Promise<'done' | 'needs-auth'> {
    const given: [CrossSigningKeyType, CrossSigningKey][] = [];
    if (body.master_key) given.push(['master', body.master_key]);
    if (body.self_signing_key) given.push(['self_signing', body.self_signing_key]);
    if (body.user_signing_key) given.push(['user_signing', body.user_signing_key]);
    if (!given.length) return 'done';

    const result = await this.db.transaction(async (trx) => {
      const existing = new Map((await this.store.crossSigningKeys([userId], trx)).map((r) => [r.key_type, r]));
      const publicKeys = new Map<CrossSigningKeyType, string>();
      try {
        const masterPub = body.master_key ? checkCrossSigningKey(body.master_key, 'master', userId) : existing.get('master')?.public_key;
        if (masterPub) publicKeys.set('master', masterPub);
        for (const [type, key] of given) {
          if (type === 'master') continue;
          if (!masterPub) throw new KeyJsonError('M_MISSING_PARAM', 'No master key available');
          publicKeys.set(type, checkCrossSigningKey(key, type, userId, masterPub));
        }
      } catch (err) {
        if (err instanceof KeyJsonError) throw toMatrixError(err);
        throw err;
      }
      const changes = given.filter(([type, key]) => {
        const old = existing.get(type);
        return !old || canonicalJson(JSON.parse(old.key_json), false) !== canonicalJson(key, false);
      });
      if (!changes.length) return null;
      if (existing.has('master') && !authenticated) return 'needs-auth' as const;

      // Device ids and cross-signing public keys share a namespace (spec: "Cross-signing").
      const deviceIds = new Set((await this.store.devicesOfUsers([userId], trx)).map((d) => d.device_id));
      for (const [type] of changes) {
        if (deviceIds.has(publicKeys.get(type)!)) throw new MatrixError(403, 'M_FORBIDDEN', 'Key ID in use');
      }

      const now = Date.now();
      for (const [type, key] of changes) {
        const pub = publicKeys.get(type)!;
        const old = existing.get(type);
        if (old && old.public_key !== pub) {
          // Signatures by or on a replaced key no longer mean anything.
          await this.store.deleteSignaturesBy(userId, [`ed25519:${old.public_key}`], trx);
          await this.store.deleteSignaturesOn(userId, [old.public_key], trx);
        }
        const row: CrossSigningKeyRow = { user_id: userId, key_type: type, public_key: pub, key_json: JSON.stringify(key), ts_added_ms: now };
        await this.store.upsertCrossSigningKey(row, trx);
      }
      return this.deviceLists.record(trx, userId, []);
    });
    if (result === 'needs-auth') return result;
    if (result !== null) await this.deviceLists.notify(userId, [], result);
    return 'done';
  }

  /**
   * POST /keys/signatures/upload. Each signed object must match the stored key; accepted are
   * self-signing signatures of the user's devices, device signatures of the user's master key and
   * user-signing signatures of other users' master keys. Returns per-key failures.
   */
  async uploadSignatures(userId: string, body: Record<string, Record<string, unknown>>): Promise<{ failures: Record<string, Record<string, { errcode: string; error: string }>> }> {
    const failures: Record<string, Record<string, { errcode: string; error: string }>> = {};
    const fail = (target: string, keyId: string, errcode: string, error: string) => {
      (failures[target] ??= {})[keyId] = { errcode, error };
    };
    const targets = Object.keys(body).filter((u) => this.isLocal(u));
    for (const u of Object.keys(body)) {
      if (!this.isLocal(u)) for (const keyId of Object.keys(body[u] ?? {})) fail(u, keyId, 'M_NOT_FOUND', 'Signing keys of remote users are not supported yet');
    }
    const allUsers = [...new Set([userId, ...targets])];
    const csKeys = new Map((await this.store.crossSigningKeys(allUsers)).map((r) => [`${r.user_id}|${r.key_type}`, r]));
    const ownDevices = new Map((await this.store.deviceKeysOfUsers([userId])).map((d) => [d.device_id, JSON.parse(d.key_json) as DeviceKeys]));
    const ownMaster = csKeys.get(`${userId}|master`);
    const ownSsk = csKeys.get(`${userId}|self_signing`);
    const ownUsk = csKeys.get(`${userId}|user_signing`);

    const accepted: SignatureRow[] = [];
    const changedUsers = new Map<string, Set<string>>();
    const noteChange = (u: string, deviceId: string | null) => {
      if (!changedUsers.has(u)) changedUsers.set(u, new Set());
      if (deviceId) changedUsers.get(u)!.add(deviceId);
    };

    for (const target of targets) {
      const entries = body[target];
      if (!isObject(entries)) continue;
      for (const [keyId, signed] of Object.entries(entries)) {
        if (!isObject(signed) || !isObject(signed.signatures)) {
          fail(target, keyId, 'M_INVALID_PARAM', 'Expected a signed JSON object');
          continue;
        }
        const signerSigs = signed.signatures[userId];
        if (!isObject(signerSigs)) {
          fail(target, keyId, 'M_INVALID_SIGNATURE', 'Missing signature');
          continue;
        }

        if (target === userId && ownMaster && keyId === ownMaster.public_key) {
          // The user's devices signing their own master key.
          if (signedContent(signed) !== signedContent(JSON.parse(ownMaster.key_json))) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', 'Signed object does not match the master key');
            continue;
          }
          const rows: SignatureRow[] = [];
          let bad: string | null = null;
          for (const [sigKeyId, sig] of Object.entries(signerSigs)) {
            if (sigKeyId === `ed25519:${ownMaster.public_key}`) continue;
            const deviceId = sigKeyId.startsWith('ed25519:') ? sigKeyId.slice('ed25519:'.length) : '';
            const dk = ownDevices.get(deviceId);
            const ed = dk?.keys[`ed25519:${deviceId}`];
            if (!ed || typeof sig !== 'string') {
              bad ??= `Unknown signing device ${sigKeyId}`;
              continue;
            }
            if (!signatureValid(signed, userId, sigKeyId, ed)) {
              bad ??= `Invalid signature by ${sigKeyId}`;
              continue;
            }
            rows.push({ signer_user_id: userId, signer_key_id: sigKeyId, target_user_id: userId, target_key_id: keyId, signature: sig });
          }
          if (bad || !rows.length) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', bad ?? 'Missing signature');
            continue;
          }
          accepted.push(...rows);
          noteChange(userId, null);
        } else if (target === userId) {
          // The self-signing key signing one of the user's devices.
          const dk = ownDevices.get(keyId);
          if (!dk) {
            fail(target, keyId, 'M_NOT_FOUND', 'Unknown device or key');
            continue;
          }
          if (!ownSsk) {
            fail(target, keyId, 'M_NOT_FOUND', 'No self-signing key uploaded');
            continue;
          }
          const sigKeyId = `ed25519:${ownSsk.public_key}`;
          const sig = signerSigs[sigKeyId];
          if (signedContent(signed) !== signedContent(dk)) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', 'Signed object does not match the device keys');
          } else if (typeof sig !== 'string' || !signatureValid(signed, userId, sigKeyId, ownSsk.public_key)) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', 'Invalid or missing self-signing signature');
          } else {
            accepted.push({ signer_user_id: userId, signer_key_id: sigKeyId, target_user_id: userId, target_key_id: keyId, signature: sig });
            noteChange(userId, keyId);
          }
        } else {
          // The user-signing key signing another user's master key.
          const master = csKeys.get(`${target}|master`);
          if (!master || master.public_key !== keyId) {
            fail(target, keyId, 'M_NOT_FOUND', 'Unknown master key');
            continue;
          }
          if (!ownUsk) {
            fail(target, keyId, 'M_NOT_FOUND', 'No user-signing key uploaded');
            continue;
          }
          const sigKeyId = `ed25519:${ownUsk.public_key}`;
          const sig = signerSigs[sigKeyId];
          if (signedContent(signed) !== signedContent(JSON.parse(master.key_json))) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', 'Signed object does not match the master key');
          } else if (typeof sig !== 'string' || !signatureValid(signed, userId, sigKeyId, ownUsk.public_key)) {
            fail(target, keyId, 'M_INVALID_SIGNATURE', 'Invalid or missing user-signing signature');
          } else {
            accepted.push({ signer_user_id: userId, signer_key_id: sigKeyId, target_user_id: target, target_key_id: keyId, signature: sig });
            // Only the signer sees this signature; the target's id in the signer's device list
            // changes is what makes the signer's other devices re-fetch it.
            noteChange(target, null);
          }
        }
      }
    }

    if (accepted.length) {
      const positions = await this.db.transaction(async (trx) => {
        await this.store.upsertSignatures(accepted, trx);
        const out: [string, string[], number][] = [];
        for (const [u, devices] of changedUsers) out.push([u, [...devices], await this.deviceLists.record(trx, u, [...devices])]);
        return out;
      });
      for (const [u, devices, pos] of positions) await this.deviceLists.notify(u, devices, pos);
    }
    return { failures };
  }
}

/** A key's JSON (as stored or uploaded) in canonical form, so equal keys compare equal. */
function canonicalOf(json: string): string {
  const v = JSON.parse(json) as unknown;
  return isObject(v) ? canonicalJson(v, false) : JSON.stringify(v);
}
