#!/usr/bin/env node
// Runs the test suite with node's built-in runner (TypeScript through tsx).
// Database: SQLite by default; PostgreSQL when TEST_DATABASE_URL is set (Redis with TEST_REDIS_URL).
import { readdirSync, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const dirs = ['test/unit', 'test/store', 'test/http'];
const only = process.argv.slice(2);
let files = [];
for (const d of dirs) {
  const full = path.join(root, d);
  if (!existsSync(full)) continue;
  for (const f of readdirSync(full).sort()) if (f.endsWith('.test.ts')) files.push(path.join(d, f));
}
if (only.length) files = files.filter((f) => only.some((o) => f.includes(o)));
if (!files.length) {
  console.error('no test files found');
  process.exit(1);
}
console.log(`running ${files.length} test files on ${process.env.TEST_DATABASE_URL ? 'PostgreSQL' : 'SQLite'}${process.env.TEST_REDIS_URL ? ' + Redis' : ''}`);
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=120000', '--test-force-exit', ...files], {
  cwd: root,
  stdio: 'inherit',
  env: { ...process.env, NODE_ENV: 'test' },
});
process.exit(r.status ?? 1);
