// Push rules API over HTTP: defaults, CRUD with before/after, enabled/actions on default rules,
// errors, the push_rules stream. matrix-js-sdk where it has the call; plain HTTP for the rest.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, PushRuleKind, type MatrixClient } from 'matrix-js-sdk';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;

async function newUser(): Promise<{ token: string; userId: string; sdk: MatrixClient }> {
  const u = await registerUser(srv.url);
  return { token: u.access_token, userId: u.user_id, sdk: createClient({ baseUrl: srv.url, accessToken: u.access_token, userId: u.user_id, deviceId: u.device_id }) };
}

const ids = (rules: { rule_id: string }[]) => rules.map((r) => r.rule_id);

test('default ruleset: GET /pushrules/ and /pushrules/global/', async () => {
  const u = await newUser();
  const all = await api(srv.url, 'GET', c('/pushrules/'), { token: u.token });
  assert.equal(all.status, 200);
  const g = all.body.global;
  assert.equal(g.override[0].rule_id, '.m.rule.master');
  assert.equal(g.override[0].enabled, false);
  assert.ok(ids(g.override).includes('.m.rule.is_user_mention'));
  const mention = g.override.find((r: any) => r.rule_id === '.m.rule.is_user_mention');
  assert.equal(mention.conditions[0].value, u.userId);
  assert.deepEqual(ids(g.underride), ['.m.rule.call', '.m.rule.encrypted_room_one_to_one', '.m.rule.room_one_to_one', '.m.rule.message', '.m.rule.encrypted']);
  assert.deepEqual(g.room, []);
  assert.deepEqual(g.sender, []);
  const global = await api(srv.url, 'GET', c('/pushrules/global/'), { token: u.token });
  assert.deepEqual(global.body, g);
  const viaSdk = await u.sdk.getPushRules();
  assert.equal(viaSdk.global.override?.[0].rule_id, '.m.rule.master');
  const one = await api(srv.url, 'GET', c('/pushrules/global/underride/.m.rule.message'), { token: u.token });
  assert.deepEqual(one.body, { rule_id: '.m.rule.message', default: true, enabled: true, conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }], actions: ['notify'] });
  const noAuth = await api(srv.url, 'GET', c('/pushrules/'));
  assert.equal(noAuth.status, 401);
});

test('CRUD with before/after ordering', async () => {
  const u = await newUser();
  const put = (kind: string, id: string, body: unknown, q = '') => api(srv.url, 'PUT', c(`/pushrules/global/${kind}/${enc(id)}${q}`), { token: u.token, body });
  const rule = (n: string) => ({ actions: ['notify'], conditions: [{ kind: 'event_match', key: 'content.body', pattern: n }] });

  await u.sdk.addPushRule('global', PushRuleKind.Override, 'a', rule('a') as any);
  await u.sdk.addPushRule('global', PushRuleKind.Override, 'b', rule('b') as any); // new rules go first
  assert.equal((await put('override', 'c', rule('c'), '?after=b')).status, 200);
  assert.equal((await put('override', 'd', rule('d'), '?before=a')).status, 200);
  assert.equal((await put('override', 'a', { actions: [] })).status, 200); // update keeps its place
  assert.equal((await put('override', 'e', rule('e'), '?before=b&after=a')).status, 200); // before wins

  let g = (await api(srv.url, 'GET', c('/pushrules/'), { token: u.token })).body.global;
  const overrideIds = ids(g.override);
  assert.deepEqual(overrideIds.slice(0, 6), ['.m.rule.master', 'e', 'b', 'c', 'd', 'a']);
  assert.equal(overrideIds[6], '.m.rule.suppress_notices', 'server-default rules follow user rules');
  const a = g.override.find((r: any) => r.rule_id === 'a');
  assert.deepEqual(a, { rule_id: 'a', default: false, enabled: true, conditions: [], actions: [] });

  // Content, room and sender rules; ids with reserved URL characters.
  await u.sdk.addPushRule('global', PushRuleKind.ContentSpecific, 'nocake', { actions: ['notify'], pattern: 'cake*lie' } as any);
  const roomRule = await put('room', '!abc:localhost', { actions: ['notify', { set_tweak: 'sound', value: 'default' }] });
  assert.equal(roomRule.status, 200, JSON.stringify(roomRule.body));
  await put('sender', '@spam:localhost', { actions: [] });
  const cake = await api(srv.url, 'GET', c('/pushrules/global/content/nocake'), { token: u.token });
  assert.deepEqual(cake.body, { rule_id: 'nocake', default: false, enabled: true, pattern: 'cake*lie', actions: ['notify'] });
  g = (await api(srv.url, 'GET', c('/pushrules/'), { token: u.token })).body.global;
  assert.deepEqual(g.room, [{ rule_id: '!abc:localhost', default: false, enabled: true, actions: ['notify', { set_tweak: 'sound', value: 'default' }] }]);
  assert.deepEqual(ids(g.sender), ['@spam:localhost']);

  // Enabled/actions on a user rule.
  await u.sdk.setPushRuleEnabled('global', PushRuleKind.Override, 'c', false);
  assert.deepEqual((await api(srv.url, 'GET', c('/pushrules/global/override/c/enabled'), { token: u.token })).body, { enabled: false });
  await u.sdk.setPushRuleActions('global', PushRuleKind.Override, 'c', ['notify', { set_tweak: 'highlight' } as any]);
  assert.deepEqual((await api(srv.url, 'GET', c('/pushrules/global/override/c/actions'), { token: u.token })).body, { actions: ['notify', { set_tweak: 'highlight' }] });
  // An update of a disabled rule keeps it disabled.
  await put('override', 'c', rule('c2'));
  const c2 = (await api(srv.url, 'GET', c('/pushrules/global/override/c'), { token: u.token })).body;
  assert.equal(c2.enabled, false);
  assert.equal(c2.conditions[0].pattern, 'c2');

  // Delete.
  await u.sdk.deletePushRule('global', PushRuleKind.Override, 'b');
  const gone = await api(srv.url, 'GET', c('/pushrules/global/override/b'), { token: u.token });
  assert.equal(gone.status, 404);
  assert.equal(gone.body.errcode, 'M_NOT_FOUND');
  g = (await api(srv.url, 'GET', c('/pushrules/'), { token: u.token })).body.global;
  assert.deepEqual(ids(g.override).slice(0, 5), ['.m.rule.master', 'e', 'c', 'd', 'a']);

  // Other users are unaffected.
  const other = await newUser();
  const og = (await api(srv.url, 'GET', c('/pushrules/'), { token: other.token })).body.global;
  assert.deepEqual(og.content, []);
  assert.equal(og.override.length, g.override.length - 4);
});

test('enabled and actions of server-default rules', async () => {
  const u = await newUser();
  await u.sdk.setPushRuleEnabled('global', PushRuleKind.Override, '.m.rule.master', true);
  assert.deepEqual((await api(srv.url, 'GET', c('/pushrules/global/override/.m.rule.master/enabled'), { token: u.token })).body, { enabled: true });
  await u.sdk.setPushRuleActions('global', PushRuleKind.Underride, '.m.rule.message', ['notify', { set_tweak: 'sound', value: 'ping' } as any]);
  const msg = (await api(srv.url, 'GET', c('/pushrules/global/underride/.m.rule.message'), { token: u.token })).body;
  assert.equal(msg.default, true);
  assert.deepEqual(msg.actions, ['notify', { set_tweak: 'sound', value: 'ping' }]);
  assert.deepEqual(msg.conditions, [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }]);
  // Both overrides survive each other.
  await api(srv.url, 'PUT', c('/pushrules/global/underride/.m.rule.message/enabled'), { token: u.token, body: { enabled: false } });
  const msg2 = (await api(srv.url, 'GET', c('/pushrules/global/underride/.m.rule.message'), { token: u.token })).body;
  assert.equal(msg2.enabled, false);
  assert.deepEqual(msg2.actions, ['notify', { set_tweak: 'sound', value: 'ping' }]);
  const g = (await api(srv.url, 'GET', c('/pushrules/'), { token: u.token })).body.global;
  assert.equal(g.override[0].enabled, true);
  // Historical actions are accepted and dropped.
  await api(srv.url, 'PUT', c('/pushrules/global/override/.m.rule.suppress_notices/actions'), { token: u.token, body: { actions: ['dont_notify'] } });
  assert.deepEqual((await api(srv.url, 'GET', c('/pushrules/global/override/.m.rule.suppress_notices/actions'), { token: u.token })).body, { actions: [] });
});

test('errors', async () => {
  const u = await newUser();
  const call = (method: string, p: string, body?: unknown) => api(srv.url, method, c(p), { token: u.token, body });
  const expect = async (p: Promise<{ status: number; body: any }>, status: number, errcode: string) => {
    const r = await p;
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.errcode, errcode, JSON.stringify(r.body));
  };
  await expect(call('GET', '/pushrules/global/override/nope'), 404, 'M_NOT_FOUND');
  await expect(call('GET', '/pushrules/global/override/.m.rule.nope'), 404, 'M_NOT_FOUND');
  await expect(call('GET', '/pushrules/global/underride/.m.rule.master'), 404, 'M_NOT_FOUND'); // wrong kind
  await expect(call('DELETE', '/pushrules/global/override/nope'), 404, 'M_NOT_FOUND');
  await expect(call('DELETE', '/pushrules/global/override/.m.rule.master'), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.master', { actions: [] }), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/override/.mine', { actions: [] }), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/bogus/x', { actions: [] }), 400, 'M_INVALID_PARAM');
  await expect(call('GET', '/pushrules/global/bogus/x'), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/override/x', {}), 400, 'M_BAD_JSON');
  await expect(call('PUT', '/pushrules/global/override/x', { actions: ['explode'] }), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/override/x', { actions: [], conditions: [{ kind: 'event_match', key: 'type' }] }), 400, 'M_INVALID_PARAM');
  await expect(call('PUT', '/pushrules/global/content/x', { actions: [] }), 400, 'M_INVALID_PARAM'); // no pattern
  await expect(call('PUT', '/pushrules/global/override/x?before=nope', { actions: [] }), 400, 'M_UNKNOWN');
  await expect(call('PUT', '/pushrules/global/override/x?after=.m.rule.master', { actions: [] }), 400, 'M_UNKNOWN');
  const raw = await api(srv.url, 'PUT', c('/pushrules/global/override/x'), { token: u.token, rawBody: '{nope', headers: { 'content-type': 'application/json' } });
  assert.equal(raw.body.errcode, 'M_NOT_JSON');
  await expect(call('PUT', '/pushrules/global/override/nope/enabled', { enabled: true }), 404, 'M_NOT_FOUND');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.nope/enabled', { enabled: true }), 404, 'M_NOT_FOUND');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.master/enabled', { enabled: 'yes' }), 400, 'M_BAD_JSON');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.master/enabled', {}), 400, 'M_MISSING_PARAM');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.master/actions', { actions: 'notify' }), 400, 'M_BAD_JSON');
  await expect(call('PUT', '/pushrules/global/override/.m.rule.master/actions', { actions: [42] }), 400, 'M_INVALID_PARAM');
  await expect(call('GET', '/pushrules/global/override/nope/actions'), 404, 'M_NOT_FOUND');
  await expect(call('GET', '/pushrules/device/override/x'), 404, 'M_UNRECOGNIZED');
  // Nothing was stored by the failures.
  const g = (await call('GET', '/pushrules/')).body.global;
  assert.ok(!ids(g.override).includes('x'));
  assert.equal(g.override[0].enabled, false);
});

test('changes move the push_rules stream and wake the user', async () => {
  const u = await newUser();
  const other = await newUser();
  const { pushRules, stores, notifier } = srv.hs.services;
  const before = (await stores.streams.currentPositions()).push_rules;
  const woken: { position: number; userIds?: string[] }[] = [];
  const unsubscribe = notifier.subscribe((ch) => { if (ch.stream === 'push_rules') woken.push(ch); });
  try {
    await api(srv.url, 'PUT', c('/pushrules/global/room/!r:localhost'), { token: u.token, body: { actions: [] } });
  } finally {
    unsubscribe();
  }
  const after = (await stores.streams.currentPositions()).push_rules;
  assert.ok(after > before);
  assert.deepEqual(woken.map((w) => w.userIds), [[u.userId]]);
  assert.equal(woken[0].position, after);
  assert.equal(await pushRules.pushRulesChangedSince(u.userId, before, after), true);
  assert.equal(await pushRules.pushRulesChangedSince(u.userId, after, after), false);
  assert.equal(await pushRules.pushRulesChangedSince(other.userId, before, after), false);
  const rs = await pushRules.rulesetFor(u.userId);
  assert.deepEqual(ids(rs.global.room), ['!r:localhost']);
  // A failed change allocates no position.
  await api(srv.url, 'DELETE', c('/pushrules/global/room/nope'), { token: u.token });
  assert.equal((await stores.streams.currentPositions()).push_rules, after);
});

test('rulesets cached by another process are dropped through the stream position', async () => {
  const u = await newUser();
  const { pushRules, db } = srv.hs.services;
  assert.deepEqual((await pushRules.rulesetFor(u.userId)).global.content, []);
  // Simulate a write by another process sharing the database: row + position, no in-process eviction.
  await db.transaction(async (trx) => {
    const pos = await srv.hs.services.stores.streams.nextPosition(trx, 'push_rules');
    await trx('push_rules').insert({
      user_id: u.userId, rules: JSON.stringify({ content: [{ rule_id: 'x', default: false, enabled: true, pattern: 'x', actions: [] }] }), overrides: '{}', stream_id: pos,
    }).onConflict('user_id').merge();
  });
  assert.deepEqual(ids((await pushRules.rulesetFor(u.userId)).global.content), ['x']);
});

test('concurrent changes of one user\'s rules are not lost', async () => {
  const u = await newUser();
  const results = await Promise.all(Array.from({ length: 12 }, (_, i) =>
    api(srv.url, 'PUT', c(`/pushrules/global/sender/${enc(`@s${i}:localhost`)}`), { token: u.token, body: { actions: [] } })));
  assert.deepEqual(results.map((r) => r.status), results.map(() => 200));
  const g = (await api(srv.url, 'GET', c('/pushrules/'), { token: u.token })).body.global;
  assert.equal(g.sender.length, 12);
});
