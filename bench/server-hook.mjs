// Loaded into a benchmark's server process with `node --import bench/server-hook.mjs` (see
// bench/lib.ts startServerProcess). On SIGUSR2 it reads one command from the file $BENCH_CTL and
// writes its JSON answer to $BENCH_CTL.done:
//   mem               process.memoryUsage()
//   gc                two full GCs (needs --expose-gc), then process.memoryUsage()
//   prof-start        start the V8 CPU profiler (200 µs sampling)
//   prof-stop FILE    stop it and write the .cpuprofile to FILE
//   heap-snapshot F   a full GC (with --expose-gc), then a V8 heap snapshot written to F
//   queries-reset     zero the database query counters
//   queries [N]       { total, totalMs, top: [[sql, count, ms], …] } since the last reset, the N
//                     costliest first (every knex query of the process, counted and timed from
//                     knex's Client.prototype.query to its result, by patching that method)
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import v8 from 'node:v8';
import knex from 'knex';

const ctl = process.env.BENCH_CTL;
let session = null;
let total = 0;
let bySql = new Map();
const query = knex.Client.prototype.query;
knex.Client.prototype.query = function (connection, queryParam) {
  total++;
  const sql = typeof queryParam === 'string' ? queryParam : queryParam?.sql ?? '?';
  let entry = bySql.get(sql);
  if (!entry) bySql.set(sql, (entry = { n: 0, ms: 0 }));
  entry.n++;
  const t0 = performance.now();
  const done = () => { entry.ms += performance.now() - t0; };
  const p = query.call(this, connection, queryParam);
  p.then(done, done);
  return p;
};

if (ctl) {
  process.on('SIGUSR2', () => {
    void (async () => {
      let result = {};
      try {
        const [cmd, arg] = readFileSync(ctl, 'utf8').trim().split(' ');
        if (cmd === 'gc') {
          if (typeof globalThis.gc === 'function') {
            globalThis.gc();
            globalThis.gc();
          }
          result = process.memoryUsage();
        } else if (cmd === 'mem') {
          result = process.memoryUsage();
        } else if (cmd === 'heap-snapshot') {
          if (typeof globalThis.gc === 'function') globalThis.gc();
          v8.writeHeapSnapshot(arg);
          result = process.memoryUsage();
        } else if (cmd === 'queries-reset') {
          total = 0;
          bySql = new Map();
        } else if (cmd === 'queries') {
          result = { total, totalMs: [...bySql.values()].reduce((a, e) => a + e.ms, 0), top: [...bySql].sort((a, b) => b[1].ms - a[1].ms).slice(0, Number(arg ?? 15)).map(([sql, e]) => [sql, e.n, e.ms]) };
        } else if (cmd === 'prof-start') {
          session = new Session();
          session.connect();
          await session.post('Profiler.enable');
          await session.post('Profiler.setSamplingInterval', { interval: 200 });
          await session.post('Profiler.start');
        } else if (cmd === 'prof-stop' && session) {
          const { profile } = await session.post('Profiler.stop');
          writeFileSync(arg, JSON.stringify(profile));
          session.disconnect();
          session = null;
        }
      } catch (err) {
        result = { error: String(err) };
      }
      writeFileSync(`${ctl}.tmp`, JSON.stringify(result));
      renameSync(`${ctl}.tmp`, `${ctl}.done`);
    })();
  });
}
