// Server name resolution (spec "Resolving server names") with DNS SRV and /.well-known injected.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SrvRecord } from 'node:dns';
import { ServerResolver, pickSrv, wellKnownCacheMs, WELL_KNOWN_DEFAULT_CACHE_MS, WELL_KNOWN_ERROR_CACHE_MS, WELL_KNOWN_MAX_CACHE_MS, WELL_KNOWN_MIN_CACHE_MS, type WellKnownResponse } from '../../src/federation/resolver.js';
import { parseServerName } from '../../src/federation/server-name.js';
import { guardedLookup, isPrivateAddress, type LookupFunction } from '../../src/federation/client.js';

interface World {
  srv?: Record<string, SrvRecord[]>;
  wellKnown?: Record<string, WellKnownResponse | Error>;
}

function resolver(world: World, clock = { now: 1_000_000 }) {
  const calls = { srv: [] as string[], wellKnown: [] as string[] };
  const r = new ServerResolver({
    now: () => clock.now,
    random: () => 0,
    resolveSrv: async (name) => {
      calls.srv.push(name);
      const recs = world.srv?.[name];
      if (!recs) throw Object.assign(new Error('queryNotFound'), { code: 'ENOTFOUND' });
      return recs;
    },
    fetchWellKnown: async (host) => {
      calls.wellKnown.push(host);
      const res = world.wellKnown?.[host];
      if (!res) return { status: 404, headers: {}, body: { errcode: 'M_NOT_FOUND' } };
      if (res instanceof Error) throw res;
      return res;
    },
  });
  return { r, calls, clock };
}

const srv = (name: string, port: number, priority = 10, weight = 0): SrvRecord => ({ name, port, priority, weight });
const wk = (server: string, headers: Record<string, string> = {}): WellKnownResponse => ({ status: 200, headers, body: { 'm.server': server } });

test('server name grammar', () => {
  assert.deepEqual(parseServerName('example.org'), { host: 'example.org', port: undefined, ipVersion: 0 });
  assert.deepEqual(parseServerName('example.org:8448'), { host: 'example.org', port: 8448, ipVersion: 0 });
  assert.deepEqual(parseServerName('1.2.3.4:80'), { host: '1.2.3.4', port: 80, ipVersion: 4 });
  assert.deepEqual(parseServerName('[::1]:8448'), { host: '::1', port: 8448, ipVersion: 6 });
  assert.deepEqual(parseServerName('[2001:db8::1]'), { host: '2001:db8::1', port: undefined, ipVersion: 6 });
  for (const bad of ['', 'exa mple.org', 'example.org:', 'example.org:0', 'example.org:65536', 'example.org:12a', '[::1', '[nothost]:80', '::1', 'a/b', 'x'.repeat(256)]) {
    assert.equal(parseServerName(bad), undefined, bad);
  }
});

test('1. IP literals: the address, the port or 8448, Host = server name, no SNI', async () => {
  const { r, calls } = resolver({});
  assert.deepEqual(await r.resolve('1.2.3.4'), { host: '1.2.3.4', port: 8448, hostHeader: '1.2.3.4' });
  assert.deepEqual(await r.resolve('1.2.3.4:1234'), { host: '1.2.3.4', port: 1234, hostHeader: '1.2.3.4:1234' });
  assert.deepEqual(await r.resolve('[2001:db8::1]:443'), { host: '2001:db8::1', port: 443, hostHeader: '[2001:db8::1]:443' });
  assert.deepEqual(calls, { srv: [], wellKnown: [] });
});

test('2. explicit port: no well-known, no SRV', async () => {
  const { r, calls } = resolver({ wellKnown: { 'example.org': wk('elsewhere.org') } });
  assert.deepEqual(await r.resolve('example.org:8000'), { host: 'example.org', port: 8000, tlsServername: 'example.org', hostHeader: 'example.org:8000' });
  assert.deepEqual(calls, { srv: [], wellKnown: [] });
});

test('3. well-known delegation: IP literal, explicit port, SRV on the delegated name, then 8448', async () => {
  const { r } = resolver({
    wellKnown: {
      'ip.example': wk('5.6.7.8'),
      'ipport.example': wk('[2001:db8::5]:9000'),
      'port.example': wk('matrix.port.example:443'),
      'srv.example': wk('matrix.srv.example'),
      'oldsrv.example': wk('matrix.oldsrv.example'),
      'plain.example': wk('matrix.plain.example'),
    },
    srv: {
      '_matrix-fed._tcp.matrix.srv.example': [srv('fed1.srv.example.', 8449)],
      '_matrix._tcp.matrix.srv.example': [srv('wrong.example', 1)],
      '_matrix._tcp.matrix.oldsrv.example': [srv('legacy.oldsrv.example', 8450)],
      // SRV records of the original hostname are not consulted once delegated.
      '_matrix-fed._tcp.plain.example': [srv('wrong.example', 1)],
    },
  });
  assert.deepEqual(await r.resolve('ip.example'), { host: '5.6.7.8', port: 8448, hostHeader: '5.6.7.8' });
  assert.deepEqual(await r.resolve('ipport.example'), { host: '2001:db8::5', port: 9000, hostHeader: '[2001:db8::5]:9000' });
  assert.deepEqual(await r.resolve('port.example'), { host: 'matrix.port.example', port: 443, tlsServername: 'matrix.port.example', hostHeader: 'matrix.port.example:443' });
  // The certificate and Host are for the delegated name, not the SRV target.
  assert.deepEqual(await r.resolve('srv.example'), { host: 'fed1.srv.example', port: 8449, tlsServername: 'matrix.srv.example', hostHeader: 'matrix.srv.example' });
  assert.deepEqual(await r.resolve('oldsrv.example'), { host: 'legacy.oldsrv.example', port: 8450, tlsServername: 'matrix.oldsrv.example', hostHeader: 'matrix.oldsrv.example' });
  assert.deepEqual(await r.resolve('plain.example'), { host: 'matrix.plain.example', port: 8448, tlsServername: 'matrix.plain.example', hostHeader: 'matrix.plain.example' });
});

test('4.-6. no delegation: _matrix-fed SRV, deprecated _matrix SRV, then hostname:8448', async () => {
  const { r, calls } = resolver({
    wellKnown: {
      'bad1.example': { status: 200, headers: {}, body: { 'm.server': 'not a server name' } },
      'bad2.example': { status: 200, headers: {}, body: 'garbage' },
      'bad3.example': new Error('ECONNREFUSED'),
    },
    srv: {
      '_matrix-fed._tcp.fed.example': [srv('a.fed.example', 1001)],
      '_matrix._tcp.fed.example': [srv('b.fed.example', 1002)],
      '_matrix._tcp.old.example': [srv('c.old.example', 1003)],
      '_matrix-fed._tcp.bad1.example': [srv('d.bad1.example', 1004)],
    },
  });
  assert.deepEqual(await r.resolve('fed.example'), { host: 'a.fed.example', port: 1001, tlsServername: 'fed.example', hostHeader: 'fed.example' });
  assert.deepEqual(await r.resolve('old.example'), { host: 'c.old.example', port: 1003, tlsServername: 'old.example', hostHeader: 'old.example' });
  assert.deepEqual(await r.resolve('none.example'), { host: 'none.example', port: 8448, tlsServername: 'none.example', hostHeader: 'none.example' });
  // An invalid well-known answer or a failed fetch skips to SRV.
  assert.equal((await r.resolve('bad1.example')).port, 1004);
  assert.equal((await r.resolve('bad2.example')).port, 8448);
  assert.equal((await r.resolve('bad3.example')).port, 8448);
  assert.deepEqual(calls.srv.slice(0, 1), ['_matrix-fed._tcp.fed.example']);
  assert.ok(!calls.srv.includes('_matrix._tcp.fed.example'));
  assert.ok(calls.srv.includes('_matrix._tcp.old.example'));
});

test('server_name_map overrides discovery but keeps the server name for SNI and Host', async () => {
  const r = new ServerResolver({
    serverNameMap: { 'hs1.test': '127.0.0.1:9001', 'hs2.test:8448': '[::1]:9002', '10.0.0.1': 'internal.example:9003', 'bad.test': 'no-port' },
    resolveSrv: async () => { throw new Error('unexpected SRV lookup'); },
    fetchWellKnown: async () => { throw new Error('unexpected well-known fetch'); },
  });
  assert.deepEqual(await r.resolve('hs1.test'), { host: '127.0.0.1', port: 9001, tlsServername: 'hs1.test', hostHeader: 'hs1.test' });
  assert.deepEqual(await r.resolve('hs2.test:8448'), { host: '::1', port: 9002, tlsServername: 'hs2.test', hostHeader: 'hs2.test:8448' });
  assert.deepEqual(await r.resolve('10.0.0.1'), { host: 'internal.example', port: 9003, tlsServername: undefined, hostHeader: '10.0.0.1' });
  await assert.rejects(r.resolve('bad.test'), /host:port/);
  await assert.rejects(r.resolve('not a name'), /invalid server name/);
});

test('well-known answers are cached per Cache-Control; errors for an hour', async () => {
  const world: World = { wellKnown: { 'a.example': wk('deleg.a.example:443', { 'cache-control': 'public, max-age=3600' }), 'b.example': wk('deleg.b.example:443') } };
  const { r, calls, clock } = resolver(world);
  assert.equal((await r.resolve('a.example')).host, 'deleg.a.example');
  assert.equal((await r.resolve('b.example')).host, 'deleg.b.example');
  assert.equal((await r.resolve('c.example')).host, 'c.example'); // 404: an error
  assert.deepEqual(calls.wellKnown, ['a.example', 'b.example', 'c.example']);

  world.wellKnown!['c.example'] = wk('deleg.c.example:443');
  clock.now += 3600_000 - 1; // everything still cached
  await r.resolve('a.example');
  assert.equal((await r.resolve('c.example')).host, 'c.example');
  assert.equal(calls.wellKnown.length, 3);

  clock.now += 2; // a.example (max-age 1 h) and the c.example error expired; b.example (24 h) not
  await r.resolve('a.example');
  await r.resolve('b.example');
  assert.equal((await r.resolve('c.example')).host, 'deleg.c.example');
  assert.deepEqual(calls.wellKnown.slice(3), ['a.example', 'c.example']);

  r.forget('b.example');
  await r.resolve('b.example');
  assert.equal(calls.wellKnown.at(-1), 'b.example');
});

test('well-known cache lifetime: default 24 h, clamped to [5 min, 48 h], no-store, Expires', () => {
  const now = Date.UTC(2025, 0, 1);
  assert.equal(wellKnownCacheMs({}, now), WELL_KNOWN_DEFAULT_CACHE_MS);
  assert.equal(wellKnownCacheMs({ 'cache-control': 'max-age=7200' }, now), 7200_000);
  assert.equal(wellKnownCacheMs({ 'cache-control': 'max-age=999999999' }, now), WELL_KNOWN_MAX_CACHE_MS);
  assert.equal(wellKnownCacheMs({ 'cache-control': 'max-age=1' }, now), WELL_KNOWN_MIN_CACHE_MS);
  assert.equal(wellKnownCacheMs({ 'cache-control': 'no-store' }, now), WELL_KNOWN_MIN_CACHE_MS);
  assert.equal(wellKnownCacheMs({ expires: new Date(now + 10 * 3600_000).toUTCString() }, now), 10 * 3600_000);
  assert.equal(wellKnownCacheMs({ expires: 'garbage' }, now), WELL_KNOWN_MIN_CACHE_MS);
  assert.equal(WELL_KNOWN_ERROR_CACHE_MS, 3600_000);
});

test('SRV selection: lowest priority, weighted among equals, "." means none', () => {
  assert.equal(pickSrv([]), null);
  assert.equal(pickSrv([srv('.', 0)]), null);
  assert.deepEqual(pickSrv([srv('b.example.', 2, 20), srv('a.example.', 1, 10)]), { name: 'a.example', port: 1 });
  const group = [srv('x.example', 1, 10, 1), srv('y.example', 2, 10, 3)];
  assert.equal(pickSrv(group, () => 0)!.name, 'x.example');
  assert.equal(pickSrv(group, () => 0.3)!.name, 'y.example');
  assert.equal(pickSrv(group, () => 0.99)!.name, 'y.example');
});

test('private addresses: detection and the guarded DNS lookup', async () => {
  for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.0.1', '169.254.1.1', '100.64.0.1', '0.0.0.0', '::1', '::', 'fe80::1', 'fd12::1', '::ffff:127.0.0.1', '::ffff:a00:1', 'not-an-ip']) {
    assert.ok(isPrivateAddress(a), a);
  }
  for (const a of ['8.8.8.8', '1.1.1.1', '2001:4860:4860::8888', '::ffff:8.8.8.8']) assert.equal(isPrivateAddress(a), false, a);

  const fake: LookupFunction = (_host, _opts, cb) => cb(null, [{ address: '10.0.0.7', family: 4 }, { address: '93.184.216.34', family: 4 }]);
  const onlyPrivate: LookupFunction = (_host, _opts, cb) => cb(null, [{ address: '192.168.1.1', family: 4 }]);
  const run = (fn: LookupFunction, all: boolean) => new Promise<{ err: NodeJS.ErrnoException | null; address: unknown }>((resolve) => fn('h.example', { all }, (err, address) => resolve({ err, address })));
  assert.deepEqual((await run(guardedLookup(false, fake), true)).address, [{ address: '93.184.216.34', family: 4 }]);
  assert.equal((await run(guardedLookup(false, fake), false)).address, '93.184.216.34');
  assert.equal((await run(guardedLookup(true, fake), false)).address, '10.0.0.7');
  const refused = await run(guardedLookup(false, onlyPrivate), false);
  assert.equal(refused.err?.code, 'EPRIVATEADDRESS');
});
