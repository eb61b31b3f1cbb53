// Rooms across servers over TLS: joins through a resident server, messages both ways, invites,
// leaves, and hostile input rejected.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer, eventually, clientApi, registerUser } from '../federation-harness.js';

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




async function bodies(s: FedServer, token: string, roomId: string): Promise<string[]> {
  const r = await capi(s, 'GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token });
  if (r.status !== 200) return [];
  return r.body.chunk.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body).reverse();
}

for (const version of ['10', '12']) {
  test(`room v${version}: remote join, messages both ways, third server, leave`, async () => {
    const [hs1, hs2, hs3] = fed.servers;
    const alice = await user(hs1, 'alice');
    const bob = await user(hs2, 'bob');
    const carol = await user(hs3, 'carol');
    const created = await capi(hs1, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'public_chat', name: 'Federated', room_version: version, room_alias_name: `fed${version}${Date.now()}` } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const roomId = created.body.room_id;
    await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/a1`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'before bob' } });

    const join = await fedApi(fed.ca, hs2, 'POST', `/_matrix/client/v3/join/${enc(roomId)}?server_name=${hs1.serverName}`, { body: {}, headers: { authorization: `Bearer ${bob.access_token}` } });
    assert.equal(join.status, 200, JSON.stringify(join.body));
    // hs1 sees bob joined.
    await eventually('hs1 sees bob', async () => {
      const m = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token });
      return m.body.joined?.[bob.user_id];
    });
    // bob sees the room name and history from hs2.
    const name = await capi(hs2, 'GET', `/rooms/${enc(roomId)}/state/m.room.name`, { token: bob.access_token });
    assert.deepEqual(name.body, { name: 'Federated' });
    // bob's first /sync on hs2 carries the room's state before his join (from send_join).
    const first = await capi(hs2, 'GET', '/sync', { token: bob.access_token });
    const joinedRoom = first.body.rooms.join[roomId];
    const stateTypes = joinedRoom.state.events.map((e: any) => e.type);
    for (const t of ['m.room.create', 'm.room.name', 'm.room.power_levels', 'm.room.join_rules']) assert.ok(stateTypes.includes(t), `${t} in the first /sync (got ${stateTypes})`);
    assert.ok(joinedRoom.state.events.some((e: any) => e.type === 'm.room.member' && e.state_key === alice.user_id));

    await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/a2`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'hello bob' } });
    await eventually('bob gets the message', async () => (await bodies(hs2, bob.access_token, roomId)).includes('hello bob'));
    await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/b1`, { token: bob.access_token, body: { msgtype: 'm.text', body: 'hi alice' } });
    await eventually('alice gets the reply', async () => (await bodies(hs1, alice.access_token, roomId)).includes('hi alice'));

    // carol joins through hs2 by alias.
    const alias = created.body.room_alias;
    const cj = await fedApi(fed.ca, hs3, 'POST', `/_matrix/client/v3/join/${enc(alias)}`, { body: {}, headers: { authorization: `Bearer ${carol.access_token}` } });
    assert.equal(cj.status, 200, JSON.stringify(cj.body));
    await capi(hs3, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/c1`, { token: carol.access_token, body: { msgtype: 'm.text', body: 'carol here' } });
    await eventually('alice gets carol', async () => (await bodies(hs1, alice.access_token, roomId)).includes('carol here'));
    await eventually('bob gets carol', async () => (await bodies(hs2, bob.access_token, roomId)).includes('carol here'));

    // Same order everywhere.
    const order1 = await bodies(hs1, alice.access_token, roomId);
    const order2 = await bodies(hs2, bob.access_token, roomId);
    assert.deepEqual(order2.slice(-3), order1.slice(-3));

    // bob leaves; alice sees it.
    await capi(hs2, 'POST', `/rooms/${enc(roomId)}/leave`, { token: bob.access_token, body: {} });
    await eventually('bob left on hs1', async () => {
      const m = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token });
      return m.body.joined && !m.body.joined[bob.user_id];
    });
    void hs3;
  });
}

test('invite a user of another server, who joins; reject an invite', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const dave = await user(hs2, 'dave');
  const created = await capi(hs1, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'private_chat', name: 'Private', invite: [bob.user_id, dave.user_id] } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id;
  const sync = await eventually('bob sees the invite', async () => {
    const r = await capi(hs2, 'GET', '/sync', { token: bob.access_token });
    return r.body.rooms?.invite?.[roomId] ? r.body : undefined;
  });
  const inviteState = sync.rooms.invite[roomId].invite_state.events;
  assert.ok(inviteState.some((e: any) => e.type === 'm.room.name' && e.content.name === 'Private'));
  const j = await capi(hs2, 'POST', `/rooms/${enc(roomId)}/join`, { token: bob.access_token, body: {} });
  assert.equal(j.status, 200, JSON.stringify(j.body));
  await eventually('hs1 sees bob joined', async () => (await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token })).body.joined?.[bob.user_id]);
  // dave rejects.
  const rej = await capi(hs2, 'POST', `/rooms/${enc(roomId)}/leave`, { token: dave.access_token, body: {} });
  assert.equal(rej.status, 200, JSON.stringify(rej.body));
  await eventually('hs1 sees dave rejected', async () => {
    const m = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/members`, { token: alice.access_token });
    return m.body.chunk?.find((e: any) => e.state_key === dave.user_id && e.content.membership === 'leave');
  });
});

test('hostile input: unsigned requests, forged events, oversized transactions', async () => {
  const [hs1] = fed.servers;
  const unsigned = await fedApi(fed.ca, hs1, 'PUT', '/_matrix/federation/v1/send/t1', { body: { pdus: [], edus: [] } });
  assert.equal(unsigned.status, 401);
  assert.equal(unsigned.body.errcode, 'M_UNAUTHORIZED');
  const client = fed.servers[1].hs.services.federationClient;
  const big = await client.request(hs1.serverName, 'PUT', '/_matrix/federation/v1/send/big1', { body: { origin: fed.servers[1].serverName, origin_server_ts: Date.now(), pdus: Array.from({ length: 51 }, () => ({})), edus: [] } }).catch((e: any) => e) as { status?: number };
  assert.equal(big.status, 400);
  // A forged event (bad signature) in a room hs1 is in is refused per PDU.
  const alice = await user(hs1, 'alice');
  const roomId = (await capi(hs1, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'public_chat' } })).body.room_id;
  const forged = { room_id: roomId, sender: `@mallory:${fed.servers[1].serverName}`, type: 'm.room.message', content: { body: 'forged' }, depth: 10, origin_server_ts: Date.now(), prev_events: [], auth_events: [], hashes: { sha256: 'AAAA' }, signatures: { [fed.servers[1].serverName]: { 'ed25519:x': 'AAAA' } } };
  const res = await client.request<{ pdus: Record<string, { error?: string }> }>(hs1.serverName, 'PUT', '/_matrix/federation/v1/send/forged1', { body: { origin: fed.servers[1].serverName, origin_server_ts: Date.now(), pdus: [forged], edus: [] } });
  const results = Object.values(res.pdus);
  assert.equal(results.length, 1);
  assert.ok(results[0].error, 'the forged PDU is rejected');
  const msgs = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=50`, { token: alice.access_token });
  assert.ok(!msgs.body.chunk.some((e: any) => e.content?.body === 'forged'));
});

test('paginating past the join fetches older history by backfill', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const created = await capi(hs1, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'public_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'shared' } }] } });
  const roomId = created.body.room_id;
  for (let i = 0; i < 15; i++) await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/old${i}`, { token: alice.access_token, body: { msgtype: 'm.text', body: `old ${i}` } });
  const j = await fedApi(fed.ca, hs2, 'POST', `/_matrix/client/v3/join/${enc(roomId)}?via=${hs1.serverName}`, { body: {}, headers: { authorization: `Bearer ${bob.access_token}` } });
  assert.equal(j.status, 200, JSON.stringify(j.body));
  let from: string | undefined;
  const seen: string[] = [];
  for (let page = 0; page < 10; page++) {
    const r = await capi(hs2, 'GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=5${from ? `&from=${from}` : ''}`, { token: bob.access_token });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    seen.push(...r.body.chunk.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body));
    if (!r.body.end) break;
    from = r.body.end;
  }
  for (let i = 0; i < 15; i++) assert.ok(seen.includes(`old ${i}`), `backfilled old ${i} (saw ${seen.length})`);
  // History arrives newest first.
  assert.deepEqual(seen.slice(0, 3), ['old 14', 'old 13', 'old 12']);
});
