// Rooms over HTTP: create, join, send, state, redact, messages, members, errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;

for (const version of ['1', '3', '6', '10', '11', '12']) {
  test(`room version ${version}: create, join, send, paginate, redact`, async () => {
    const a = await registerUser(srv.url);
    const b = await registerUser(srv.url);
    const created = await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'public_chat', name: 'Test', topic: 'T', room_version: version } });
    assert.equal(created.status, 200, JSON.stringify(created.body));
    const roomId = created.body.room_id;
    assert.match(roomId, /^!/);
    if (version === '12') assert.ok(!roomId.includes(':'), 'v12 room ids have no server part');
    const join = await api(srv.url, 'POST', c(`/join/${enc(roomId)}`), { token: b.access_token, body: {} });
    assert.equal(join.status, 200, JSON.stringify(join.body));
    const sent: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/send/m.room.message/t${i}`), { token: i % 2 ? b.access_token : a.access_token, body: { msgtype: 'm.text', body: `hello ${i}` } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      sent.push(r.body.event_id);
    }
    // Idempotent per device and txn id.
    const again = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/send/m.room.message/t0`), { token: a.access_token, body: { msgtype: 'm.text', body: 'hello 0' } });
    assert.equal(again.body.event_id, sent[0]);
    const msgs = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/messages?dir=b&limit=3`), { token: b.access_token });
    assert.equal(msgs.status, 200);
    assert.deepEqual(msgs.body.chunk.map((e: any) => e.event_id), [sent[4], sent[3], sent[2]]);
    const more = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/messages?dir=b&limit=3&from=${msgs.body.end}`), { token: b.access_token });
    assert.deepEqual(more.body.chunk.map((e: any) => e.event_id), [sent[1], sent[0], more.body.chunk[2].event_id]);
    const fwd = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/messages?dir=f&limit=100`), { token: b.access_token });
    assert.equal(fwd.body.chunk[0].type, 'm.room.create');
    assert.equal(fwd.body.chunk.at(-1).event_id, sent[4]);
    // transaction_id shown to the sender's device only
    const own = fwd.body.chunk.find((e: any) => e.event_id === sent[0]);
    assert.equal(own.unsigned.transaction_id, undefined, 'b does not see a\'s txn id');
    const mine = (await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/event/${enc(sent[0])}`), { token: a.access_token })).body;
    assert.equal(mine.unsigned.transaction_id, 't0');

    // Redact: b cannot redact a's message (PL 0 < 50); a can redact b's? a is PL 100.
    const denied = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/redact/${enc(sent[0])}/r1`), { token: b.access_token, body: {} });
    assert.equal(denied.status, 403);
    assert.equal(denied.body.errcode, 'M_FORBIDDEN');
    const red = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/redact/${enc(sent[1])}/r2`), { token: a.access_token, body: { reason: 'spam' } });
    assert.equal(red.status, 200);
    const redacted = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/event/${enc(sent[1])}`), { token: a.access_token });
    assert.deepEqual(redacted.body.content, {});
    assert.equal(redacted.body.unsigned.redacted_because.event_id, red.body.event_id);
    const stillThere = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/event/${enc(sent[0])}`), { token: a.access_token });
    assert.equal(stillThere.body.content.body, 'hello 0');

    // State
    const name = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/state/m.room.name`), { token: b.access_token });
    assert.deepEqual(name.body, { name: 'Test' });
    const setName = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/state/m.room.name/`), { token: b.access_token, body: { name: 'x' } });
    assert.equal(setName.status, 403);
    assert.equal(setName.body.errcode, 'M_FORBIDDEN');
    const setName2 = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/state/m.room.name`), { token: a.access_token, body: { name: 'New' } });
    assert.equal(setName2.status, 200);
    const full = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/state`), { token: b.access_token });
    const nameEv = full.body.find((e: any) => e.type === 'm.room.name');
    assert.equal(nameEv.content.name, 'New');
    assert.equal(nameEv.unsigned.prev_content.name, 'Test');
    const members = await api(srv.url, 'GET', c(`/rooms/${enc(roomId)}/joined_members`), { token: b.access_token });
    assert.deepEqual(Object.keys(members.body.joined).sort(), [a.user_id, b.user_id].sort());
  });
}

test('errors: unknown room, not a member, bad version, alias in use, private room', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const bad = await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { room_version: '99' } });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errcode, 'M_UNSUPPORTED_ROOM_VERSION');
  const badJson = await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'nope' } });
  assert.equal(badJson.body.errcode, 'M_BAD_JSON');
  const alias = `al${Date.now()}`;
  const r1 = await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { room_alias_name: alias } });
  assert.equal(r1.status, 200);
  assert.equal(r1.body.room_alias, `#${alias}:${srv.serverName}`);
  const r2 = await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { room_alias_name: alias } });
  assert.equal(r2.body.errcode, 'M_ROOM_IN_USE');
  // private room: b cannot join without an invite
  const priv = await api(srv.url, 'POST', c(`/join/${enc(r1.body.room_id)}`), { token: b.access_token, body: {} });
  assert.equal(priv.status, 403);
  const notMember = await api(srv.url, 'PUT', c(`/rooms/${enc(r1.body.room_id)}/send/m.room.message/x`), { token: b.access_token, body: { body: 'hi' } });
  assert.equal(notMember.status, 403);
  const msgs = await api(srv.url, 'GET', c(`/rooms/${enc(r1.body.room_id)}/messages`), { token: b.access_token });
  assert.equal(msgs.status, 403);
  const unknown = await api(srv.url, 'POST', c(`/join/${enc('!nope:localhost')}`), { token: b.access_token, body: {} });
  assert.equal(unknown.status, 404);
  const noAlias = await api(srv.url, 'POST', c(`/join/${enc('#nope:localhost')}`), { token: b.access_token, body: {} });
  assert.equal(noAlias.status, 404);
  // invite, then join by alias works
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/invite`), { token: a.access_token, body: { user_id: b.user_id } })).status, 200);
  const viaAlias = await api(srv.url, 'POST', c(`/join/${enc(`#${alias}:${srv.serverName}`)}`), { token: b.access_token, body: {} });
  assert.equal(viaAlias.status, 200);
  assert.equal(viaAlias.body.room_id, r1.body.room_id);
  // kick then ban
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/kick`), { token: b.access_token, body: { user_id: a.user_id } })).status, 403);
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/kick`), { token: a.access_token, body: { user_id: b.user_id, reason: 'bye' } })).status, 200);
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/ban`), { token: a.access_token, body: { user_id: b.user_id } })).status, 200);
  const rejoin = await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/join`), { token: b.access_token, body: {} });
  assert.equal(rejoin.status, 403);
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/unban`), { token: a.access_token, body: { user_id: b.user_id } })).status, 200);
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(r1.body.room_id)}/forget`), { token: b.access_token })).status, 200);
});
