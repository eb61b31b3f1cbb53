// The start command: a fresh data dir, /versions answers, SIGTERM stops it cleanly; the admin CLI.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import path from 'node:path';

const cli = ['--import', 'tsx', path.resolve('src/cli.ts')];

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

test('start serves /versions on a fresh data dir and stops on SIGTERM', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-cli-'));
  const port = await freePort();
  const env = { ...process.env, LATTICE_DATA_DIR: dir, LATTICE_LISTEN: `127.0.0.1:${port}`, LATTICE_LOG_LEVEL: 'warn', LATTICE_DATABASE_URL: '' };
  delete (env as Record<string, string | undefined>).LATTICE_CONFIG;
  const child = spawn(process.execPath, [...cli, 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  try {
    let body: any;
    for (let i = 0; i < 200 && !body; i++) {
      try {
        body = await (await fetch(`http://127.0.0.1:${port}/_matrix/client/versions`)).json();
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    assert.ok(body?.versions?.length, `server answered /versions (stderr: ${stderr})`);
    // With no config file on loopback, registration is open.
    const reg = await fetch(`http://127.0.0.1:${port}/_matrix/client/v3/register`, { method: 'POST', body: '{}' });
    assert.equal(reg.status, 401);
    const code = await new Promise<number | null>((resolve) => {
      child.once('exit', (c) => resolve(c));
      child.kill('SIGTERM');
    });
    assert.equal(code, 0);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});

test('register-user and create-registration-token commands', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'lattice-cli-'));
  const env = { ...process.env, LATTICE_DATA_DIR: dir, LATTICE_SERVER_NAME: 'cli.test', LATTICE_LOG_LEVEL: 'warn' };
  try {
    const r = spawnSync(process.execPath, [...cli, 'register-user', 'root', '--password', 'pw', '--admin'], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '@root:cli.test');
    const dup = spawnSync(process.execPath, [...cli, 'register-user', 'root', '--password', 'pw'], { env, encoding: 'utf8' });
    assert.notEqual(dup.status, 0);
    const t = spawnSync(process.execPath, [...cli, 'create-registration-token', '--uses', '3'], { env, encoding: 'utf8' });
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout.trim(), /^[A-Za-z0-9._~-]{16}$/);
    const bad = spawnSync(process.execPath, [...cli, 'start'], { env: { ...env, LATTICE_CONFIG: path.join(dir, 'missing.yaml') }, encoding: 'utf8' });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /cannot read config file/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
