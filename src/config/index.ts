// Loads the YAML file, applies environment overrides and defaults, validates once, freezes.
// This is the only module that reads process.env.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { Ajv } from 'ajv';
import YAML from 'yaml';
import { configSchema, type Config, type ListenerConfig } from './schema.js';

export type { Config, ListenerConfig } from './schema.js';

export class ConfigError extends Error {}

const ajv = new Ajv({ useDefaults: true, allErrors: true, strict: false });
const validate = ajv.compile(configSchema);

function deepFreeze<T>(obj: T): T {
  if (obj && typeof obj === 'object') {
    Object.freeze(obj);
    for (const v of Object.values(obj)) deepFreeze(v);
  }
  return obj;
}

function isLoopback(address: string): boolean {
  return address === 'localhost' || address === '::1' || address.startsWith('127.');
}

export interface LoadOptions {
  /** Path of the YAML file; when absent, LATTICE_CONFIG or ./homeserver.yaml if it exists. */
  file?: string | null;
  /** Values merged over the file (tests use this). */
  overrides?: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(opts: LoadOptions = {}): Config {
  const env = opts.env ?? process.env;
  let file = opts.file === undefined ? (env.LATTICE_CONFIG ?? null) : opts.file;
  if (file === null && opts.file === undefined && existsSync('homeserver.yaml')) file = 'homeserver.yaml';
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
    }
    let parsed: unknown;
    try {
      parsed = YAML.parse(text);
    } catch (err) {
      throw new ConfigError(`config file ${file} is not valid YAML: ${(err as Error).message}`);
    }
    if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
      throw new ConfigError(`config file ${file} must hold a mapping of keys`);
    }
    raw = (parsed as Record<string, unknown>) ?? {};
  }
  raw = { ...raw, ...(opts.overrides ?? {}) };
  applyEnv(raw, env);

  if (!validate(raw)) {
    const messages = (validate.errors ?? []).map((e) => {
      const key = e.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(top level)';
      const extra = e.keyword === 'additionalProperties' ? ` '${(e.params as { additionalProperty: string }).additionalProperty}'` : '';
      const allowed = e.keyword === 'enum' ? ` (one of ${(e.params as { allowedValues: unknown[] }).allowedValues.join(', ')})` : '';
      return `${key}: ${e.message}${extra}${allowed}`;
    });
    throw new ConfigError(`invalid configuration${file ? ` in ${file}` : ''}:\n  ${messages.join('\n  ')}`);
  }
  const cfg = raw as unknown as Config;

  // With no explicit mode, a server reachable only over loopback is open (a newcomer can sign up from
  // a client at once); anything else is closed until the operator chooses.
  if (!cfg.registration.mode) {
    cfg.registration.mode = cfg.listeners.every((l) => isLoopback(l.address)) ? 'open' : 'closed';
  }
  cfg.data_dir = path.resolve(cfg.data_dir);
  if (cfg.database.url.startsWith('sqlite:')) {
    const p = cfg.database.url.slice('sqlite:'.length);
    if (p !== ':memory:') cfg.database.url = `sqlite:${path.resolve(cfg.data_dir, p)}`;
  }
  if (!cfg.public_baseurl) {
    const l: ListenerConfig = cfg.listeners.find((x) => x.apis.includes('client')) ?? cfg.listeners[0];
    cfg.public_baseurl = `${l.tls ? 'https' : 'http'}://${cfg.server_name.includes(':') ? cfg.server_name : `${cfg.server_name}:${l.port}`}/`;
  }
  if (!cfg.public_baseurl.endsWith('/')) cfg.public_baseurl += '/';
  return deepFreeze(cfg);
}

function applyEnv(raw: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  const obj = (key: string) => {
    const v = raw[key];
    if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
    const fresh: Record<string, unknown> = {};
    raw[key] = fresh;
    return fresh;
  };
  if (env.LATTICE_DATABASE_URL) obj('database').url = env.LATTICE_DATABASE_URL;
  if (env.LATTICE_REDIS_URL) obj('redis').url = env.LATTICE_REDIS_URL;
  if (env.LATTICE_SERVER_NAME) raw.server_name = env.LATTICE_SERVER_NAME;
  if (env.LATTICE_DATA_DIR) raw.data_dir = env.LATTICE_DATA_DIR;
  if (env.LATTICE_LOG_LEVEL) obj('logging').level = env.LATTICE_LOG_LEVEL;
  if (env.LATTICE_LISTEN) {
    // host:port, [v6]:port or a bare port; replaces the first listener's address and port.
    const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(env.LATTICE_LISTEN) ?? /^()()(\d+)$/.exec(env.LATTICE_LISTEN);
    if (!m) throw new ConfigError(`LATTICE_LISTEN must be host:port, got '${env.LATTICE_LISTEN}'`);
    const address = m[1] || m[2] || '127.0.0.1';
    const port = Number(m[3]);
    const listeners = Array.isArray(raw.listeners) && raw.listeners.length ? [...(raw.listeners as Record<string, unknown>[])] : [
      { apis: ['client', 'federation', 'media', 'metrics', 'admin', 'keys'] },
    ];
    listeners[0] = { ...listeners[0], address, port };
    raw.listeners = listeners;
  }
}
