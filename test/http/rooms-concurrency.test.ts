// Many clients sending at once, to one shared room and to their own rooms, while a reader follows
// /sync positions: every event is persisted once, prev_events stay consistent, and the reader sees
// every event exactly once (nothing skipped by a position that committed late).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;

test('concurrent senders in one room and many rooms; a /sync reader misses nothing', async () => {
  const users = await Promise.all(Array.from({ length: 12 }, () => registerUser(srv.url)));
  const reader = users[0];
  const shared = (await api(srv.url, 'POST', c('/createRoom'), { token: reader.access_token, body: { preset: 'public_chat' } })).body.room_id;
  const own: string[] = [];
  for (const u of users) {
    if (u !== reader) assert.equal((await api(srv.url, 'POST', c(`/join/${enc(shared)}`), { token: u.access_token, body: {} })).status, 200);
    // Each user's own room, which the reader joins too so its sync sees every room.
    const r = (await api(srv.url, 'POST', c('/createRoom'), { token: u.access_token, body: { preset: 'public_chat' } })).body.room_id;
    if (u !== reader) assert.equal((await api(srv.url, 'POST', c(`/join/${enc(r)}`), { token: reader.access_token, body: {} })).status, 200);
    own.push(r);
  }
  let since = (await api(srv.url, 'GET', c('/sync'), { token: reader.access_token })).body.next_batch;

  const seen = new Map<string, number>();
  let stop = false;
  const follow = (async () => {
    const filter = enc(JSON.stringify({ room: { timeline: { limit: 1000 } } }));
    while (!stop) {
      const r = await api(srv.url, 'GET', c(`/sync?since=${since}&timeout=500&filter=${filter}`), { token: reader.access_token });
      assert.equal(r.status, 200);
      for (const room of Object.values<any>(r.body.rooms.join)) {
        assert.equal(room.timeline.limited, false, 'the reader keeps up: no gaps');
        for (const e of room.timeline.events) if (e.type === 'm.room.message') seen.set(e.event_id, (seen.get(e.event_id) ?? 0) + 1);
      }
      since = r.body.next_batch;
    }
  })();

  const PER_USER = 8;
  const sent: string[] = [];
  await Promise.all(users.map(async (u, i) => {
    for (let n = 0; n < PER_USER; n++) {
      const room = n % 2 ? shared : own[i];
      const r = await api(srv.url, 'PUT', c(`/rooms/${enc(room)}/send/m.room.message/c${n}`), { token: u.access_token, body: { msgtype: 'm.text', body: `${i}-${n}` } });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      sent.push(r.body.event_id);
    }
  }));
  // Let the reader drain, then stop it.
  const until = Date.now() + 10_000;
  while (seen.size < sent.length && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  stop = true;
  await follow;

  assert.equal(new Set(sent).size, sent.length, 'every send made its own event');
  for (const id of sent) assert.equal(seen.get(id), 1, `event ${id} seen exactly once by the reader`);

  // The shared room's DAG stayed linear: each event's prev_events is the one before it in /messages.
  const msgs = await api(srv.url, 'GET', c(`/rooms/${enc(shared)}/messages?dir=f&limit=1000`), { token: reader.access_token });
  const chunk = msgs.body.chunk;
  const ids = chunk.map((e: any) => e.event_id);
  assert.equal(new Set(ids).size, ids.length, 'no duplicates in /messages');
  const db = srv.hs.services.db;
  const rows = await db('events').whereIn('event_id', ids).select('event_id', 'json', 'depth');
  const byId = new Map(rows.map((r: any) => [r.event_id, r]));
  for (let i = 1; i < ids.length; i++) {
    const prev = JSON.parse((byId.get(ids[i]) as any).json).prev_events;
    assert.deepEqual(prev, [ids[i - 1]], `event ${i} builds on the one before it`);
    assert.equal(Number((byId.get(ids[i]) as any).depth), Number((byId.get(ids[i - 1]) as any).depth) + 1);
  }
});
