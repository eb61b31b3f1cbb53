// Push actions written at persist time: who is notified and highlighted, unread counts (main
// timeline and threads, against read positions), GET /notifications, invites, redactions, user rules.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, PushRuleKind } from 'matrix-js-sdk';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import type { ReadUpTo } from '../../src/push/push-notifications.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;
let txn = 0;

type User = Awaited<ReturnType<typeof registerUser>>;

async function createRoom(owner: User, members: User[], body: Record<string, unknown> = { preset: 'public_chat' }): Promise<string> {
  const r = await api(srv.url, 'POST', c('/createRoom'), { token: owner.access_token, body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  for (const m of members) {
    const j = await api(srv.url, 'POST', c(`/join/${enc(r.body.room_id)}`), { token: m.access_token, body: {} });
    assert.equal(j.status, 200, JSON.stringify(j.body));
  }
  return r.body.room_id;
}

async function send(u: User, roomId: string, content: Record<string, unknown>, type = 'm.room.message'): Promise<string> {
  const r = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/send/${type}/t${txn++}`), { token: u.access_token, body: content });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.event_id;
}

const text = (body: string, extra: Record<string, unknown> = {}) => ({ msgtype: 'm.text', body, ...extra });

async function roomNid(roomId: string): Promise<number> {
  return (await srv.hs.services.roomData.room(roomId))!.nid;
}

async function streamOf(eventId: string): Promise<number> {
  return (await srv.hs.services.roomData.event(eventId))!.stream!;
}

async function notifications(u: User, q = ''): Promise<any> {
  const r = await api(srv.url, 'GET', c(`/notifications${q}`), { token: u.access_token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

const counts = (n: number, h: number) => ({ notification_count: n, highlight_count: h });

test('mentions highlight; edits, notices, reactions and own messages do not notify; threads counted apart', async () => {
  const [alice, bob, carol] = [await registerUser(srv.url), await registerUser(srv.url), await registerUser(srv.url)];
  const roomId = await createRoom(alice, [bob, carol]);
  const nid = await roomNid(roomId);

  const m1 = await send(alice, roomId, text('hello'));
  const mention = await send(alice, roomId, text('hey bob', { 'm.mentions': { user_ids: [bob.user_id] } }));
  await send(alice, roomId, { ...text('* hey bob!'), 'm.new_content': text('hey bob!'), 'm.relates_to': { rel_type: 'm.replace', event_id: mention } });
  await send(alice, roomId, { msgtype: 'm.notice', body: 'bot says hi' });
  await send(alice, roomId, { 'm.relates_to': { rel_type: 'm.annotation', event_id: m1, key: '👍' } }, 'm.reaction');
  await send(bob, roomId, text('bob talks'));
  const inThread = await send(alice, roomId, text('in thread', { 'm.relates_to': { rel_type: 'm.thread', event_id: m1 } }));
  const stateChange = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/state/m.room.topic`), { token: alice.access_token, body: { topic: 't' } });
  assert.equal(stateChange.status, 200);

  const { pushNotifications } = srv.hs.services;
  const bobCounts = await pushNotifications.unreadCounts(bob.user_id, nid, {});
  assert.deepEqual(bobCounts.main, counts(2, 1), 'm1 + mention; the mention highlights');
  assert.deepEqual(bobCounts.threads, { [m1]: counts(1, 0) });
  assert.deepEqual(bobCounts.total, counts(3, 1));
  const carolCounts = await pushNotifications.unreadCounts(carol.user_id, nid);
  assert.deepEqual(carolCounts.main, counts(3, 0), 'm1, mention (not hers), bob talks');
  const aliceCounts = await pushNotifications.unreadCounts(alice.user_id, nid);
  assert.deepEqual(aliceCounts.total, counts(1, 0), 'only bob\'s message; her own never count');

  // Read positions: unthreaded covers everything up to it; 'main' only the main timeline; a thread
  // receipt only that thread.
  const sMention = await streamOf(mention);
  const sThread = await streamOf(inThread);
  const at = (r: ReadUpTo) => pushNotifications.unreadCounts(bob.user_id, nid, r);
  assert.deepEqual((await at({ unthreaded: sMention })).total, counts(1, 0));
  assert.deepEqual((await at({ unthreaded: sThread })).total, counts(0, 0));
  const mainRead = await at({ main: sThread });
  assert.deepEqual(mainRead.main, counts(0, 0));
  assert.deepEqual(mainRead.threads, { [m1]: counts(1, 0) });
  const threadRead = await at({ main: await streamOf(m1), threads: { [m1]: sThread } });
  assert.deepEqual(threadRead.main, counts(1, 1));
  assert.deepEqual(threadRead.threads, {});
  // A thread receipt older than the unthreaded one changes nothing.
  assert.deepEqual((await at({ unthreaded: sThread, threads: { [m1]: 1 } })).total, counts(0, 0));

  // GET /notifications: newest first, with the event, actions and room.
  const list = await notifications(bob);
  assert.deepEqual(list.notifications.map((n: any) => n.event.event_id), [inThread, mention, m1]);
  const top = list.notifications[1];
  assert.equal(top.room_id, roomId);
  assert.equal(top.read, false);
  assert.equal(typeof top.ts, 'number');
  assert.deepEqual(top.actions, ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }]);
  assert.equal(top.event.content.body, 'hey bob');
  assert.equal(top.event.sender, alice.user_id);
  assert.deepEqual(list.notifications[2].actions, ['notify']);
  assert.equal(list.next_token, undefined);
  const highlights = await notifications(bob, '?only=highlight');
  assert.deepEqual(highlights.notifications.map((n: any) => n.event.event_id), [mention]);

  // Pagination.
  const p1 = await notifications(bob, '?limit=2');
  assert.equal(p1.notifications.length, 2);
  assert.ok(p1.next_token);
  const p2 = await notifications(bob, `?limit=2&from=${p1.next_token}`);
  assert.deepEqual(p2.notifications.map((n: any) => n.event.event_id), [m1]);
  assert.equal(p2.next_token, undefined);
  const bad = await api(srv.url, 'GET', c('/notifications?from=xyz'), { token: bob.access_token });
  assert.equal(bad.status, 400);

  // `read` from the installed read-position lookup.
  const installed = pushNotifications.readUpToLookup;
  pushNotifications.readUpToLookup = async (_userId, nids) => new Map(nids.map((n) => [n, { unthreaded: sMention }]));
  try {
    const withReads = await notifications(bob);
    assert.deepEqual(withReads.notifications.map((n: any) => n.read), [false, true, true]);
  } finally {
    pushNotifications.readUpToLookup = installed;
  }
});

test('1:1 rooms notify with sound; room mentions need the power level; invites notify the invitee', async () => {
  const [alice, bob, dave] = [await registerUser(srv.url), await registerUser(srv.url), await registerUser(srv.url)];
  const dm = await createRoom(alice, [bob], { preset: 'trusted_private_chat', is_direct: true, invite: [bob.user_id] });
  const m = await send(alice, dm, text('psst'));
  const list = await notifications(bob);
  assert.equal(list.notifications[0].event.event_id, m);
  assert.deepEqual(list.notifications[0].actions, ['notify', { set_tweak: 'sound', value: 'default' }]);

  const group = await createRoom(alice, [bob]);
  const carol = await registerUser(srv.url);
  await api(srv.url, 'POST', c(`/join/${enc(group)}`), { token: carol.access_token, body: {} });
  const atRoom = await send(alice, group, text('@room hi', { 'm.mentions': { room: true } }));
  const fromBob = await send(bob, group, text('@room me too', { 'm.mentions': { room: true } }));
  const carolHighlights = await notifications(carol, '?only=highlight');
  assert.deepEqual(carolHighlights.notifications.map((n: any) => n.event.event_id), [atRoom], 'bob (PL 0) may not notify @room');
  const carolAll = await notifications(carol);
  assert.deepEqual(carolAll.notifications.map((n: any) => n.event.event_id), [fromBob, atRoom]);

  const inv = await api(srv.url, 'POST', c(`/rooms/${enc(group)}/invite`), { token: alice.access_token, body: { user_id: dave.user_id } });
  assert.equal(inv.status, 200, JSON.stringify(inv.body));
  const daveList = await notifications(dave);
  assert.equal(daveList.notifications.length, 1);
  const n = daveList.notifications[0];
  assert.equal(n.event.type, 'm.room.member');
  assert.equal(n.event.state_key, dave.user_id);
  assert.equal(n.room_id, group);
  // Carol and bob are not notified of the invite (.m.rule.member_event).
  assert.equal((await notifications(carol)).notifications[0].event.event_id, fromBob);
});

test('redacted events stop counting; user rules apply at once', async () => {
  const [alice, bob] = [await registerUser(srv.url), await registerUser(srv.url)];
  const carol = await registerUser(srv.url);
  const roomId = await createRoom(alice, [bob, carol]);
  const nid = await roomNid(roomId);
  const { pushNotifications } = srv.hs.services;
  const m1 = await send(alice, roomId, text('one'));
  const m2 = await send(alice, roomId, text('two'));
  assert.deepEqual((await pushNotifications.unreadCounts(bob.user_id, nid)).main, counts(2, 0));
  const red = await api(srv.url, 'PUT', c(`/rooms/${enc(roomId)}/redact/${enc(m1)}/r${txn++}`), { token: alice.access_token, body: {} });
  assert.equal(red.status, 200);
  assert.deepEqual((await pushNotifications.unreadCounts(bob.user_id, nid)).main, counts(1, 0));
  assert.deepEqual((await notifications(bob)).notifications.map((n: any) => n.event.event_id), [m2]);

  // Bob mutes the room (room rule with no actions), and highlights a keyword (content rule).
  const sdk = createClient({ baseUrl: srv.url, accessToken: bob.access_token, userId: bob.user_id, deviceId: bob.device_id });
  await sdk.addPushRule('global', PushRuleKind.RoomSpecific, roomId, { actions: [] } as any);
  await send(alice, roomId, text('three'));
  assert.deepEqual((await pushNotifications.unreadCounts(bob.user_id, nid)).main, counts(1, 0), 'muted');
  await sdk.deletePushRule('global', PushRuleKind.RoomSpecific, roomId);
  await sdk.addPushRule('global', PushRuleKind.ContentSpecific, 'cake', { pattern: 'cake', actions: ['notify', { set_tweak: 'highlight' }] } as any);
  await send(alice, roomId, text('who wants cake?'));
  assert.deepEqual((await pushNotifications.unreadCounts(bob.user_id, nid)).main, counts(2, 1));
  // Disabling .m.rule.message silences plain messages.
  await sdk.setPushRuleEnabled('global', PushRuleKind.Underride, '.m.rule.message', false);
  await send(alice, roomId, text('four'));
  assert.deepEqual((await pushNotifications.unreadCounts(bob.user_id, nid)).main, counts(2, 1));
  // Carol, untouched, got everything but the redacted one.
  assert.deepEqual((await pushNotifications.unreadCounts(carol.user_id, nid)).main, counts(4, 0));
});

test('batch unread counts for many rooms', async () => {
  const [alice, bob] = [await registerUser(srv.url), await registerUser(srv.url)];
  const rooms: string[] = [];
  for (let i = 0; i < 4; i++) rooms.push(await createRoom(alice, [bob]));
  const lastOf: number[] = [];
  for (let i = 0; i < rooms.length; i++) {
    for (let j = 0; j <= i; j++) {
      const id = await send(alice, rooms[i], text(`r${i} m${j}`, j === 0 ? { 'm.mentions': { user_ids: [bob.user_id] } } : {}));
      lastOf[i] = await streamOf(id);
    }
  }
  const nids = await Promise.all(rooms.map(roomNid));
  const req = new Map<number, ReadUpTo>(nids.map((n) => [n, {}]));
  req.set(nids[3], { unthreaded: lastOf[3] });
  req.set(999_999, {}); // unknown room: zero counts
  const res = await srv.hs.services.pushNotifications.unreadCountsForRooms(bob.user_id, req);
  assert.deepEqual(nids.map((n) => res.get(n)!.main), [counts(1, 1), counts(2, 1), counts(3, 1), counts(0, 0)]);
  assert.deepEqual(res.get(999_999)!.total, counts(0, 0));
});

test('over /sync: unread counts follow read receipts; m.push_rules account data', async () => {
  const [alice, bob] = [await registerUser(srv.url), await registerUser(srv.url)];
  const roomId = await createRoom(alice, [bob]);
  const m1 = await send(alice, roomId, text('one'));
  const mention = await send(alice, roomId, text('bob!', { 'm.mentions': { user_ids: [bob.user_id] } }));
  const sync = async (since?: string) => {
    const r = await api(srv.url, 'GET', c(`/sync?timeout=0${since ? `&since=${enc(since)}` : ''}`), { token: bob.access_token });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const first = await sync();
  assert.deepEqual(first.rooms.join[roomId].unread_notifications, counts(2, 1));
  const pushRules = first.account_data.events.find((e: any) => e.type === 'm.push_rules');
  assert.equal(pushRules?.content.global.override[0].rule_id, '.m.rule.master');

  const receipt = await api(srv.url, 'POST', c(`/rooms/${enc(roomId)}/receipt/m.read/${enc(m1)}`), { token: bob.access_token, body: {} });
  assert.equal(receipt.status, 200, JSON.stringify(receipt.body));
  assert.deepEqual((await notifications(bob)).notifications.map((n: any) => [n.event.event_id, n.read]), [[mention, false], [m1, true]]);
  const second = await sync(first.next_batch);
  assert.deepEqual(second.rooms.join[roomId].unread_notifications, counts(1, 1));
  assert.equal(second.account_data?.events?.find((e: any) => e.type === 'm.push_rules'), undefined, 'unchanged rules are not resent');

  await api(srv.url, 'PUT', c('/pushrules/global/content/kw'), { token: bob.access_token, body: { pattern: 'kw', actions: ['notify'] } });
  const third = await sync(second.next_batch);
  const changed = third.account_data.events.find((e: any) => e.type === 'm.push_rules');
  assert.deepEqual(changed.content.global.content.map((r: any) => r.rule_id), ['kw']);
});

test('compiled rules shared between users stay correct where users\' rules differ', async () => {
  const { mergeRuleset } = await import('../../src/push/rules.js');
  const { compileRuleset, evaluatePushRules } = await import('../../src/push/evaluator.js');
  const ctx = (userId: string) => ({ userId, roomMemberCount: 5, senderPowerLevel: 0 });
  const x = mergeRuleset('@x:localhost');
  const y = mergeRuleset('@y:localhost', {}, { underride: { '.m.rule.message': { actions: ['notify', { set_tweak: 'sound', value: 'y' }] } } });
  const cx = compileRuleset(x);
  const cy = compileRuleset(y);
  const mention = { type: 'm.room.message', sender: '@s:localhost', room_id: '!r:localhost', content: { body: 'hi', 'm.mentions': { user_ids: ['@y:localhost'] } } };
  assert.equal(evaluatePushRules(cy, mention, ctx('@y:localhost')).highlight, true);
  assert.equal(evaluatePushRules(cx, mention, ctx('@x:localhost')).highlight, false);
  const plain = { ...mention, content: { body: 'hi' } };
  assert.deepEqual(evaluatePushRules(cx, plain, ctx('@x:localhost')).actions, ['notify']);
  assert.deepEqual(evaluatePushRules(cy, plain, ctx('@y:localhost')).actions, ['notify', { set_tweak: 'sound', value: 'y' }]);
  // Mutating a ruleset after compiling it (not allowed, but) must not leak into other users' rules.
  x.global.underride.find((r) => r.rule_id === '.m.rule.message')!.actions = ['notify', { set_tweak: 'highlight' }];
  const z = compileRuleset(mergeRuleset('@z:localhost'));
  assert.deepEqual(evaluatePushRules(z, plain, ctx('@z:localhost')).actions, ['notify']);
});
