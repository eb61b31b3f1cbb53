// Several homeservers federating over real TLS on loopback: a CA made for the run (keys from
// node:crypto, X.509 certificates from the openssl CLI), one certificate per server name, every
// server on its own TLS listener serving client + federation + keys, and a server_name_map sending
// every name to 127.0.0.1:<its port>.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Agent, request } from 'undici';
import { startTestServer, type TestServer } from './harness.js';

export interface TestCa {
  dir: string;
  caFile: string;
  /** Issues a server certificate for `names` (DNS names or IP addresses). */
  issue(names: string[]): { certificate: string; key: string };
  remove(): void;
}

function writeKey(file: string): void {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
}

export function makeTestCa(): TestCa {
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-ca-'));
  const caKey = path.join(dir, 'ca.key');
  const caFile = path.join(dir, 'ca.pem');
  writeKey(caKey);
  execFileSync('openssl', [
    'req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2', '-subj', '/CN=Lattice test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', caFile,
  ], { stdio: 'pipe' });
  let n = 0;
  return {
    dir,
    caFile,
    issue(names) {
      const base = path.join(dir, `server${n++}`);
      const key = `${base}.key`;
      const csr = `${base}.csr`;
      const certificate = `${base}.pem`;
      const ext = `${base}.ext`;
      writeKey(key);
      const san = names.map((x) => (/^[0-9.]+$/.test(x) || x.includes(':') ? `IP:${x}` : `DNS:${x}`)).join(',');
      writeFileSync(ext, `subjectAltName=${san}\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n`);
      execFileSync('openssl', ['req', '-new', '-key', key, '-subj', `/CN=${names[0]}`, '-out', csr], { stdio: 'pipe' });
      execFileSync('openssl', [
        'x509', '-req', '-in', csr, '-CA', caFile, '-CAkey', caKey, '-set_serial', `0x${randomBytes(8).toString('hex')}`,
        '-days', '2', '-sha256', '-extfile', ext, '-out', certificate,
      ], { stdio: 'pipe' });
      return { certificate, key };
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A port that was free a moment ago (the config needs ports before the servers start). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface FedServer extends TestServer {
  port: number;
  /** https://127.0.0.1:<port> (needs SNI = serverName to get the right certificate; see fedApi). */
  fedUrl: string;
  tls: { certificate: string; key: string };
}

export interface Federation {
  ca: TestCa;
  servers: FedServer[];
  byName(name: string): FedServer;
  /** server name → 127.0.0.1:port, as every server's server_name_map holds it. */
  map: Record<string, string>;
  stop(): Promise<void>;
}

export interface FederationOptions {
  /** Server names; default hs1.test, hs2.test, ... */
  names?: string[];
  /** Extra config per server (a `federation` object is merged into the harness's). */
  configure?: (serverName: string) => Record<string, unknown>;
}

export async function startFederation(count: number, opts: FederationOptions = {}): Promise<Federation> {
  const names = opts.names ?? Array.from({ length: count }, (_, i) => `hs${i + 1}.test`);
  const ca = makeTestCa();
  const ports: number[] = [];
  while (ports.length < names.length) {
    const p = await freePort();
    if (!ports.includes(p)) ports.push(p);
  }
  const map = Object.fromEntries(names.map((n, i) => [n, `127.0.0.1:${ports[i]}`]));
  const servers: FedServer[] = [];
  try {
    const results = await Promise.allSettled(names.map(async (name, i) => {
      const tls = ca.issue([name]);
      const extra = opts.configure?.(name) ?? {};
      const { federation: extraFed, ...rest } = extra as { federation?: Record<string, unknown> };
      const srv = await startTestServer({
        server_name: name,
        listeners: [{ address: '127.0.0.1', port: ports[i], tls, apis: ['client', 'federation', 'keys', 'media', 'admin'] }],
        ...rest,
        federation: { server_name_map: map, allow_private_addresses: true, ca_file: ca.caFile, ...(extraFed ?? {}) },
      });
      servers[i] = { ...srv, port: ports[i], fedUrl: `https://127.0.0.1:${ports[i]}`, tls };
    }));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    await Promise.all(servers.filter(Boolean).map((s) => s.stop()));
    ca.remove();
    throw err;
  }
  return {
    ca,
    servers,
    map,
    byName(name) {
      const s = servers.find((x) => x.serverName === name);
      if (!s) throw new Error(`no server ${name}`);
      return s;
    },
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
      ca.remove();
    },
  };
}

const agents = new Map<string, Agent>();

/**
 * A raw HTTPS request to a federation listener trusting the run's CA, with SNI and Host set to
 * `serverName` (for unsigned or hand-signed requests; FederationClient does the real thing).
 */
export async function fedApi(
  ca: TestCa,
  target: { port: number; serverName: string },
  method: string,
  p: string,
  opts: { headers?: Record<string, string>; body?: unknown; rawBody?: string } = {},
): Promise<{ status: number; body: any }> {
  const key = `${ca.caFile}|${target.serverName}`;
  let agent = agents.get(key);
  if (!agent) {
    agent = new Agent({ connect: { ca: readFileSync(ca.caFile, 'utf8'), servername: target.serverName } });
    agents.set(key, agent);
  }
  const headers: Record<string, string> = { host: target.serverName, ...(opts.headers ?? {}) };
  let body: string | undefined = opts.rawBody;
  if (body === undefined && opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const res = await request(`https://127.0.0.1:${target.port}${p}`, { method: method as 'GET', headers, body, dispatcher: agent });
  const text = await res.body.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON */ }
  return { status: res.statusCode, body: parsed };
}

/** A Client-Server API call on a federation server's TLS listener (v3 unless `prefix`). */
export async function clientApi(ca: TestCa, s: FedServer, method: string, p: string, opts: { token?: string; body?: unknown; prefix?: string } = {}): Promise<{ status: number; body: any }> {
  return fedApi(ca, s, method, `${opts.prefix ?? '/_matrix/client/v3'}${p}`, { body: opts.body, headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} });
}

export interface FedUser { user_id: string; access_token: string; device_id: string }

/** Registers a user with a unique localpart starting with `name`. */
export async function registerUser(ca: TestCa, s: FedServer, name: string): Promise<FedUser> {
  const localpart = `${name}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
  const r = await clientApi(ca, s, 'POST', '/register', { body: { username: localpart, password: 'pw', auth: { type: 'm.login.dummy' } } });
  if (r.status !== 200) throw new Error(`register ${localpart} on ${s.serverName}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as FedUser;
}

/** Polls `fn` until it returns something truthy; throws after `ms`. */
export async function eventually<T>(what: string, fn: () => Promise<T | undefined | false | null>, ms = 20_000): Promise<T> {
  const until = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function closeFedAgents(): Promise<void> {
  const all = [...agents.values()];
  agents.clear();
  await Promise.all(all.map((a) => a.close()));
}
