// Send-to-device messaging and MSC3814 dehydrated devices over real HTTP; the /sync side is read
// through the functions the sync module will call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import { signJson, signingKeyFromSeed } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import type { StreamChange } from '../../src/sync/notifier.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const V3 = '/_matrix/client/v3';
const MSC3814 = '/_matrix/client/unstable/org.matrix.msc3814.v1';
type Login = Awaited<ReturnType<typeof registerUser>>;
const call = (who: Login, method: string, path: string, body?: unknown) => api(srv.url, method, path.startsWith('/_matrix') ? path : V3 + path, { token: who.access_token, body });
let txn = 0;
const send = (who: Login, type: string, messages: unknown, txnId = `t${txn++}`) => call(who, 'PUT', `/sendToDevice/${encodeURIComponent(type)}/${txnId}`, { messages });
const inbox = async (u: Login, deviceId = u.device_id) => {
  const e2ee = srv.hs.services.e2ee;
  return (await e2ee.toDeviceMessages(u.user_id, deviceId, 0, await e2ee.toDevice.currentPosition(), 1000)).events;
};

async function secondDevice(u: Login): Promise<Login> {
  const r = await api(srv.url, 'POST', `${V3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.user_id }, password: u.password } });
  assert.equal(r.status, 200);
  return { ...u, access_token: r.body.access_token, device_id: r.body.device_id };
}

test('to-device: delivery to one device, to `*`, idempotent per transaction id', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const bob2 = await secondDevice(bob);

  const woken: StreamChange[] = [];
  const unsubscribe = srv.hs.services.notifier.subscribe((c) => woken.push(c));
  let r = await send(alice, 'm.test', { [bob.user_id]: { [bob.device_id]: { n: 1 } } }, 'same-txn');
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body, {});
  unsubscribe();
  const change = woken.find((c) => c.stream === 'to_device');
  assert.ok(change && change.userIds?.includes(bob.user_id), 'recipients are woken after commit');

  // The retry delivers nothing new; the same txn id for another type, or from another device, is new.
  assert.equal((await send(alice, 'm.test', { [bob.user_id]: { [bob.device_id]: { n: 1 } } }, 'same-txn')).status, 200);
  assert.deepEqual(await inbox(bob), [{ sender: alice.user_id, type: 'm.test', content: { n: 1 } }]);
  await send(alice, 'm.other', { [bob.user_id]: { [bob.device_id]: { n: 2 } } }, 'same-txn');
  const alice2 = await secondDevice(alice);
  await send(alice2, 'm.test', { [bob.user_id]: { [bob.device_id]: { n: 3 } } }, 'same-txn');
  assert.deepEqual((await inbox(bob)).map((e) => e.content.n), [1, 2, 3]);
  assert.deepEqual(await inbox(bob2), []);

  // `*` reaches every device; an explicit entry overrides `*` for its device.
  await send(alice, 'm.all', { [bob.user_id]: { '*': { to: 'all' }, [bob2.device_id]: { to: 'bob2' } } });
  assert.deepEqual((await inbox(bob)).at(-1), { sender: alice.user_id, type: 'm.all', content: { to: 'all' } });
  assert.deepEqual(await inbox(bob2), [{ sender: alice.user_id, type: 'm.all', content: { to: 'bob2' } }]);

  // Unknown devices and users are dropped; remote users are accepted (federation comes later).
  r = await send(alice, 'm.test', { [bob.user_id]: { NOSUCHDEVICE: {} }, '@nobody:localhost': { X: {} }, '@carol:remote.example': { '*': {} } });
  assert.equal(r.status, 200);
  assert.equal((await inbox(bob)).length, 4);
});

test('to-device: paging with a limit and deleting what was delivered', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const e2ee = srv.hs.services.e2ee;
  const start = await e2ee.toDevice.currentPosition();
  for (let i = 0; i < 5; i++) await send(alice, 'm.seq', { [bob.user_id]: { [bob.device_id]: { i } } });
  const upTo = await e2ee.toDevice.currentPosition();

  const page1 = await e2ee.toDeviceMessages(bob.user_id, bob.device_id, start, upTo, 2);
  assert.deepEqual(page1.events.map((e) => e.content.i), [0, 1]);
  assert.equal(page1.limited, true);
  assert.ok(page1.position < upTo, 'a limited page stops before upTo');
  const page2 = await e2ee.toDeviceMessages(bob.user_id, bob.device_id, page1.position, upTo, 100);
  assert.deepEqual(page2.events.map((e) => e.content.i), [2, 3, 4]);
  assert.equal(page2.limited, false);
  assert.equal(page2.position, upTo);

  // The client synced past page1: those messages go, the rest stay.
  assert.equal(await e2ee.deleteToDeviceUpTo(bob.user_id, bob.device_id, page1.position), 2);
  assert.deepEqual((await inbox(bob)).map((e) => e.content.i), [2, 3, 4]);
  // Messages of a deleted device go with it.
  const bob2 = await secondDevice(bob);
  await send(alice, 'm.seq', { [bob.user_id]: { [bob2.device_id]: { i: 'x' } } });
  assert.equal((await inbox(bob2)).length, 1);
  assert.equal((await call(bob, 'POST', '/logout', {})).status, 200);
  assert.deepEqual(await inbox(bob), []);
});

test('to-device: bad requests', async () => {
  const alice = await registerUser(srv.url);
  assert.equal((await call(alice, 'PUT', '/sendToDevice/m.test/t1', {})).body.errcode, 'M_MISSING_PARAM');
  assert.equal((await call(alice, 'PUT', '/sendToDevice/m.test/t2', { messages: { [alice.user_id]: { D: 'string' } } })).body.errcode, 'M_BAD_JSON');
  assert.equal((await send(alice, 'm.test', { 'not-a-user': { D: {} } })).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await api(srv.url, 'PUT', `${V3}/sendToDevice/m.test/t3`, { body: { messages: {} } })).status, 401);
});

/** A dehydrated device as matrix-js-sdk uploads it: its id is its Curve25519 key. */
function dehydratedUpload(userId: string, name = 'Dehydrated device') {
  const curve = encodeBase64(randomBytes(32));
  const deviceId = curve;
  const key = signingKeyFromSeed(`ed25519:${deviceId}`, randomBytes(32));
  const device_keys = signJson({
    user_id: userId, device_id: deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'], dehydrated: true,
    keys: { [`curve25519:${deviceId}`]: curve, [`ed25519:${deviceId}`]: encodeBase64(key.publicKey) },
  }, userId, key);
  const otk = (id: string, extra = {}) => ({ [`signed_curve25519:${id}`]: signJson({ key: encodeBase64(randomBytes(32)), ...extra }, userId, key) });
  return {
    deviceId,
    body: {
      device_id: deviceId,
      device_data: { algorithm: 'org.matrix.msc3814.v1.olm', device_pickle: 'opaque' },
      initial_device_display_name: name,
      device_keys,
      one_time_keys: { ...otk('AAAAAQ'), ...otk('AAAAAg') },
      fallback_keys: otk('AAAAAw', { fallback: true }),
    },
  };
}

test('dehydrated device: put, get, keys visible, messages paged, replace, delete', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  let r = await call(alice, 'GET', `${MSC3814}/dehydrated_device`);
  assert.equal(r.status, 404);
  assert.equal(r.body.errcode, 'M_NOT_FOUND', 'M_NOT_FOUND tells clients the server supports dehydration');

  const d1 = dehydratedUpload(alice.user_id);
  r = await call(alice, 'PUT', `${MSC3814}/dehydrated_device`, d1.body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(r.body, { device_id: d1.deviceId });
  r = await call(alice, 'GET', `${MSC3814}/dehydrated_device`);
  assert.deepEqual(r.body, { device_id: d1.deviceId, device_data: d1.body.device_data });

  // Hidden from the device list, but its keys are published and claimable.
  assert.deepEqual((await call(alice, 'GET', '/devices')).body.devices.map((d: { device_id: string }) => d.device_id), [alice.device_id]);
  const q = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  const published = q.body.device_keys[alice.user_id][d1.deviceId];
  assert.equal(published.dehydrated, true);
  assert.equal(published.unsigned.device_display_name, 'Dehydrated device');
  const claimed = await call(bob, 'POST', '/keys/claim', { one_time_keys: { [alice.user_id]: { [d1.deviceId]: 'signed_curve25519' } } });
  assert.deepEqual(Object.keys(claimed.body.one_time_keys[alice.user_id][d1.deviceId]), ['signed_curve25519:AAAAAQ']);

  // To-device messages for it are paged by next_batch and not deleted by reading.
  for (let i = 0; i < 102; i++) await send(bob, 'm.room.encrypted', { [alice.user_id]: { [d1.deviceId]: { i } } });
  const events = (batch?: string) => call(alice, 'POST', `${MSC3814}/dehydrated_device/${encodeURIComponent(d1.deviceId)}/events`, batch ? { next_batch: batch } : {});
  const p1 = await events();
  assert.equal(p1.status, 200, JSON.stringify(p1.body));
  assert.equal(p1.body.events.length, 100);
  assert.deepEqual(p1.body.events[0], { sender: bob.user_id, type: 'm.room.encrypted', content: { i: 0 } });
  const p2 = await events(p1.body.next_batch);
  assert.deepEqual(p2.body.events.map((e: { content: { i: number } }) => e.content.i), [100, 101]);
  const p3 = await events(p2.body.next_batch);
  assert.deepEqual(p3.body.events, []);
  assert.equal(typeof p3.body.next_batch, 'string');
  assert.equal((await events()).body.events.length, 100, 'reading deletes nothing');
  r = await call(alice, 'POST', `${MSC3814}/dehydrated_device/${alice.device_id}/events`, {});
  assert.equal(r.status, 403);
  assert.equal(r.body.errcode, 'M_FORBIDDEN');
  assert.equal((await call(bob, 'POST', `${MSC3814}/dehydrated_device/${encodeURIComponent(d1.deviceId)}/events`, {})).status, 403);

  // A bad replacement changes nothing; a good one removes the old device, its keys and messages.
  const bad = dehydratedUpload(alice.user_id);
  r = await call(alice, 'PUT', `${MSC3814}/dehydrated_device`, { ...bad.body, device_keys: { ...bad.body.device_keys, device_id: 'OTHER' } });
  assert.equal(r.status, 400);
  assert.equal((await call(alice, 'GET', `${MSC3814}/dehydrated_device`)).body.device_id, d1.deviceId);
  assert.equal((await call(alice, 'PUT', `${MSC3814}/dehydrated_device`, { device_id: 'X' })).body.errcode, 'M_MISSING_PARAM');
  assert.equal((await call(alice, 'PUT', `${MSC3814}/dehydrated_device`, { ...bad.body, device_id: alice.device_id })).status, 400, 'an existing device id is not taken over');

  const d2 = dehydratedUpload(alice.user_id, 'second');
  assert.equal((await call(alice, 'PUT', `${MSC3814}/dehydrated_device`, d2.body)).status, 200);
  const q2 = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.deepEqual(Object.keys(q2.body.device_keys[alice.user_id]).sort(), [d2.deviceId].sort());
  assert.deepEqual(await inbox(alice, d1.deviceId), []);
  assert.deepEqual((await call(alice, 'GET', `${MSC3814}/dehydrated_device`)).body.device_id, d2.deviceId);

  r = await call(alice, 'DELETE', `${MSC3814}/dehydrated_device`);
  assert.deepEqual(r.body, { device_id: d2.deviceId });
  assert.equal((await call(alice, 'GET', `${MSC3814}/dehydrated_device`)).status, 404);
  assert.equal((await call(alice, 'DELETE', `${MSC3814}/dehydrated_device`)).status, 404);
  assert.deepEqual((await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.device_keys[alice.user_id], {});
  // Only the unstable prefix serves it.
  assert.equal((await call(alice, 'GET', '/org.matrix.msc3814.v1/dehydrated_device')).status, 404);
});
