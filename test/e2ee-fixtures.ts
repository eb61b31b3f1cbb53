// Key material for E2EE tests, signed as clients sign it.
import { randomBytes } from 'node:crypto';
import { signJson, signingKeyFromSeed, type SigningKey } from '../src/crypto/signing.js';
import { encodeBase64 } from '../src/crypto/base64.js';

/** A cross-signing key pair; its key id is `ed25519:<public key>`. */
export function crossKey(userId: string, usage: string, signer?: SigningKey) {
  const seed = randomBytes(32);
  const pub = encodeBase64(signingKeyFromSeed('tmp', seed).publicKey);
  const key = signingKeyFromSeed(`ed25519:${pub}`, seed);
  let json: Record<string, unknown> = { user_id: userId, usage: [usage], keys: { [`ed25519:${pub}`]: pub } };
  if (signer) json = signJson(json, userId, signer);
  return { key, pub, json };
}
