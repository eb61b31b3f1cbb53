// Memory of parked long-polls: P parked GET /sync?timeout=60000 (default 10,000) from U users
// (default 100; 10 rooms of 10), one keep-alive connection each, against a separate server process
// started with --expose-gc. Server memory after two full GCs (bench/server-hook.mjs) before and
// after parking: RSS, V8 heap used and external → bytes per parked request (its connection, the
// HTTP request/response objects, koa context, the parked sync state).
//
//   node --import tsx bench/sync-memory.ts [parked=10000] [users=100]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/sync-memory.ts
//
// Both processes need one file descriptor per connection: with `ulimit -n` below parked + 2,000 the
// count is scaled down (said in the output). Goal: < 20 KB per parked long-poll.
import { readFileSync } from 'node:fs';
import { Pool } from 'undici';
import {
  call, cpuSeconds, createUser, freshDatabase, header, kb, mapLimit, mb, openFiles, rssBytes, sleep, startInProcess, startServerProcess,
  table, verdict, waitIdle, type BenchUser,
} from './lib.js';

const wanted = Number(process.argv[2] ?? 10_000);
const userCount = Number(process.argv[3] ?? 100);
const limits = readFileSync('/proc/self/limits', 'utf8');
const nofile = Number(/Max open files\s+(\d+)/.exec(limits)?.[1] ?? 1024);
const parked = Math.min(wanted, Math.max(100, nofile - 2000));

await header(`memory per parked /sync long-poll: ${parked} parked from ${userCount} users`, [
  `ulimit -n = ${nofile}${parked < wanted ? ` — SCALED DOWN from ${wanted} to ${parked} parked requests (each side needs one fd per connection)` : ''}`,
  'server memory measured after two full GCs (node --expose-gc, bench/server-hook.mjs); one keep-alive connection per parked request',
]);

const db = await freshDatabase();
try {
  const users: BenchUser[] = [];
  {
    const prep = await startInProcess(db);
    try {
      const s = prep.hs.services;
      let roomId = '';
      for (let i = 0; i < userCount; i++) {
        const u = await createUser(prep, `m${i}`);
        if (i % 10 === 0) roomId = (await s.rooms.createRoom(u.user_id, { preset: 'public_chat' })).roomId;
        else await s.rooms.join(u.user_id, roomId);
        users.push(u);
      }
    } finally {
      await prep.stop();
    }
  }

  const srv = await startServerProcess({ databaseUrl: db.url, control: true, nodeArgs: ['--expose-gc'] });
  let pool: Pool | undefined;
  try {
    const setupPool = new Pool(srv.url, { connections: 8 });
    const filter = encodeURIComponent(JSON.stringify({ room: { timeline: { limit: 1 }, state: { lazy_load_members: true } } }));
    const tokens = await mapLimit(users, 8, async (u) => (await call(setupPool, 'GET', `/_matrix/client/v3/sync?timeout=0&filter=${filter}`, u.access_token)).next_batch as string);

    // Warm-up: 1,000 short long-polls on fresh connections (JIT, caches), closed afterwards.
    const warm = new Pool(srv.url, { connections: 1000 });
    await Promise.all(Array.from({ length: 1000 }, (_, i) => call(warm, 'GET', `/_matrix/client/v3/sync?timeout=500&since=${encodeURIComponent(tokens[i % users.length])}`, users[i % users.length].access_token)));
    await warm.destroy();
    await setupPool.close();
    await sleep(500);
    await waitIdle(srv.pid, 500);

    const before = await srv.control('gc');
    const rssBefore = rssBytes(srv.pid);
    const fdsBefore = openFiles(srv.pid);
    const cpu0 = cpuSeconds(srv.pid);

    pool = new Pool(srv.url, { connections: parked, pipelining: 1, headersTimeout: 120_000, bodyTimeout: 120_000 });
    let early = 0;
    let errors = 0;
    let stopping = false;
    const t0 = performance.now();
    const requests = Array.from({ length: parked }, (_, i) => {
      const u = i % users.length;
      return pool!.request({ method: 'GET', path: `/_matrix/client/v3/sync?timeout=60000&since=${encodeURIComponent(tokens[u])}`, headers: { authorization: `Bearer ${users[u].access_token}` } })
        .then(async (res) => {
          await res.body.dump();
          if (!stopping) early++;
        }, () => {
          if (!stopping) errors++;
        });
    });
    // Parked when every connection is open and the server has gone quiet.
    for (let i = 0; i < 600 && openFiles(srv.pid) < fdsBefore + parked * 0.99; i++) await sleep(100);
    await waitIdle(srv.pid, 500);
    const parkSec = (performance.now() - t0) / 1000;
    const cpu = cpuSeconds(srv.pid) - cpu0;
    const fdsAfter = openFiles(srv.pid);
    const after = await srv.control('gc');
    const rssAfter = rssBytes(srv.pid);

    // Release them and look again (leaks).
    stopping = true;
    await pool.destroy();
    await Promise.allSettled(requests);
    await sleep(1000);
    await waitIdle(srv.pid, 500);
    const released = await srv.control('gc');
    const rssReleased = rssBytes(srv.pid);

    const per = (a: number, b: number) => (b - a) / parked;
    const perRss = per(rssBefore, rssAfter);
    table(['figure', 'before', `${parked} parked`, 'released', 'per parked request', 'goal'], [
      ['RSS', mb(rssBefore), mb(rssAfter), mb(rssReleased), kb(perRss, 2), `< 20 KB: ${verdict(perRss < 20 * 1024)}`],
      ['V8 heap used', mb(before.heapUsed), mb(after.heapUsed), mb(released.heapUsed), kb(per(before.heapUsed, after.heapUsed), 2), ''],
      ['external + array buffers', mb(before.external), mb(after.external), mb(released.external), kb(per(before.external, after.external), 2), ''],
      ['open fds', String(fdsBefore), String(fdsAfter), '', '', ''],
    ]);
    table(['figure', 'value'], [
      ['time to park all', `${parkSec.toFixed(1)} s`],
      ['server CPU to accept + park', `${(cpu * 1000).toFixed(0)} ms (${((cpu * 1e6) / parked).toFixed(0)} µs per request)`],
      ['answered early (should be 0)', String(early)],
      ['errors', String(errors)],
    ]);
  } finally {
    await pool?.destroy().catch(() => undefined);
    await srv.stop();
  }
} finally {
  await db.drop();
}
