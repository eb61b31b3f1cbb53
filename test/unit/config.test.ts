import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { loadConfig, ConfigError } from '../../src/config/index.js';

test('defaults: loopback-only server without a config file is open, on port 8008, SQLite in ./data', () => {
  const c = loadConfig({ file: null, env: {} });
  assert.equal(c.server_name, 'localhost:8008');
  assert.equal(c.registration.mode, 'open');
  assert.equal(c.listeners[0].address, '127.0.0.1');
  assert.equal(c.listeners[0].port, 8008);
  assert.match(c.database.url, /^sqlite:.*data\/homeserver\.db$/);
  assert.ok(Object.isFrozen(c.listeners[0]));
});

test('a public listener without a mode is closed', () => {
  const c = loadConfig({ file: null, env: {}, overrides: { listeners: [{ address: '0.0.0.0', port: 8008 }] } });
  assert.equal(c.registration.mode, 'closed');
});

test('config.example.yaml is valid and ships token registration', () => {
  const c = loadConfig({ file: path.resolve('config.example.yaml'), env: {} });
  assert.equal(c.registration.mode, 'token');
  // Every top-level key of the schema is documented in the example.
  const example = YAML.parse(readFileSync('config.example.yaml', 'utf8'));
  for (const key of Object.keys(c)) assert.ok(key in example, `config.example.yaml documents ${key}`);
});

test('bad values stop with a message naming the key', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cfg-'));
  const f = path.join(dir, 'bad.yaml');
  writeFileSync(f, 'registration:\n  mode: sometimes\nlisteners:\n  - port: "x"\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (e: Error) => e instanceof ConfigError && /registration\.mode/.test(e.message));
  writeFileSync(f, 'listeners:\n  - port: 99999\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (e: Error) => /listeners\.0\.port/.test(e.message));
  writeFileSync(f, 'nonsense_key: 1\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (e: Error) => /nonsense_key/.test(e.message));
  writeFileSync(f, 'a: [\n');
  assert.throws(() => loadConfig({ file: f, env: {} }), (e: Error) => /not valid YAML/.test(e.message));
});

test('environment overrides', () => {
  const c = loadConfig({
    file: null,
    env: { LATTICE_DATABASE_URL: 'postgres://u@h/db', LATTICE_REDIS_URL: 'redis://127.0.0.1:6379', LATTICE_SERVER_NAME: 'example.org', LATTICE_LISTEN: '0.0.0.0:9000' },
  });
  assert.equal(c.database.url, 'postgres://u@h/db');
  assert.equal(c.redis.url, 'redis://127.0.0.1:6379');
  assert.equal(c.server_name, 'example.org');
  assert.equal(c.listeners[0].address, '0.0.0.0');
  assert.equal(c.listeners[0].port, 9000);
  assert.throws(() => loadConfig({ file: null, env: { LATTICE_LISTEN: 'nope' } }), ConfigError);
});
