// registration: token | closed, and rate limits on login/registration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, uniqueName } from '../harness.js';

test('token registration: challenge, bad token, good token, validity, uses', async () => {
  const srv = await startTestServer({ registration: { mode: 'token' } });
  try {
    const token = await srv.hs.services.accounts.createRegistrationToken({ usesAllowed: 1 });
    const name = uniqueName();
    const ch = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw' } });
    assert.equal(ch.status, 401);
    assert.deepEqual(ch.body.flows, [{ stages: ['m.login.registration_token'] }]);
    const bad = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw', auth: { type: 'm.login.registration_token', token: 'nope', session: ch.body.session } } });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.errcode, 'M_FORBIDDEN');
    const dummy = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw', auth: { type: 'm.login.dummy', session: ch.body.session } } });
    assert.equal(dummy.status, 401);
    assert.equal(dummy.body.errcode, 'M_UNRECOGNIZED');
    const valid = await api(srv.url, 'GET', `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    assert.deepEqual(valid.body, { valid: true });
    const ok = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: name, password: 'pw', auth: { type: 'm.login.registration_token', token, session: ch.body.session } } });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    const used = await api(srv.url, 'GET', `/_matrix/client/v1/register/m.login.registration_token/validity?token=${token}`);
    assert.deepEqual(used.body, { valid: false });
  } finally {
    await srv.stop();
  }
});

test('closed registration refuses with M_FORBIDDEN', async () => {
  const srv = await startTestServer({ registration: { mode: 'closed' } });
  try {
    const r = await api(srv.url, 'POST', '/_matrix/client/v3/register', { body: { username: uniqueName(), password: 'pw' } });
    assert.equal(r.status, 403);
    assert.equal(r.body.errcode, 'M_FORBIDDEN');
  } finally {
    await srv.stop();
  }
});

test('login is rate limited per IP with M_LIMIT_EXCEEDED and Retry-After', async () => {
  const srv = await startTestServer({ rate_limits: { enabled: true, login: { per_second: 0.1, burst: 2 } } });
  try {
    const attempt = () => api(srv.url, 'POST', '/_matrix/client/v3/login', { body: { type: 'm.login.password', user: 'x', password: 'y' } });
    assert.equal((await attempt()).status, 403);
    assert.equal((await attempt()).status, 403);
    const limited = await attempt();
    assert.equal(limited.status, 429);
    assert.equal(limited.body.errcode, 'M_LIMIT_EXCEEDED');
    assert.ok(limited.body.retry_after_ms > 0);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal((await api(srv.url, 'GET', '/_matrix/client/versions')).status, 200);
  } finally {
    await srv.stop();
  }
});
