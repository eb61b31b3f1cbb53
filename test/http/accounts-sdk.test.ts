// matrix-js-sdk drives register, login, whoami, devices, password change, logout and deactivate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, Method, type MatrixClient } from 'matrix-js-sdk';
import { startTestServer, api, uniqueName, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

async function sdkRegister(username: string, password: string): Promise<MatrixClient> {
  const anon = createClient({ baseUrl: srv.url });
  let session: string | undefined;
  try {
    await anon.registerRequest({ username, password });
    assert.fail('expected a UIA challenge');
  } catch (err: any) {
    assert.equal(err.httpStatus, 401);
    session = err.data.session;
    assert.deepEqual(err.data.flows, [{ stages: ['m.login.dummy'] }]);
  }
  const res = await anon.registerRequest({ username, password, auth: { type: 'm.login.dummy', session } as any, initial_device_display_name: 'sdk device' });
  assert.equal(res.user_id, `@${username}:${srv.serverName}`);
  return createClient({ baseUrl: srv.url, accessToken: res.access_token, userId: res.user_id, deviceId: res.device_id });
}

test('register, whoami, login on a second device, devices, rename, delete', async () => {
  const username = uniqueName('sdk');
  const c1 = await sdkRegister(username, 'pw-one');
  const who = await c1.whoami();
  assert.equal(who.user_id, c1.getUserId());
  assert.equal(who.device_id, c1.getDeviceId());

  const anon = createClient({ baseUrl: srv.url });
  const flows = await anon.loginFlows();
  assert.ok(flows.flows.some((f) => f.type === 'm.login.password'));
  const login = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'pw-one', initial_device_display_name: 'second' });
  assert.equal(login.user_id, c1.getUserId());
  const c2 = createClient({ baseUrl: srv.url, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });

  const { devices } = await c1.getDevices();
  assert.deepEqual(devices.map((d) => d.device_id).sort(), [c1.getDeviceId(), c2.getDeviceId()].sort());
  assert.equal(devices.find((d) => d.device_id === login.device_id)?.display_name, 'second');
  assert.equal(typeof devices[0].last_seen_ts, 'number');

  await c1.setDeviceDetails(login.device_id, { display_name: 'renamed' });
  assert.equal((await c1.getDevice(login.device_id)).display_name, 'renamed');
  await assert.rejects(c1.getDevice('NOSUCHDEVICE'), (e: any) => e.httpStatus === 404 && e.errcode === 'M_NOT_FOUND');

  // Deleting a device needs UIA with the password; afterwards its token is dead.
  await assert.rejects(c1.deleteDevice(login.device_id), (e: any) => e.httpStatus === 401 && Array.isArray(e.data.flows));
  await assert.rejects(
    c1.deleteDevice(login.device_id, { type: 'm.login.password', identifier: { type: 'm.id.user', user: c1.getUserId()! }, password: 'wrong' } as any),
    (e: any) => e.httpStatus === 401 && e.data.errcode === 'M_FORBIDDEN',
  );
  await c1.deleteDevice(login.device_id, { type: 'm.login.password', identifier: { type: 'm.id.user', user: c1.getUserId()! }, password: 'pw-one' } as any);
  await assert.rejects(c2.whoami(), (e: any) => e.httpStatus === 401 && e.errcode === 'M_UNKNOWN_TOKEN');
  assert.equal((await c1.getDevices()).devices.length, 1);
});

test('password change logs out other devices and the old password stops working', async () => {
  const username = uniqueName('pw');
  const c1 = await sdkRegister(username, 'old-password');
  const anon = createClient({ baseUrl: srv.url });
  const other = await anon.login('m.login.password', { identifier: { type: 'm.id.user', user: username }, password: 'old-password' });
  const auth = { type: 'm.login.password', identifier: { type: 'm.id.user', user: c1.getUserId()! }, password: 'old-password' };
  await c1.setPassword(auth as any, 'new-password', true);
  assert.equal((await c1.whoami()).user_id, c1.getUserId()); // this device keeps its session
  const otherClient = createClient({ baseUrl: srv.url, accessToken: other.access_token });
  await assert.rejects(otherClient.whoami(), (e: any) => e.errcode === 'M_UNKNOWN_TOKEN');
  await assert.rejects(createClient({ baseUrl: srv.url }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'old-password' }), (e: any) => e.httpStatus === 403);
  const again = await createClient({ baseUrl: srv.url }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'new-password' });
  assert.equal(again.user_id, c1.getUserId());
});

test('logout and logout/all', async () => {
  const username = uniqueName('lo');
  const c1 = await sdkRegister(username, 'pw');
  const anon = createClient({ baseUrl: srv.url });
  const l2 = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'pw' });
  const l3 = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'pw' });
  await c1.logout();
  await assert.rejects(c1.whoami(), (e: any) => e.errcode === 'M_UNKNOWN_TOKEN');
  const c2 = createClient({ baseUrl: srv.url, accessToken: l2.access_token });
  assert.equal((await c2.whoami()).user_id, l2.user_id);
  // matrix-js-sdk has no wrapper for /logout/all; its http API sends it.
  await c2.http.authedRequest(Method.Post, '/logout/all');
  await assert.rejects(createClient({ baseUrl: srv.url, accessToken: l3.access_token }).whoami(), (e: any) => e.errcode === 'M_UNKNOWN_TOKEN');
});

test('deactivate: UIA, then login and tokens fail, name stays taken', async () => {
  const username = uniqueName('de');
  const c1 = await sdkRegister(username, 'pw');
  await c1.deactivateAccount({ type: 'm.login.password', identifier: { type: 'm.id.user', user: c1.getUserId()! }, password: 'pw' } as any, true);
  await assert.rejects(c1.whoami(), (e: any) => e.errcode === 'M_UNKNOWN_TOKEN');
  await assert.rejects(createClient({ baseUrl: srv.url }).loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'pw' }), (e: any) => e.httpStatus === 403);
  const avail = await api(srv.url, 'GET', `/_matrix/client/v3/register/available?username=${username}`);
  assert.equal(avail.body.errcode, 'M_USER_IN_USE');
});

test('refresh tokens: expiring access token, rotation, old refresh token refused', async () => {
  const username = uniqueName('rt');
  await sdkRegister(username, 'pw');
  const anon = createClient({ baseUrl: srv.url });
  const login = await anon.loginRequest({ type: 'm.login.password', identifier: { type: 'm.id.user', user: username }, password: 'pw', refresh_token: true });
  assert.equal(typeof login.refresh_token, 'string');
  assert.ok((login.expires_in_ms ?? 0) > 0);
  const r1 = await anon.refreshToken(login.refresh_token!);
  assert.notEqual(r1.access_token, login.access_token);
  assert.equal((await createClient({ baseUrl: srv.url, accessToken: r1.access_token }).whoami()).user_id, login.user_id);
  await assert.rejects(createClient({ baseUrl: srv.url, accessToken: login.access_token }).whoami(), (e: any) => e.errcode === 'M_UNKNOWN_TOKEN');
  await assert.rejects(anon.refreshToken(login.refresh_token!), (e: any) => e.httpStatus === 401 && e.errcode === 'M_UNKNOWN_TOKEN');
});

test('m.login.token via /login/get_token', async () => {
  const username = uniqueName('lt');
  const c1 = await sdkRegister(username, 'pw');
  const res = await api(srv.url, 'POST', '/_matrix/client/v1/login/get_token', {
    token: c1.getAccessToken()!,
    body: { auth: { type: 'm.login.password', identifier: { type: 'm.id.user', user: c1.getUserId() }, password: 'pw' } },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const login = await createClient({ baseUrl: srv.url }).loginRequest({ type: 'm.login.token', token: res.body.login_token });
  assert.equal(login.user_id, c1.getUserId());
  // Single use.
  await assert.rejects(createClient({ baseUrl: srv.url }).loginRequest({ type: 'm.login.token', token: res.body.login_token }), (e: any) => e.httpStatus === 403);
});
