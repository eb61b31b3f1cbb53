// Federation transport over real TLS between three homeservers (hs1, hs2, hs3 = hs1's notary):
// key fetches direct and via a notary, the notary endpoints, signed requests, X-Matrix refusals,
// certificate and private-address checks, backoff.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { startFederation, fedApi, freePort, closeFedAgents, type Federation, type FedServer } from '../federation-harness.js';
import { createApp } from '../../src/http/app.js';
import { FederationClient, FederationError, DestinationUnavailable } from '../../src/federation/client.js';
import { KeyRing } from '../../src/federation/keyring.js';
import { requireServerAuth, formatXMatrix, signRequest, parseXMatrix } from '../../src/federation/x-matrix.js';
import { FederationKeysStore } from '../../src/storage/federation-keys-store.js';
import { openDatabase, migrate } from '../../src/storage/db.js';
import { verifyJsonSignature, generateSigningKey } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { freshDatabase } from '../harness.js';
import pino from 'pino';

let fed: Federation;
let hs1: FedServer, hs2: FedServer, hs3: FedServer;
// A test-only authenticated route, served with hs2's identity (certificate, key ring, name).
let echo: { server: https.Server; port: number };

before(async () => {
  fed = await startFederation(3, {
    configure: (name) => (name === 'hs1.test' ? { federation: { trusted_key_servers: [{ server_name: 'hs3.test' }] } } : {}),
  });
  [hs1, hs2, hs3] = fed.servers;
  const app = createApp({
    apis: ['federation'],
    logger: pino({ level: 'silent' }),
    maxBodyBytes: 65536,
    trustProxy: false,
    inflight: { count: 0 },
    routes: {
      client: [],
      rooted: {
        federation: [(r) => {
          const auth = requireServerAuth(hs2.hs.services.keyRing, 'hs2.test');
          r.get('/_matrix/federation/v1/test/echo/:x', auth, (ctx) => {
            ctx.body = { origin: ctx.state.origin, x: ctx.params.x, query: ctx.query, body: ctx.request.body ?? null };
          });
          r.get('/_matrix/federation/v1/test/slow', async (ctx) => {
            await new Promise((resolve) => setTimeout(resolve, 1000));
            ctx.body = {};
          });
          r.put('/_matrix/federation/v1/test/echo/:x', auth, (ctx) => {
            ctx.body = { origin: ctx.state.origin, x: ctx.params.x, query: ctx.query, body: ctx.request.body ?? null };
          });
        }],
      },
    },
  });
  const server = https.createServer({ cert: readFileSync(hs2.tls.certificate), key: readFileSync(hs2.tls.key) }, app.callback());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  echo = { server, port: (server.address() as AddressInfo).port };
});

after(async () => {
  echo?.server.closeAllConnections();
  await new Promise((r) => echo?.server.close(r));
  await closeFedAgents();
  await fed?.stop();
});

const keyIdOf = (s: FedServer) => s.hs.services.serverKeys.signingKey.keyId;
const pubOf = (s: FedServer) => encodeBase64(s.hs.services.serverKeys.signingKey.publicKey);

/** A client speaking as `as` (its name and key) with its own server_name_map. */
function clientAs(as: FedServer, map: Record<string, string>, opts: { allowPrivate?: boolean; ca?: boolean } = {}): FederationClient {
  return new FederationClient({
    serverName: as.serverName,
    signingKey: () => as.hs.services.serverKeys.signingKey,
    serverNameMap: map,
    allowPrivateAddresses: opts.allowPrivate ?? true,
    caFile: opts.ca === false ? null : fed.ca.caFile,
    connectTimeoutMs: 2000,
  });
}

test('GET /_matrix/federation/v1/version, signed, over TLS from hs1 to hs2', async () => {
  const v = await hs1.hs.services.federationClient.request<{ server: { name: string; version: string } }>('hs2.test', 'GET', '/_matrix/federation/v1/version');
  assert.equal(v.server.name, 'Lattice');
  assert.match(v.server.version, /^\d+\.\d+\.\d+/);
  // Also reachable without signing.
  const raw = await fedApi(fed.ca, hs2, 'GET', '/_matrix/federation/v1/version');
  assert.equal(raw.status, 200);
  assert.equal(raw.body.server.name, 'Lattice');
});

test('HTTP errors are FederationError with status and errcode', async () => {
  await assert.rejects(
    hs1.hs.services.federationClient.request('hs2.test', 'GET', '/_matrix/federation/v1/no/such/endpoint'),
    (err: unknown) => err instanceof FederationError && err.status === 404 && err.errcode === 'M_UNRECOGNIZED' && err.destination === 'hs2.test',
  );
});

test("hs1 fetches hs2's keys directly and caches them", async () => {
  const keys = await hs1.hs.services.keyRing.verifyKeys('hs2.test', [keyIdOf(hs2)], { validAt: Date.now() });
  assert.equal(keys.get(keyIdOf(hs2))?.key, pubOf(hs2));
  assert.ok(keys.get(keyIdOf(hs2))!.validUntilTs > Date.now());
  const rows = await new FederationKeysStore(hs1.hs.services.db).keysOf('hs2.test');
  assert.deepEqual(rows.map((r) => [r.key_id, r.key]), [[keyIdOf(hs2), pubOf(hs2)]]);
});

test('hs3 as notary: GET and POST /_matrix/key/v2/query, countersigned', async () => {
  const one = await fedApi(fed.ca, hs3, 'GET', `/_matrix/key/v2/query/hs2.test?minimum_valid_until_ts=${Date.now()}`);
  assert.equal(one.status, 200);
  assert.equal(one.body.server_keys.length, 1);
  const k = one.body.server_keys[0];
  assert.equal(k.server_name, 'hs2.test');
  assert.ok(verifyJsonSignature(k, 'hs2.test', keyIdOf(hs2), pubOf(hs2)));
  assert.ok(verifyJsonSignature(k, 'hs3.test', keyIdOf(hs3), pubOf(hs3)));

  const many = await fedApi(fed.ca, hs3, 'POST', '/_matrix/key/v2/query', {
    body: { server_keys: { 'hs1.test': { [keyIdOf(hs1)]: { minimum_valid_until_ts: Date.now() } }, 'hs3.test': {}, 'unreachable.invalid': {} } },
  });
  assert.equal(many.status, 200);
  const byName = Object.fromEntries(many.body.server_keys.map((x: { server_name: string }) => [x.server_name, x]));
  assert.deepEqual(Object.keys(byName).sort(), ['hs1.test', 'hs3.test']);
  assert.ok(verifyJsonSignature(byName['hs1.test'], 'hs1.test', keyIdOf(hs1), pubOf(hs1)));
  assert.ok(verifyJsonSignature(byName['hs1.test'], 'hs3.test', keyIdOf(hs3), pubOf(hs3)));
  assert.ok(verifyJsonSignature(byName['hs3.test'], 'hs3.test', keyIdOf(hs3), pubOf(hs3)));

  const bad = await fedApi(fed.ca, hs3, 'POST', '/_matrix/key/v2/query', { body: { server_keys: 'nope' } });
  assert.equal(bad.status, 400);
  const none = await fedApi(fed.ca, hs3, 'POST', '/_matrix/key/v2/query', { body: { server_keys: {} } });
  assert.deepEqual(none.body, { server_keys: [] });
});

test("hs1 fetches hs2's keys via hs3 (configured notary)", async () => {
  await hs1.hs.services.keyRing.fetchFromNotary('hs3.test', 'hs2.test', { keyIds: [keyIdOf(hs2)], minimumValidUntilTs: Date.now() });
  const json = await new FederationKeysStore(hs1.hs.services.db).keyJson('hs2.test');
  const stored = JSON.parse(json!.key_json);
  // Stored with the origin's signature only, ready to be served (countersigned) by hs1 in turn.
  assert.deepEqual(Object.keys(stored.signatures), ['hs2.test']);
});

test('when a server is unreachable its keys come from the notary', async () => {
  // A fresh key ring (own database) in this process, speaking as hs1, for which hs2 is down.
  const tdb = await freshDatabase();
  const db = openDatabase({ url: tdb.url });
  try {
    await migrate(db);
    const dead = await freePort();
    const client = clientAs(hs1, { ...fed.map, 'hs2.test': `127.0.0.1:${dead}` });
    const ring = new KeyRing({ store: new FederationKeysStore(db), ownKeys: hs1.hs.services.serverKeys, transport: client, trustedKeyServers: [{ server_name: 'hs3.test' }] });
    assert.equal(await ring.publicKey('hs2.test', keyIdOf(hs2), Date.now()), pubOf(hs2));
    assert.ok(client.backoffUntil('hs2.test'), 'the failed direct fetch started a backoff');
    // hs3's key (to check its signature) was fetched from hs3.
    assert.equal(await ring.publicKey('hs3.test', keyIdOf(hs3)), pubOf(hs3));
    await client.close();
  } finally {
    await db.destroy();
    await tdb.drop();
  }
});

test('a signed request reaches an authenticated route with origin, query and body', async () => {
  const client = clientAs(hs1, { 'hs2.test': `127.0.0.1:${echo.port}` });
  try {
    const got = await client.request<any>('hs2.test', 'GET', '/_matrix/federation/v1/test/echo/a%20b', { query: { limit: '5', v: ['1', '2'] } });
    assert.deepEqual(got, { origin: 'hs1.test', x: 'a b', query: { limit: '5', v: ['1', '2'] }, body: null });
    const put = await client.request<any>('hs2.test', 'PUT', '/_matrix/federation/v1/test/echo/txn1', { body: { pdus: [], edus: [{ edu_type: 'm.typing', content: { n: 'é' } }] } });
    assert.deepEqual(put.body, { pdus: [], edus: [{ edu_type: 'm.typing', content: { n: 'é' } }] });
    assert.equal(put.origin, 'hs1.test');
  } finally {
    await client.close();
  }
});

test('unsigned, badly signed, misdirected or unknown-key requests get 401 M_UNAUTHORIZED', async () => {
  const key = hs1.hs.services.serverKeys.signingKey;
  const target = { port: echo.port, serverName: 'hs2.test' };
  const path = '/_matrix/federation/v1/test/echo/x';
  const body = { hello: 'world' };
  const sign = (over: Partial<{ method: string; uri: string; origin: string; destination: string; content: unknown }> = {}, k = key) =>
    signRequest({ method: 'PUT', uri: path, origin: 'hs1.test', destination: 'hs2.test', content: body, ...over }, k);
  const put = (authorization?: string, b: unknown = body) => fedApi(fed.ca, target, 'PUT', path, { body: b, headers: authorization ? { authorization } : {} });

  // Control: correctly signed.
  assert.equal((await put(sign())).status, 200);
  // Old servers send no destination parameter: accepted (the signed JSON still names us).
  const p = parseXMatrix(sign())!;
  assert.equal((await put(formatXMatrix({ origin: p.origin, key: p.key, sig: p.sig }))).status, 200);

  const refusals: [string, string | undefined, unknown?][] = [
    ['no header', undefined],
    ['bearer token', 'Bearer abc'],
    ['malformed', 'X-Matrix origin="hs1.test",key="ed25519:x"'],
    ['body changed after signing', sign(), { hello: 'mars' }],
    ['signed for another method', sign({ method: 'POST' })],
    ['signed for another path', sign({ uri: '/_matrix/federation/v1/test/echo/y' })],
    ['wrong destination', sign({ destination: 'hs3.test' })],
    ['signature for another destination, header names us', formatXMatrix({ ...parseXMatrix(sign({ destination: 'hs3.test' }))!, destination: 'hs2.test' })],
    ['origin claims hs3, signed by hs1', formatXMatrix({ ...parseXMatrix(sign({ origin: 'hs3.test' }))!, key: keyIdOf(hs3) })],
    ['unknown key id', formatXMatrix({ ...p, key: 'ed25519:doesnotexist' })],
    ['key of a stranger', sign({}, generateSigningKey())],
    ['invalid origin', formatXMatrix({ ...p, origin: 'not a server' })],
    ['unreachable origin', sign({ origin: 'nowhere.invalid' })],
  ];
  for (const [what, header, b] of refusals) {
    const res = await put(header, b ?? body);
    assert.equal(res.status, 401, what);
    assert.equal(res.body.errcode, 'M_UNAUTHORIZED', what);
  }
  // A body that is not JSON.
  const notJson = await fedApi(fed.ca, target, 'PUT', path, { rawBody: '{nope', headers: { authorization: sign(), 'content-type': 'application/json' } });
  assert.equal(notJson.status, 400);
  assert.equal(notJson.body.errcode, 'M_NOT_JSON');
});

test('certificates are checked: unknown CA and wrong name are refused', async () => {
  const noCa = clientAs(hs1, fed.map, { ca: false });
  await assert.rejects(noCa.request('hs2.test', 'GET', '/_matrix/federation/v1/version'), (e: unknown) => e instanceof DestinationUnavailable);
  await noCa.close();
  // hs2's port under another name: its certificate is for hs2.test.
  const wrongName = clientAs(hs1, { 'impostor.test': fed.map['hs2.test'] });
  await assert.rejects(wrongName.request('impostor.test', 'GET', '/_matrix/federation/v1/version'), (e: unknown) => e instanceof DestinationUnavailable && /altnames|certificate|ERR_TLS/i.test(e.message));
  await wrongName.close();
});

test('private addresses are refused unless allowed, for IP literals and looked-up names', async () => {
  const port = fed.map['hs2.test'].split(':')[1];
  const strict = clientAs(hs1, { 'hs2.test': `127.0.0.1:${port}`, 'viadns.test': `localhost:${port}` }, { allowPrivate: false });
  await assert.rejects(strict.request('hs2.test', 'GET', '/_matrix/federation/v1/version'), (e: unknown) => e instanceof DestinationUnavailable && /private/.test(e.message));
  await assert.rejects(strict.getJson('viadns.test', '/_matrix/key/v2/server'), (e: unknown) => e instanceof DestinationUnavailable && /private/.test(e.message));
  await strict.close();
});

test('connection failures back off per destination; markUp clears it', async () => {
  const dead = await freePort();
  const client = clientAs(hs1, { 'dead.test': `127.0.0.1:${dead}`, ...fed.map });
  try {
    await assert.rejects(client.request('dead.test', 'GET', '/_matrix/federation/v1/version'), (e: unknown) => e instanceof DestinationUnavailable && /ECONNREFUSED/.test(e.message));
    const until = client.backoffUntil('dead.test');
    assert.ok(until && until > Date.now());
    await assert.rejects(client.request('dead.test', 'GET', '/_matrix/federation/v1/version'), (e: unknown) => e instanceof DestinationUnavailable && e.retryAt === until && /not retrying/.test(e.message));
    // Other destinations are unaffected.
    assert.equal((await client.request<any>('hs2.test', 'GET', '/_matrix/federation/v1/version')).server.name, 'Lattice');
    client.markUp('dead.test');
    assert.equal(client.backoffUntil('dead.test'), undefined);
  } finally {
    await client.close();
  }
  // A timeout counts as a failure too; ignoreBackoff sends anyway, and a success clears the backoff.
  const slow = clientAs(hs1, { 'hs2.test': `127.0.0.1:${echo.port}` });
  try {
    await assert.rejects(slow.request('hs2.test', 'GET', '/_matrix/federation/v1/test/slow', { timeoutMs: 100 }), (e: unknown) => e instanceof DestinationUnavailable && /timed out/.test(e.message));
    assert.ok(slow.backoffUntil('hs2.test'));
    await slow.request('hs2.test', 'GET', '/_matrix/federation/v1/test/slow', { ignoreBackoff: true });
    assert.equal(slow.backoffUntil('hs2.test'), undefined);
  } finally {
    await slow.close();
  }
});
