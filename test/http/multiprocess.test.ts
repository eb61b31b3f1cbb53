// Two homeservers sharing one PostgreSQL database and one Redis: a long-poll on one wakes for a
// message sent through the other. (Needs TEST_DATABASE_URL and TEST_REDIS_URL; CI runs it.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, freshDatabase, api, registerUser, usingPostgres, redisUrl } from '../harness.js';

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;

test('a long-poll on one process wakes for a write made by another', { skip: usingPostgres && redisUrl ? false : 'needs TEST_DATABASE_URL (PostgreSQL) and TEST_REDIS_URL' }, async () => {
  const db = await freshDatabase();
  const one = await startTestServer({}, db);
  const two = await startTestServer({}, db);
  try {
    const a = await registerUser(one.url);
    const b = await registerUser(two.url);
    const room = (await api(one.url, 'POST', c('/createRoom'), { token: a.access_token, body: { preset: 'public_chat' } })).body.room_id;
    assert.equal((await api(two.url, 'POST', c(`/join/${enc(room)}`), { token: b.access_token, body: {} })).status, 200);
    // Both processes signed with the same key (generated once, kept in the database).
    const k1 = (await api(one.url, 'GET', '/_matrix/key/v2/server')).body.verify_keys;
    const k2 = (await api(two.url, 'GET', '/_matrix/key/v2/server')).body.verify_keys;
    assert.deepEqual(k1, k2);

    const first = await api(one.url, 'GET', c('/sync'), { token: b.access_token });
    for (let i = 0; i < 3; i++) {
      const t0 = Date.now();
      const poll = api(one.url, 'GET', c(`/sync?since=${first.body.next_batch}&timeout=20000`), { token: b.access_token });
      await new Promise((r) => setTimeout(r, 150));
      const sent = await api(two.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/mp${i}`), { token: a.access_token, body: { msgtype: 'm.text', body: `via two ${i}` } });
      assert.equal(sent.status, 200);
      const res = await poll;
      const waited = Date.now() - t0;
      assert.ok(waited < 5000, `woken in ${waited} ms`);
      assert.ok(res.body.rooms.join[room], JSON.stringify(res.body));
      const events = res.body.rooms.join[room].timeline.events.map((e: any) => e.event_id);
      assert.ok(events.includes(sent.body.event_id));
      first.body.next_batch = res.body.next_batch;
    }
    // Writes alternate between processes and stay consistent.
    await api(one.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/x1`), { token: a.access_token, body: { msgtype: 'm.text', body: 'from one' } });
    await api(two.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/x2`), { token: b.access_token, body: { msgtype: 'm.text', body: 'from two' } });
    const m1 = await api(one.url, 'GET', c(`/rooms/${enc(room)}/messages?dir=b&limit=2`), { token: a.access_token });
    const m2 = await api(two.url, 'GET', c(`/rooms/${enc(room)}/messages?dir=b&limit=2`), { token: a.access_token });
    assert.deepEqual(m1.body.chunk.map((e: any) => e.content.body), ['from two', 'from one']);
    assert.deepEqual(m2.body.chunk.map((e: any) => e.event_id), m1.body.chunk.map((e: any) => e.event_id));
  } finally {
    await one.stop();
    await two.stop();
    await db.drop();
  }
});
