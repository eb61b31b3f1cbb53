// Shared helpers for the benchmarks: a fresh database (SQLite, or PostgreSQL with
// BENCH_DATABASE_URL), a server process started from dist/ (or an in-process one through
// test/harness.ts for set-up), its CPU time and memory from /proc, a control channel into the
// server process (memory, GC, CPU profile), CPU profile summaries mapped back to the .ts sources,
// statistics and tables.
//
// Profiling: with BENCH_PROFILE=1 the benchmarks profile the measured phase (the server process
// through bench/server-hook.mjs, or the bench process itself for in-process benchmarks) and print
// the top hotspots with src/file.ts:line. The profiled server runs a source-mapped build of the
// sources compiled into a temp dir, so dist/ is not touched.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { findSourceMap, SourceMap } from 'node:module';
import { tmpdir, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Pool, request } from 'undici';
import knexFactory from 'knex';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const PG_URL = process.env.BENCH_DATABASE_URL || undefined;
export const DB_LABEL = PG_URL ? 'postgres' : 'sqlite';
export const PROFILE = process.env.BENCH_PROFILE === '1';

export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const CLK_TCK = 100;

/** user+sys CPU seconds of a process (Linux /proc). */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
}

export function rssMb(pid: number): number {
  return rssBytes(pid) / (1024 * 1024);
}

export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) * 1024 : NaN;
}

export function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Total CPU seconds of every postgres process on the machine (the database's share). */
export function postgresCpuSeconds(): number {
  let total = 0;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const comm = readFileSync(`/proc/${d}/comm`, 'utf8').trim();
      if (comm === 'postgres' || comm.startsWith('postgres')) total += cpuSeconds(Number(d));
    } catch { /* gone */ }
  }
  return total;
}

/** Waits until a process has used (almost) no CPU for `quietMs` (bounded by `maxMs`). */
export async function waitIdle(pid: number, quietMs = 400, maxMs = 60_000): Promise<void> {
  const until = Date.now() + maxMs;
  let last = cpuSeconds(pid);
  let quietSince = Date.now();
  while (Date.now() < until) {
    await sleep(100);
    const now = cpuSeconds(pid);
    if (now - last > 0.011) quietSince = Date.now();
    last = now;
    if (Date.now() - quietSince >= quietMs) return;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Databases

export interface BenchDatabase { url: string; label: 'sqlite' | 'postgres'; file?: string; drop(): Promise<void> }

/** A fresh database: a SQLite file in a temp dir, or a new PostgreSQL database on BENCH_DATABASE_URL's server. */
export async function freshDatabase(): Promise<BenchDatabase> {
  if (!PG_URL) {
    const dir = mkdtempSync(path.join(tmpdir(), 'lattice-bench-db-'));
    const file = path.join(dir, 'hs.db');
    return { url: `sqlite:${file}`, label: 'sqlite', file, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `lattice_bench_${randomBytes(6).toString('hex')}`;
  const admin = knexFactory({ client: 'pg', connection: PG_URL, pool: { min: 0, max: 1 } });
  await admin.raw(`CREATE DATABASE ${name}`);
  await admin.destroy();
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    label: 'postgres',
    drop: async () => {
      const a = knexFactory({ client: 'pg', connection: PG_URL, pool: { min: 0, max: 1 } });
      await a.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// In-process set-up (fast: services directly, no HTTP, no password hashing)

type HarnessModule = typeof import('../test/harness.js');
type TestServerT = Awaited<ReturnType<HarnessModule['startTestServer']>>;
let harness: HarnessModule | undefined;

/** Starts the in-process test server (test/harness.ts) on `db`; SQLite with synchronous=normal for speed. */
export async function startInProcess(db: BenchDatabase, overrides: Record<string, unknown> = {}): Promise<TestServerT> {
  harness ??= await import('../test/harness.js');
  return harness.startTestServer({ database: { url: db.url, sqlite_synchronous: 'normal' }, ...overrides }, db);
}

export interface BenchUser { user_id: string; access_token: string; device_id: string }

/** Creates a local user without a password (no scrypt) and logs in a device. */
export async function createUser(srv: TestServerT, localpart: string, deviceId?: string): Promise<BenchUser> {
  const userId = await srv.hs.services.accounts.register({ localpart, password: null });
  const login = await srv.hs.services.accounts.login(userId, { deviceId: deviceId ?? null });
  return { user_id: userId, access_token: login.access_token, device_id: login.device_id };
}

/** Runs `fn` over `items` with at most `concurrency` at once. */
export async function mapLimit<T, R>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  }));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Server process

export interface ServerProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  dataDir: string;
  /** Sends a command to bench/server-hook.mjs in the server (needs `control` or `profile`). */
  control(cmd: string): Promise<any>;
  /** Starts the CPU profiler in the server (no-op unless profiling). */
  profileStart(): Promise<void>;
  /** Stops it and returns the .cpuprofile path (undefined unless profiling). */
  profileStop(name: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** Sends commands to bench/server-hook.mjs in process `pid` (started with BENCH_CTL=ctl). */
export function controlChannel(ctl: string, pid: number): (cmd: string) => Promise<any> {
  return async (cmd: string) => {
    rmSync(`${ctl}.done`, { force: true });
    writeFileSync(ctl, cmd);
    process.kill(pid, 'SIGUSR2');
    for (let i = 0; i < 1200; i++) {
      if (existsSync(`${ctl}.done`)) {
        const text = readFileSync(`${ctl}.done`, 'utf8');
        if (text) return JSON.parse(text);
      }
      await sleep(25);
    }
    throw new Error(`server control ${cmd} timed out`);
  };
}

let profiledBuild: string | undefined;

/** The sources compiled with source maps into a temp dir (for profiles that point at .ts lines). */
export function ensureProfiledBuild(): string {
  if (profiledBuild) return profiledBuild;
  const out = path.join(tmpdir(), 'lattice-bench-dist');
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json'), '--sourceMap', '--outDir', out], { stdio: 'inherit', cwd: ROOT });
  writeFileSync(path.join(out, 'package.json'), '{"type":"module"}\n');
  if (!existsSync(path.join(out, 'node_modules'))) symlinkSync(path.join(ROOT, 'node_modules'), path.join(out, 'node_modules'));
  profiledBuild = out;
  return out;
}

export interface ServerOptions {
  databaseUrl?: string;
  extraYaml?: string;
  /** Enable the control channel (memory, GC) even when not profiling. */
  control?: boolean;
  /** Profile (defaults to BENCH_PROFILE=1). */
  profile?: boolean;
  nodeArgs?: string[];
  /** Raise the listener's keep-alive / parked request limits etc. through extra YAML at top level. */
  logLevel?: string;
}

export async function startServerProcess(opts: ServerOptions = {}): Promise<ServerProcess> {
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-bench-'));
  const port = await freePort();
  const cfg = path.join(dir, 'homeserver.yaml');
  writeFileSync(cfg, `server_name: localhost
data_dir: ${dir}
database:
  url: ${opts.databaseUrl ?? 'sqlite:hs.db'}
  sqlite_synchronous: ${process.env.BENCH_SQLITE_SYNC ?? 'full'}
listeners:
  - address: 127.0.0.1
    port: ${port}
    apis: [client, federation]
registration:
  mode: open
rate_limits:
  enabled: false
presence:
  enabled: false
logging:
  level: ${opts.logLevel ?? 'warn'}
${opts.extraYaml ?? ''}`);
  const profile = opts.profile ?? PROFILE;
  const ctl = path.join(dir, 'ctl');
  const built = profile ? path.join(ensureProfiledBuild(), 'src/cli.js') : path.join(ROOT, 'dist/src/cli.js');
  const hookArgs = profile || opts.control ? ['--import', pathToFileURL(path.join(ROOT, 'bench/server-hook.mjs')).href] : [];
  const args = existsSync(built)
    ? [...(opts.nodeArgs ?? []), ...hookArgs, built, 'start', '-c', cfg]
    : [...(opts.nodeArgs ?? []), ...hookArgs, '--import', 'tsx', path.join(ROOT, 'src/cli.ts'), 'start', '-c', cfg];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'], env: { ...process.env, BENCH_CTL: ctl } });
  const url = `http://127.0.0.1:${port}`;
  let up = false;
  for (let i = 0; i < 1200 && child.exitCode === null; i++) {
    try {
      const r = await request(`${url}/_matrix/client/versions`);
      await r.body.dump();
      if (r.statusCode === 200) {
        up = true;
        break;
      }
    } catch { /* not yet */ }
    await sleep(50);
  }
  if (!up) {
    child.kill('SIGKILL');
    throw new Error('server process did not start');
  }
  const control = controlChannel(ctl, child.pid!);
  return {
    url,
    pid: child.pid!,
    child,
    dataDir: dir,
    control,
    async profileStart() {
      if (profile) await control('prof-start');
    },
    async profileStop(name: string) {
      if (!profile) return undefined;
      const file = path.join(tmpdir(), `lattice-${name}-${Date.now()}.cpuprofile`);
      await control(`prof-stop ${file}`);
      return file;
    },
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) {
        rmSync(dir, { recursive: true, force: true });
        resolve();
        return;
      }
      const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', () => {
        clearTimeout(killer);
        rmSync(dir, { recursive: true, force: true });
        resolve();
      });
      child.kill('SIGTERM');
    }),
  };
}

// ---------------------------------------------------------------------------------------------
// HTTP

export async function register(url: string, name: string): Promise<{ user_id: string; access_token: string }> {
  const body = { username: name, password: 'bench-password', auth: { type: 'm.login.dummy' } };
  const r = await fetch(`${url}/_matrix/client/v3/register`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  if (!r.ok) throw new Error(`register ${r.status} ${await r.text()}`);
  return r.json() as Promise<{ user_id: string; access_token: string }>;
}

export async function post(url: string, p: string, token: string, body: unknown): Promise<any> {
  const r = await fetch(url + p, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` } });
  if (!r.ok) throw new Error(`${p} ${r.status} ${await r.text()}`);
  return r.json();
}

/** One JSON request through undici (a Pool, or the global dispatcher for a full URL); throws unless 200. */
export async function call(target: Pool | string, method: string, p: string, token: string | undefined, body?: unknown): Promise<any> {
  const headers: Record<string, string> = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload: string | undefined;
  if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['content-type'] = 'application/json';
  }
  const res = typeof target === 'string'
    ? await request(target + p, { method: method as 'GET', headers, body: payload })
    : await target.request({ method: method as 'GET', path: p, headers, body: payload });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${method} ${p} → ${res.statusCode} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : undefined;
}

/**
 * Runs `concurrency` request loops for `seconds`, each calling `request(i, n)`; returns the count
 * of successful requests.
 */
export async function drive(base: string, concurrency: number, seconds: number, request: (pool: Pool, worker: number, n: number) => Promise<boolean>): Promise<{ ok: number; failed: number; elapsed: number; latencies: number[] }> {
  const pool = new Pool(base, { connections: concurrency, pipelining: 1 });
  const until = Date.now() + seconds * 1000;
  let ok = 0;
  let failed = 0;
  const latencies: number[] = [];
  const started = Date.now();
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    let n = 0;
    while (Date.now() < until) {
      const t = performance.now();
      const good = await request(pool, w, n++).catch(() => false);
      latencies.push(performance.now() - t);
      if (good) ok++;
      else failed++;
    }
  }));
  await pool.close();
  return { ok, failed, elapsed: (Date.now() - started) / 1000, latencies };
}

// ---------------------------------------------------------------------------------------------
// Statistics and output

export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

export function median(values: number[]): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export const ms = (x: number, digits = 1) => (Number.isFinite(x) ? `${x.toFixed(digits)} ms` : 'n/a');
export const kb = (bytes: number, digits = 1) => `${(bytes / 1024).toFixed(digits)} KB`;
export const mb = (bytes: number, digits = 1) => `${(bytes / (1024 * 1024)).toFixed(digits)} MB`;

/** Busy fraction of the whole machine (all cores, 0..1) over `ms`, from /proc/stat. */
export async function machineBusy(ms = 1000): Promise<number> {
  const read = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const idle = f[3] + (f[4] ?? 0);
    return { idle, total: f.reduce((a, b) => a + b, 0) };
  };
  const a = read();
  await sleep(ms);
  const b = read();
  return b.total > a.total ? 1 - (b.idle - a.idle) / (b.total - a.total) : 0;
}

/**
 * Other work on this machine (test suites of other sessions) skews timings: wait (bounded by
 * BENCH_QUIET_WAIT seconds, default 180) for 3 consecutive seconds under 15% busy, and say what was seen.
 */
export async function waitQuietMachine(): Promise<string> {
  const maxSec = Number(process.env.BENCH_QUIET_WAIT ?? 180);
  const until = Date.now() + maxSec * 1000;
  let quiet = 0;
  let last = 0;
  while (Date.now() < until) {
    last = await machineBusy(1000);
    quiet = last < 0.15 ? quiet + 1 : 0;
    if (quiet >= 3) return `machine quiet before start (${(last * 100).toFixed(0)}% busy)`;
  }
  if (maxSec <= 0) return 'machine load not checked (BENCH_QUIET_WAIT=0)';
  return `MACHINE BUSY before start: ${(last * 100).toFixed(0)}% of all cores used by other processes after waiting ${maxSec} s; timings are skewed upwards`;
}

/**
 * Measures how much CPU other processes on the machine used while a measurement ran: call at the
 * start, then `end()` → a note (cores used by processes other than this one, `pids` and, with
 * PostgreSQL, the postgres processes).
 */
export function loadProbe(pids: number[] = []): { end(): string; others(): number } {
  const jiffies = () => {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    return f.reduce((a, b) => a + b, 0) - f[3] - (f[4] ?? 0);
  };
  const own = () => {
    // This process, its children that exited (cutime + cstime), and the running `pids`.
    const f = readFileSync('/proc/self/stat', 'utf8');
    const fields = f.slice(f.lastIndexOf(')') + 2).split(' ');
    let c = cpuSeconds(process.pid) + (Number(fields[13]) + Number(fields[14])) / CLK_TCK;
    for (const p of pids) {
      try {
        c += cpuSeconds(p);
      } catch { /* exited */ }
    }
    return c + (PG_URL ? postgresCpuSeconds() : 0);
  };
  const t0 = performance.now();
  const j0 = jiffies();
  const o0 = own();
  const others = () => {
    const sec = (performance.now() - t0) / 1000;
    return Math.max(0, (jiffies() - j0) / CLK_TCK - (own() - o0)) / Math.max(sec, 0.001);
  };
  return {
    others,
    end: () => {
      const o = others();
      return `other processes used ${o.toFixed(2)} of ${cpus().length} cores during the measurement${o > 0.3 ? ' — SKEWED by other work on the machine' : ''}`;
    },
  };
}

/** Prints the benchmark title, the exact command line, the database and the machine (after waiting for a quiet machine). */
export async function header(title: string, notes: string[] = [], opts: { database?: boolean } = {}): Promise<void> {
  const quiet = await waitQuietMachine();
  const script = path.relative(ROOT, process.argv[1] ?? '');
  const env = PG_URL ? `BENCH_DATABASE_URL=${PG_URL} ` : '';
  const prof = PROFILE ? 'BENCH_PROFILE=1 ' : '';
  const sync = process.env.BENCH_SQLITE_SYNC ? `BENCH_SQLITE_SYNC=${process.env.BENCH_SQLITE_SYNC} ` : '';
  console.log(`\n## ${title}`);
  console.log(`command:  ${env}${prof}${sync}node ${process.execArgv.join(' ')} ${script} ${process.argv.slice(2).join(' ')}`.replace(/\s+$/, ''));
  const database = opts.database === false ? 'none' : `${DB_LABEL}${PG_URL ? ` (${PG_URL}, a fresh database per run)` : ` (synchronous=${process.env.BENCH_SQLITE_SYNC ?? 'full'} for server processes)`}`;
  console.log(`database: ${database}; machine: ${cpus().length} cores (${cpus()[0]?.model.trim()}), node ${process.version}; ${new Date().toISOString()}`);
  console.log(`load:     ${quiet}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const n of notes) console.log(`note:     ${n}`);
  console.log('');
  process.once('beforeExit', () => console.log(`(load average at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')})`));
}

/** A plain text table, columns padded; numbers right-aligned. */
export function table(head: string[], rows: (string | number)[][]): void {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => (/^[-\d.,<>≥ ]+(ms|KB|MB|B|s|%|\/s)?$/.test(c) && i > 0 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' | ') + ' |';
  console.log(line(head));
  console.log('|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|');
  for (const r of cells.slice(1)) console.log(line(r));
  console.log('');
}

/** ok / MISSES for a figure against its goal. */
export function verdict(ok: boolean): string {
  return ok ? 'ok' : 'MISSES GOAL';
}

// ---------------------------------------------------------------------------------------------
// CPU profiles

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number }; children?: number[] }
interface CpuProfile { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[]; startTime: number; endTime: number }

const mapCache = new Map<string, SourceMap | null>();
function sourceMapFor(url: string): SourceMap | null {
  if (mapCache.has(url)) return mapCache.get(url)!;
  let sm: SourceMap | null = null;
  try {
    // In-process (tsx registers inline source maps), else a .js.map file beside the file.
    sm = findSourceMap(url) ?? null;
    if (!sm && url.startsWith('file://')) {
      const file = fileURLToPath(url);
      if (existsSync(`${file}.map`)) sm = new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8')));
    }
  } catch { sm = null; }
  mapCache.set(url, sm);
  return sm;
}

/** file:line of a call frame, mapped back to the project's .ts source when a source map knows it. */
function location(cf: ProfileNode['callFrame']): string {
  if (!cf.url) return '';
  const sm = sourceMapFor(cf.url);
  let file = cf.url.startsWith('file://') ? fileURLToPath(cf.url) : cf.url;
  let line = cf.lineNumber + 1;
  if (sm) {
    const e = sm.findEntry(cf.lineNumber, cf.columnNumber) as { originalSource?: string; originalLine?: number };
    if (e && e.originalSource) {
      file = e.originalSource.startsWith('file://') ? fileURLToPath(e.originalSource) : path.resolve(path.dirname(file), e.originalSource);
      line = (e.originalLine ?? 0) + 1;
    }
  }
  const profiled = path.join(tmpdir(), 'lattice-bench-dist');
  if (file.startsWith(profiled)) file = path.join(ROOT, path.relative(profiled, file));
  if (file.startsWith(ROOT)) file = path.relative(ROOT, file);
  file = file.replace(/^.*node_modules\//, 'node_modules/');
  return `${file}:${line}`;
}

export interface Hotspot { fn: string; where: string; selfMs: number; totalMs: number; selfPct: number; totalPct: number }

/** Self and inclusive time per function of a .cpuprofile. */
export function analyseProfile(file: string): { totalMs: number; idleMs: number; spots: Hotspot[] } {
  const prof = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of prof.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const keyOf = new Map<number, string>();
  const info = new Map<string, { fn: string; where: string }>();
  for (const n of prof.nodes) {
    const where = location(n.callFrame);
    const fn = n.callFrame.functionName || '(anonymous)';
    const key = `${fn} ${where}`;
    keyOf.set(n.id, key);
    if (!info.has(key)) info.set(key, { fn, where });
  }
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let all = 0;
  let idle = 0;
  for (let i = 0; i < prof.samples.length; i++) {
    const dt = (prof.timeDeltas[i + 1] ?? prof.timeDeltas[i] ?? 0) / 1000;
    const id = prof.samples[i];
    const key = keyOf.get(id)!;
    all += dt;
    if (key.startsWith('(idle)')) {
      idle += dt;
      continue;
    }
    self.set(key, (self.get(key) ?? 0) + dt);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const k = keyOf.get(n)!;
      if (seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + dt);
    }
  }
  const busy = all - idle;
  const spots = [...info].map(([k, v]) => ({ ...v, selfMs: self.get(k) ?? 0, totalMs: total.get(k) ?? 0, selfPct: (100 * (self.get(k) ?? 0)) / busy, totalPct: (100 * (total.get(k) ?? 0)) / busy }));
  return { totalMs: all, idleMs: idle, spots };
}

/** Prints the top self-time functions and the top inclusive-time project functions of a profile. */
export function printProfile(file: string | undefined, title: string, top = 15): void {
  if (!file) return;
  const { totalMs, idleMs, spots } = analyseProfile(file);
  console.log(`### CPU profile: ${title}`);
  console.log(`profile ${file}: ${totalMs.toFixed(0)} ms sampled, ${(totalMs - idleMs).toFixed(0)} ms busy`);
  const bySelf = spots.filter((s) => s.selfMs > 0 && !s.fn.startsWith('(program)') && !s.fn.startsWith('(root)')).sort((a, b) => b.selfMs - a.selfMs).slice(0, top);
  table(['self time', '%', 'function', 'where'], bySelf.map((s) => [ms(s.selfMs), `${s.selfPct.toFixed(1)}%`, s.fn, s.where]));
  const program = spots.find((s) => s.fn === '(program)');
  const gc = spots.find((s) => s.fn === '(garbage collector)');
  console.log(`(program) ${ms(program?.selfMs ?? 0)}, (garbage collector) ${ms(gc?.selfMs ?? 0)}\n`);
  const bySrc = spots.filter((s) => s.where.startsWith('src/') && s.totalMs > 0).sort((a, b) => b.totalMs - a.totalMs).slice(0, top);
  table(['inclusive', '%', 'project function', 'where'], bySrc.map((s) => [ms(s.totalMs), `${s.totalPct.toFixed(1)}%`, s.fn, s.where]));
}

/** Profiles `fn` in this process (BENCH_PROFILE=1), printing the hotspots. */
export async function profileInProcess<T>(title: string, fn: () => Promise<T>, enabled = PROFILE): Promise<T> {
  if (!enabled) return fn();
  const { Session } = await import('node:inspector/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 200 });
  await session.post('Profiler.start');
  let result: T;
  try {
    result = await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    session.disconnect();
    const file = path.join(tmpdir(), `lattice-${title.replace(/\W+/g, '-')}-${Date.now()}.cpuprofile`);
    writeFileSync(file, JSON.stringify(profile));
    printProfile(file, title);
  }
  return result;
}

/** Prints the query counters of a server process (bench/server-hook.mjs `queries`), per `per` units. */
export function printQueries(q: { total: number; totalMs: number; top: [string, number, number][] }, per: number, unit: string): void {
  console.log(`database queries: ${q.total} in total (${ms(q.totalMs, 0)} from query() to result), ${(q.total / per).toFixed(1)} queries and ${ms(q.totalMs / per, 2)} per ${unit}; costliest:`);
  table(['count/' + unit, 'ms/' + unit, 'µs/query', 'sql'], q.top.map(([sql, n, t]) => [(n / per).toFixed(2), (t / per).toFixed(3), ((t * 1000) / n).toFixed(0), sql.length > 140 ? sql.slice(0, 137) + '...' : sql]));
}

/** Self size and count per kind of object of a V8 heap snapshot (objects by constructor, closures by name, others by type). */
export function heapSummary(file: string): Map<string, { count: number; size: number }> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as { snapshot: { meta: { node_fields: string[]; node_types: [string[]] } }; nodes: number[]; strings: string[] };
  const f = snap.snapshot.meta.node_fields;
  const width = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const types = snap.snapshot.meta.node_types[0];
  const out = new Map<string, { count: number; size: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + iType]];
    const name = snap.strings[snap.nodes[i + iName]];
    const key = type === 'object' ? name : type === 'closure' ? `closure ${name || '(anonymous)'}` : `(${type})`;
    let e = out.get(key);
    if (!e) out.set(key, (e = { count: 0, size: 0 }));
    e.count++;
    e.size += snap.nodes[i + iSize];
  }
  return out;
}

/**
 * For objects of the `after` snapshot that are not in `before` (by id): their retainers, as
 * "parent kind → edge name", counted and sized (each new object attributed to its first retainer).
 */
export function heapNewRetainers(before: string, after: string): Map<string, { count: number; size: number }> {
  const load = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]]; edge_fields: string[]; edge_types: [string[]] } }; nodes: number[]; edges: number[]; strings: string[];
  };
  const a = load(before);
  const nfA = a.snapshot.meta.node_fields;
  const oldIds = new Set<number>();
  for (let i = 0; i < a.nodes.length; i += nfA.length) oldIds.add(a.nodes[i + nfA.indexOf('id')]);
  const b = load(after);
  const nf = b.snapshot.meta.node_fields;
  const ef = b.snapshot.meta.edge_fields;
  const w = nf.length;
  const ew = ef.length;
  const [iType, iName, iId, iSize, iEdges] = ['type', 'name', 'id', 'self_size', 'edge_count'].map((f) => nf.indexOf(f));
  const [eType, eName, eTo] = ['type', 'name_or_index', 'to_node'].map((f) => ef.indexOf(f));
  const types = b.snapshot.meta.node_types[0];
  const etypes = b.snapshot.meta.edge_types[0];
  const kind = (i: number) => {
    const t = types[b.nodes[i + iType]];
    const n = b.strings[b.nodes[i + iName]];
    return t === 'object' ? n : t === 'closure' ? `closure ${n || '(anonymous)'}` : `(${t})`;
  };
  const seen = new Set<number>();
  const out = new Map<string, { count: number; size: number }>();
  let e = 0;
  for (let i = 0; i < b.nodes.length; i += w) {
    const parentNew = !oldIds.has(b.nodes[i + iId]);
    for (let k = 0; k < b.nodes[i + iEdges]; k++, e += ew) {
      const et = etypes[b.edges[e + eType]];
      if (et === 'weak' || et === 'shortcut') continue;
      const to = b.edges[e + eTo];
      if (seen.has(to) || oldIds.has(b.nodes[to + iId])) continue;
      seen.add(to);
      const name = et === 'element' || et === 'hidden' ? `[${et}]` : String(b.strings[b.edges[e + eName]] ?? b.edges[e + eName]);
      const key = `${kind(to)} ← ${kind(i)}${parentNew ? '' : ' (old)'}.${name}`;
      let r = out.get(key);
      if (!r) out.set(key, (r = { count: 0, size: 0 }));
      r.count++;
      r.size += b.nodes[to + iSize];
    }
  }
  return out;
}

/** Prints what grew between two heap snapshots, per unit (e.g. per parked request). */
export function printHeapGrowth(before: string, after: string, per: number, unit: string, top = 25): void {
  const a = heapSummary(before);
  const b = heapSummary(after);
  const rows = [...b].map(([k, e]) => ({ k, count: e.count - (a.get(k)?.count ?? 0), size: e.size - (a.get(k)?.size ?? 0) }))
    .filter((r) => r.size > 0).sort((x, y) => y.size - x.size);
  const total = rows.reduce((s, r) => s + r.size, 0);
  console.log(`heap growth (self sizes, after a full GC): ${(total / per).toFixed(0)} B per ${unit}; by kind:`);
  table(['kind (constructor / closure / type)', `objects per ${unit}`, `bytes per ${unit}`, 'share'], rows.slice(0, top).map((r) => [r.k, (r.count / per).toFixed(2), (r.size / per).toFixed(0), `${((100 * r.size) / total).toFixed(1)}%`]));
  const ret = [...heapNewRetainers(before, after)].sort((x, y) => y[1].size - x[1].size).slice(0, top);
  console.log(`new objects by first retainer (kind ← retaining kind.edge):`);
  table(['new object ← retainer', `objects per ${unit}`, `bytes per ${unit}`], ret.map(([k, r]) => [k, (r.count / per).toFixed(2), (r.size / per).toFixed(0)]));
}

export function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}
