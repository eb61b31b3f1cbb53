// Starts the real homeserver on a random port over a fresh database: a SQLite file in a temp dir by
// default, a fresh PostgreSQL database when TEST_DATABASE_URL is set (and Redis when TEST_REDIS_URL is).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import knexFactory from 'knex';
import pino from 'pino';
import { loadConfig } from '../src/config/index.js';
import { startHomeserver, type Homeserver } from '../src/main.js';

export const usingPostgres = !!process.env.TEST_DATABASE_URL;
export const redisUrl = process.env.TEST_REDIS_URL || null;

export interface TestDatabase { url: string; drop(): Promise<void> }

/** A fresh database for one test server (or a group of servers sharing one). */
export async function freshDatabase(): Promise<TestDatabase> {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) {
    const dir = mkdtempSync(path.join(tmpdir(), 'lattice-test-'));
    return { url: `sqlite:${path.join(dir, 'hs.db')}`, drop: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const name = `lattice_test_${randomBytes(6).toString('hex')}`;
  const admin = knexFactory({ client: 'pg', connection: base, pool: { min: 0, max: 1 } });
  await admin.raw(`CREATE DATABASE ${name}`);
  await admin.destroy();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    drop: async () => {
      const a = knexFactory({ client: 'pg', connection: base, pool: { min: 0, max: 1 } });
      await a.raw(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.destroy();
    },
  };
}

export interface TestServer {
  hs: Homeserver;
  url: string;
  serverName: string;
  stop(): Promise<void>;
}

export async function startTestServer(overrides: Record<string, unknown> = {}, database?: TestDatabase): Promise<TestServer> {
  const db = database ?? (await freshDatabase());
  const dataDir = mkdtempSync(path.join(tmpdir(), 'lattice-data-'));
  const config = loadConfig({
    file: null,
    env: {},
    overrides: {
      server_name: 'localhost',
      data_dir: dataDir,
      database: { url: db.url },
      redis: { url: redisUrl },
      listeners: [{ address: '127.0.0.1', port: 0, apis: ['client', 'federation', 'media', 'admin', 'metrics'] }],
      registration: { mode: 'open', shared_secret: 'test-shared-secret' },
      rate_limits: { enabled: false },
      logging: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
      ...overrides,
    },
  });
  const logger = pino({ level: config.logging.level });
  const hs = await startHomeserver(config, { logger });
  const url = hs.listeners[0].url;
  return {
    hs,
    url,
    serverName: config.server_name,
    async stop() {
      await hs.stop();
      if (!database) await db.drop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Plain HTTP helper returning status and parsed JSON. */
export async function api(
  base: string,
  method: string,
  p: string,
  opts: { token?: string; body?: unknown; rawBody?: string | Buffer; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let body: string | Buffer | undefined;
  if (opts.rawBody !== undefined) body = opts.rawBody;
  else if (opts.body !== undefined) {
    body = JSON.stringify(opts.body);
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(base + p, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch { /* not JSON */ }
  return { status: res.status, body: parsed, headers: res.headers };
}

let counter = 0;
export function uniqueName(prefix = 'user'): string {
  return `${prefix}${Date.now().toString(36)}${(counter++).toString(36)}${randomBytes(2).toString('hex')}`;
}

/** Registers a user through the open (dummy) flow and returns its login. */
export async function registerUser(base: string, localpart = uniqueName(), password = 'correct horse battery'): Promise<{ user_id: string; access_token: string; device_id: string; password: string }> {
  const first = await api(base, 'POST', '/_matrix/client/v3/register', { body: { username: localpart, password } });
  if (first.status !== 401) throw new Error(`register: expected 401 challenge, got ${first.status} ${JSON.stringify(first.body)}`);
  const done = await api(base, 'POST', '/_matrix/client/v3/register', {
    body: { username: localpart, password, auth: { type: 'm.login.dummy', session: first.body.session } },
  });
  if (done.status !== 200) throw new Error(`register: ${done.status} ${JSON.stringify(done.body)}`);
  return { ...done.body, password };
}

// matrix-js-sdk logs every request at debug level; tests only want its warnings.
import { logger as sdkLogger } from 'matrix-js-sdk/lib/logger.js';
(sdkLogger as unknown as { setLevel(l: string): void }).setLevel('warn');
