// /sync over raw HTTP: initial, incremental, long-poll wake, invites, leaves, typing, receipts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;

test('initial and incremental sync, long-poll wakes on a message', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const room = (await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'private_chat', invite: [b.user_id], name: 'R' } })).body.room_id;
  const bInit = await api(srv.url, 'GET', c('/sync'), { token: b.access_token });
  assert.equal(bInit.status, 200);
  assert.ok(bInit.body.rooms.invite[room], 'b sees the invite');
  const inviteState = bInit.body.rooms.invite[room].invite_state.events;
  assert.ok(inviteState.some((e: any) => e.type === 'm.room.name' && e.content.name === 'R'));
  assert.ok(inviteState.some((e: any) => e.type === 'm.room.member' && e.state_key === b.user_id && e.content.membership === 'invite'));

  await api(srv.url, 'POST', c(`/rooms/${enc(room)}/join`), { token: b.access_token, body: {} });
  const bJoin = await api(srv.url, 'GET', c(`/sync?since=${bInit.body.next_batch}`), { token: b.access_token });
  const joined = bJoin.body.rooms.join[room];
  assert.ok(joined, 'b sees the room as joined');
  const stateTypes = new Set([...joined.state.events, ...joined.timeline.events].map((e: any) => e.type));
  for (const t of ['m.room.create', 'm.room.power_levels', 'm.room.name', 'm.room.join_rules']) assert.ok(stateTypes.has(t), `state has ${t}`);
  assert.equal(joined.summary['m.joined_member_count'], 2);

  // Long-poll: b waits, a sends; b wakes quickly with the message.
  const t0 = Date.now();
  const poll = api(srv.url, 'GET', c(`/sync?since=${bJoin.body.next_batch}&timeout=10000`), { token: b.access_token });
  await new Promise((r) => setTimeout(r, 100));
  const sent = await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/x1`), { token: a.access_token, body: { msgtype: 'm.text', body: 'wake up' } });
  const woke = await poll;
  assert.ok(Date.now() - t0 < 5000, 'woke before the timeout');
  const tl = woke.body.rooms.join[room].timeline;
  assert.deepEqual(tl.events.map((e: any) => e.event_id), [sent.body.event_id]);
  assert.equal(tl.limited, false);

  // Nothing new: a long-poll with a short timeout returns empty with the same position.
  const idle = await api(srv.url, 'GET', c(`/sync?since=${woke.body.next_batch}&timeout=200`), { token: b.access_token });
  assert.deepEqual(idle.body.rooms.join, {});
  assert.equal(idle.body.next_batch, woke.body.next_batch);

  // Gappy sync: many messages, limit 3 → limited with a prev_batch that /messages fills.
  const ids: string[] = [];
  for (let i = 0; i < 8; i++) ids.push((await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/g${i}`), { token: a.access_token, body: { msgtype: 'm.text', body: `m${i}` } })).body.event_id);
  const filter = enc(JSON.stringify({ room: { timeline: { limit: 3 } } }));
  const gappy = await api(srv.url, 'GET', c(`/sync?since=${woke.body.next_batch}&filter=${filter}`), { token: b.access_token });
  const gtl = gappy.body.rooms.join[room].timeline;
  assert.equal(gtl.limited, true);
  assert.deepEqual(gtl.events.map((e: any) => e.event_id), ids.slice(5));
  const back = await api(srv.url, 'GET', c(`/rooms/${enc(room)}/messages?dir=b&limit=5&from=${gtl.prev_batch}`), { token: b.access_token });
  assert.deepEqual(back.body.chunk.map((e: any) => e.event_id), ids.slice(0, 5).reverse());

  // Leave: a sees b's leave; b's sync shows the room under leave.
  await api(srv.url, 'POST', c(`/rooms/${enc(room)}/leave`), { token: b.access_token, body: {} });
  const left = await api(srv.url, 'GET', c(`/sync?since=${gappy.body.next_batch}`), { token: b.access_token });
  assert.ok(left.body.rooms.leave[room], 'room appears under leave');
  assert.equal(left.body.rooms.join[room], undefined);
});

test('typing, receipts, read markers and account data reach the other user', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const room = (await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'public_chat' } })).body.room_id;
  await api(srv.url, 'POST', c(`/join/${enc(room)}`), { token: b.access_token, body: {} });
  const s0 = (await api(srv.url, 'GET', c('/sync'), { token: b.access_token })).body.next_batch;
  assert.equal((await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/typing/${enc(a.user_id)}`), { token: a.access_token, body: { typing: true, timeout: 30000 } })).status, 200);
  const t1 = await api(srv.url, 'GET', c(`/sync?since=${s0}&timeout=2000`), { token: b.access_token });
  const typing = t1.body.rooms.join[room].ephemeral.events.find((e: any) => e.type === 'm.typing');
  assert.deepEqual(typing.content.user_ids, [a.user_id]);
  // Typing for someone else is refused.
  assert.equal((await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/typing/${enc(b.user_id)}`), { token: a.access_token, body: { typing: true } })).status, 403);

  const msg = (await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/r1`), { token: a.access_token, body: { msgtype: 'm.text', body: 'read me' } })).body.event_id;
  const s2 = (await api(srv.url, 'GET', c(`/sync?since=${t1.body.next_batch}`), { token: a.access_token })).body.next_batch;
  assert.equal((await api(srv.url, 'POST', c(`/rooms/${enc(room)}/receipt/m.read/${enc(msg)}`), { token: b.access_token, body: {} })).status, 200);
  const r = await api(srv.url, 'GET', c(`/sync?since=${s2}&timeout=2000`), { token: a.access_token });
  const receipt = r.body.rooms.join[room].ephemeral.events.find((e: any) => e.type === 'm.receipt');
  assert.ok(receipt.content[msg]['m.read'][b.user_id].ts > 0);
  // Private receipts are not shown to others.
  await api(srv.url, 'POST', c(`/rooms/${enc(room)}/read_markers`), { token: b.access_token, body: { 'm.fully_read': msg, 'm.read.private': msg } });
  const r2 = await api(srv.url, 'GET', c(`/sync?since=${r.body.next_batch}&timeout=300`), { token: a.access_token });
  const leaked = (r2.body.rooms.join[room]?.ephemeral.events ?? []).find((e: any) => e.type === 'm.receipt' && e.content[msg]?.['m.read.private']);
  assert.equal(leaked, undefined);
  const bFull = await api(srv.url, 'GET', c('/sync'), { token: b.access_token });
  const fr = bFull.body.rooms.join[room].account_data.events.find((e: any) => e.type === 'm.fully_read');
  assert.equal(fr.content.event_id, msg);

  // Tags and global account data.
  await api(srv.url, 'PUT', c(`/user/${enc(b.user_id)}/rooms/${enc(room)}/tags/m.favourite`), { token: b.access_token, body: { order: 0.5 } });
  await api(srv.url, 'PUT', c(`/user/${enc(b.user_id)}/account_data/m.direct`), { token: b.access_token, body: { [a.user_id]: [room] } });
  const b2 = await api(srv.url, 'GET', c(`/sync?since=${bFull.body.next_batch}`), { token: b.access_token });
  assert.deepEqual(b2.body.rooms.join[room].account_data.events.find((e: any) => e.type === 'm.tag').content, { tags: { 'm.favourite': { order: 0.5 } } });
  assert.deepEqual(b2.body.account_data.events.find((e: any) => e.type === 'm.direct').content, { [a.user_id]: [room] });
  assert.deepEqual((await api(srv.url, 'GET', c(`/user/${enc(b.user_id)}/rooms/${enc(room)}/tags`), { token: b.access_token })).body, { tags: { 'm.favourite': { order: 0.5 } } });
});

test('bad input: malformed since, bad filter, other user filter, negative timeout', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  assert.equal((await api(srv.url, 'GET', c('/sync?since=garbage'), { token: a.access_token })).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await api(srv.url, 'GET', c('/sync?timeout=-5'), { token: a.access_token })).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await api(srv.url, 'GET', c(`/sync?filter=${enc('{"room":')}`), { token: a.access_token })).body.errcode, 'M_NOT_JSON');
  assert.equal((await api(srv.url, 'GET', c(`/sync?filter=${enc('{"room":{"timeline":{"limit":"x"}}}')}`), { token: a.access_token })).body.errcode, 'M_BAD_JSON');
  const f = await api(srv.url, 'POST', c(`/user/${enc(a.user_id)}/filter`), { token: a.access_token, body: { room: { timeline: { limit: 5 } } } });
  assert.equal(f.status, 200);
  assert.deepEqual((await api(srv.url, 'GET', c(`/user/${enc(a.user_id)}/filter/${f.body.filter_id}`), { token: a.access_token })).body, { room: { timeline: { limit: 5 } } });
  assert.equal((await api(srv.url, 'GET', c(`/user/${enc(a.user_id)}/filter/${f.body.filter_id}`), { token: b.access_token })).status, 403);
  assert.equal((await api(srv.url, 'GET', c(`/sync?filter=${f.body.filter_id}`), { token: b.access_token })).status, 400);
  assert.equal((await api(srv.url, 'POST', c(`/user/${enc(a.user_id)}/filter`), { token: b.access_token, body: {} })).status, 403);
  assert.equal((await api(srv.url, 'GET', c('/_matrix/client/versions'.replace('/_matrix/client/v3', '')))).status, 404);
  assert.equal((await api(srv.url, 'GET', '/_matrix/client/versions')).status, 200);
});

test('ignored users: their messages and invites stop reaching the ignoring user', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const room = (await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'public_chat' } })).body.room_id;
  await api(srv.url, 'POST', c(`/join/${enc(room)}`), { token: b.access_token, body: {} });
  assert.equal((await api(srv.url, 'PUT', c(`/user/${enc(b.user_id)}/account_data/m.ignored_user_list`), { token: b.access_token, body: { ignored_users: { [a.user_id]: {} } } })).status, 200);
  const s0 = (await api(srv.url, 'GET', c('/sync'), { token: b.access_token })).body.next_batch;
  await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/ig1`), { token: a.access_token, body: { msgtype: 'm.text', body: 'you will not see this' } });
  await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/ig2`), { token: b.access_token, body: { msgtype: 'm.text', body: 'but this' } });
  const s1 = await api(srv.url, 'GET', c(`/sync?since=${s0}`), { token: b.access_token });
  const bodies = s1.body.rooms.join[room].timeline.events.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body);
  assert.deepEqual(bodies, ['but this']);
  const msgs = await api(srv.url, 'GET', c(`/rooms/${enc(room)}/messages?dir=b&limit=20`), { token: b.access_token });
  assert.ok(!msgs.body.chunk.some((e: any) => e.content?.body === 'you will not see this'));
  // An invite from an ignored user does not show up.
  const other = (await api(srv.url, 'POST', c('/createRoom'), { token: a.access_token, body: { invite: [b.user_id] } })).body.room_id;
  const s2 = await api(srv.url, 'GET', c(`/sync?since=${s1.body.next_batch}`), { token: b.access_token });
  assert.equal(s2.body.rooms.invite[other], undefined);
  // a still sees both.
  const am = await api(srv.url, 'GET', c(`/rooms/${enc(room)}/messages?dir=b&limit=20`), { token: a.access_token });
  assert.ok(am.body.chunk.some((e: any) => e.content?.body === 'you will not see this'));
});
