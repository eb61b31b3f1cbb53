// Device keys, one-time and fallback keys, /keys/query, /keys/claim, /keys/changes, cross-signing
// keys and signatures, over real HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import { signJson, signingKeyFromSeed, type SigningKey } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { crossKey } from '../e2ee-fixtures.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const V3 = '/_matrix/client/v3';
type Login = Awaited<ReturnType<typeof registerUser>>;
const call = (who: Login | undefined, method: string, path: string, body?: unknown) => api(srv.url, method, V3 + path, { token: who?.access_token, body });

type Signatures = Record<string, Record<string, string>>;
const sign = <T extends Record<string, unknown>>(obj: T, userId: string, key: SigningKey) => signJson(obj, userId, key) as T & { signatures: Signatures };

/** A device's Ed25519 key with its signed identity keys, and a signer for one-time keys. */
function device(userId: string, deviceId: string) {
  const key = signingKeyFromSeed(`ed25519:${deviceId}`, randomBytes(32));
  const ed = encodeBase64(key.publicKey);
  const deviceKeys = sign({
    user_id: userId, device_id: deviceId, algorithms: ['m.olm.v1.curve25519-aes-sha2', 'm.megolm.v1.aes-sha2'],
    keys: { [`curve25519:${deviceId}`]: encodeBase64(randomBytes(32)), [`ed25519:${deviceId}`]: ed },
  }, userId, key);
  const otks = (ids: string[], extra: Record<string, unknown> = {}) =>
    Object.fromEntries(ids.map((id) => [`signed_curve25519:${id}`, signJson({ key: encodeBase64(randomBytes(32)), ...extra }, userId, key)]));
  return { key, ed, deviceKeys, otks };
}

function crossSigningSet(userId: string) {
  const master = crossKey(userId, 'master');
  return { master, ssk: crossKey(userId, 'self_signing', master.key), usk: crossKey(userId, 'user_signing', master.key) };
}

const password = (u: Login) => ({ type: 'm.login.password', identifier: { type: 'm.id.user', user: u.user_id }, password: u.password });

test('upload and query device keys, one-time and fallback keys', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  await call(alice, 'PUT', `/devices/${alice.device_id}`, { display_name: 'Alice laptop' });
  const d = device(alice.user_id, alice.device_id);

  const up = await call(alice, 'POST', '/keys/upload', {
    device_keys: d.deviceKeys,
    one_time_keys: d.otks(['AAAAAQ', 'AAAAAg', 'AAAAAw']),
    fallback_keys: d.otks(['AAAABA'], { fallback: true }),
  });
  assert.equal(up.status, 200, JSON.stringify(up.body));
  assert.deepEqual(up.body.one_time_key_counts, { signed_curve25519: 3 });
  assert.deepEqual(await srv.hs.services.e2ee.unusedFallbackKeyTypes(alice.user_id, alice.device_id), ['signed_curve25519']);
  assert.deepEqual(await srv.hs.services.e2ee.oneTimeKeyCounts(alice.user_id, alice.device_id), { signed_curve25519: 3 });

  // An upload with nothing in it reports the counts, which say zero rather than nothing.
  const empty = await call(bob, 'POST', '/keys/upload', {});
  assert.deepEqual(empty.body, { one_time_key_counts: { signed_curve25519: 0 } });

  const q = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [], '@nobody:localhost': [], '@carol:remote.example': [] } });
  assert.equal(q.status, 200);
  const got = q.body.device_keys[alice.user_id][alice.device_id];
  assert.equal(got.keys[`ed25519:${alice.device_id}`], d.ed);
  assert.deepEqual(got.signatures, d.deviceKeys.signatures);
  assert.deepEqual(got.unsigned, { device_display_name: 'Alice laptop' });
  assert.deepEqual(q.body.device_keys['@nobody:localhost'], {});
  assert.ok(q.body.failures['remote.example'], 'remote servers are failures until federation exists');

  const one = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: ['NOSUCH'] } });
  assert.deepEqual(one.body.device_keys[alice.user_id], {});
  const named = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [alice.device_id] } });
  assert.deepEqual(Object.keys(named.body.device_keys[alice.user_id]), [alice.device_id]);

  // Re-uploading the same keys (a retry) changes nothing.
  const again = await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys, one_time_keys: d.otks([]) });
  assert.equal(again.status, 200);
  assert.equal(again.body.one_time_key_counts.signed_curve25519, 3);
});

test('bad uploads get the spec errors and lose nothing already stored', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const d = device(alice.user_id, alice.device_id);
  const first = d.otks(['K1']);
  assert.equal((await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys, one_time_keys: first })).status, 200);

  const expectError = async (body: unknown, status: number, errcode: string) => {
    const r = await call(alice, 'POST', '/keys/upload', body);
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.errcode, errcode, JSON.stringify(r.body));
  };
  // Keys of another device, another user, a signature that does not verify, a changed key.
  const other = device(alice.user_id, 'OTHERDEVICE');
  await expectError({ device_keys: other.deviceKeys }, 400, 'M_INVALID_PARAM');
  await expectError({ device_keys: device(bob.user_id, alice.device_id).deviceKeys }, 400, 'M_INVALID_PARAM');
  const forged = { ...device(alice.user_id, alice.device_id).deviceKeys, signatures: d.deviceKeys.signatures };
  await expectError({ device_keys: forged }, 400, 'M_INVALID_SIGNATURE');
  await expectError({ device_keys: device(alice.user_id, alice.device_id).deviceKeys }, 400, 'M_INVALID_PARAM');
  // Malformed shapes.
  await expectError({ device_keys: { user_id: alice.user_id, device_id: alice.device_id, algorithms: [], keys: {} } }, 400, 'M_MISSING_PARAM');
  await expectError({ one_time_keys: { 'signed_curve25519:X': 42 } }, 400, 'M_BAD_JSON');
  await expectError({ one_time_keys: { nocolon: 'abc' } }, 400, 'M_INVALID_PARAM');
  // A one-time key signed by someone else, and a key id reused with different content: the whole
  // request is refused, so the new key in it is not stored either.
  const stranger = device(alice.user_id, alice.device_id);
  await expectError({ one_time_keys: { ...d.otks(['NEW1']), ...stranger.otks(['NEW2']) } }, 400, 'M_INVALID_SIGNATURE');
  await expectError({ one_time_keys: { ...d.otks(['NEW3']), ...d.otks(['K1']) } }, 400, 'M_INVALID_PARAM');
  await expectError({ fallback_keys: d.otks(['F1', 'F2'], { fallback: true }) }, 400, 'M_INVALID_PARAM');
  await expectError('not json', 400, 'M_NOT_JSON');

  const counts = await call(alice, 'POST', '/keys/upload', { one_time_keys: first });
  assert.deepEqual(counts.body.one_time_key_counts, { signed_curve25519: 1 });
  const q = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.deepEqual(Object.keys(q.body.device_keys[alice.user_id]), [alice.device_id]);
  assert.equal(q.body.device_keys[alice.user_id][alice.device_id].keys[`ed25519:${alice.device_id}`], d.ed);
  assert.equal((await call(undefined, 'POST', '/keys/upload', {})).status, 401);
});

test('claim: one-time keys in upload order, then the fallback key, which stays until replaced', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const d = device(alice.user_id, alice.device_id);
  await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys, one_time_keys: d.otks(['A1']) });
  const fb1 = d.otks(['FB1'], { fallback: true });
  await call(alice, 'POST', '/keys/upload', { one_time_keys: d.otks(['A2']), fallback_keys: fb1 });
  const claim = async () => {
    const r = await call(bob, 'POST', '/keys/claim', { one_time_keys: { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } } });
    assert.equal(r.status, 200);
    return Object.keys(r.body.one_time_keys[alice.user_id]?.[alice.device_id] ?? {});
  };
  assert.deepEqual(await claim(), ['signed_curve25519:A1']);
  assert.deepEqual(await claim(), ['signed_curve25519:A2']);
  assert.deepEqual(await claim(), ['signed_curve25519:FB1']);
  assert.deepEqual(await claim(), ['signed_curve25519:FB1']);
  assert.deepEqual(await srv.hs.services.e2ee.unusedFallbackKeyTypes(alice.user_id, alice.device_id), []);
  assert.deepEqual((await call(alice, 'POST', '/keys/upload', {})).body.one_time_key_counts, { signed_curve25519: 0 });

  // Re-uploading the same fallback key (a retry) keeps it used; a new one is unused.
  assert.equal((await call(alice, 'POST', '/keys/upload', { fallback_keys: fb1 })).status, 200);
  assert.deepEqual(await srv.hs.services.e2ee.unusedFallbackKeyTypes(alice.user_id, alice.device_id), []);
  assert.equal((await call(alice, 'POST', '/keys/upload', { fallback_keys: d.otks(['FB2'], { fallback: true }) })).status, 200);
  assert.deepEqual(await srv.hs.services.e2ee.unusedFallbackKeyTypes(alice.user_id, alice.device_id), ['signed_curve25519']);
  assert.deepEqual(await claim(), ['signed_curve25519:FB2']);

  // Devices without keys, unknown users and unknown algorithms are simply absent.
  const none = await call(bob, 'POST', '/keys/claim', { one_time_keys: { [alice.user_id]: { NOSUCH: 'signed_curve25519', [alice.device_id]: 'curve25519' }, '@x:localhost': { D: 'signed_curve25519' } } });
  assert.deepEqual(none.body, { one_time_keys: {}, failures: {} });
  const remote = await call(bob, 'POST', '/keys/claim', { one_time_keys: { '@x:remote.example': { D: 'signed_curve25519' } } });
  assert.ok(remote.body.failures['remote.example'], 'remote servers are failures until federation exists');
});

test('concurrent claims never hand out the same one-time key', async () => {
  const alice = await registerUser(srv.url);
  const d = device(alice.user_id, alice.device_id);
  const ids = Array.from({ length: 30 }, (_, i) => `C${String(i).padStart(3, '0')}`);
  await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys, one_time_keys: d.otks(ids), fallback_keys: d.otks(['FALLBACK'], { fallback: true }) });
  const claimers = await Promise.all(Array.from({ length: 4 }, () => registerUser(srv.url)));
  const results = await Promise.all(Array.from({ length: 40 }, (_, i) => call(claimers[i % claimers.length], 'POST', '/keys/claim', {
    one_time_keys: { [alice.user_id]: { [alice.device_id]: 'signed_curve25519' } },
  })));
  const got = results.map((r) => {
    assert.equal(r.status, 200);
    return Object.keys(r.body.one_time_keys[alice.user_id][alice.device_id])[0];
  });
  const otks = got.filter((k) => k !== 'signed_curve25519:FALLBACK');
  assert.equal(otks.length, 30);
  assert.equal(new Set(otks).size, 30, 'each one-time key is claimed once');
  assert.equal(got.length - otks.length, 10);
});

test('/keys/changes follows device and key changes; deleting a device deletes its keys', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const e2ee = srv.hs.services.e2ee;
  const start = await e2ee.deviceLists.currentPosition();

  const d = device(alice.user_id, alice.device_id);
  await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys });
  const afterUpload = await e2ee.deviceLists.currentPosition();
  assert.ok(afterUpload > start, 'uploading device keys moves the device-list stream');
  const ch = await call(bob, 'GET', `/keys/changes?from=${start}&to=${afterUpload}`);
  assert.equal(ch.status, 200);
  assert.ok(ch.body.changed.includes(alice.user_id), 'alice is in changed');
  assert.deepEqual(ch.body.left, []);
  assert.deepEqual((await call(bob, 'GET', `/keys/changes?from=${afterUpload}&to=${afterUpload}`)).body.changed, []);
  assert.deepEqual(await e2ee.deviceListChanges(start, afterUpload, [bob.user_id]), []);
  assert.equal((await call(bob, 'GET', '/keys/changes?from=bogus&to=1')).body.errcode, 'M_INVALID_PARAM');
  // /sync tokens work too: the device-list position is one of their parts.
  const { formatSyncToken, zeroToken } = await import('../../src/sync/token.js');
  const syncToken = (pos: number) => formatSyncToken({ ...zeroToken(), device_lists: pos });
  const viaSync = await call(bob, 'GET', `/keys/changes?from=${syncToken(start)}&to=${syncToken(afterUpload)}`);
  assert.deepEqual(viaSync.body.changed, ch.body.changed);
  assert.equal((await call(bob, 'GET', '/keys/changes?from=s1_x')).body.errcode, 'M_INVALID_PARAM');
  assert.equal((await call(bob, 'GET', '/keys/changes')).body.errcode, 'M_MISSING_PARAM');

  // Uploading only one-time keys is not a device-list change; a rename is.
  await call(alice, 'POST', '/keys/upload', { one_time_keys: d.otks(['Z1']) });
  assert.equal(await e2ee.deviceLists.currentPosition(), afterUpload);
  await call(alice, 'PUT', `/devices/${alice.device_id}`, { display_name: 'renamed' });
  assert.deepEqual(await e2ee.changesBetween(afterUpload, await e2ee.deviceLists.currentPosition()), [alice.user_id]);

  // A second device; deleting it removes its keys from /keys/query and is a change.
  const login = await api(srv.url, 'POST', `${V3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.user_id }, password: alice.password } });
  const second = { ...alice, access_token: login.body.access_token, device_id: login.body.device_id };
  const d2 = device(alice.user_id, second.device_id);
  await call(second, 'POST', '/keys/upload', { device_keys: d2.deviceKeys, one_time_keys: d2.otks(['Q1']) });
  assert.equal(Object.keys((await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.device_keys[alice.user_id]).length, 2);
  const before = await e2ee.deviceLists.currentPosition();
  const del = await call(alice, 'DELETE', `/devices/${second.device_id}`, { auth: password(alice) });
  assert.equal(del.status, 200, JSON.stringify(del.body));
  assert.deepEqual(Object.keys((await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.device_keys[alice.user_id]), [alice.device_id]);
  assert.deepEqual(await e2ee.changesBetween(before, await e2ee.deviceLists.currentPosition()), [alice.user_id]);
  const claimed = await call(bob, 'POST', '/keys/claim', { one_time_keys: { [alice.user_id]: { [second.device_id]: 'signed_curve25519' } } });
  assert.deepEqual(claimed.body.one_time_keys, {});
});

test('cross-signing keys: first upload free, identical re-upload free, replacement needs the password', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const cs = crossSigningSet(alice.user_id);
  const e2ee = srv.hs.services.e2ee;

  // Shape and signature checks come first.
  const unsignedSsk = crossKey(alice.user_id, 'self_signing');
  let r = await call(alice, 'POST', '/keys/device_signing/upload', { master_key: cs.master.json, self_signing_key: unsignedSsk.json });
  assert.equal(r.body.errcode, 'M_INVALID_SIGNATURE');
  r = await call(alice, 'POST', '/keys/device_signing/upload', { self_signing_key: cs.ssk.json });
  assert.equal(r.status, 400);
  assert.equal(r.body.errcode, 'M_MISSING_PARAM');
  r = await call(alice, 'POST', '/keys/device_signing/upload', { master_key: crossKey(bob.user_id, 'master').json });
  assert.equal(r.body.errcode, 'M_INVALID_PARAM');
  r = await call(alice, 'POST', '/keys/device_signing/upload', { master_key: { ...cs.master.json, keys: { 'ed25519:a': 'b', 'ed25519:c': 'd' } } });
  assert.equal(r.body.errcode, 'M_BAD_JSON');

  const before = await e2ee.deviceLists.currentPosition();
  const body = { master_key: cs.master.json, self_signing_key: cs.ssk.json, user_signing_key: cs.usk.json };
  r = await call(alice, 'POST', '/keys/device_signing/upload', body);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(await e2ee.changesBetween(before, await e2ee.deviceLists.currentPosition()), [alice.user_id]);
  r = await call(alice, 'POST', '/keys/device_signing/upload', body);
  assert.equal(r.status, 200, 'an identical re-upload needs no UIA');

  const mine = await call(alice, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.deepEqual(mine.body.master_keys[alice.user_id], cs.master.json);
  assert.deepEqual(mine.body.self_signing_keys[alice.user_id], cs.ssk.json);
  assert.deepEqual(mine.body.user_signing_keys[alice.user_id], cs.usk.json);
  const theirs = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.deepEqual(theirs.body.master_keys[alice.user_id], cs.master.json);
  assert.deepEqual(theirs.body.user_signing_keys, {}, 'only the owner sees a user-signing key');

  // Replacing keys: 401 with the password flow, wrong password refused, then accepted.
  const next = crossSigningSet(alice.user_id);
  const replace = { master_key: next.master.json, self_signing_key: next.ssk.json, user_signing_key: next.usk.json };
  r = await call(alice, 'POST', '/keys/device_signing/upload', replace);
  assert.equal(r.status, 401);
  assert.deepEqual(r.body.flows, [{ stages: ['m.login.password'] }]);
  const session = r.body.session;
  r = await call(alice, 'POST', '/keys/device_signing/upload', { ...replace, auth: { ...password(alice), password: 'wrong', session } });
  assert.equal(r.status, 401);
  assert.equal(r.body.errcode, 'M_FORBIDDEN');
  assert.deepEqual((await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.master_keys[alice.user_id], cs.master.json);
  r = await call(alice, 'POST', '/keys/device_signing/upload', { ...replace, auth: { ...password(alice), session } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual((await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.master_keys[alice.user_id], next.master.json);

  // Only a new self-signing key, signed by the stored master key: still a replacement.
  const ssk3 = crossKey(alice.user_id, 'self_signing', next.master.key);
  assert.equal((await call(alice, 'POST', '/keys/device_signing/upload', { self_signing_key: ssk3.json })).status, 401);
  assert.equal((await call(alice, 'POST', '/keys/device_signing/upload', { self_signing_key: ssk3.json, auth: password(alice) })).status, 200);
});

test('a cross-signing key may not share its id with a device', async () => {
  const alice = await registerUser(srv.url);
  const master = crossKey(alice.user_id, 'master');
  const login = await api(srv.url, 'POST', `${V3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.user_id }, password: alice.password, device_id: master.pub } });
  assert.equal(login.status, 200);
  const r = await call(alice, 'POST', '/keys/device_signing/upload', { master_key: master.json });
  assert.equal(r.status, 403);
  assert.equal(r.body.errcode, 'M_FORBIDDEN');
});

test('signature upload: own devices by the self-signing key, master key by a device, others by the user-signing key', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const carol = await registerUser(srv.url);
  const da = device(alice.user_id, alice.device_id);
  const db = device(bob.user_id, bob.device_id);
  await call(alice, 'POST', '/keys/upload', { device_keys: da.deviceKeys });
  await call(bob, 'POST', '/keys/upload', { device_keys: db.deviceKeys });
  const csA = crossSigningSet(alice.user_id);
  const csB = crossSigningSet(bob.user_id);
  await call(alice, 'POST', '/keys/device_signing/upload', { master_key: csA.master.json, self_signing_key: csA.ssk.json, user_signing_key: csA.usk.json });
  await call(bob, 'POST', '/keys/device_signing/upload', { master_key: csB.master.json, self_signing_key: csB.ssk.json, user_signing_key: csB.usk.json });

  const deviceSigned = sign(da.deviceKeys, alice.user_id, csA.ssk.key);
  const masterSigned = sign(csA.master.json, alice.user_id, da.key);
  const bobMasterSigned = sign(csB.master.json, alice.user_id, csA.usk.key);
  const badSig = signJson(da.deviceKeys, alice.user_id, crossKey(alice.user_id, 'self_signing').key);
  const before = await srv.hs.services.e2ee.deviceLists.currentPosition();
  const r = await call(alice, 'POST', '/keys/signatures/upload', {
    [alice.user_id]: { [alice.device_id]: deviceSigned, [csA.master.pub]: masterSigned, NOSUCHDEVICE: deviceSigned },
    [bob.user_id]: { [csB.master.pub]: bobMasterSigned, [bob.device_id]: signJson(db.deviceKeys, alice.user_id, csA.usk.key) },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body.failures[alice.user_id]), ['NOSUCHDEVICE']);
  assert.equal(r.body.failures[alice.user_id].NOSUCHDEVICE.errcode, 'M_NOT_FOUND');
  assert.deepEqual(Object.keys(r.body.failures[bob.user_id]), [bob.device_id], 'another user\'s device cannot be signed');
  const changed = await srv.hs.services.e2ee.changesBetween(before, await srv.hs.services.e2ee.deviceLists.currentPosition());
  assert.deepEqual(changed.sort(), [alice.user_id, bob.user_id].sort());

  // Signatures that do not verify, or an object that is not the stored key, are failures.
  const tampered = signJson({ ...da.deviceKeys, algorithms: ['x'] }, alice.user_id, csA.ssk.key);
  const bad = await call(alice, 'POST', '/keys/signatures/upload', {
    [alice.user_id]: { [alice.device_id]: badSig },
    [bob.user_id]: { [csB.master.pub]: signJson(csB.master.json, alice.user_id, crossKey(alice.user_id, 'user_signing').key) },
  });
  assert.equal(bad.body.failures[alice.user_id][alice.device_id].errcode, 'M_INVALID_SIGNATURE');
  assert.equal(bad.body.failures[bob.user_id][csB.master.pub].errcode, 'M_INVALID_SIGNATURE');
  const mismatch = await call(alice, 'POST', '/keys/signatures/upload', { [alice.user_id]: { [alice.device_id]: tampered } });
  assert.equal(mismatch.body.failures[alice.user_id][alice.device_id].errcode, 'M_INVALID_SIGNATURE');

  // Everyone sees Alice's self-signing signature on her device and her device's on her master key.
  const sskId = `ed25519:${csA.ssk.pub}`;
  for (const viewer of [alice, bob, carol]) {
    const q = await call(viewer, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [], [bob.user_id]: [] } });
    assert.equal(q.body.device_keys[alice.user_id][alice.device_id].signatures[alice.user_id][sskId], deviceSigned.signatures[alice.user_id][sskId]);
    assert.equal(q.body.master_keys[alice.user_id].signatures[alice.user_id][`ed25519:${alice.device_id}`], masterSigned.signatures[alice.user_id][`ed25519:${alice.device_id}`]);
    // Alice's signature of Bob's master key is hers alone to see.
    const onBob = q.body.master_keys[bob.user_id].signatures?.[alice.user_id];
    if (viewer === alice) assert.equal(onBob[`ed25519:${csA.usk.pub}`], bobMasterSigned.signatures[alice.user_id][`ed25519:${csA.usk.pub}`]);
    else assert.equal(onBob, undefined);
  }

  // Replacing the self-signing key drops the signatures it made.
  const ssk2 = crossKey(alice.user_id, 'self_signing', csA.master.key);
  assert.equal((await call(alice, 'POST', '/keys/device_signing/upload', { self_signing_key: ssk2.json, auth: password(alice) })).status, 200);
  const q = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.equal(q.body.device_keys[alice.user_id][alice.device_id].signatures[alice.user_id][sskId], undefined);
});

test('removing a device drops its signatures; deactivation removes the cross-signing identity', async () => {
  const alice = await registerUser(srv.url);
  const bob = await registerUser(srv.url);
  const login = await api(srv.url, 'POST', `${V3}/login`, { body: { type: 'm.login.password', identifier: { type: 'm.id.user', user: alice.user_id }, password: alice.password } });
  const second = { ...alice, access_token: login.body.access_token, device_id: login.body.device_id };
  const d2 = device(alice.user_id, second.device_id);
  await call(second, 'POST', '/keys/upload', { device_keys: d2.deviceKeys });
  const cs = crossSigningSet(alice.user_id);
  await call(alice, 'POST', '/keys/device_signing/upload', { master_key: cs.master.json, self_signing_key: cs.ssk.json, user_signing_key: cs.usk.json });
  const r = await call(second, 'POST', '/keys/signatures/upload', { [alice.user_id]: { [cs.master.pub]: sign(cs.master.json, alice.user_id, d2.key) } });
  assert.deepEqual(r.body.failures, {});
  const masterSigs = async () => (await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } })).body.master_keys[alice.user_id]?.signatures?.[alice.user_id] ?? {};
  assert.ok((await masterSigs())[`ed25519:${second.device_id}`], 'the device signed the master key');
  assert.equal((await call(alice, 'DELETE', `/devices/${second.device_id}`, { auth: password(alice) })).status, 200);
  assert.equal((await masterSigs())[`ed25519:${second.device_id}`], undefined);

  const d = device(alice.user_id, alice.device_id);
  await call(alice, 'POST', '/keys/upload', { device_keys: d.deviceKeys, one_time_keys: d.otks(['D1']) });
  const deactivated = await call(alice, 'POST', '/account/deactivate', { auth: password(alice) });
  assert.equal(deactivated.status, 200, JSON.stringify(deactivated.body));
  const q = await call(bob, 'POST', '/keys/query', { device_keys: { [alice.user_id]: [] } });
  assert.deepEqual(q.body.device_keys[alice.user_id], {});
  assert.equal(q.body.master_keys[alice.user_id], undefined);
  assert.equal(q.body.self_signing_keys[alice.user_id], undefined);
});
