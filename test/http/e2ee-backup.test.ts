// Server-side key backup: versions, keys per room and session, the replacement rule, etag and count,
// and the version errors.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const V3 = '/_matrix/client/v3';
const ALG = 'm.megolm_backup.v1.curve25519-aes-sha2';
type Login = Awaited<ReturnType<typeof registerUser>>;
const call = (who: Login, method: string, path: string, body?: unknown) => api(srv.url, method, V3 + path, { token: who.access_token, body });
const key = (first_message_index: number, forwarded_count: number, is_verified: boolean, tag = 'x') => ({
  first_message_index, forwarded_count, is_verified, session_data: { ephemeral: 'e', ciphertext: tag, mac: 'm' },
});
const ROOM = '!room:localhost';
const ROOM2 = '!other:localhost';

test('backup versions: create, read, update, delete; errors for unknown versions', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  let r = await call(alice, 'GET', '/room_keys/version');
  assert.equal(r.status, 404);
  assert.equal(r.body.errcode, 'M_NOT_FOUND');

  r = await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'pk1', signatures: {} } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const v1 = r.body.version;
  assert.equal(typeof v1, 'string');
  r = await call(alice, 'GET', '/room_keys/version');
  assert.deepEqual(r.body, { algorithm: ALG, auth_data: { public_key: 'pk1', signatures: {} }, count: 0, etag: r.body.etag, version: v1 });
  assert.equal(typeof r.body.etag, 'string');
  assert.deepEqual((await call(alice, 'GET', `/room_keys/version/${v1}`)).body.version, v1);

  // Another user has no such backup; versions are per user.
  assert.equal((await call(bob, 'GET', `/room_keys/version/${v1}`)).status, 404);
  assert.equal((await call(bob, 'GET', '/room_keys/version')).status, 404);
  assert.equal((await call(alice, 'GET', '/room_keys/version/999')).body.errcode, 'M_NOT_FOUND');
  assert.equal((await call(alice, 'GET', '/room_keys/version/notanumber')).body.errcode, 'M_NOT_FOUND');

  // Bad bodies.
  assert.equal((await call(alice, 'POST', '/room_keys/version', { algorithm: ALG })).body.errcode, 'M_MISSING_PARAM');
  assert.equal((await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: {} })).body.errcode, 'M_BAD_JSON');

  // Update: only auth_data; the algorithm and a body version must match.
  r = await call(alice, 'PUT', `/room_keys/version/${v1}`, { algorithm: ALG, auth_data: { public_key: 'pk1b' }, version: v1 });
  assert.equal(r.status, 200);
  assert.equal((await call(alice, 'GET', '/room_keys/version')).body.auth_data.public_key, 'pk1b');
  assert.equal((await call(alice, 'PUT', `/room_keys/version/${v1}`, { algorithm: 'other', auth_data: {} })).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await call(alice, 'PUT', `/room_keys/version/${v1}`, { algorithm: ALG, auth_data: { public_key: 'p' }, version: '77' })).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await call(alice, 'PUT', '/room_keys/version/999', { algorithm: ALG, auth_data: { public_key: 'p' } })).status, 404);

  // A second version becomes current; deleting it makes the first current again; ids are not reused.
  const v2 = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'pk2' } })).body.version;
  assert.notEqual(v2, v1);
  assert.equal((await call(alice, 'GET', '/room_keys/version')).body.version, v2);
  assert.equal((await call(alice, 'DELETE', `/room_keys/version/${v2}`)).status, 200);
  assert.equal((await call(alice, 'DELETE', `/room_keys/version/${v2}`)).status, 200, 'deleting a deleted version succeeds');
  assert.equal((await call(alice, 'DELETE', '/room_keys/version/999')).status, 404);
  assert.equal((await call(alice, 'GET', `/room_keys/version/${v2}`)).status, 404);
  assert.equal((await call(alice, 'GET', '/room_keys/version')).body.version, v1);
  const v3 = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'pk3' } })).body.version;
  assert.ok(Number(v3) > Number(v2), 'version ids are not reused');
});

test('backup keys: the better key wins, etag moves only when keys change, count follows', async () => {
  const alice = await registerUser(srv.url);
  const v = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'pk' } })).body.version;
  const etag0 = (await call(alice, 'GET', '/room_keys/version')).body.etag;

  let r = await call(alice, 'PUT', `/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v}`, key(5, 1, false, 'first'));
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.count, 1);
  const etag1 = r.body.etag;
  assert.notEqual(etag1, etag0);

  const stored = async () => (await call(alice, 'GET', `/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v}`)).body;
  const expectKept = async (candidate: ReturnType<typeof key>, tag: string) => {
    const res = await call(alice, 'PUT', `/room_keys/keys/${encodeURIComponent(ROOM)}/s1?version=${v}`, candidate);
    assert.equal(res.status, 200);
    assert.equal((await stored()).session_data.ciphertext, tag);
    return res.body.etag as string;
  };
  // Worse keys leave the stored one and the etag alone.
  assert.equal(await expectKept(key(6, 0, false, 'later-index'), 'first'), etag1);
  assert.equal(await expectKept(key(5, 2, false, 'more-forwards'), 'first'), etag1);
  assert.equal(await expectKept(key(5, 1, false, 'same'), 'first'), etag1);
  // Better ones replace it: fewer forwards, a lower index, then verified beats everything.
  const e2 = await expectKept(key(5, 0, false, 'fewer-forwards'), 'fewer-forwards');
  assert.notEqual(e2, etag1);
  await expectKept(key(2, 9, false, 'lower-index'), 'lower-index');
  await expectKept(key(100, 100, true, 'verified'), 'verified');
  await expectKept(key(0, 0, false, 'unverified'), 'verified');
  assert.deepEqual(await stored(), key(100, 100, true, 'verified'));

  // Whole room and all rooms.
  r = await call(alice, 'PUT', `/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v}`, { sessions: { s2: key(0, 0, false, 's2'), s3: key(0, 0, false, 's3') } });
  assert.equal(r.body.count, 3);
  r = await call(alice, 'PUT', `/room_keys/keys?version=${v}`, { rooms: { [ROOM2]: { sessions: { t1: key(0, 0, true, 't1') } } } });
  assert.equal(r.body.count, 4);
  const all = await call(alice, 'GET', `/room_keys/keys?version=${v}`);
  assert.deepEqual(Object.keys(all.body.rooms).sort(), [ROOM, ROOM2].sort());
  assert.deepEqual(Object.keys(all.body.rooms[ROOM].sessions).sort(), ['s1', 's2', 's3']);
  assert.equal((await call(alice, 'GET', `/room_keys/version/${v}`)).body.count, 4);
  assert.deepEqual((await call(alice, 'GET', `/room_keys/keys/${encodeURIComponent('!empty:localhost')}?version=${v}`)).body, { sessions: {} });
  assert.equal((await call(alice, 'GET', `/room_keys/keys/${encodeURIComponent(ROOM)}/nosuch?version=${v}`)).body.errcode, 'M_NOT_FOUND');

  // Deletes, at each level, move the etag.
  const beforeDelete = (await call(alice, 'GET', '/room_keys/version')).body.etag;
  r = await call(alice, 'DELETE', `/room_keys/keys/${encodeURIComponent(ROOM)}/s2?version=${v}`);
  assert.equal(r.body.count, 3);
  assert.notEqual(r.body.etag, beforeDelete);
  r = await call(alice, 'DELETE', `/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v}`);
  assert.equal(r.body.count, 1);
  r = await call(alice, 'DELETE', `/room_keys/keys?version=${v}`);
  assert.equal(r.body.count, 0);
  assert.deepEqual((await call(alice, 'GET', `/room_keys/keys?version=${v}`)).body, { rooms: {} });
});

test('backup keys: wrong and unknown versions, bad bodies, other users', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const path = `/room_keys/keys/${encodeURIComponent(ROOM)}/s1`;
  // No backup at all.
  let r = await call(alice, 'PUT', `${path}?version=1`, key(0, 0, false));
  assert.equal(r.status, 404);
  assert.equal(r.body.errcode, 'M_NOT_FOUND');

  const v1 = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'a' } })).body.version;
  assert.equal((await call(alice, 'PUT', `${path}?version=${v1}`, key(3, 0, false, 'old-backup'))).status, 200);
  const v2 = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'b' } })).body.version;

  // Writing to the old version: 403 naming the current one; the old keys stay readable.
  r = await call(alice, 'PUT', `${path}?version=${v1}`, key(0, 0, true));
  assert.equal(r.status, 403);
  assert.equal(r.body.errcode, 'M_WRONG_ROOM_KEYS_VERSION');
  assert.equal(r.body.current_version, v2);
  assert.equal((await call(alice, 'GET', `${path}?version=${v1}`)).body.session_data.ciphertext, 'old-backup');
  r = await call(alice, 'PUT', `/room_keys/keys?version=${v1}`, { rooms: {} });
  assert.equal(r.body.errcode, 'M_WRONG_ROOM_KEYS_VERSION');

  // Unknown versions and missing parameters.
  assert.equal((await call(alice, 'PUT', `${path}?version=999`, key(0, 0, false))).status, 404);
  assert.equal((await call(alice, 'GET', `/room_keys/keys?version=999`)).status, 404);
  assert.equal((await call(alice, 'DELETE', `/room_keys/keys?version=999`)).status, 404);
  assert.equal((await call(alice, 'PUT', path, key(0, 0, false))).body.errcode, 'M_MISSING_PARAM');
  assert.equal((await call(alice, 'GET', '/room_keys/keys')).body.errcode, 'M_MISSING_PARAM');

  // Malformed keys are refused and nothing of the request is stored.
  r = await call(alice, 'PUT', `/room_keys/keys/${encodeURIComponent(ROOM)}?version=${v2}`, { sessions: { good: key(0, 0, false), bad: { first_message_index: 'x', forwarded_count: 0, is_verified: false, session_data: {} } } });
  assert.equal(r.body.errcode, 'M_BAD_JSON');
  assert.equal((await call(alice, 'PUT', `${path}?version=${v2}`, { first_message_index: 0, forwarded_count: 0, is_verified: false })).body.errcode, 'M_MISSING_PARAM');
  assert.equal((await call(alice, 'GET', `/room_keys/version/${v2}`)).body.count, 0);

  // Bob cannot see or write Alice's backup.
  assert.equal((await call(bob, 'GET', `${path}?version=${v1}`)).status, 404);
  assert.equal((await call(bob, 'PUT', `${path}?version=${v2}`, key(0, 0, false))).status, 404);
  assert.equal((await call(bob, 'DELETE', `/room_keys/version/${v2}`)).status, 404);
  assert.equal((await call(alice, 'GET', `/room_keys/version`)).body.version, v2);

  // Deleting a version deletes its keys.
  assert.equal((await call(alice, 'DELETE', `/room_keys/version/${v1}`)).status, 200);
  assert.equal((await call(alice, 'GET', `${path}?version=${v1}`)).status, 404);
});

test('concurrent backup writes keep the best key', async () => {
  const alice = await registerUser(srv.url);
  const v = (await call(alice, 'POST', '/room_keys/version', { algorithm: ALG, auth_data: { public_key: 'pk' } })).body.version;
  const path = `/room_keys/keys/${encodeURIComponent(ROOM)}/race?version=${v}`;
  const candidates = Array.from({ length: 20 }, (_, i) => key(20 - i, i % 3, false, `k${20 - i}`));
  const results = await Promise.all(candidates.map((c) => call(alice, 'PUT', path, c)));
  for (const r of results) assert.equal(r.status, 200);
  assert.equal((await call(alice, 'GET', path)).body.session_data.ciphertext, 'k1');
});
