// Start-up time: spawn `node dist/src/cli.js start` with no config file (a fresh data dir, and a
// fresh database on PostgreSQL) → first 200 from GET /_matrix/client/versions (polled every 5 ms);
// median of runs. Idle RSS 5 s after the first answer. Also a restart on the data of the previous
// run (migrations already applied), and for reference a bare `node` and the import of the modules.
//
//   npm run build && node --import tsx bench/startup.ts [runs=5]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/startup.ts
//
// Goals: start-up < 0.5 s; idle RSS < 70 MB.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { request } from 'undici';
import { loadProbe, startServerProcess, ensureProfiledBuild, freePort, freshDatabase, header, median, mb, ms, printProfile, rssBytes, sleep, table, verdict, PROFILE, ROOT, PG_URL, type BenchDatabase } from './lib.js';

const runs = Number(process.argv[2] ?? 5);
const cli = path.join(ROOT, 'dist/src/cli.js');
if (!existsSync(cli)) throw new Error('dist/src/cli.js missing: run `npm run build` first');

await header(`start-up: node dist/src/cli.js start → first /versions answer (${runs} runs)`, [
  'no config file: LATTICE_DATA_DIR=<fresh temp dir>, LATTICE_LISTEN=127.0.0.1:<free port>, LATTICE_LOG_LEVEL=warn' + (PG_URL ? ', LATTICE_DATABASE_URL=<fresh database>' : ' (SQLite in the data dir)'),
]);

async function timeExit(args: string[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const c = spawn(process.execPath, args, { stdio: 'ignore', cwd: ROOT });
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
  });
  return performance.now() - t0;
}

interface Started { ms: number; rss5s: number; stop(): Promise<void> }

async function start(dataDir: string, database: BenchDatabase | undefined, opts: { cpuProfDir?: string; script?: string } = {}): Promise<Started> {
  const port = await freePort();
  const env: Record<string, string> = { ...process.env as Record<string, string>, LATTICE_DATA_DIR: dataDir, LATTICE_LISTEN: `127.0.0.1:${port}`, LATTICE_LOG_LEVEL: 'warn' };
  delete env.LATTICE_CONFIG;
  if (database) env.LATTICE_DATABASE_URL = database.url;
  const args = [...(opts.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', opts.cpuProfDir] : []), opts.script ?? cli, 'start'];
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], cwd: dataDir, env });
  let elapsed = NaN;
  for (let i = 0; i < 6000 && child.exitCode === null; i++) {
    try {
      const r = await request(`http://127.0.0.1:${port}/_matrix/client/versions`, { reset: true });
      await r.body.dump();
      if (r.statusCode === 200) {
        elapsed = performance.now() - t0;
        break;
      }
    } catch { /* not listening yet */ }
    await sleep(5);
  }
  if (!Number.isFinite(elapsed)) throw new Error('server did not answer');
  await sleep(5000);
  const rss5s = rssBytes(child.pid!);
  return {
    ms: elapsed,
    rss5s,
    stop: () => new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

// Reference points.
const probe = loadProbe();
const bare: number[] = [];
const imports: number[] = [];
for (let i = 0; i < runs; i++) {
  bare.push(await timeExit(['-e', '0']));
  imports.push(await timeExit(['--input-type=module', '-e', `await import(${JSON.stringify(path.join(ROOT, 'dist/src/main.js'))}); await import(${JSON.stringify(path.join(ROOT, 'dist/src/config/index.js'))})`]));
}

const fresh: Started[] = [];
const restart: Started[] = [];
for (let i = 0; i < runs; i++) {
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-startup-'));
  const database = PG_URL ? await freshDatabase() : undefined;
  try {
    const a = await start(dir, database);
    await a.stop();
    fresh.push(a);
    const b = await start(dir, database);
    await b.stop();
    restart.push(b);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await database?.drop();
  }
}
console.log(probe.end());
const m = median(fresh.map((s) => s.ms));
const rss = median(fresh.map((s) => s.rss5s));
table(['figure', `median of ${runs}`, 'min', 'max', 'goal'], [
  ['fresh data dir: spawn → first /versions 200', ms(m, 0), ms(Math.min(...fresh.map((s) => s.ms)), 0), ms(Math.max(...fresh.map((s) => s.ms)), 0), `< 500 ms: ${verdict(m < 500)}`],
  ['restart on existing data: spawn → first 200', ms(median(restart.map((s) => s.ms)), 0), ms(Math.min(...restart.map((s) => s.ms)), 0), ms(Math.max(...restart.map((s) => s.ms)), 0), ''],
  ['idle RSS 5 s after the first answer (fresh)', mb(rss), mb(Math.min(...fresh.map((s) => s.rss5s))), mb(Math.max(...fresh.map((s) => s.rss5s))), `< 70 MB: ${verdict(rss < 70 * 1024 * 1024)}`],
  ['idle RSS 5 s after the first answer (restart)', mb(median(restart.map((s) => s.rss5s))), '', '', ''],
  ['reference: node -e 0 (spawn → exit)', ms(median(bare), 0), ms(Math.min(...bare), 0), ms(Math.max(...bare), 0), ''],
  ['reference: node importing dist/src/main.js (spawn → exit)', ms(median(imports), 0), ms(Math.min(...imports), 0), ms(Math.max(...imports), 0), ''],
]);

// Where the idle memory is: a server started the same way as the other benchmarks (config file,
// bench/server-hook.mjs for process.memoryUsage()), 5 s idle, before and after a full GC.
{
  const database = PG_URL ? await freshDatabase() : undefined;
  const srv = await startServerProcess({ databaseUrl: database?.url, control: true, nodeArgs: ['--expose-gc'], profile: false });
  try {
    await sleep(5000);
    const idle = await srv.control('mem');
    const rssIdle = rssBytes(srv.pid);
    const gc = await srv.control('gc');
    const rssGc = rssBytes(srv.pid);
    const smaps = readFileSync(`/proc/${srv.pid}/smaps_rollup`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(smaps)?.[1] ?? NaN) * 1024;
    console.log('idle memory of a server process (5 s idle):');
    table(['', 'RSS', 'V8 heap used', 'V8 heap total', 'external', 'array buffers'], [
      ['idle', mb(rssIdle), mb(idle.heapUsed), mb(idle.heapTotal), mb(idle.external), mb(idle.arrayBuffers)],
      ['after full GC', mb(rssGc), mb(gc.heapUsed), mb(gc.heapTotal), mb(gc.external), mb(gc.arrayBuffers)],
    ]);
    console.log(`RSS after GC: anonymous ${mb(field('Anonymous'))}, file-backed ${mb(field('Rss') - field('Anonymous'))} (node binary, shared libraries, better-sqlite3)\n`);
  } finally {
    await srv.stop();
    await database?.drop();
  }
}

if (PROFILE) {
  // One fresh start under --cpu-prof (source-mapped build), profile written at exit.
  const build = ensureProfiledBuild();
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-startup-'));
  const profDir = mkdtempSync(path.join(tmpdir(), 'lattice-startup-prof-'));
  const database = PG_URL ? await freshDatabase() : undefined;
  try {
    const s = await start(dir, database, { cpuProfDir: profDir, script: path.join(build, 'src/cli.js') });
    await s.stop();
    console.log(`profiled start: ${ms(s.ms, 0)} to first answer (profiler on)`);
    const file = readdirSync(profDir).find((f) => f.endsWith('.cpuprofile'));
    printProfile(file ? path.join(profDir, file) : undefined, 'server process from spawn to exit (start-up + 5 s idle)', 25);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    await database?.drop();
  }
}
