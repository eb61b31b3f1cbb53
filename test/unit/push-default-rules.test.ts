import { test } from 'node:test';
import assert from 'node:assert/strict';

import { defaultRuleset, localpartOf } from '../../src/push/default-rules.js';
import { evaluatePushRules, type PushContext } from '../../src/push/evaluator.js';
import type { PushRulesContent } from '../../src/push/rules.js';

const ME = '@alice:example.org';
const OTHER = '@bob:example.org';
const ROOM = '!room:example.org';

function ctx(over: Partial<PushContext> = {}): PushContext {
  return {
    userId: ME,
    displayName: 'Alice Smith',
    roomMemberCount: 5,
    senderPowerLevel: 0,
    notificationPowerLevels: { room: 50 },
    ...over,
  };
}

function msg(content: Record<string, unknown>, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { type: 'm.room.message', sender: OTHER, room_id: ROOM, event_id: '$e', content, ...extra };
}

const rules = defaultRuleset(ME);
const ids = (r: PushRulesContent, kind: keyof PushRulesContent['global']) => r.global[kind].map((x) => x.rule_id);

test('v1.19 predefined rules: exact IDs in spec order', () => {
  assert.deepEqual(ids(rules, 'override'), [
    '.m.rule.master',
    '.m.rule.suppress_notices',
    '.m.rule.invite_for_me',
    '.m.rule.member_event',
    '.m.rule.is_user_mention',
    '.m.rule.is_room_mention',
    '.m.rule.tombstone',
    '.m.rule.reaction',
    '.m.rule.room.server_acl',
    '.m.rule.suppress_edits',
  ]);
  assert.deepEqual(ids(rules, 'content'), []);
  assert.deepEqual(ids(rules, 'room'), []);
  assert.deepEqual(ids(rules, 'sender'), []);
  assert.deepEqual(ids(rules, 'underride'), [
    '.m.rule.call',
    '.m.rule.encrypted_room_one_to_one',
    '.m.rule.room_one_to_one',
    '.m.rule.message',
    '.m.rule.encrypted',
  ]);
});

test('all predefined rules are default, only master is disabled', () => {
  for (const kind of ['override', 'content', 'room', 'sender', 'underride'] as const) {
    for (const r of rules.global[kind]) {
      assert.equal(r.default, true, r.rule_id);
      assert.equal(r.enabled, r.rule_id !== '.m.rule.master', r.rule_id);
    }
  }
});

test('user-specific rules embed the user ID', () => {
  const invite = rules.global.override.find((r) => r.rule_id === '.m.rule.invite_for_me');
  assert.deepEqual(invite?.conditions?.[2], { kind: 'event_match', key: 'state_key', pattern: ME });
  const mention = rules.global.override.find((r) => r.rule_id === '.m.rule.is_user_mention');
  assert.deepEqual(mention?.conditions, [
    { kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: ME },
  ]);
  assert.deepEqual(mention?.actions, ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }]);
});

test('defaultRuleset returns fresh objects each call', () => {
  const a = defaultRuleset(ME);
  a.global.override[0].enabled = true;
  assert.equal(defaultRuleset(ME).global.override[0].enabled, false);
});

test('localpartOf', () => {
  assert.equal(localpartOf('@alice:example.org'), 'alice');
  assert.equal(localpartOf('@a.b-c:example.org:8448'), 'a.b-c');
});

test('plain message in a group room: .m.rule.message, notify without sound or highlight', () => {
  const r = evaluatePushRules(rules, msg({ msgtype: 'm.text', body: 'hello alice' }), ctx());
  assert.equal(r.ruleId, '.m.rule.message');
  assert.equal(r.kind, 'underride');
  assert.equal(r.notify, true);
  assert.equal(r.highlight, false);
  assert.equal(r.sound, undefined);
  assert.deepEqual(r.actions, ['notify']);
});

test('one-to-one room message: sound, no highlight', () => {
  const r = evaluatePushRules(rules, msg({ msgtype: 'm.text', body: 'hi' }), ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, '.m.rule.room_one_to_one');
  assert.equal(r.notify, true);
  assert.equal(r.highlight, false);
  assert.equal(r.sound, 'default');
});

test('encrypted events: one-to-one vs group', () => {
  const ev = { type: 'm.room.encrypted', sender: OTHER, room_id: ROOM, content: { algorithm: 'm.megolm.v1.aes-sha2', ciphertext: 'x' } };
  const one = evaluatePushRules(rules, ev, ctx({ roomMemberCount: 2 }));
  assert.equal(one.ruleId, '.m.rule.encrypted_room_one_to_one');
  assert.equal(one.notify, true);
  assert.equal(one.sound, 'default');
  const group = evaluatePushRules(rules, ev, ctx({ roomMemberCount: 3 }));
  assert.equal(group.ruleId, '.m.rule.encrypted');
  assert.equal(group.notify, true);
  assert.equal(group.sound, undefined);
  assert.equal(group.highlight, false);
});

test('m.mentions.user_ids containing me highlights (with sound)', () => {
  const r = evaluatePushRules(rules, msg({ body: 'hey', 'm.mentions': { user_ids: [OTHER, ME] } }), ctx());
  assert.equal(r.ruleId, '.m.rule.is_user_mention');
  assert.equal(r.notify, true);
  assert.equal(r.highlight, true);
  assert.equal(r.sound, 'default');
});

test('m.mentions of someone else does not highlight me', () => {
  const r = evaluatePushRules(rules, msg({ body: 'hey Alice Smith alice', 'm.mentions': { user_ids: [OTHER] } }), ctx());
  assert.equal(r.ruleId, '.m.rule.message');
  assert.equal(r.highlight, false);
});

test('plaintext mentions no longer highlight by default (legacy rules removed in v1.17)', () => {
  const r = evaluatePushRules(rules, msg({ body: 'Alice Smith: alice @room' }), ctx({ senderPowerLevel: 100 }));
  assert.equal(r.ruleId, '.m.rule.message');
  assert.equal(r.highlight, false);
});

test('@room mention with permission highlights; without permission it does not', () => {
  const ev = msg({ body: 'everyone!', 'm.mentions': { room: true } });
  const ok = evaluatePushRules(rules, ev, ctx({ senderPowerLevel: 50 }));
  assert.equal(ok.ruleId, '.m.rule.is_room_mention');
  assert.equal(ok.notify, true);
  assert.equal(ok.highlight, true);
  assert.equal(ok.sound, undefined);

  const no = evaluatePushRules(rules, ev, ctx({ senderPowerLevel: 49 }));
  assert.equal(no.ruleId, '.m.rule.message');
  assert.equal(no.highlight, false);

  // Custom notification level from m.room.power_levels content.notifications.
  const custom = evaluatePushRules(rules, ev, ctx({ senderPowerLevel: 0, notificationPowerLevels: { room: 0 } }));
  assert.equal(custom.ruleId, '.m.rule.is_room_mention');
  // No notifications object at all: room defaults to 50.
  const dflt = evaluatePushRules(rules, ev, ctx({ senderPowerLevel: 10, notificationPowerLevels: undefined }));
  assert.equal(dflt.ruleId, '.m.rule.message');
  // room: "true" (string) is not `true`.
  const str = evaluatePushRules(rules, msg({ body: 'x', 'm.mentions': { room: 'true' } }), ctx({ senderPowerLevel: 100 }));
  assert.equal(str.ruleId, '.m.rule.message');
});

test('edits (m.replace) do not notify: .m.rule.suppress_edits', () => {
  const ev = msg({
    msgtype: 'm.text',
    body: '* fixed',
    'm.new_content': { msgtype: 'm.text', body: 'fixed' },
    'm.relates_to': { rel_type: 'm.replace', event_id: '$orig' },
  });
  const r = evaluatePushRules(rules, ev, ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, '.m.rule.suppress_edits');
  assert.equal(r.notify, false);
  assert.deepEqual(r.actions, []);
  // Other relation types still notify.
  const thread = msg({ body: 'in thread', 'm.relates_to': { rel_type: 'm.thread', event_id: '$root' } });
  assert.equal(evaluatePushRules(rules, thread, ctx()).ruleId, '.m.rule.message');
});

test('notices do not notify, even when they mention me', () => {
  const r = evaluatePushRules(rules, msg({ msgtype: 'm.notice', body: 'bot', 'm.mentions': { user_ids: [ME] } }), ctx());
  assert.equal(r.ruleId, '.m.rule.suppress_notices');
  assert.equal(r.notify, false);
  assert.equal(r.highlight, false);
});

test('invites for me notify with sound; other member events do not notify', () => {
  const invite = { type: 'm.room.member', sender: OTHER, room_id: ROOM, state_key: ME, content: { membership: 'invite' } };
  const r = evaluatePushRules(rules, invite, ctx());
  assert.equal(r.ruleId, '.m.rule.invite_for_me');
  assert.equal(r.notify, true);
  assert.equal(r.highlight, false);
  assert.equal(r.sound, 'default');

  const otherInvite = { ...invite, state_key: '@carol:example.org' };
  const o = evaluatePushRules(rules, otherInvite, ctx());
  assert.equal(o.ruleId, '.m.rule.member_event');
  assert.equal(o.notify, false);

  const join = { type: 'm.room.member', sender: OTHER, room_id: ROOM, state_key: OTHER, content: { membership: 'join' } };
  const j = evaluatePushRules(rules, join, ctx({ roomMemberCount: 2 }));
  assert.equal(j.ruleId, '.m.rule.member_event');
  assert.equal(j.notify, false);
});

test('tombstone state event highlights; a non-state tombstone does not match it', () => {
  const ev = { type: 'm.room.tombstone', sender: OTHER, room_id: ROOM, state_key: '', content: { body: 'moved', replacement_room: '!new:x' } };
  const r = evaluatePushRules(rules, ev, ctx());
  assert.equal(r.ruleId, '.m.rule.tombstone');
  assert.equal(r.notify, true);
  assert.equal(r.highlight, true);
  const { state_key: _s, ...noState } = ev;
  const n = evaluatePushRules(rules, noState, ctx());
  assert.equal(n.ruleId, undefined);
  assert.equal(n.notify, false);
});

test('reactions do not notify', () => {
  const ev = { type: 'm.reaction', sender: OTHER, room_id: ROOM, content: { 'm.relates_to': { rel_type: 'm.annotation', event_id: '$x', key: '👍' } } };
  const r = evaluatePushRules(rules, ev, ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, '.m.rule.reaction');
  assert.equal(r.notify, false);
});

test('server ACL changes do not notify', () => {
  const ev = { type: 'm.room.server_acl', sender: OTHER, room_id: ROOM, state_key: '', content: { allow: ['*'] } };
  const r = evaluatePushRules(rules, ev, ctx());
  assert.equal(r.ruleId, '.m.rule.room.server_acl');
  assert.equal(r.notify, false);
});

test('call invites ring', () => {
  const ev = { type: 'm.call.invite', sender: OTHER, room_id: ROOM, content: { call_id: '1', version: '1' } };
  const r = evaluatePushRules(rules, ev, ctx({ roomMemberCount: 2 }));
  assert.equal(r.ruleId, '.m.rule.call');
  assert.equal(r.notify, true);
  assert.equal(r.sound, 'ring');
  assert.equal(r.highlight, false);
});

test('unmatched event types do not notify', () => {
  const ev = { type: 'm.room.topic', sender: OTHER, room_id: ROOM, state_key: '', content: { topic: 'x' } };
  const r = evaluatePushRules(rules, ev, ctx());
  assert.equal(r.notify, false);
  assert.equal(r.ruleId, undefined);
  assert.deepEqual(r.actions, []);
});

test("the user's own events never notify", () => {
  const r = evaluatePushRules(rules, msg({ body: 'x', 'm.mentions': { user_ids: [ME] } }, { sender: ME }), ctx());
  assert.equal(r.notify, false);
  assert.equal(r.highlight, false);
});

test('enabling .m.rule.master silences everything', () => {
  const rs = defaultRuleset(ME);
  rs.global.override[0].enabled = true;
  const r = evaluatePushRules(rs, msg({ body: 'x', 'm.mentions': { user_ids: [ME] } }), ctx());
  assert.equal(r.ruleId, '.m.rule.master');
  assert.equal(r.notify, false);
});

// ----- legacy mention rules (pre-v1.17), opt-in --------------------------------------------

const legacy = defaultRuleset(ME, { legacyMentions: true });

test('legacyMentions restores the pre-v1.17 rules in their spec positions', () => {
  assert.deepEqual(ids(legacy, 'override'), [
    '.m.rule.master',
    '.m.rule.suppress_notices',
    '.m.rule.invite_for_me',
    '.m.rule.member_event',
    '.m.rule.is_user_mention',
    '.m.rule.contains_display_name',
    '.m.rule.is_room_mention',
    '.m.rule.roomnotif',
    '.m.rule.tombstone',
    '.m.rule.reaction',
    '.m.rule.room.server_acl',
    '.m.rule.suppress_edits',
  ]);
  assert.deepEqual(legacy.global.content, [{
    rule_id: '.m.rule.contains_user_name',
    default: true,
    enabled: true,
    pattern: 'alice',
    actions: ['notify', { set_tweak: 'sound', value: 'default' }, { set_tweak: 'highlight' }],
  }]);
});

test('display name matching: word boundaries, case-insensitive', () => {
  const c = ctx({ displayName: 'Alice Smith' });
  const hit = (body: string) => evaluatePushRules(legacy, msg({ body }), c);
  for (const body of ['alice smith: look', 'Hey ALICE SMITH!', "it's Alice Smith's turn", 'Alice Smith', '(alice smith)']) {
    const r = hit(body);
    assert.equal(r.ruleId, '.m.rule.contains_display_name', body);
    assert.equal(r.highlight, true, body);
    assert.equal(r.sound, 'default', body);
  }
  for (const body of ['alicesmith', 'xAlice Smith', 'Alice Smith_', 'Alice  Smith', 'Alice Smithy']) {
    assert.notEqual(hit(body).ruleId, '.m.rule.contains_display_name', body);
  }
  assert.equal(hit('alicesmith').ruleId, '.m.rule.message');
  assert.equal(hit('Alice Smith_').ruleId, '.m.rule.contains_user_name'); // "alice" still a word
  // Display names are literal, not globs.
  const star = ctx({ displayName: 'A*' });
  assert.equal(evaluatePushRules(legacy, msg({ body: 'Abc' }), star).ruleId, '.m.rule.message');
  assert.equal(evaluatePushRules(legacy, msg({ body: 'hi a*' }), star).ruleId, '.m.rule.contains_display_name');
  // No display name -> never matches (falls through to the localpart content rule here).
  assert.equal(evaluatePushRules(legacy, msg({ body: 'Alice Smith' }), ctx({ displayName: undefined })).ruleId, '.m.rule.contains_user_name');
  assert.equal(evaluatePushRules(legacy, msg({ body: 'Smith' }), ctx({ displayName: '' })).ruleId, '.m.rule.message');
});

test('user-name content rule: localpart with word boundaries', () => {
  const c = ctx({ displayName: null });
  const r = evaluatePushRules(legacy, msg({ body: 'ping ALICE.' }), c);
  assert.equal(r.ruleId, '.m.rule.contains_user_name');
  assert.equal(r.kind, 'content');
  assert.equal(r.highlight, true);
  assert.equal(evaluatePushRules(legacy, msg({ body: 'malice aforethought' }), c).ruleId, '.m.rule.message');
});

test('legacy @room rule needs permission and a word boundary', () => {
  const c = (pl: number) => ctx({ displayName: null, senderPowerLevel: pl });
  assert.equal(evaluatePushRules(legacy, msg({ body: 'hey @room!' }), c(50)).ruleId, '.m.rule.roomnotif');
  assert.equal(evaluatePushRules(legacy, msg({ body: 'hey @room!' }), c(0)).ruleId, '.m.rule.message');
  assert.equal(evaluatePushRules(legacy, msg({ body: 'hey @roomy' }), c(100)).ruleId, '.m.rule.message');
});

test('legacy rules are skipped when the event has m.mentions', () => {
  const c = ctx({ senderPowerLevel: 100 });
  const r = evaluatePushRules(legacy, msg({ body: 'Alice Smith alice @room', 'm.mentions': {} }), c);
  assert.equal(r.ruleId, '.m.rule.message');
  assert.equal(r.highlight, false);
});
