// Pure checks on the signed JSON objects of end-to-end encryption: device keys, one-time keys,
// cross-signing keys (spec: "End-to-End Encryption" → "Key algorithms", "Cross-signing"). No I/O.
import { canonicalJson } from '../crypto/canonical-json.js';
import { decodeBase64 } from '../crypto/base64.js';
import { verifyJsonSignature } from '../crypto/signing.js';

export type Signatures = Record<string, Record<string, string>>;

export interface DeviceKeys {
  user_id: string;
  device_id: string;
  algorithms: string[];
  keys: Record<string, string>;
  signatures: Signatures;
  [extra: string]: unknown;
}

export interface CrossSigningKey {
  user_id: string;
  usage: string[];
  keys: Record<string, string>;
  signatures?: Signatures;
  [extra: string]: unknown;
}

export type KeyObject = string | { key: string; signatures: Signatures; fallback?: boolean; [extra: string]: unknown };

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A 32-byte key in unpadded base64, the form of every Ed25519 and Curve25519 public key. */
export function isPublicKey(v: unknown): v is string {
  if (typeof v !== 'string' || !/^[A-Za-z0-9+/]{43}$/.test(v)) return false;
  try {
    return decodeBase64(v).length === 32;
  } catch {
    return false;
  }
}

/** Verifies a signature without throwing (non-canonical JSON, e.g. floats, simply fails). */
export function signatureValid(obj: Record<string, unknown>, signer: string, keyId: string, publicKey: string): boolean {
  try {
    return verifyJsonSignature(obj as Parameters<typeof verifyJsonSignature>[0], signer, keyId, publicKey);
  } catch {
    return false;
  }
}

/** The signed content of an object, for "is this the same key" comparisons. */
export function signedContent(obj: Record<string, unknown>): string {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  try {
    return canonicalJson(rest, false);
  } catch {
    return JSON.stringify(rest);
  }
}

export class KeyJsonError extends Error {
  constructor(readonly errcode: 'M_INVALID_PARAM' | 'M_INVALID_SIGNATURE' | 'M_BAD_JSON' | 'M_MISSING_PARAM', message: string) {
    super(message);
  }
}

/**
 * Checks a device's identity keys as uploaded: they belong to this user and device, carry the
 * device's Ed25519 key and are signed by it. Returns that Ed25519 key.
 */
export function checkDeviceKeys(dk: DeviceKeys, userId: string, deviceId: string): string {
  if (dk.user_id !== userId) throw new KeyJsonError('M_INVALID_PARAM', 'device_keys.user_id does not match the authenticated user');
  if (dk.device_id !== deviceId) throw new KeyJsonError('M_INVALID_PARAM', 'device_keys.device_id does not match the authenticated device');
  const ed = dk.keys[`ed25519:${deviceId}`];
  if (!isPublicKey(ed)) throw new KeyJsonError('M_INVALID_PARAM', `device_keys.keys must hold an Ed25519 key ed25519:${deviceId}`);
  if (!signatureValid(dk, userId, `ed25519:${deviceId}`, ed)) {
    throw new KeyJsonError('M_INVALID_SIGNATURE', 'device_keys are not signed by the device\'s Ed25519 key');
  }
  return ed;
}

/** Splits `<algorithm>:<key_id>`. */
export function splitKeyId(id: string): { algorithm: string; keyId: string } | null {
  const i = id.indexOf(':');
  if (i <= 0 || i === id.length - 1) return null;
  return { algorithm: id.slice(0, i), keyId: id.slice(i + 1) };
}

/**
 * Checks a one-time or fallback key. Signed keys (objects) must be signed by the device's Ed25519
 * key when that key is known.
 */
export function checkKeyObject(id: string, key: unknown, userId: string, deviceId: string, deviceEd25519: string | undefined): void {
  if (typeof key === 'string') {
    if (!key) throw new KeyJsonError('M_INVALID_PARAM', `Key ${id} is empty`);
    return;
  }
  if (!isObject(key) || typeof key.key !== 'string' || !isObject(key.signatures)) {
    throw new KeyJsonError('M_INVALID_PARAM', `Key ${id} must be a string or an object with key and signatures`);
  }
  if (deviceEd25519 && !signatureValid(key, userId, `ed25519:${deviceId}`, deviceEd25519)) {
    throw new KeyJsonError('M_INVALID_SIGNATURE', `Key ${id} is not signed by the device`);
  }
}

/** The single `ed25519:<public key>` entry of a cross-signing key; returns the public key. */
export function crossSigningPublicKey(key: CrossSigningKey): string {
  const entries = Object.entries(key.keys);
  if (entries.length !== 1) throw new KeyJsonError('M_INVALID_PARAM', 'A cross-signing key must have exactly one key');
  const [id, value] = entries[0];
  if (id !== `ed25519:${value}` || !isPublicKey(value)) {
    throw new KeyJsonError('M_INVALID_PARAM', 'A cross-signing key must be ed25519:<unpadded base64 public key>');
  }
  return value;
}

/**
 * Checks a cross-signing key of `usage` for `userId`; when `signedBy` (the master public key) is
 * given, the key must carry a valid signature by it.
 */
export function checkCrossSigningKey(key: CrossSigningKey, usage: 'master' | 'self_signing' | 'user_signing', userId: string, signedBy?: string): string {
  if (key.user_id !== userId) throw new KeyJsonError('M_INVALID_PARAM', `${usage} key belongs to another user`);
  if (!Array.isArray(key.usage) || !key.usage.includes(usage)) throw new KeyJsonError('M_INVALID_PARAM', `${usage} key must have usage ${usage}`);
  const pub = crossSigningPublicKey(key);
  if (signedBy !== undefined && !signatureValid(key, userId, `ed25519:${signedBy}`, signedBy)) {
    throw new KeyJsonError('M_INVALID_SIGNATURE', `${usage} key is not signed by the master key`);
  }
  return pub;
}

/** Merges extra signatures into a signed object's `signatures`. */
export function withSignatures<T extends { signatures?: Signatures }>(obj: T, extra: { signer: string; keyId: string; signature: string }[]): T {
  if (!extra.length) return obj;
  const signatures: Signatures = {};
  for (const [u, sigs] of Object.entries(obj.signatures ?? {})) signatures[u] = { ...sigs };
  for (const s of extra) (signatures[s.signer] ??= {})[s.keyId] = s.signature;
  return { ...obj, signatures };
}

// Server-side key backup (spec: "Server-side key backups"): which of two keys for a session to keep.

export interface BackupKeyMeta { is_verified: boolean; first_message_index: number; forwarded_count: number }

/** True when `candidate` should replace `existing`: verified wins, then lower first index, then fewer forwards. */
export function shouldReplaceBackupKey(existing: BackupKeyMeta | undefined, candidate: BackupKeyMeta): boolean {
  if (!existing) return true;
  if (existing.is_verified !== candidate.is_verified) return candidate.is_verified;
  if (existing.first_message_index !== candidate.first_message_index) return candidate.first_message_index < existing.first_message_index;
  return candidate.forwarded_count < existing.forwarded_count;
}
