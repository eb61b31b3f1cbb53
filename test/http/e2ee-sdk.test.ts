// matrix-js-sdk with its real Rust crypto (matrix-sdk-crypto-wasm) against the server: device and
// one-time keys, cross-signing bootstrap and reset (UIA), key backup, secret storage and a dehydrated
// device. Encrypted room messaging, device-list tracking and backup restore are in
// e2ee-messaging.test.ts.
import 'fake-indexeddb/auto';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { MatrixClient } from 'matrix-js-sdk';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import { cryptoClient as sdkCryptoClient, flushOutgoing, loginDevice, passwordUia, startSyncing, unrefLongTimers, type Login } from '../sdk.js';

unrefLongTimers();

let srv: TestServer;
const clients: MatrixClient[] = [];
before(async () => { srv = await startTestServer(); });
after(async () => {
  for (const c of clients) c.stopClient();
  await srv?.stop();
});

const V3 = '/_matrix/client/v3';

async function cryptoClient(u: Login, secretStorageKeys?: Map<string, Uint8Array>): Promise<MatrixClient> {
  const client = await sdkCryptoClient(srv.url, u, { secretStorageKeys });
  clients.push(client);
  return client;
}

test('Rust crypto uploads device and one-time keys; another user downloads them', { timeout: 60_000 }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const aliceClient = await cryptoClient(alice);
  await flushOutgoing(aliceClient);

  const counts = await srv.hs.services.e2ee.oneTimeKeyCounts(alice.user_id, alice.device_id);
  assert.ok(counts.signed_curve25519 > 0, `one-time keys uploaded: ${JSON.stringify(counts)}`);
  const own = await aliceClient.getCrypto()!.getOwnDeviceKeys();
  const q = await api(srv.url, 'POST', `${V3}/keys/query`, { token: bob.access_token, body: { device_keys: { [alice.user_id]: [] } } });
  const dk = q.body.device_keys[alice.user_id][alice.device_id];
  assert.equal(dk.keys[`ed25519:${alice.device_id}`], own.ed25519);
  assert.equal(dk.keys[`curve25519:${alice.device_id}`], own.curve25519);

  // Bob's Rust machine accepts the keys it downloads (it checks their signatures).
  const bobClient = await cryptoClient(bob);
  const devices = await bobClient.getCrypto()!.getUserDeviceInfo([alice.user_id], true);
  const d = devices.get(alice.user_id)?.get(alice.device_id);
  assert.ok(d, 'Bob sees Alice\'s device');
  assert.equal(d.getFingerprint(), own.ed25519);

  // Bob can claim one of Alice's one-time keys.
  const claim = await api(srv.url, 'POST', `${V3}/keys/claim`, { token: bob.access_token, body: { one_time_keys: { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } } } });
  assert.equal(Object.keys(claim.body.one_time_keys[alice.user_id][alice.device_id]).length, 1);
});

test('Rust crypto bootstraps cross-signing and key backup; resetting cross-signing goes through UIA', { timeout: 60_000 }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const client = await cryptoClient(alice);
  const crypto = client.getCrypto()!;
  await flushOutgoing(client);

  const uia = { challenges: 0 };
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(alice, uia) });
  assert.equal(uia.challenges, 0, 'the first upload needs no UIA');
  const status = await crypto.getCrossSigningStatus();
  assert.equal(status.publicKeysOnDevice, true);
  assert.equal(status.privateKeysCachedLocally.masterKey, true);

  const query = async (who: Login) => (await api(srv.url, 'POST', `${V3}/keys/query`, { token: who.access_token, body: { device_keys: { [alice.user_id]: [] } } })).body;
  const seen = await query(bob);
  const masterPub = Object.values(seen.master_keys[alice.user_id].keys)[0] as string;
  const sskPub = Object.values(seen.self_signing_keys[alice.user_id].keys)[0] as string;
  assert.equal(masterPub, await crypto.getCrossSigningKeyId());
  assert.ok(seen.device_keys[alice.user_id][alice.device_id].signatures[alice.user_id][`ed25519:${sskPub}`], 'the device is signed by the self-signing key');
  assert.deepEqual(seen.user_signing_keys, {});
  assert.ok((await query(alice)).user_signing_keys[alice.user_id], 'the owner sees her user-signing key');
  await crypto.userHasCrossSigningKeys(alice.user_id, true); // re-reads the user's own keys from the server
  const verification = await crypto.getDeviceVerificationStatus(alice.user_id, alice.device_id);
  assert.equal(verification?.crossSigningVerified, true);

  // Bob's machine sees Alice's cross-signing identity.
  const bobClient = await cryptoClient(bob);
  await bobClient.getCrypto()!.getUserDeviceInfo([alice.user_id], true);
  assert.equal(await bobClient.getCrypto()!.userHasCrossSigningKeys(alice.user_id, true), true);

  // Key backup: created, signed by the device and the master key, trusted by the client.
  await crypto.resetKeyBackup();
  // resetKeyBackup starts a backup check without awaiting it; wait for it as a sync loop would.
  const check = await crypto.checkKeyBackupAndEnable();
  const info = await crypto.getKeyBackupInfo();
  assert.ok(info?.version, 'the new backup is found');
  assert.equal(check?.backupInfo.version, info.version);
  const server = await api(srv.url, 'GET', `${V3}/room_keys/version`, { token: alice.access_token });
  assert.equal(server.body.version, info.version);
  assert.equal(server.body.algorithm, 'm.megolm_backup.v1.curve25519-aes-sha2');
  assert.ok(server.body.auth_data.signatures[alice.user_id][`ed25519:${masterPub}`], 'auth_data is signed by the master key');
  const trust = await crypto.isKeyBackupTrusted(info);
  assert.equal(trust.trusted, true);
  assert.equal(await crypto.getActiveSessionBackupVersion(), info.version);
  // Resetting again replaces the backup version.
  await crypto.resetKeyBackup();
  await crypto.checkKeyBackupAndEnable();
  assert.notEqual((await crypto.getKeyBackupInfo())?.version, info.version);
  assert.equal((await api(srv.url, 'GET', `${V3}/room_keys/version/${info.version}`, { token: alice.access_token })).status, 404, 'the old version was deleted');

  // New cross-signing keys replace existing ones: the server asks for the password.
  await crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: passwordUia(alice, uia) });
  assert.equal(uia.challenges, 1);
  const after = await query(bob);
  const newMaster = Object.values(after.master_keys[alice.user_id].keys)[0] as string;
  assert.notEqual(newMaster, masterPub);
  assert.equal(newMaster, await crypto.getCrossSigningKeyId());
});

test('Rust crypto sets up secret storage and a dehydrated device', { timeout: 60_000 }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const secretKeys = new Map<string, Uint8Array>();
  const client = await cryptoClient(alice, secretKeys);
  // Secret storage waits to see its m.secret_storage.* writes come back through /sync.
  await startSyncing(client);
  const crypto = client.getCrypto()!;
  await flushOutgoing(client);
  assert.equal(await crypto.isDehydrationSupported(), true);

  const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(alice, { challenges: 0 }) });
  await crypto.bootstrapSecretStorage({ createSecretStorageKey: async () => recoveryKey, setupNewSecretStorage: true });
  assert.equal(await crypto.isSecretStorageReady(), true);

  await crypto.startDehydration({ createNewKey: true });
  const got = await api(srv.url, 'GET', '/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device', { token: alice.access_token });
  assert.equal(got.status, 200, JSON.stringify(got.body));
  const dehydratedId = got.body.device_id as string;
  assert.equal(typeof got.body.device_data.algorithm, 'string');

  // Others see the dehydrated device's keys (it can receive room keys); the user's device list does not show it.
  const q = await api(srv.url, 'POST', `${V3}/keys/query`, { token: bob.access_token, body: { device_keys: { [alice.user_id]: [] } } });
  assert.ok(q.body.device_keys[alice.user_id][dehydratedId], 'the dehydrated device is published');
  assert.equal(q.body.device_keys[alice.user_id][dehydratedId].dehydrated, true);
  const listed = await api(srv.url, 'GET', `${V3}/devices`, { token: alice.access_token });
  assert.deepEqual(listed.body.devices.map((d: { device_id: string }) => d.device_id), [alice.device_id]);

  // A new device of the user rehydrates it and reads its (empty) inbox.
  const second = await cryptoClient(await loginDevice(srv.url, alice), secretKeys);
  await startSyncing(second);
  await flushOutgoing(second);
  const rehydrated = await (second.getCrypto() as unknown as { dehydratedDeviceManager: { rehydrateDeviceIfAvailable(): Promise<boolean> } })
    .dehydratedDeviceManager.rehydrateDeviceIfAvailable();
  assert.equal(rehydrated, true);
});
