// End-to-end encrypted messaging over real HTTP: matrix-js-sdk clients with the real Rust crypto
// (matrix-sdk-crypto-wasm), each syncing. Room keys travel as Olm-encrypted to-device messages,
// device changes through /sync device_lists, key counts through /sync; key backup is restored by a
// new device. Raw HTTP for the one-time key and to-device delivery details.
import 'fake-indexeddb/auto';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { MatrixEvent, type MatrixClient } from 'matrix-js-sdk';
import { decodeRecoveryKey } from 'matrix-js-sdk/lib/crypto-api/index.js';
import { UserId } from '@matrix-org/matrix-sdk-crypto-wasm';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import {
  cryptoClient, eventually, flushOutgoing, loginDevice, passwordUia, recordSyncResponses, startSyncing, unrefLongTimers, waitFor, waitForDecrypted,
  type Login,
} from '../sdk.js';
import { signJson, signingKeyFromSeed } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';

unrefLongTimers();

const WAIT = 30_000;
const TEST_TIMEOUT = 180_000;
const V3 = '/_matrix/client/v3';

let srv: TestServer;
const clients: MatrixClient[] = [];
before(async () => { srv = await startTestServer(); });
after(async () => {
  for (const c of clients) c.stopClient();
  await srv?.stop();
});

/** A device of `u` with the Rust crypto, syncing; resolves once its device keys are on the server. */
async function syncingDevice(u: Login, opts: Parameters<typeof cryptoClient>[2] = {}): Promise<MatrixClient> {
  const client = await cryptoClient(srv.url, u, opts);
  clients.push(client);
  await startSyncing(client);
  await keysOnServer(u);
  return client;
}

/** Waits until the device keys of `u`'s device are on the server. */
async function keysOnServer(u: Login): Promise<void> {
  await eventually(async () => {
    const q = await api(srv.url, 'POST', `${V3}/keys/query`, { token: u.access_token, body: { device_keys: { [u.user_id]: [u.device_id] } } });
    return q.body?.device_keys?.[u.user_id]?.[u.device_id];
  }, WAIT, `device keys of ${u.device_id} uploaded`);
}

function stop(client: MatrixClient): void {
  client.stopClient();
  clients.splice(clients.indexOf(client), 1);
}

/** Device ids of `userId` that `client`'s crypto knows (from its store: kept fresh by device_lists). */
async function knownDevices(client: MatrixClient, userId: string): Promise<string[]> {
  const map = await client.getCrypto()!.getUserDeviceInfo([userId]);
  return [...(map.get(userId)?.keys() ?? [])].sort();
}

const ENCRYPTION = { type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } };

/** A room with m.room.encryption in its initial state, created by `creator`, joined by `others`. */
async function encryptedRoom(creator: MatrixClient, others: MatrixClient[] = []): Promise<string> {
  const { room_id: roomId } = await creator.createRoom({ invite: others.map((o) => o.getUserId()!), initial_state: [ENCRYPTION] });
  for (const o of others) {
    await waitFor(o, () => o.getRoom(roomId)?.getMyMembership() === 'invite', WAIT, 'invite');
    await o.joinRoom(roomId);
  }
  for (const c of [creator, ...others]) {
    for (const o of [creator, ...others]) {
      await waitFor(c, () => c.getRoom(roomId)?.getMember(o.getUserId()!)?.membership === 'join', WAIT, `${c.getUserId()} sees ${o.getUserId()} joined`);
    }
    await eventually(() => c.getCrypto()!.isEncryptionEnabledInRoom(roomId), WAIT, 'the room is known to be encrypted');
  }
  return roomId;
}

/** Sends a text message and checks that the server only ever saw ciphertext. */
async function sendEncrypted(client: MatrixClient, roomId: string, body: string, viewer: Login): Promise<string> {
  const { event_id: eventId } = await client.sendTextMessage(roomId, body);
  const raw = await api(srv.url, 'GET', `${V3}/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`, { token: viewer.access_token });
  assert.equal(raw.status, 200, JSON.stringify(raw.body));
  assert.equal(raw.body.type, 'm.room.encrypted');
  assert.equal(raw.body.content.algorithm, 'm.megolm.v1.aes-sha2');
  assert.equal(typeof raw.body.content.ciphertext, 'string');
  assert.ok(!JSON.stringify(raw.body).includes(body), 'the server never sees the plaintext');
  return eventId;
}

async function assertDecrypts(client: MatrixClient, roomId: string, eventId: string, body: string, sender: string): Promise<MatrixEvent> {
  const ev = await waitForDecrypted(client, roomId, eventId, WAIT);
  assert.equal(ev.isEncrypted(), true);
  assert.equal(ev.isDecryptionFailure(), false);
  assert.equal(ev.getType(), 'm.room.message');
  assert.equal(ev.getSender(), sender);
  assert.deepEqual(ev.getClearContent(), { msgtype: 'm.text', body });
  return ev;
}

test('two users in an encrypted room read each other\'s messages', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const a = await syncingDevice(alice);
  const b = await syncingDevice(bob);
  const roomId = await encryptedRoom(a, [b]);

  const hello = await sendEncrypted(a, roomId, 'Hello Bob, this is secret ☂', bob);
  await assertDecrypts(b, roomId, hello, 'Hello Bob, this is secret ☂', alice.user_id);

  const reply = await sendEncrypted(b, roomId, 'Hi Alice, got it', alice);
  await assertDecrypts(a, roomId, reply, 'Hi Alice, got it', bob.user_id);
});

test('a second device of the recipient appears through device_lists and gets the room key', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const a = await syncingDevice(alice);
  const b1 = await syncingDevice(bob);
  const roomId = await encryptedRoom(a, [b1]);
  const first = await sendEncrypted(a, roomId, 'before the second device', bob);
  await assertDecrypts(b1, roomId, first, 'before the second device', alice.user_id);
  assert.deepEqual(await knownDevices(a, bob.user_id), [bob.device_id]);

  const bob2 = await loginDevice(srv.url, bob);
  const b2 = await syncingDevice(bob2);
  // Alice's client re-queries Bob's keys because /sync lists him in device_lists.changed.
  await eventually(async () => (await knownDevices(a, bob.user_id)).length === 2, WAIT, 'Alice\'s client knows Bob\'s second device');
  assert.deepEqual(await knownDevices(a, bob.user_id), [bob.device_id, bob2.device_id].sort());

  const second = await sendEncrypted(a, roomId, 'for both of your devices', bob);
  await assertDecrypts(b2, roomId, second, 'for both of your devices', alice.user_id);
  await assertDecrypts(b1, roomId, second, 'for both of your devices', alice.user_id);
});

test('the other user sees a new device through /sync device_lists.changed', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const a1 = await syncingDevice(alice);
  const bobClient = await cryptoClient(srv.url, bob);
  clients.push(bobClient);
  const bobSyncs = recordSyncResponses(bobClient);
  await startSyncing(bobClient);
  const roomId = await encryptedRoom(a1, [bobClient]);
  await eventually(async () => (await knownDevices(bobClient, alice.user_id)).length === 1, WAIT, 'Bob knows Alice\'s device');
  const seenBefore = bobSyncs.length;

  const alice2 = await loginDevice(srv.url, alice);
  const a2 = await syncingDevice(alice2);
  // Bob's raw /sync responses name Alice in device_lists.changed...
  await eventually(() => bobSyncs.slice(seenBefore).some((r) => (r.device_lists?.changed ?? []).includes(alice.user_id)), WAIT, 'device_lists.changed names Alice');
  // ...so his crypto re-downloads her keys and sees the new device.
  await eventually(async () => (await knownDevices(bobClient, alice.user_id)).length === 2, WAIT, 'Bob\'s client knows Alice\'s new device');
  assert.deepEqual(await knownDevices(bobClient, alice.user_id), [alice.device_id, alice2.device_id].sort());
  for (const r of bobSyncs.slice(seenBefore)) assert.ok(!(r.device_lists?.left ?? []).includes(alice.user_id));

  // The new device gets the room key of Bob's next message.
  const msg = await sendEncrypted(bobClient, roomId, 'welcome, new device', alice);
  await assertDecrypts(a2, roomId, msg, 'welcome, new device', bob.user_id);
  await assertDecrypts(a1, roomId, msg, 'welcome, new device', bob.user_id);
});

test('a new device restores room keys from the key backup and decrypts old messages', { timeout: TEST_TIMEOUT }, async () => {
  const alice = await registerUser(srv.url);
  const secretKeys = new Map<string, Uint8Array>();
  const a1 = await syncingDevice(alice, { secretStorageKeys: secretKeys });
  const crypto = a1.getCrypto()!;

  const recoveryKey = await crypto.createRecoveryKeyFromPassphrase();
  await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: passwordUia(alice) });
  // Secret storage waits to see its account data come back through /sync.
  await crypto.bootstrapSecretStorage({ createSecretStorageKey: async () => recoveryKey, setupNewSecretStorage: true });
  await crypto.resetKeyBackup();
  await crypto.checkKeyBackupAndEnable();
  const version = await eventually(() => crypto.getActiveSessionBackupVersion(), WAIT, 'backup enabled');
  assert.equal((await api(srv.url, 'GET', `${V3}/room_keys/version`, { token: alice.access_token })).body.version, version);

  const roomId = await encryptedRoom(a1);
  const old = await sendEncrypted(a1, roomId, 'remember this later', alice);
  const sessionId = (await api(srv.url, 'GET', `${V3}/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(old)}`, { token: alice.access_token })).body.content.session_id as string;
  // The client uploads the room key to the backup (after a random delay of up to 10 s).
  const backedUp = await eventually(async () => {
    const r = await api(srv.url, 'GET', `${V3}/room_keys/keys?version=${version}`, { token: alice.access_token });
    return r.body?.rooms?.[roomId]?.sessions?.[sessionId];
  }, WAIT, 'the room key is in the backup');
  assert.equal(typeof backedUp.session_data.ciphertext, 'string');
  assert.equal(typeof backedUp.first_message_index, 'number');
  // The old device is gone: nothing can forward the key but the backup.
  stop(a1);

  // A new login with a fresh crypto store; the user types in the recovery key.
  const alice2 = await loginDevice(srv.url, alice);
  const a2 = await syncingDevice(alice2, { recoveryKey: decodeRecoveryKey(recoveryKey.encodedPrivateKey!) });
  const c2 = a2.getCrypto()!;
  const messages = await api(srv.url, 'GET', `${V3}/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=50`, { token: alice2.access_token });
  const rawOld = (messages.body.chunk as { event_id: string }[]).find((e) => e.event_id === old);
  assert.ok(rawOld, 'the old message is in /messages');
  const before = new MatrixEvent(structuredClone(rawOld) as never);
  await a2.decryptEventIfNeeded(before);
  assert.equal(before.isDecryptionFailure(), true, 'no key yet');

  await c2.loadSessionBackupPrivateKeyFromSecretStorage();
  const restored = await c2.restoreKeyBackup();
  assert.ok(restored.imported >= 1, JSON.stringify(restored));
  assert.equal(restored.total, restored.imported);

  // Fetched through /messages...
  const fetched = new MatrixEvent(structuredClone(rawOld) as never);
  await a2.decryptEventIfNeeded(fetched);
  assert.equal(fetched.isDecryptionFailure(), false, String(fetched.decryptionFailureReason));
  assert.deepEqual(fetched.getClearContent(), { msgtype: 'm.text', body: 'remember this later' });
  // ...and in the timeline of the synced room.
  await assertDecrypts(a2, roomId, old, 'remember this later', alice.user_id);
});

/** Device keys and signed one-time/fallback keys of a device that is only raw HTTP. */
function rawDevice(userId: string, deviceId: string) {
  const key = signingKeyFromSeed(`ed25519:${deviceId}`, randomBytes(32));
  const deviceKeys = signJson({
    user_id: userId, device_id: deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${deviceId}`]: encodeBase64(randomBytes(32)), [`ed25519:${deviceId}`]: encodeBase64(key.publicKey) },
  }, userId, key);
  const otks = (ids: string[], extra: Record<string, unknown> = {}) =>
    Object.fromEntries(ids.map((id) => [`signed_curve25519:${id}`, signJson({ key: encodeBase64(randomBytes(32)), ...extra }, userId, key)]));
  return { deviceKeys, otks };
}

test('one-time keys run out: claims fall back to the fallback key, and /sync says so', { timeout: TEST_TIMEOUT }, async () => {
  const x = await registerUser(srv.url);
  const claimers = [await registerUser(srv.url), await registerUser(srv.url)];
  const d = rawDevice(x.user_id, x.device_id);
  const up = await api(srv.url, 'POST', `${V3}/keys/upload`, {
    token: x.access_token,
    body: { device_keys: d.deviceKeys, one_time_keys: d.otks(['AAAAAQ', 'AAAAAg', 'AAAAAw']), fallback_keys: d.otks(['AAAAFB'], { fallback: true }) },
  });
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.deepEqual(up.body.one_time_key_counts, { signed_curve25519: 3 });

  const sync = async (since?: string, timeout = 0) => {
    const r = await api(srv.url, 'GET', `${V3}/sync?timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ''}`, { token: x.access_token });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const initial = await sync();
  assert.deepEqual(initial.device_one_time_keys_count, { signed_curve25519: 3 });
  assert.deepEqual(initial.device_unused_fallback_key_types, ['signed_curve25519']);

  const claim = async (by: Login) => {
    const r = await api(srv.url, 'POST', `${V3}/keys/claim`, { token: by.access_token, body: { one_time_keys: { [x.user_id]: { [x.device_id]: 'signed_curve25519' } } } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body.one_time_keys[x.user_id]?.[x.device_id] as Record<string, { key: string; fallback?: boolean }>;
  };
  const claimed: string[] = [];
  for (let i = 0; i < 3; i++) {
    const got = await claim(claimers[i % 2]);
    assert.equal(Object.keys(got).length, 1);
    const [id, k] = Object.entries(got)[0];
    assert.equal(k.fallback, undefined, 'a one-time key while any is left');
    claimed.push(id);
  }
  assert.deepEqual(claimed.sort(), ['signed_curve25519:AAAAAQ', 'signed_curve25519:AAAAAg', 'signed_curve25519:AAAAAw']);
  const fallback = await claim(claimers[1]);
  assert.deepEqual(Object.keys(fallback), ['signed_curve25519:AAAAFB']);
  assert.equal(fallback['signed_curve25519:AAAAFB'].fallback, true);

  // X's next sync: nothing to wait for, and a long-poll that times out, both carry the counts.
  const next = await sync(initial.next_batch);
  assert.deepEqual(next.device_one_time_keys_count, { signed_curve25519: 0 });
  assert.ok(!next.device_unused_fallback_key_types.includes('signed_curve25519'), JSON.stringify(next.device_unused_fallback_key_types));
  const polled = await sync(next.next_batch, 300);
  assert.equal(polled.device_one_time_keys_count?.signed_curve25519, 0, JSON.stringify(polled));
  assert.deepEqual(polled.device_unused_fallback_key_types, [], JSON.stringify(polled));

  // A new fallback key (and one-time keys) show up again.
  await api(srv.url, 'POST', `${V3}/keys/upload`, { token: x.access_token, body: { one_time_keys: d.otks(['AAAABA']), fallback_keys: d.otks(['AAAAFC'], { fallback: true }) } });
  const again = await sync(polled.next_batch);
  assert.deepEqual(again.device_one_time_keys_count, { signed_curve25519: 1 });
  assert.deepEqual(again.device_unused_fallback_key_types, ['signed_curve25519']);
});

test('an encrypted to-device message reaches the other device\'s /sync exactly once', { timeout: TEST_TIMEOUT }, async () => {
  const sender = await registerUser(srv.url);
  const recipient = await registerUser(srv.url);
  // Both devices have real Olm identities; neither syncs through the SDK (the recipient's /sync is raw).
  const s = await cryptoClient(srv.url, sender);
  const r = await cryptoClient(srv.url, recipient);
  clients.push(s, r);
  await flushOutgoing(s);
  await flushOutgoing(r);
  await keysOnServer(sender);
  await keysOnServer(recipient);

  const sync = async (since?: string, timeout = 0) => {
    const res = await api(srv.url, 'GET', `${V3}/sync?timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ''}`, { token: recipient.access_token });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body;
  };
  const t0 = (await sync()).next_batch as string;

  // The sender's machine tracks the recipient (as it would a room member) and downloads their keys.
  const machine = (s.getCrypto() as unknown as { olmMachine: { updateTrackedUsers(u: UserId[]): Promise<unknown> } }).olmMachine;
  await machine.updateTrackedUsers([new UserId(recipient.user_id)]);
  await flushOutgoing(s);
  assert.ok((await s.getCrypto()!.getUserDeviceInfo([recipient.user_id])).get(recipient.user_id)?.get(recipient.device_id), 'the sender knows the device');
  const batch = await s.getCrypto()!.encryptToDeviceMessages('org.example.secret', [{ userId: recipient.user_id, deviceId: recipient.device_id }], { note: 'for your eyes only' });
  assert.equal(batch.eventType, 'm.room.encrypted');
  assert.equal(batch.batch.length, 1);
  const payload = batch.batch[0].payload;
  const sent = await api(srv.url, 'PUT', `${V3}/sendToDevice/m.room.encrypted/${randomBytes(8).toString('hex')}`, {
    token: sender.access_token, body: { messages: { [recipient.user_id]: { [recipient.device_id]: payload } } },
  });
  assert.equal(sent.status, 200, JSON.stringify(sent.body));

  // Long-poll from t0: woken by the message.
  const first = await sync(t0, WAIT);
  assert.equal(first.to_device.events.length, 1, JSON.stringify(first.to_device));
  const ev = first.to_device.events[0];
  assert.equal(ev.type, 'm.room.encrypted');
  assert.equal(ev.sender, sender.user_id);
  assert.deepEqual(ev.content, payload);
  assert.equal(ev.content.algorithm, 'm.olm.v1.curve25519-aes-sha2');
  assert.ok(!JSON.stringify(ev).includes('for your eyes only'));

  // The response was lost: the client syncs with the same token and gets the message again.
  const retry = await sync(t0);
  assert.deepEqual(retry.to_device.events, [ev]);

  // Synced with the later token: delivered, acknowledged, gone for good.
  const later = await sync(first.next_batch);
  assert.deepEqual(later.to_device.events, []);
  const polled = await sync(later.next_batch, 300);
  assert.deepEqual(polled.to_device.events, []);
  assert.deepEqual((await sync(t0)).to_device.events, [], 'acknowledged messages are deleted');

  // And it is a real Olm message: the recipient's Rust crypto decrypts it (once it knows the sender's device).
  const recipientMachine = (r.getCrypto() as unknown as { olmMachine: { updateTrackedUsers(u: UserId[]): Promise<unknown> } }).olmMachine;
  await recipientMachine.updateTrackedUsers([new UserId(sender.user_id)]);
  await flushOutgoing(r);
  const rustCrypto = r.getCrypto() as unknown as { preprocessToDeviceMessages(events: unknown[]): Promise<{ type: string; sender: string; content: Record<string, unknown> }[]> };
  const decrypted = await rustCrypto.preprocessToDeviceMessages([ev]);
  assert.equal(decrypted.length, 1);
  assert.equal(decrypted[0].type, 'org.example.secret');
  assert.equal(decrypted[0].sender, sender.user_id);
  assert.equal(decrypted[0].content.note, 'for your eyes only');
});
