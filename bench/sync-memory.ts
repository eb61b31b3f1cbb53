// Memory of parked long-polls: P parked GET /sync?timeout=60000 (default 10,000) from U users
// (default 100; 10 rooms of 10), one keep-alive connection each, against a separate server process
// started with --expose-gc. Server memory after two full GCs (bench/server-hook.mjs) before and
// after parking: RSS, V8 heap used and external → bytes per parked request (its connection, the
// HTTP request/response objects, koa context, the parked sync state).
//
//   node --import tsx bench/sync-memory.ts [parked=10000] [users=100] [heap]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/sync-memory.ts
//
// Both processes need one file descriptor per connection: with `ulimit -n` below parked + 2,000 the
// count is scaled down (said in the output). Goal: < 20 KB per parked long-poll.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Pool } from 'undici';
import {
  printHeapGrowth, call, controlChannel, cpuSeconds, createUser, ROOT, freshDatabase, header, kb, mapLimit, mb, openFiles, rssBytes, sleep, startInProcess, startServerProcess,
  table, verdict, waitIdle, type BenchUser,
} from './lib.js';

const wanted = Number(process.argv[2] ?? 10_000);
const userCount = Number(process.argv[3] ?? 100);
/** `heap` as third argument: V8 heap snapshots before/after, growth by constructor (use ≤ 2,000 parked). */
const heapMode = process.argv[4] === 'heap';
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

    if (heapMode) await srv.control(`heap-snapshot ${path.join(srv.dataDir, 'before.heapsnapshot')}`);
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
    if (heapMode) {
      // What one parked request keeps alive, by constructor (snapshots before and after parking).
      await srv.control(`heap-snapshot ${path.join(srv.dataDir, 'after.heapsnapshot')}`);
    }

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
    if (heapMode) printHeapGrowth(path.join(srv.dataDir, 'before.heapsnapshot'), path.join(srv.dataDir, 'after.heapsnapshot'), parked, 'parked request');
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

// Reference: a bare node:http server that never answers, holding the same number of requests on
// keep-alive connections (the floor set by Node's socket + HTTP objects).
{
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-bench-bare-'));
  const ctl = path.join(dir, 'ctl');
  const code = `import http from 'node:http';
const held = [];
const s = http.createServer((req, res) => { held.push(res); });
s.keepAliveTimeout = 65000;
s.listen(0, '127.0.0.1', () => console.log(s.address().port));`;
  const child = spawn(process.execPath, ['--expose-gc', '--import', pathToFileURL(path.join(ROOT, 'bench/server-hook.mjs')).href, '--input-type=module', '-e', code], { env: { ...process.env, BENCH_CTL: ctl }, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve) => child.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
  const control = controlChannel(ctl, child.pid!);
  const bare = new Pool(`http://127.0.0.1:${port}`, { connections: parked, pipelining: 1, headersTimeout: 120_000, bodyTimeout: 120_000 });
  try {
    const warmPool = new Pool(`http://127.0.0.1:${port}`, { connections: 1000 });
    const warm = Array.from({ length: 1000 }, () => warmPool.request({ method: 'GET', path: '/_matrix/client/v3/sync?timeout=60000', headers: { authorization: 'Bearer x' } }).catch(() => undefined));
    await sleep(1000);
    await warmPool.destroy();
    await Promise.allSettled(warm);
    await sleep(500);
    const before = await control('gc');
    const rss0 = rssBytes(child.pid!);
    const fds0 = openFiles(child.pid!);
    const reqs = Array.from({ length: parked }, () => bare.request({ method: 'GET', path: '/_matrix/client/v3/sync?timeout=60000&since=s1_2_3', headers: { authorization: 'Bearer syt_0123456789abcdef' } }).catch(() => undefined));
    for (let i = 0; i < 600 && openFiles(child.pid!) < fds0 + parked * 0.99; i++) await sleep(100);
    await waitIdle(child.pid!, 500);
    const after = await control('gc');
    const rss1 = rssBytes(child.pid!);
    console.log(`reference: a bare node:http server holding ${parked} unanswered requests on keep-alive connections:`);
    table(['figure', 'before', `${parked} held`, 'per held request'], [
      ['RSS', mb(rss0), mb(rss1), kb((rss1 - rss0) / parked, 2)],
      ['V8 heap used', mb(before.heapUsed), mb(after.heapUsed), kb((after.heapUsed - before.heapUsed) / parked, 2)],
    ]);
    await bare.destroy();
    await Promise.allSettled(reqs);
  } finally {
    await bare.destroy().catch(() => undefined);
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
