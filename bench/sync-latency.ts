// Wake latency of long-polling /sync: N receivers (separate users joined to one room), each parked
// in GET /sync?since=…&timeout=30000 with its own since token; one sender PUTs M messages spaced S
// ms. For each message and receiver: time from just before the PUT to the /sync response carrying
// that event (matched by a sequence number in the content). Before that, writes to a different
// room must wake none of the receivers (counted: /sync responses that come back early).
//
//   node --import tsx bench/sync-latency.ts [receivers=50] [messages=20] [spacingMs=200 (1000 above 200 receivers)]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/sync-latency.ts 1000
//
// Set-up (users, room, joins) runs in-process through test/harness.ts on the same database; the
// measured server is a separate process (dist/). Goals: 50 receivers p50 < 10 ms, p99 < 30 ms;
// 1,000 receivers all woken < 250 ms.
import { Pool } from 'undici';
import {
  call, cpuSeconds, createUser, freshDatabase, header, mapLimit, median, ms, openFiles, percentile, postgresCpuSeconds,
  loadProbe, printProfile, printQueries, sleep, startInProcess, startServerProcess, table, verdict, waitIdle, PG_URL, type BenchUser,
} from './lib.js';

const receivers = Number(process.argv[2] ?? 50);
const messages = Number(process.argv[3] ?? 20);
const spacing = Number(process.argv[4] ?? (receivers > 200 ? 1000 : 200));
const OTHER_ROOM_WRITES = 5;

await header(`sync wake latency: ${receivers} receivers, ${messages} messages spaced ${spacing} ms`, [
  'latency = just before PUT /send → the receiver\'s /sync response body fully read (client and server share this 2-core machine)',
  'the server process loads bench/server-hook.mjs, which counts knex queries (one Map update per query)',
]);

const db = await freshDatabase();
let setupMs = performance.now();
// ---- set-up, in-process
const prep = await startInProcess(db);
let sender: BenchUser;
let receiversUsers: BenchUser[];
let roomId: string;
let otherRoomId: string;
try {
  const s = prep.hs.services;
  sender = await createUser(prep, 'sender');
  roomId = (await s.rooms.createRoom(sender.user_id, { preset: 'public_chat' })).roomId;
  otherRoomId = (await s.rooms.createRoom(sender.user_id, { preset: 'public_chat' })).roomId;
  receiversUsers = [];
  for (let i = 0; i < receivers; i++) {
    const u = await createUser(prep, `r${i}`);
    await s.rooms.join(u.user_id, roomId);
    receiversUsers.push(u);
  }
} finally {
  await prep.stop();
}
setupMs = performance.now() - setupMs;
console.log(`set-up: ${receivers} users joined in ${(setupMs / 1000).toFixed(1)} s`);

// ---- measured server process
const srv = await startServerProcess({ databaseUrl: db.url, control: true });
const rpool = new Pool(srv.url, { connections: receivers + 8, pipelining: 1, headersTimeout: 120_000, bodyTimeout: 120_000 });
const spool = new Pool(srv.url, { connections: 2, pipelining: 1 });
let stopping = false;
try {
  // Each receiver's since token from an initial sync (lazy-loaded members, one timeline event).
  const initialFilter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } }));
  let t = performance.now();
  const tokens = await mapLimit(receiversUsers, 16, async (u) => (await call(rpool, 'GET', `/_matrix/client/v3/sync?timeout=0&filter=${initialFilter}`, u.access_token)).next_batch as string);
  console.log(`initial syncs: ${receivers} in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  let phase: 'settle' | 'other' | 'main' = 'settle';
  const arrivals = receiversUsers.map(() => new Map<number, number>());
  const counts = { settle: 0, other: 0, otherEmpty: 0, main: 0, mainWithout: 0, errors: 0 };
  const seqRe = /"seq":(\d+)/g;
  const nextRe = /"next_batch":"([^"]+)"/;
  const loops = receiversUsers.map(async (u, i) => {
    let since = tokens[i];
    while (!stopping) {
      try {
        const res = await rpool.request({ method: 'GET', path: `/_matrix/client/v3/sync?since=${encodeURIComponent(since)}&timeout=30000`, headers: { authorization: `Bearer ${u.access_token}` } });
        const text = await res.body.text();
        const at = performance.now();
        if (res.statusCode !== 200) {
          counts.errors++;
          await sleep(100);
          continue;
        }
        since = nextRe.exec(text)![1];
        let found = 0;
        for (const m of text.matchAll(seqRe)) {
          found++;
          if (!arrivals[i].has(Number(m[1]))) arrivals[i].set(Number(m[1]), at);
        }
        counts[phase]++;
        if (phase === 'other' && !found) counts.otherEmpty++;
        if (phase === 'main' && !found) counts.mainWithout++;
      } catch {
        if (!stopping) counts.errors++;
        return;
      }
    }
  });

  // Let every receiver park.
  await sleep(200);
  await waitIdle(srv.pid, 500);
  const fds = openFiles(srv.pid);
  console.log(`parked: ${receivers} long-polls (server has ${fds} open fds); settle-phase responses: ${counts.settle}`);

  // Writes to another room: none of the receivers may wake.
  phase = 'other';
  for (let k = 0; k < OTHER_ROOM_WRITES; k++) {
    await call(spool, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(otherRoomId)}/send/m.room.message/other${k}`, sender.access_token, { msgtype: 'm.text', body: `elsewhere ${k}` });
    await sleep(200);
  }
  await sleep(300);
  await waitIdle(srv.pid, 300);
  const otherWakes = counts.other;

  // The measured messages.
  phase = 'main';
  await srv.control('queries-reset');
  await srv.profileStart();
  const probe = loadProbe([srv.pid]);
  const cpu0 = cpuSeconds(srv.pid);
  const pg0 = PG_URL ? postgresCpuSeconds() : 0;
  const sentAt: number[] = [];
  const putMs: number[] = [];
  const begin = performance.now();
  for (let m = 0; m < messages; m++) {
    const slot = begin + m * spacing;
    const wait = slot - performance.now();
    if (wait > 0) await sleep(wait);
    sentAt[m] = performance.now();
    await call(spool, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/m${m}`, sender.access_token, { msgtype: 'm.text', body: `message ${m}`, seq: m });
    putMs.push(performance.now() - sentAt[m]);
  }
  // Wait (bounded) until every receiver has every message.
  const until = performance.now() + 30_000;
  while (performance.now() < until && arrivals.some((a) => a.size < messages)) await sleep(50);
  const cpu = cpuSeconds(srv.pid) - cpu0;
  const pg = PG_URL ? postgresCpuSeconds() - pg0 : 0;
  const profile = await srv.profileStop(`sync-latency-${receivers}`);
  const queries = await srv.control('queries 12');
  const load = probe.end();

  const all: number[] = [];
  const perMessageMax: number[] = [];
  let missing = 0;
  for (let m = 0; m < messages; m++) {
    let worst = 0;
    for (const a of arrivals) {
      const at = a.get(m);
      if (at === undefined) {
        missing++;
        continue;
      }
      const l = at - sentAt[m];
      all.push(l);
      worst = Math.max(worst, l);
    }
    perMessageMax.push(worst);
  }
  const p50 = percentile(all, 50);
  const p99 = percentile(all, 99);
  table(['figure', 'value', 'goal'], [
    ['receivers × messages', `${receivers} × ${messages} (spacing ${spacing} ms)`, ''],
    ['wake latency p50', ms(p50), receivers <= 100 ? `< 10 ms: ${verdict(p50 < 10)}` : ''],
    ['wake latency p99', ms(p99), receivers <= 100 ? `< 30 ms: ${verdict(p99 < 30)}` : ''],
    ['wake latency max', ms(Math.max(...all)), ''],
    ['all woken within (median over messages)', ms(median(perMessageMax)), receivers >= 1000 ? `< 250 ms: ${verdict(median(perMessageMax) < 250)}` : ''],
    ['all woken within (worst message)', ms(Math.max(...perMessageMax)), receivers >= 1000 ? `< 250 ms: ${verdict(Math.max(...perMessageMax) < 250)}` : ''],
    ['PUT /send latency p50 / max', `${ms(median(putMs))} / ${ms(Math.max(...putMs))}`, ''],
    ['server CPU per message (send + all wakes)', ms((cpu * 1000) / messages), ''],
    ['server CPU per woken /sync', ms((cpu * 1000) / Math.max(1, all.length), 3), ''],
    ...(PG_URL ? [['postgres CPU per message', ms((pg * 1000) / messages), '']] : []),
    ['deliveries missing after 30 s', String(missing), missing ? 'MISSES' : 'ok'],
    ['/sync responses without a message (main phase)', String(counts.mainWithout), ''],
    [`early wakes from ${OTHER_ROOM_WRITES} writes to another room`, `${otherWakes} (${counts.otherEmpty} empty)`, `0: ${verdict(otherWakes === 0)}`],
    ['request errors', String(counts.errors), ''],
  ]);
  console.log(load + '\n');
  printQueries(queries, messages * receivers, 'woken /sync (incl. the sends)');
  printProfile(profile, `server during ${messages} messages to ${receivers} receivers`);
  stopping = true;
  await rpool.destroy();
  await Promise.allSettled(loops);

  // Diagnostic without contention: one receiver, sequential incremental /sync (timeout=0) from a
  // token just before the last message, so each answer carries one new event.
  await waitIdle(srv.pid, 300);
  const one = receiversUsers[0];
  const before = (await call(spool, 'GET', `/_matrix/client/v3/sync?timeout=0&filter=${initialFilter}`, one.access_token)).next_batch as string;
  await call(spool, 'PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/send/m.room.message/serial`, sender.access_token, { msgtype: 'm.text', body: 'serial' });
  const serial: number[] = [];
  const serialEmpty: number[] = [];
  const after = (await call(spool, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(before)}`, one.access_token)).next_batch as string;
  const c0 = cpuSeconds(srv.pid);
  for (let i = 0; i < 100; i++) {
    const t1 = performance.now();
    const r = await call(spool, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(before)}`, one.access_token);
    serial.push(performance.now() - t1);
    if (!r.rooms.join[roomId]) throw new Error('serial sync without the event');
  }
  const c1 = cpuSeconds(srv.pid);
  for (let i = 0; i < 100; i++) {
    const t1 = performance.now();
    await call(spool, 'GET', `/_matrix/client/v3/sync?timeout=0&since=${encodeURIComponent(after)}`, one.access_token);
    serialEmpty.push(performance.now() - t1);
  }
  const c2 = cpuSeconds(srv.pid);
  console.log('diagnostic, no contention (one client, 100 sequential requests each):');
  table(['request', 'latency p50', 'p99', 'server CPU/request'], [
    ['incremental /sync, timeout=0, 1 new event', ms(median(serial), 2), ms(percentile(serial, 99), 2), ms(((c1 - c0) * 1000) / 100, 2)],
    ['incremental /sync, timeout=0, nothing new', ms(median(serialEmpty), 2), ms(percentile(serialEmpty, 99), 2), ms(((c2 - c1) * 1000) / 100, 2)],
  ]);
} finally {
  stopping = true;
  await rpool.destroy().catch(() => undefined);
  await spool.destroy().catch(() => undefined);
  await srv.stop();
  await db.drop();
}
