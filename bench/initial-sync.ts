// Initial /sync of a user in many rooms: R rooms (default 500), each with a second member and M
// messages (default 20). Set up in-process through the services (test/harness.ts), then a fresh
// in-process server on the same database (cold caches) is timed over HTTP:
//   - initial /sync, default filter (the first request: cold caches; then, after warm-up, the median of runs)
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
    const variants: [label: string, query: string, goal: boolean][] = [
      ['initial, default filter', 'timeout=0', true],
      ['initial, timeline limit 10', `timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 10 } } }))}`, true],
      ['initial, limit 1 + lazy-load members', `timeout=0&filter=${encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } }))}`, false],
    ];
    const probe = loadProbe();
    // The first request of the fresh server: cold caches (events, state groups, rooms) and JIT.
    let q0 = queries;
    const cold = await sync(variants[0][1]);
    const coldQueries = queries - q0;
    const initial = JSON.parse(cold.text);
    console.log(`first request (cold caches, cold JIT): initial /sync, default filter: ${ms(cold.elapsed, 0)}, ${coldQueries} queries, ${Object.keys(initial.rooms?.join ?? {}).length} rooms, ${kb(cold.text.length, 0)}`);
    // Warm-up, then each variant (median of runs).
    for (let i = 0; i < 3; i++) for (const v of variants) await sync(v[1]);
    const since = encodeURIComponent(initial.next_batch);
    variants.push(['incremental, nothing new (timeout=0)', `timeout=0&since=${since}`, false]);
    const sqlOf: Map<string, { n: number; ms: number }>[] = [];
    for (const [label, query, goal] of variants) {
      bySql.clear();
      q0 = queries;
      const times: number[] = [];
      let size = 0;
      let nRooms = 0;
      for (let i = 0; i < runs; i++) {
        const r = await sync(query);
        times.push(r.elapsed);
        size = r.text.length;
        if (i === 0) nRooms = Object.keys(JSON.parse(r.text).rooms?.join ?? {}).length;
      }
      sqlOf.push(new Map([...bySql].map(([k, v]) => [k, { ...v }])));
      const m = median(times);
      rows.push([label, ms(m, 0), ms(Math.min(...times), 0), `${nRooms} rooms, ${kb(size, 0)}`, ((queries - q0) / runs).toFixed(0), goal ? `< 500 ms: ${verdict(m < 500)}` : '']);
    }
    const initialSql = sqlOf[0];
    const incSql = sqlOf[3];
    const load = probe.end();
    table(['request (warm)', `median of ${runs}`, 'min', 'response', 'db queries', 'goal'], rows);
    console.log(load + '\n');
    bySql.clear();
    for (const [k, v] of initialSql) bySql.set(k, v);
    printSql('initial /sync, default filter, warm', runs);
    bySql.clear();
    for (const [k, v] of incSql) bySql.set(k, v);
    printSql('incremental /sync with nothing new', runs);

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
