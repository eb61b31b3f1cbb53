// EDUs and keys across servers over TLS: typing, receipts, presence, device-list updates, signing-key
// updates, /keys/query and /keys/claim for remote users, to-device messages, and EDUs that speak for
// users of another server (ignored).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer, eventually, clientApi, registerUser } from '../federation-harness.js';
import { signJson, signingKeyFromSeed } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { crossKey } from '../e2ee-fixtures.js';

let fed: Federation;
before(async () => {
  fed = await startFederation(3);
});
after(async () => {
  await fed?.stop();
  await closeFedAgents();
});

const enc = encodeURIComponent;
const capi = (s: FedServer, method: string, p: string, opts: { token?: string; body?: unknown; prefix?: string } = {}) => clientApi(fed.ca, s, method, p, opts);
const user = (s: FedServer, name: string) => registerUser(fed.ca, s, name);
interface User { user_id: string; access_token: string; device_id: string }




/** Incremental /syncs from `since` until `pick` finds something; returns it and the next token. */
async function syncUntil<T>(s: FedServer, u: User, since: string | undefined, what: string, pick: (body: any) => T | undefined | false): Promise<{ value: T; next: string }> {
  let next = since;
  const until = Date.now() + 20_000;
  for (;;) {
    const r = await capi(s, 'GET', `/sync?timeout=1000${next ? `&since=${enc(next)}` : ''}`, { token: u.access_token });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const v = pick(r.body);
    if (v) return { value: v, next: r.body.next_batch };
    next = r.body.next_batch;
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
  }
}

async function syncToken(s: FedServer, u: User): Promise<string> {
  return (await capi(s, 'GET', '/sync?timeout=0', { token: u.access_token })).body.next_batch;
}

/** alice (on `a`) creates a public room; bob (on `b`) joins it; both servers see the join. */
async function sharedRoom(a: FedServer, alice: User, b: FedServer, bob: User): Promise<string> {
  const created = await capi(a, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'public_chat' } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id as string;
  const join = await capi(b, 'POST', `/join/${enc(roomId)}?server_name=${a.serverName}`, { token: bob.access_token, body: {} });
  assert.equal(join.status, 200, JSON.stringify(join.body));
  await eventually('the room\'s server sees the join', async () => (await capi(a, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token })).body.joined?.[bob.user_id]);
  return roomId;
}

type Signatures = Record<string, Record<string, string>>;

/** A device's signed identity keys and a signer for its one-time keys. */
function deviceKeys(userId: string, deviceId: string) {
  const key = signingKeyFromSeed(`ed25519:${deviceId}`, randomBytes(32));
  const keys = signJson({
    user_id: userId, device_id: deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${deviceId}`]: encodeBase64(randomBytes(32)), [`ed25519:${deviceId}`]: encodeBase64(key.publicKey) },
  }, userId, key) as unknown as { keys: Record<string, string>; signatures: Signatures; [k: string]: unknown };
  const otks = (ids: string[]) => Object.fromEntries(ids.map((id) => [`signed_curve25519:${id}`, signJson({ key: encodeBase64(randomBytes(32)) }, userId, key)]));
  return { key, keys, otks };
}

/** A signed transaction from `from` to `to`, as its federation sender would send it. */
async function sendEdus(from: FedServer, to: FedServer, edus: { edu_type: string; content: Record<string, unknown> }[]) {
  const txnId = `t${randomBytes(6).toString('hex')}`;
  await from.hs.services.federationClient.request(to.serverName, 'PUT', `/_matrix/federation/v1/send/${txnId}`, {
    body: { origin: from.serverName, origin_server_ts: Date.now(), pdus: [], edus },
  });
}

test('typing reaches the other server, and stops', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(hs1, alice, hs2, bob);
  const since = await syncToken(hs2, bob);
  const t = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`, { token: alice.access_token, body: { typing: true, timeout: 30_000 } });
  assert.equal(t.status, 200, JSON.stringify(t.body));
  const typingOf = (body: any) => body.rooms?.join?.[roomId]?.ephemeral?.events?.find((e: any) => e.type === 'm.typing')?.content.user_ids as string[] | undefined;
  const seen = await syncUntil(hs2, bob, since, 'bob sees alice typing', (b) => typingOf(b)?.includes(alice.user_id));
  await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/typing/${enc(alice.user_id)}`, { token: alice.access_token, body: { typing: false } });
  await syncUntil(hs2, bob, seen.next, 'bob sees alice stop typing', (b) => { const u = typingOf(b); return u !== undefined && !u.includes(alice.user_id); });
  // And the other way round.
  const since1 = await syncToken(hs1, alice);
  await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/typing/${enc(bob.user_id)}`, { token: bob.access_token, body: { typing: true, timeout: 30_000 } });
  await syncUntil(hs1, alice, since1, 'alice sees bob typing', (b) => typingOf(b)?.includes(bob.user_id));
});

test('public read receipts reach the other server; private ones do not', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(hs1, alice, hs2, bob);
  const sent = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/r1`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'read me' } });
  const eventId = sent.body.event_id as string;
  await eventually('bob has the message', async () => (await capi(hs2, 'GET', `/rooms/${enc(roomId)}/event/${enc(eventId)}`, { token: bob.access_token })).status === 200);
  const since = await syncToken(hs1, alice);
  assert.equal((await capi(hs2, 'POST', `/rooms/${enc(roomId)}/receipt/m.read.private/${enc(eventId)}`, { token: bob.access_token, body: {} })).status, 200);
  assert.equal((await capi(hs2, 'POST', `/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, { token: bob.access_token, body: {} })).status, 200);
  const { value } = await syncUntil(hs1, alice, since, 'alice sees bob\'s receipt', (b) => {
    const r = b.rooms?.join?.[roomId]?.ephemeral?.events?.find((e: any) => e.type === 'm.receipt');
    return r?.content?.[eventId]?.['m.read']?.[bob.user_id];
  });
  assert.equal(typeof (value as { ts?: unknown }).ts, 'number');
  const room = await hs1.hs.services.roomData.room(roomId);
  const stored = await hs1.hs.services.syncStore.receiptsOfUser(bob.user_id, [room!.nid]);
  assert.deepEqual(stored.map((r) => r.receipt_type), ['m.read'], 'the private receipt stayed on hs2');
});

test('presence of a user reaches servers sharing a room', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  await sharedRoom(hs1, alice, hs2, bob);
  const since = await syncToken(hs1, alice);
  const p = await capi(hs2, 'PUT', `/presence/${enc(bob.user_id)}/status`, { token: bob.access_token, body: { presence: 'online', status_msg: 'on hs2' } });
  assert.equal(p.status, 200, JSON.stringify(p.body));
  const { value } = await syncUntil(hs1, alice, since, 'alice sees bob\'s presence', (b) =>
    b.presence?.events?.find((e: any) => e.sender === bob.user_id && e.content.status_msg === 'on hs2'));
  assert.equal((value as any).content.presence, 'online');
  const status = await capi(hs1, 'GET', `/presence/${enc(bob.user_id)}/status`, { token: alice.access_token });
  assert.equal(status.body.presence, 'online');
  assert.equal(status.body.status_msg, 'on hs2');
});

test('device lists: a new device, its keys, cross-signing keys and deletion reach the other server', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  await sharedRoom(hs1, alice, hs2, bob);
  const first = deviceKeys(bob.user_id, bob.device_id);
  assert.equal((await capi(hs2, 'POST', '/keys/upload', { token: bob.access_token, body: { device_keys: first.keys } })).status, 200);

  // alice queries bob's keys through hs1; hs1 starts tracking bob's device list.
  const q1 = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [] } } });
  assert.equal(q1.status, 200, JSON.stringify(q1.body));
  assert.deepEqual(q1.body.failures, {});
  assert.deepEqual(q1.body.device_keys[bob.user_id][bob.device_id].keys, first.keys.keys);
  assert.deepEqual(q1.body.device_keys[bob.user_id][bob.device_id].signatures, first.keys.signatures);
  const store1 = hs1.hs.services.federationEdusStore;
  await eventually('hs1 tracks bob', async () => (await store1.remoteDevices([bob.user_id])).some((d) => d.device_id === bob.device_id && d.keys));

  // A tracked list answers from the cache: no request to hs2.
  const client = hs1.hs.services.federationClient;
  const realRequest = client.request.bind(client);
  const paths: string[] = [];
  client.request = (async (dest: string, method: string, p: string, o?: unknown) => {
    paths.push(p);
    return realRequest(dest, method, p, o as never);
  }) as typeof client.request;
  // (A forwarding wrapper: harmless if a failed assertion leaves it in place.)
  const q2 = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [] } } });
  assert.deepEqual(q2.body.device_keys[bob.user_id], q1.body.device_keys[bob.user_id]);
  assert.ok(!paths.some((p) => p.includes('/user/keys/query')), `cache used, not ${paths.join(', ')}`);

  // bob logs in on a new device: alice's /sync on hs1 says bob's devices changed.
  let since = await syncToken(hs1, alice);
  const login = await capi(hs2, 'POST', '/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: bob.user_id }, password: 'pw' } });
  assert.equal(login.status, 200, JSON.stringify(login.body));
  const phone = login.body.device_id as string;
  since = (await syncUntil(hs1, alice, since, 'alice sees bob\'s new device', (b) => b.device_lists?.changed?.includes(bob.user_id))).next;
  const second = deviceKeys(bob.user_id, phone);
  assert.equal((await capi(hs2, 'POST', '/keys/upload', { token: login.body.access_token, body: { device_keys: second.keys } })).status, 200);
  since = (await syncUntil(hs1, alice, since, 'alice sees bob\'s new device keys', (b) => b.device_lists?.changed?.includes(bob.user_id))).next;
  await eventually('hs1 has the new device keys', async () => {
    const q = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [] } } });
    return q.body.device_keys[bob.user_id]?.[phone]?.keys?.[`ed25519:${phone}`] === second.keys.keys[`ed25519:${phone}`];
  });

  // Cross-signing keys: an m.signing_key_update.
  const master = crossKey(bob.user_id, 'master');
  const ssk = crossKey(bob.user_id, 'self_signing', master.key);
  const cs = await capi(hs2, 'POST', '/keys/device_signing/upload', { token: bob.access_token, body: { master_key: master.json, self_signing_key: ssk.json } });
  assert.equal(cs.status, 200, JSON.stringify(cs.body));
  since = (await syncUntil(hs1, alice, since, 'alice sees bob\'s cross-signing change', (b) => b.device_lists?.changed?.includes(bob.user_id))).next;
  await eventually('hs1 returns bob\'s master key', async () => {
    const q = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [] } } });
    return q.body.master_keys?.[bob.user_id]?.keys?.[`ed25519:${master.pub}`] === master.pub && q.body.self_signing_keys?.[bob.user_id]?.keys?.[`ed25519:${ssk.pub}`] === ssk.pub;
  });

  // The device is deleted: gone from hs1's answer too.
  const del = await capi(hs2, 'POST', '/delete_devices', { token: bob.access_token, body: { devices: [phone], auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: bob.user_id }, password: 'pw' } } });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  await syncUntil(hs1, alice, since, 'alice sees bob\'s device removed', (b) => b.device_lists?.changed?.includes(bob.user_id));
  await eventually('hs1 forgets the deleted device', async () => {
    const q = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [] } } });
    return q.body.device_keys[bob.user_id] && !q.body.device_keys[bob.user_id][phone] && q.body.device_keys[bob.user_id][bob.device_id];
  });
  // hs1 followed bob's updates in order, up to hs2's latest stream_id for bob.
  const latest = await hs2.hs.services.federationEdusStore.outboundDeviceStream(bob.user_id);
  assert.ok(latest >= 3, `stream ${latest}`);
  await eventually('hs1 is at hs2\'s stream_id', async () => Number((await store1.remoteDeviceLists([bob.user_id]))[0]?.stream_id) === latest);
  // ... one update at a time: no resync, no key query went to hs2 after tracking began.
  client.request = realRequest as typeof client.request;
  assert.deepEqual(paths.filter((p) => p.includes('/user/')), []);
});

test('/keys/query and /keys/claim for users of another server; unreachable servers are failures', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  // No shared room: answered by hs2 every time.
  const d = deviceKeys(bob.user_id, bob.device_id);
  const up = await capi(hs2, 'POST', '/keys/upload', { token: bob.access_token, body: { device_keys: d.keys, one_time_keys: d.otks(['AAAAAQ', 'AAAAAg']) } });
  assert.equal(up.status, 200, JSON.stringify(up.body));
  const q = await capi(hs1, 'POST', '/keys/query', { token: alice.access_token, body: { device_keys: { [bob.user_id]: [], '@nobody:127.0.0.1:1': [] }, timeout: 5000 } });
  assert.equal(q.status, 200, JSON.stringify(q.body));
  assert.deepEqual(q.body.device_keys[bob.user_id][bob.device_id].keys, d.keys.keys);
  assert.ok(q.body.failures['127.0.0.1:1'], JSON.stringify(q.body.failures));

  const c1 = await capi(hs1, 'POST', '/keys/claim', { token: alice.access_token, body: { one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } } } });
  assert.equal(c1.status, 200, JSON.stringify(c1.body));
  const k1 = Object.keys(c1.body.one_time_keys[bob.user_id][bob.device_id]);
  const c2 = await capi(hs1, 'POST', '/keys/claim', { token: alice.access_token, body: { one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } } } });
  const k2 = Object.keys(c2.body.one_time_keys[bob.user_id][bob.device_id]);
  assert.deepEqual([...k1, ...k2].sort(), ['signed_curve25519:AAAAAQ', 'signed_curve25519:AAAAAg']);
  const c3 = await capi(hs1, 'POST', '/keys/claim', { token: alice.access_token, body: { one_time_keys: { [bob.user_id]: { [bob.device_id]: 'signed_curve25519' } } } });
  assert.deepEqual(c3.body.one_time_keys, {}, 'each key is handed out once');
  const counts = await capi(hs2, 'POST', '/keys/upload', { token: bob.access_token, body: {} });
  assert.equal(counts.body.one_time_key_counts.signed_curve25519, 0);
  const cf = await capi(hs1, 'POST', '/keys/claim', { token: alice.access_token, body: { one_time_keys: { '@nobody:127.0.0.1:1': { X: 'signed_curve25519' } }, timeout: 5000 } });
  assert.ok(cf.body.failures['127.0.0.1:1'], JSON.stringify(cf.body));

  // The federation endpoints answer for local users only.
  const fq = await hs1.hs.services.federationClient.request<any>(hs2.serverName, 'POST', '/_matrix/federation/v1/user/keys/query', { body: { device_keys: { [bob.user_id]: [], [alice.user_id]: [] } } });
  assert.deepEqual(Object.keys(fq.device_keys), [bob.user_id]);
  const devices = await hs1.hs.services.federationClient.request<any>(hs2.serverName, 'GET', `/_matrix/federation/v1/user/devices/${enc(bob.user_id)}`);
  assert.equal(devices.user_id, bob.user_id);
  assert.equal(typeof devices.stream_id, 'number');
  assert.deepEqual(devices.devices.map((x: any) => x.device_id), [bob.device_id]);
  assert.equal(devices.devices[0].keys.unsigned?.device_display_name, undefined, 'display names stay home');
});

test('to-device messages to users of another server, delivered once', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const since = await syncToken(hs2, bob);
  const s1 = await capi(hs1, 'PUT', '/sendToDevice/m.test.direct/tx1', { token: alice.access_token, body: { messages: { [bob.user_id]: { [bob.device_id]: { n: 1 } } } } });
  assert.equal(s1.status, 200, JSON.stringify(s1.body));
  await capi(hs1, 'PUT', '/sendToDevice/m.test.star/tx2', { token: alice.access_token, body: { messages: { [bob.user_id]: { '*': { n: 2 } } } } });
  const seen: any[] = [];
  await syncUntil(hs2, bob, since, 'bob gets both messages', (b) => {
    seen.push(...(b.to_device?.events ?? []));
    return seen.some((e) => e.type === 'm.test.star');
  });
  assert.deepEqual(seen.map((e) => [e.sender, e.type, e.content.n]), [[alice.user_id, 'm.test.direct', 1], [alice.user_id, 'm.test.star', 2]]);

  // The same message id twice (a resent EDU) is delivered once.
  const since2 = await syncToken(hs2, bob);
  const edu = { edu_type: 'm.direct_to_device', content: { sender: alice.user_id, type: 'm.test.dup', message_id: `dup${Date.now()}`, messages: { [bob.user_id]: { '*': { n: 3 } } } } };
  await sendEdus(hs1, hs2, [edu]);
  await sendEdus(hs1, hs2, [edu]);
  await sendEdus(hs1, hs2, [{ edu_type: 'm.direct_to_device', content: { sender: alice.user_id, type: 'm.test.marker', message_id: `m${Date.now()}`, messages: { [bob.user_id]: { '*': {} } } } }]);
  const later: any[] = [];
  await syncUntil(hs2, bob, since2, 'bob gets the marker', (b) => {
    later.push(...(b.to_device?.events ?? []));
    return later.some((e) => e.type === 'm.test.marker');
  });
  assert.equal(later.filter((e) => e.type === 'm.test.dup').length, 1);
});

test('EDUs about users of another server than the origin are ignored', async () => {
  const [hs1, hs2, hs3] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(hs1, alice, hs2, bob);
  const since = await syncToken(hs2, bob);
  // hs3 speaks for alice (of hs1): typing, presence, a to-device message, a device list update.
  await sendEdus(hs3, hs2, [
    { edu_type: 'm.typing', content: { room_id: roomId, user_id: alice.user_id, typing: true } },
    { edu_type: 'm.presence', content: { push: [{ user_id: alice.user_id, presence: 'online', status_msg: 'spoofed', last_active_ago: 0 }] } },
    { edu_type: 'm.direct_to_device', content: { sender: alice.user_id, type: 'm.test.spoof', message_id: 'spoof1', messages: { [bob.user_id]: { '*': {} } } } },
    { edu_type: 'm.device_list_update', content: { user_id: alice.user_id, device_id: 'EVIL', stream_id: 1000, prev_id: [] } },
    { edu_type: 'm.receipt', content: { [roomId]: { 'm.read': { [alice.user_id]: { event_ids: ['$x'], data: { ts: 1 } } } } } },
  ]);
  // Then a legitimate message from hs3; everything before it in the transaction was handled.
  await sendEdus(hs3, hs2, [{ edu_type: 'm.direct_to_device', content: { sender: `@carol:${hs3.serverName}`, type: 'm.test.marker', message_id: `m${Date.now()}`, messages: { [bob.user_id]: { '*': {} } } } }]);
  const events: any[] = [];
  let body: any;
  await syncUntil(hs2, bob, since, 'bob gets the marker', (b) => {
    events.push(...(b.to_device?.events ?? []));
    body = b;
    return events.some((e) => e.type === 'm.test.marker');
  });
  assert.ok(!events.some((e) => e.type === 'm.test.spoof'));
  const full = await capi(hs2, 'GET', '/sync?timeout=0', { token: bob.access_token });
  const typing = full.body.rooms.join[roomId].ephemeral.events.find((e: any) => e.type === 'm.typing');
  assert.ok(!typing?.content.user_ids.includes(alice.user_id), 'no spoofed typing');
  assert.ok(!full.body.presence.events.some((e: any) => e.content.status_msg === 'spoofed'), 'no spoofed presence');
  assert.deepEqual(await hs2.hs.services.federationEdusStore.remoteDevices([alice.user_id]), []);
  void body;
});
