// Shared helpers for the benchmarks: start a server process, read its CPU time, drive load.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:net';
import { Pool } from 'undici';

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
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
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

export interface ServerProcess { url: string; pid: number; child: ChildProcess; stop(): Promise<void> }

export async function startServerProcess(opts: { databaseUrl?: string; extraYaml?: string } = {}): Promise<ServerProcess> {
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
  level: warn
${opts.extraYaml ?? ''}`);
  const built = path.resolve('dist/src/cli.js');
  const args = existsSync(built) ? [built, 'start', '-c', cfg] : ['--import', 'tsx', path.resolve('src/cli.ts'), 'start', '-c', cfg];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 400; i++) {
    try {
      if ((await fetch(`${url}/_matrix/client/versions`)).ok) break;
    } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    pid: child.pid!,
    child,
    stop: () => new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

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

export function percentile(values: number[], p: number): number {
  if (!values.length) return NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}
