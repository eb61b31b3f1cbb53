// Ed25519 keys and JSON signing (spec appendix "Signing JSON"), on node:crypto's native Ed25519.
import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalJson } from './canonical-json.js';
import { decodeBase64, encodeBase64 } from './base64.js';

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export interface SigningKey {
  /** e.g. `ed25519:a_bcd` */
  keyId: string;
  seed: Buffer;
  publicKey: Buffer;
  privateKeyObject: KeyObject;
}

export function signingKeyFromSeed(keyId: string, seed: Uint8Array): SigningKey {
  if (seed.length !== 32) throw new Error('an Ed25519 seed is 32 bytes');
  const privateKeyObject = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(privateKeyObject).export({ format: 'der', type: 'spki' });
  return { keyId, seed: Buffer.from(seed), publicKey: spki.subarray(SPKI_ED25519_PREFIX.length), privateKeyObject };
}

export function generateSigningKey(): SigningKey {
  const version = randomBytes(6).toString('base64url').replace(/[^A-Za-z0-9_]/g, '_');
  return signingKeyFromSeed(`ed25519:${version}`, randomBytes(32));
}

export function signBytes(key: SigningKey, data: string | Uint8Array): string {
  return encodeBase64(sign(null, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, key.privateKeyObject));
}

const publicKeyCache = new Map<string, KeyObject>();

export function publicKeyObject(publicKeyBase64: string): KeyObject {
  let obj = publicKeyCache.get(publicKeyBase64);
  if (!obj) {
    const raw = decodeBase64(publicKeyBase64);
    if (raw.length !== 32) throw new Error('an Ed25519 public key is 32 bytes');
    obj = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
    if (publicKeyCache.size > 10_000) publicKeyCache.clear();
    publicKeyCache.set(publicKeyBase64, obj);
  }
  return obj;
}

export function verifyBytes(publicKeyBase64: string, data: string | Uint8Array, signatureBase64: string): boolean {
  try {
    const sig = decodeBase64(signatureBase64);
    if (sig.length !== 64) return false;
    return verify(null, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, publicKeyObject(publicKeyBase64), sig);
  } catch {
    return false;
  }
}

/**
 * verifyBytes on libuv's thread pool: many signatures (a federation transaction's PDUs) are checked
 * in parallel, off the event loop.
 */
export function verifyBytesAsync(publicKeyBase64: string, data: string | Uint8Array, signatureBase64: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      const sig = decodeBase64(signatureBase64);
      if (sig.length !== 64) return resolve(false);
      verify(null, typeof data === 'string' ? Buffer.from(data, 'utf8') : data, publicKeyObject(publicKeyBase64), sig, (err, ok) => resolve(!err && ok));
    } catch {
      resolve(false);
    }
  });
}

type Signable = Record<string, unknown> & { signatures?: Record<string, Record<string, string>>; unsigned?: unknown };

/** The bytes that are signed: canonical JSON without `signatures` and `unsigned`. */
export function signingPayload(obj: Signable): string {
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  return canonicalJson(rest);
}

/** Returns a copy of `obj` with this key's signature added under `entity` (server name or user id). */
export function signJson<T extends Signable>(obj: T, entity: string, key: SigningKey): T {
  const signature = signBytes(key, signingPayload(obj));
  const signatures = { ...(obj.signatures ?? {}) };
  signatures[entity] = { ...(signatures[entity] ?? {}), [key.keyId]: signature };
  return { ...obj, signatures };
}

/** Verifies `entity`'s signature with `keyId` on `obj`. */
export function verifyJsonSignature(obj: Signable, entity: string, keyId: string, publicKeyBase64: string): boolean {
  const sig = obj.signatures?.[entity]?.[keyId];
  if (typeof sig !== 'string') return false;
  return verifyBytes(publicKeyBase64, signingPayload(obj), sig);
}
