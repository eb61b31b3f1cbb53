// The HTTP ground floor: errors, CORS, limits, keys, well-known, registration modes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, uniqueName, type TestServer } from '../harness.js';
import { verifyJsonSignature } from '../../src/crypto/signing.js';
import { sharedSecretMac } from '../../src/admin/register.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ limits: { max_body_bytes: 4096 }, well_known: { support: { contacts: [{ role: 'm.role.admin', matrix_id: '@admin:localhost' }] } } });
});
after(async () => srv?.stop());

test('/versions, well-known and CORS', async () => {
  const v = await api(srv.url, 'GET', '/_matrix/client/versions');
  assert.equal(v.status, 200);
  assert.ok(v.body.versions.includes('v1.11'));
  assert.equal(v.headers.get('access-control-allow-origin'), '*');
  const opt = await api(srv.url, 'OPTIONS', '/_matrix/client/v3/account/whoami');
  assert.ok(opt.status === 204 || opt.status === 200);
  assert.match(opt.headers.get('access-control-allow-headers') ?? '', /Authorization/);
  assert.match(opt.headers.get('access-control-allow-methods') ?? '', /PUT/);
  const wk = await api(srv.url, 'GET', '/.well-known/matrix/client');
  assert.equal(typeof wk.body['m.homeserver'].base_url, 'string');
  const support = await api(srv.url, 'GET', '/.well-known/matrix/support');
  assert.equal(support.body.contacts[0].matrix_id, '@admin:localhost');
});

test('server key is signed and verifiable', async () => {
  const r = await api(srv.url, 'GET', '/_matrix/key/v2/server');
  assert.equal(r.status, 200);
  assert.equal(r.body.server_name, srv.serverName);
  assert.ok(r.body.valid_until_ts > Date.now());
  const [keyId, { key }] = Object.entries(r.body.verify_keys)[0] as [string, { key: string }];
  assert.match(keyId, /^ed25519:/);
  assert.ok(verifyJsonSignature(r.body, srv.serverName, keyId, key));
  // The key survives a restart of the services on the same database.
  const again = await api(srv.url, 'GET', '/_matrix/key/v2/server');
  assert.deepEqual(Object.keys(again.body.verify_keys), [keyId]);
});

test('unknown endpoints and wrong methods answer M_UNRECOGNIZED', async () => {
  const a = await api(srv.url, 'GET', '/_matrix/client/v3/no/such/thing');
  assert.equal(a.status, 404);
  assert.equal(a.body.errcode, 'M_UNRECOGNIZED');
  const b = await api(srv.url, 'DELETE', '/_matrix/client/v3/login');
  assert.equal(b.status, 405);
  assert.equal(b.body.errcode, 'M_UNRECOGNIZED');
  const c = await api(srv.url, 'GET', '/nothing-here');
  assert.equal(c.status, 404);
  assert.equal(c.body.errcode, 'M_UNRECOGNIZED');
});

test('bad bodies: not JSON, wrong types, missing params, too large', async () => {
  const notJson = await api(srv.url, 'POST', '/_matrix/client/v3/login', { rawBody: '{"type": ', headers: { 'content-type': 'application/json' } });
  assert.equal(notJson.status, 400);
  assert.equal(notJson.body.errcode, 'M_NOT_JSON');
  const arr = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: [1, 2] });
  assert.equal(arr.body.errcode, 'M_NOT_JSON');
  const wrongType = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 5 } });
  assert.equal(wrongType.status, 400);
  assert.equal(wrongType.body.errcode, 'M_BAD_JSON');
  const missing = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { password: 'x' } });
  assert.equal(missing.status, 400);
  assert.equal(missing.body.errcode, 'M_MISSING_PARAM');
  const big = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', pad: 'x'.repeat(10_000) } });
  assert.equal(big.status, 413);
  assert.equal(big.body.errcode, 'M_TOO_LARGE');
  // The server is still up.
  assert.equal((await api(srv.url, 'GET', '/_matrix/client/versions')).status, 200);
});

test('missing and unknown tokens', async () => {
  const none = await api(srv.url, 'GET', '/_matrix/client/v3/account/whoami');
  assert.equal(none.status, 401);
  assert.equal(none.body.errcode, 'M_MISSING_TOKEN');
  const bad = await api(srv.url, 'GET', '/_matrix/client/v3/account/whoami', { token: 'syt_nope' });
  assert.equal(bad.status, 401);
  assert.equal(bad.body.errcode, 'M_UNKNOWN_TOKEN');
  const q = await api(srv.url, 'GET', '/_matrix/client/v3/account/whoami?access_token=nope');
  assert.equal(q.body.errcode, 'M_UNKNOWN_TOKEN');
  const malformed = await api(srv.url, 'GET', '/_matrix/client/v3/account/whoami', { headers: { authorization: 'Basic abc' } });
  assert.equal(malformed.status, 401);
});

test('wrong password and unknown user give M_FORBIDDEN; the legacy user field works', async () => {
  const u = await registerUser(srv.url);
  const wrong = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: u.user_id }, password: 'wrong' } });
  assert.equal(wrong.status, 403);
  assert.equal(wrong.body.errcode, 'M_FORBIDDEN');
  const nobody = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', user: 'nobody-here', password: 'x' } });
  assert.equal(nobody.status, 403);
  const legacy = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', user: u.user_id.slice(1).split(':')[0], password: u.password } });
  assert.equal(legacy.status, 200);
  assert.equal(legacy.body.user_id, u.user_id);
  const unknownType = await api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.bogus' } });
  assert.equal(unknownType.status, 400);
});

test('registration: username checks and the UIA challenge', async () => {
  const name = uniqueName();
  const avail = await api(srv.url, 'GET', `/_matrix/client/v3/register/available?username=${name}`);
  assert.deepEqual(avail.body, { available: true });
  const invalid = await api(srv.url, 'GET', '/_matrix/client/v3/register/available?username=Bad%20Name!');
  assert.equal(invalid.body.errcode, 'M_INVALID_USERNAME');
  const challenge = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw' } });
  assert.equal(challenge.status, 401);
  assert.deepEqual(challenge.body.flows, [{ stages: ['m.login.dummy'] }]);
  assert.equal(typeof challenge.body.session, 'string');
  await registerUser(srv.url, name);
  const taken = await api(srv.url, 'GET', `/_matrix/client/v3/register/available?username=${name}`);
  assert.equal(taken.body.errcode, 'M_USER_IN_USE');
  const dup = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw', auth: { type: 'm.login.dummy' } } });
  assert.equal(dup.body.errcode, 'M_USER_IN_USE');
  const guest = await api(srv.url, 'POST', '/_matrix/client/v3/register?kind=guest', { body: {} });
  assert.equal(guest.status, 403);
});

test('profile: set, get, custom fields, other users forbidden', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const path = `/_matrix/client/v3/profile/${encodeURIComponent(a.user_id)}`;
  assert.equal((await api(srv.url, 'PUT', `${path}/displayname`, { token: a.access_token, body: { displayname: 'Alice A' } })).status, 200);
  assert.equal((await api(srv.url, 'PUT', `${path}/avatar_url`, { token: a.access_token, body: { avatar_url: 'mxc://localhost/abc' } })).status, 200);
  assert.equal((await api(srv.url, 'PUT', `${path}/m.tz`, { token: a.access_token, body: { 'm.tz': 'Europe/Paris' } })).status, 200);
  const p = await api(srv.url, 'GET', path);
  assert.deepEqual(p.body, { displayname: 'Alice A', avatar_url: 'mxc://localhost/abc', 'm.tz': 'Europe/Paris' });
  assert.deepEqual((await api(srv.url, 'GET', `${path}/displayname`)).body, { displayname: 'Alice A' });
  const forbidden = await api(srv.url, 'PUT', `${path}/displayname`, { token: b.access_token, body: { displayname: 'Mallory' } });
  assert.equal(forbidden.status, 403);
  assert.equal(forbidden.body.errcode, 'M_FORBIDDEN');
  assert.equal((await api(srv.url, 'DELETE', `${path}/m.tz`, { token: a.access_token })).status, 200);
  assert.equal((await api(srv.url, 'GET', `${path}/m.tz`)).status, 404);
  assert.equal((await api(srv.url, 'GET', '/_matrix/client/v3/profile/%40nobody%3Alocalhost')).body.errcode, 'M_NOT_FOUND');
  const badAvatar = await api(srv.url, 'PUT', `${path}/avatar_url`, { token: a.access_token, body: { avatar_url: 5 } });
  assert.equal(badAvatar.status, 400);
});

test('account data: put, get, isolation between users', async () => {
  const a = await registerUser(srv.url);
  const b = await registerUser(srv.url);
  const p = `/_matrix/client/v3/user/${encodeURIComponent(a.user_id)}/account_data/org.example.test`;
  assert.equal((await api(srv.url, 'GET', p, { token: a.access_token })).status, 404);
  assert.equal((await api(srv.url, 'PUT', p, { token: a.access_token, body: { x: 1 } })).status, 200);
  assert.deepEqual((await api(srv.url, 'GET', p, { token: a.access_token })).body, { x: 1 });
  assert.equal((await api(srv.url, 'GET', p, { token: b.access_token })).status, 403);
  const managed = await api(srv.url, 'PUT', `/_matrix/client/v3/user/${encodeURIComponent(a.user_id)}/account_data/m.push_rules`, { token: a.access_token, body: {} });
  assert.equal(managed.status, 405);
});

test('capabilities and 3pid', async () => {
  const a = await registerUser(srv.url);
  const caps = await api(srv.url, 'GET', '/_matrix/client/v3/capabilities', { token: a.access_token });
  assert.equal(caps.body.capabilities['m.change_password'].enabled, true);
  assert.equal(caps.body.capabilities['m.room_versions'].default, '12');
  const tp = await api(srv.url, 'GET', '/_matrix/client/v3/account/3pid', { token: a.access_token });
  assert.deepEqual(tp.body, { threepids: [] });
});

test('shared-secret registration with the Synapse HMAC protocol', async () => {
  const { body: { nonce } } = await api(srv.url, 'GET', '/_synapse/admin/v1/register');
  assert.equal(typeof nonce, 'string');
  const username = uniqueName('admin');
  const req = { nonce, username, password: 'pw-admin', admin: true };
  const bad = await api(srv.url, 'POST', '/_synapse/admin/v1/register', { body: { ...req, mac: 'deadbeef' } });
  assert.equal(bad.status, 403);
  // A nonce is single-use.
  const { body: { nonce: n2 } } = await api(srv.url, 'GET', '/_synapse/admin/v1/register');
  const ok = await api(srv.url, 'POST', '/_synapse/admin/v1/register', { body: { ...req, nonce: n2, mac: sharedSecretMac('test-shared-secret', { ...req, nonce: n2 }) } });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.user_id, `@${username}:${srv.serverName}`);
  const replay = await api(srv.url, 'POST', '/_synapse/admin/v1/register', { body: { ...req, nonce: n2, mac: sharedSecretMac('test-shared-secret', { ...req, nonce: n2 }) } });
  assert.equal(replay.status, 400);
  const who = await api(srv.url, 'GET', '/_matrix/client/v3/account/whoami', { token: ok.body.access_token });
  assert.equal(who.body.user_id, ok.body.user_id);
});

test('metrics endpoint', async () => {
  const m = await fetch(`${srv.url}/metrics`);
  assert.equal(m.status, 200);
  assert.match(await m.text(), /process_cpu_user_seconds_total/);
});
