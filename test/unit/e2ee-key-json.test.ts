// Pure checks of E2EE key JSON and the key backup replacement rule.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { signJson, signingKeyFromSeed } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import {
  KeyJsonError, checkCrossSigningKey, checkDeviceKeys, checkKeyObject, shouldReplaceBackupKey, signedContent, splitKeyId, withSignatures,
} from '../../src/e2ee/key-json.js';

const USER = '@alice:example.org';

function deviceKey(deviceId: string) {
  const key = signingKeyFromSeed(`ed25519:${deviceId}`, randomBytes(32));
  const ed = encodeBase64(key.publicKey);
  const keys = signJson({
    user_id: USER, device_id: deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${deviceId}`]: encodeBase64(randomBytes(32)), [`ed25519:${deviceId}`]: ed },
  }, USER, key);
  return { key, ed, keys: keys as typeof keys & { signatures: Record<string, Record<string, string>> } };
}

function crossKey(usage: string, signer?: ReturnType<typeof signingKeyFromSeed>) {
  const seed = randomBytes(32);
  const pub = encodeBase64(signingKeyFromSeed('x', seed).publicKey);
  const key = signingKeyFromSeed(`ed25519:${pub}`, seed);
  let json: Record<string, unknown> = { user_id: USER, usage: [usage], keys: { [`ed25519:${pub}`]: pub } };
  if (signer) json = signJson(json, USER, signer);
  return { key, pub, json: json as { user_id: string; usage: string[]; keys: Record<string, string> } };
}

const code = (errcode: string) => (e: unknown) => e instanceof KeyJsonError && e.errcode === errcode;

test('device keys: accepted when signed by the device, rejected otherwise', () => {
  const d = deviceKey('DEV1');
  assert.equal(checkDeviceKeys(d.keys, USER, 'DEV1'), d.ed);
  assert.throws(() => checkDeviceKeys(d.keys, USER, 'DEV2'), code('M_INVALID_PARAM'));
  assert.throws(() => checkDeviceKeys(d.keys, '@bob:example.org', 'DEV1'), code('M_INVALID_PARAM'));
  const tampered = { ...d.keys, algorithms: ['m.olm.v1.curve25519-aes-sha2'] };
  assert.throws(() => checkDeviceKeys(tampered, USER, 'DEV1'), code('M_INVALID_SIGNATURE'));
  // Signed by another key under the same key id.
  const other = deviceKey('DEV1');
  assert.throws(() => checkDeviceKeys({ ...d.keys, signatures: other.keys.signatures }, USER, 'DEV1'), code('M_INVALID_SIGNATURE'));
  // Non-integer numbers are not canonical JSON: the signature cannot verify, and nothing throws.
  assert.throws(() => checkDeviceKeys({ ...d.keys, weird: 1.5 }, USER, 'DEV1'), code('M_INVALID_SIGNATURE'));
  const noEd = { ...d.keys, keys: { [`curve25519:DEV1`]: 'x' } };
  assert.throws(() => checkDeviceKeys(noEd, USER, 'DEV1'), code('M_INVALID_PARAM'));
});

test('one-time keys: strings, or objects signed by the device', () => {
  const d = deviceKey('DEV1');
  checkKeyObject('curve25519:AAAA', 'abc', USER, 'DEV1', d.ed);
  const signed = signJson({ key: encodeBase64(randomBytes(32)) }, USER, d.key);
  checkKeyObject('signed_curve25519:AAAA', signed, USER, 'DEV1', d.ed);
  assert.throws(() => checkKeyObject('signed_curve25519:AAAA', { ...signed, key: 'other' }, USER, 'DEV1', d.ed), code('M_INVALID_SIGNATURE'));
  assert.throws(() => checkKeyObject('signed_curve25519:AAAA', { key: 'k' }, USER, 'DEV1', d.ed), code('M_INVALID_PARAM'));
  assert.deepEqual(splitKeyId('signed_curve25519:AAAAHg'), { algorithm: 'signed_curve25519', keyId: 'AAAAHg' });
  assert.equal(splitKeyId('nocolon'), null);
  assert.equal(splitKeyId(':x'), null);
});

test('cross-signing keys: one ed25519 key named by itself, signed by the master key', () => {
  const master = crossKey('master');
  assert.equal(checkCrossSigningKey(master.json, 'master', USER), master.pub);
  const ssk = crossKey('self_signing', master.key);
  assert.equal(checkCrossSigningKey(ssk.json, 'self_signing', USER, master.pub), ssk.pub);
  const unsigned = crossKey('self_signing');
  assert.throws(() => checkCrossSigningKey(unsigned.json, 'self_signing', USER, master.pub), code('M_INVALID_SIGNATURE'));
  assert.throws(() => checkCrossSigningKey(ssk.json, 'user_signing', USER, master.pub), code('M_INVALID_PARAM'));
  assert.throws(() => checkCrossSigningKey({ ...master.json, keys: { 'ed25519:abc': master.pub } }, 'master', USER), code('M_INVALID_PARAM'));
  assert.throws(() => checkCrossSigningKey(master.json, 'master', '@bob:example.org'), code('M_INVALID_PARAM'));
});

test('signatures merge without touching the signed content', () => {
  const d = deviceKey('DEV1');
  const merged = withSignatures(d.keys, [{ signer: USER, keyId: 'ed25519:ssk', signature: 'sig' }]);
  assert.equal(merged.signatures[USER]['ed25519:ssk'], 'sig');
  assert.equal(merged.signatures[USER]['ed25519:DEV1'], d.keys.signatures[USER]['ed25519:DEV1']);
  assert.equal(d.keys.signatures[USER]['ed25519:ssk'], undefined);
  assert.equal(signedContent(merged), signedContent(d.keys));
});

test('backup rule: verified wins, then lower first_message_index, then lower forwarded_count', () => {
  const k = (is_verified: boolean, first_message_index: number, forwarded_count: number) => ({ is_verified, first_message_index, forwarded_count });
  assert.equal(shouldReplaceBackupKey(undefined, k(false, 10, 10)), true);
  assert.equal(shouldReplaceBackupKey(k(false, 0, 0), k(true, 99, 99)), true);
  assert.equal(shouldReplaceBackupKey(k(true, 99, 99), k(false, 0, 0)), false);
  assert.equal(shouldReplaceBackupKey(k(true, 5, 0), k(true, 4, 9)), true);
  assert.equal(shouldReplaceBackupKey(k(true, 4, 0), k(true, 5, 0)), false);
  assert.equal(shouldReplaceBackupKey(k(false, 4, 3), k(false, 4, 2)), true);
  assert.equal(shouldReplaceBackupKey(k(false, 4, 2), k(false, 4, 3)), false);
  assert.equal(shouldReplaceBackupKey(k(false, 4, 2), k(false, 4, 2)), false);
});
