// Initial /sync of a user in many rooms: R rooms (default 500), each with a second member and M
// messages (default 20). Set up in-process through the services (test/harness.ts), then a fresh
// in-process server on the same database (cold caches) is timed over HTTP:
//   - initial /sync, default filter (first = cold caches, then the median of warm runs)
//   - initial /sync with {"room":{"timeline":{"limit":10}}}, and a lazy-loading filter
//   - incremental /sync with nothing new (timeout=0), with its database query count (knex 'query'
//     events on services.db)
//
//   node --import tsx bench/initial-sync.ts [rooms=500] [messages=20] [runs=5]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/initial-sync.ts
//
// Goal: initial sync of 500 rooms < 500 ms.
import { request } from 'undici';
import { loadProbe, createUser, freshDatabase, header, mapLimit, median, ms, kb, profileInProcess, startInProcess, table, verdict } from './lib.js';

const roomCount = Number(process.argv[2] ?? 500);
const msgCount = Number(process.argv[3] ?? 20);
const runs = Number(process.argv[4] ?? 5);

await header(`initial /sync: a user in ${roomCount} rooms × ${msgCount} messages`, [
  'in-process server (test/harness.ts) on a fresh database; timed over HTTP on 127.0.0.1, body fully read (not parsed)',
]);

const db = await freshDatabase();
try {
  // ---- set-up
  let t = performance.now();
  let alice;
  {
    const prep = await startInProcess(db);
    try {
      const s = prep.hs.services;
      alice = await createUser(prep, 'alice');
      const bob = await createUser(prep, 'bob');
      const ids = Array.from({ length: roomCount }, (_, i) => i);
      await mapLimit(ids, 4, async (i) => {
        // A distinct create event per room: v12 room ids are the create event's hash, and the same
        // sender creating two rooms in one millisecond would otherwise collide (M_ROOM_IN_USE).
        const { roomId } = await s.rooms.createRoom(alice!.user_id, { preset: 'public_chat', name: `room ${i}`, topic: `topic of room ${i}`, creation_content: { 'org.example.bench': i } });
        await s.rooms.join(bob.user_id, roomId);
        for (let m = 0; m < msgCount; m++) {
          const who = m % 2 ? bob : alice!;
          await s.rooms.send(who.user_id, who.device_id, roomId, 'm.room.message', { msgtype: 'm.text', body: `message ${m} in room ${i}: the quick brown fox jumps over the lazy dog` }, `t${i}-${m}`);
        }
      });
    } finally {
      await prep.stop();
    }
  }
  console.log(`set-up: ${roomCount} rooms, ${roomCount * msgCount} messages in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  // ---- measured: a new server on the same database (cold caches)
  const srv = await startInProcess(db);
  try {
    const knex = srv.hs.services.db;
    // Query counts and times (knex 'query' → 'query-response' of the same __knexQueryUid).
    let queries = 0;
    const bySql = new Map<string, { n: number; ms: number }>();
    const started = new Map<string, { sql: string; t: number }>();
    knex.on('query', (q: { sql: string; __knexQueryUid: string }) => {
      queries++;
      started.set(q.__knexQueryUid, { sql: q.sql, t: performance.now() });
    });
    const finished = (_r: unknown, q: { __knexQueryUid: string }) => {
      const s0 = started.get(q.__knexQueryUid);
      if (!s0) return;
      started.delete(q.__knexQueryUid);
      let e = bySql.get(s0.sql);
      if (!e) bySql.set(s0.sql, (e = { n: 0, ms: 0 }));
      e.n++;
      e.ms += performance.now() - s0.t;
    };
    knex.on('query-response', finished);
    knex.on('query-error', (_e: unknown, q: { __knexQueryUid: string }) => finished(undefined, q));
    const printSql = (title: string, per: number) => {
      const all = [...bySql];
      const n = all.reduce((a, [, e]) => a + e.n, 0) / per;
      const t = all.reduce((a, [, e]) => a + e.ms, 0) / per;
      console.log(`${title}: ${n.toFixed(0)} queries, ${ms(t)} from query to response per request; by statement (costliest first):`);
      table(['per request', 'ms/request', 'µs/query', 'sql'], all.sort((a, b) => b[1].ms - a[1].ms).slice(0, 15)
        .map(([sql, e]) => [(e.n / per).toFixed(1), (e.ms / per).toFixed(1), ((e.ms * 1000) / e.n).toFixed(0), sql.length > 140 ? sql.slice(0, 137) + '...' : sql]));
    };
    const token = alice!.access_token;
    const sync = async (query: string) => {
      const t0 = performance.now();
      const res = await request(`${srv.url}/_matrix/client/v3/sync?${query}`, { headers: { authorization: `Bearer ${token}` } });
      const text = await res.body.text();
      const elapsed = performance.now() - t0;
      if (res.statusCode !== 200) throw new Error(`sync ${res.statusCode} ${text.slice(0, 200)}`);
      return { elapsed, text };
    };
    const rows: string[][] = [];
    const measure = async (label: string, query: string, goal?: (m: number) => string) => {
      const q0 = queries;
      const first = await sync(query);
      const firstQueries = queries - q0;
      const body = JSON.parse(first.text);
      const nRooms = Object.keys(body.rooms?.join ?? {}).length;
      const times: number[] = [];
      const q1 = queries;
      for (let i = 0; i < runs; i++) times.push((await sync(query)).elapsed);
      const warmQueries = (queries - q1) / runs;
      const m = median(times);
      rows.push([label, ms(first.elapsed, 0), ms(m, 0), `${nRooms} rooms, ${kb(first.text.length, 0)}`, `${firstQueries} / ${warmQueries}`, goal ? goal(m) : '']);
      return body;
    };
    const probe = loadProbe();
    const initial = await measure('initial, default filter', 'timeout=0', (m) => `< 500 ms: ${verdict(m < 500)}`);
    bySql.clear();
    for (let i = 0; i < runs; i++) await sync('timeout=0');
    const initialSql = new Map(bySql);
    await measure('initial, timeline limit 10', `timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 10 } } }))}`, (m) => `< 500 ms: ${verdict(m < 500)}`);
    await measure('initial, limit 1 + lazy-load members', `timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } }))}`);
    // Incremental with nothing new.
    const since = encodeURIComponent(initial.next_batch);
    bySql.clear();
    await measure('incremental, nothing new (timeout=0)', `timeout=0&since=${since}`);
    const incSql = new Map(bySql);
    const load = probe.end();
    table(['request', 'first (cold)', `warm median of ${runs}`, 'response', 'db queries cold / warm', 'goal'], rows);
    console.log(load + '\n');
    bySql.clear();
    for (const [k, v] of initialSql) bySql.set(k, v);
    printSql('initial /sync, default filter, warm', runs);
    bySql.clear();
    for (const [k, v] of incSql) bySql.set(k, v);
    printSql('incremental /sync with nothing new', runs + 1);

    await profileInProcess(`initial sync of ${roomCount} rooms (3 warm runs)`, async () => {
      for (let i = 0; i < 3; i++) await sync('timeout=0');
    });
    await profileInProcess(`incremental sync, nothing new (${roomCount} rooms, 20 runs)`, async () => {
      for (let i = 0; i < 20; i++) await sync(`timeout=0&since=${since}`);
    });
  } finally {
    await srv.stop();
  }
} finally {
  await db.drop();
}
