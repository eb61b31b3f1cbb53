import { test } from 'node:test';
import assert from 'node:assert/strict';

import { defaultRuleset } from '../../src/push/default-rules.js';
import { evaluatePushRules } from '../../src/push/evaluator.js';
import {
  computeInsertionIndex,
  findRule,
  isPushRuleKind,
  mergeRuleset,
  upsertUserRule,
  validateActions,
  validateRuleForKind,
  validateRuleId,
  type PushRule,
  type UserRules,
} from '../../src/push/rules.js';

const ME = '@alice:example.org';
const OTHER = '@bob:example.org';

const user = (rule_id: string, extra: Partial<PushRule> = {}): PushRule =>
  ({ rule_id, default: false, enabled: true, actions: ['notify'], ...extra });

test('mergeRuleset with no user rules is exactly the default ruleset', () => {
  assert.deepEqual(mergeRuleset(ME, {}), defaultRuleset(ME));
  assert.deepEqual(mergeRuleset(ME, {}, undefined, { legacyMentions: true }), defaultRuleset(ME, { legacyMentions: true }));
});

test('mergeRuleset ordering: master first, then user rules, then other server-default rules', () => {
  const userRules: UserRules = {
    override: [user('o1', { conditions: [] }), user('o2', { conditions: [] })],
    content: [user('c1', { pattern: 'cake' })],
    room: [user('!r:x')],
    sender: [user(OTHER, { actions: [] })],
    underride: [user('u1', { conditions: [] })],
  };
  const m = mergeRuleset(ME, userRules, undefined, { legacyMentions: true }).global;
  assert.deepEqual(m.override.slice(0, 4).map((r) => r.rule_id), ['.m.rule.master', 'o1', 'o2', '.m.rule.suppress_notices']);
  assert.deepEqual(m.content.map((r) => r.rule_id), ['c1', '.m.rule.contains_user_name']);
  assert.deepEqual(m.room.map((r) => r.rule_id), ['!r:x']);
  assert.deepEqual(m.sender.map((r) => r.rule_id), [OTHER]);
  assert.deepEqual(m.underride.slice(0, 2).map((r) => r.rule_id), ['u1', '.m.rule.call']);
  for (const r of [m.override[1], m.content[0], m.room[0], m.sender[0], m.underride[0]]) assert.equal(r.default, false);
});

test('mergeRuleset shapes rules per kind and normalises user rules', () => {
  const m = mergeRuleset(ME, {
    room: [{ rule_id: '!r:x', default: true, enabled: undefined as unknown as boolean, actions: ['dont_notify'], conditions: [{ kind: 'x' }] }],
    content: [user('c', { pattern: 'p', conditions: [] })],
    override: [user('o')], // no conditions stored
    underride: [user('.m.rule.fake', { conditions: [] })], // dot IDs are not user rules
  }).global;
  assert.deepEqual(m.room[0], { rule_id: '!r:x', default: false, enabled: true, actions: [] });
  assert.deepEqual(m.content[0], { rule_id: 'c', default: false, enabled: true, actions: ['notify'], pattern: 'p' });
  assert.deepEqual(m.override[1], { rule_id: 'o', default: false, enabled: true, actions: ['notify'], conditions: [] });
  assert.equal(m.underride.some((r) => r.rule_id === '.m.rule.fake'), false);
});

test('mergeRuleset applies enabled/actions overrides of server-default rules', () => {
  const m = mergeRuleset(ME, {}, {
    override: { '.m.rule.master': { enabled: true }, '.m.rule.suppress_notices': { enabled: false } },
    underride: { '.m.rule.message': { actions: ['notify', { set_tweak: 'sound', value: 'ping' }] } },
    content: { '.m.rule.contains_user_name': { enabled: false } }, // not in v1.19: ignored
  });
  assert.equal(findRule(m, 'override', '.m.rule.master')?.enabled, true);
  assert.equal(findRule(m, 'override', '.m.rule.suppress_notices')?.enabled, false);
  assert.deepEqual(findRule(m, 'underride', '.m.rule.message')?.actions, ['notify', { set_tweak: 'sound', value: 'ping' }]);
  assert.equal(findRule(m, 'underride', '.m.rule.message')?.default, true);
  assert.equal(m.global.content.length, 0);
  // Master enabled still comes first, ahead of user overrides.
  const withUser = mergeRuleset(ME, { override: [user('mine', { conditions: [] })] }, { override: { '.m.rule.master': { enabled: true } } });
  const r = evaluatePushRules(withUser, { type: 'm.room.message', sender: OTHER, content: { body: 'x' } },
    { userId: ME, roomMemberCount: 3, senderPowerLevel: 0 });
  assert.equal(r.ruleId, '.m.rule.master');
  assert.equal(r.notify, false);
});

test('user override rules outrank server-default overrides; user underrides outrank default underrides', () => {
  const m = mergeRuleset(ME, {
    override: [user('loud-notices', {
      conditions: [{ kind: 'event_match', key: 'content.msgtype', pattern: 'm.notice' }],
      actions: ['notify', { set_tweak: 'sound', value: 'bell' }],
    })],
    underride: [user('quiet-messages', { conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }], actions: [] })],
  });
  const c = { userId: ME, roomMemberCount: 2, senderPowerLevel: 0 };
  const notice = evaluatePushRules(m, { type: 'm.room.message', sender: OTHER, content: { msgtype: 'm.notice', body: 'x' } }, c);
  assert.equal(notice.ruleId, 'loud-notices');
  assert.equal(notice.sound, 'bell');
  const text = evaluatePushRules(m, { type: 'm.room.message', sender: OTHER, content: { msgtype: 'm.text', body: 'x' } }, c);
  assert.equal(text.ruleId, 'quiet-messages');
  assert.equal(text.notify, false);
});

test('validateRuleId', () => {
  assert.equal(validateRuleId('override', 'ok').ok, true);
  assert.equal(validateRuleId('override', '.m.rule.mine').ok, false);
  assert.equal(validateRuleId('override', 'a/b').ok, false);
  assert.equal(validateRuleId('override', 'a\\b').ok, false);
  assert.equal(validateRuleId('override', '').ok, false);
  assert.equal(validateRuleId('global', 'x').ok, false);
  const bad = validateRuleId('content', '.x');
  assert.ok(!bad.ok && bad.status === 400);
  assert.equal(isPushRuleKind('room'), true);
  assert.equal(isPushRuleKind('postcontent'), false);
});

test('validateActions', () => {
  assert.deepEqual(validateActions(['notify', { set_tweak: 'sound', value: 'x' }]), { ok: true, value: ['notify', { set_tweak: 'sound', value: 'x' }] });
  assert.deepEqual(validateActions(['dont_notify']), { ok: true, value: [] });
  assert.deepEqual(validateActions(['notify', 'coalesce']), { ok: true, value: ['notify'] });
  assert.equal(validateActions(['explode']).ok, false);
  assert.equal(validateActions([{ value: 1 }]).ok, false);
  assert.equal(validateActions([5]).ok, false);
  assert.equal(validateActions('notify').ok, false);
});

test('validateRuleForKind: per-kind bodies', () => {
  const content = validateRuleForKind('content', 'nocake', { pattern: 'cake*lie', actions: ['notify'] });
  assert.deepEqual(content, { ok: true, value: { rule_id: 'nocake', default: false, enabled: true, actions: ['notify'], pattern: 'cake*lie' } });
  assert.equal(validateRuleForKind('content', 'nocake', { actions: ['notify'] }).ok, false);

  const over = validateRuleForKind('override', 'beer', {
    conditions: [
      { kind: 'event_match', key: 'content.body', pattern: 'beer' },
      { kind: 'room_member_count', is: '<=10' },
    ],
    actions: ['notify', { set_tweak: 'sound', value: 'beeroclock.wav' }],
  });
  assert.ok(over.ok);
  assert.equal(over.value.conditions?.length, 2);
  assert.equal(over.value.pattern, undefined);

  const noConds = validateRuleForKind('underride', 'u', { actions: [] });
  assert.ok(noConds.ok);
  assert.deepEqual(noConds.value.conditions, []);

  const room = validateRuleForKind('room', '!dj234r78wl45Gh4D:matrix.org', { actions: [], conditions: [{ kind: 'x' }], pattern: 'p' });
  assert.deepEqual(room, { ok: true, value: { rule_id: '!dj234r78wl45Gh4D:matrix.org', default: false, enabled: true, actions: [] } });

  assert.equal(validateRuleForKind('override', 'x', { conditions: [] }).ok, false); // actions required
  assert.equal(validateRuleForKind('override', 'x', null).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: {} }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'event_match', key: 'type' }] }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'room_member_count', is: 'lots' }] }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'event_property_is', key: 'k', value: { a: 1 } }] }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'event_property_is', key: 'k', value: 1.5 }] }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'event_property_is', key: 'k', value: null }] }).ok, true);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'sender_notification_permission' }] }).ok, false);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: [{ kind: 'org.example.new', foo: 1 }] }).ok, true);
  assert.equal(validateRuleForKind('override', 'x', { actions: [], conditions: ['event_match'] }).ok, false);
  assert.equal(validateRuleForKind('override', '.m.rule.master', { actions: [] }).ok, false);
});

test('computeInsertionIndex: before / after / neither', () => {
  const ids = ['a', 'b', 'c'];
  assert.deepEqual(computeInsertionIndex(ids, 'new'), { ok: true, value: 0 }); // new -> most important
  assert.deepEqual(computeInsertionIndex(ids, 'b'), { ok: true, value: 1 }); // existing keeps its place
  assert.deepEqual(computeInsertionIndex(ids, 'new', { before: 'b' }), { ok: true, value: 1 });
  assert.deepEqual(computeInsertionIndex(ids, 'new', { after: 'b' }), { ok: true, value: 2 });
  assert.deepEqual(computeInsertionIndex(ids, 'new', { after: 'c' }), { ok: true, value: 3 });
  assert.deepEqual(computeInsertionIndex(ids, 'new', { before: 'a', after: 'c' }), { ok: true, value: 0 }); // before wins
  // Moving an existing rule: index is into the list without it.
  assert.deepEqual(computeInsertionIndex(ids, 'a', { after: 'c' }), { ok: true, value: 2 });
  assert.deepEqual(computeInsertionIndex(ids, 'c', { before: 'a' }), { ok: true, value: 0 });
  const missing = computeInsertionIndex(ids, 'new', { before: 'zzz' });
  assert.ok(!missing.ok);
  assert.equal(missing.status, 400);
  assert.equal(missing.errcode, 'M_UNKNOWN');
  assert.match(missing.error, /zzz/);
  assert.equal(computeInsertionIndex(ids, 'new', { after: '.m.rule.master' }).ok, false);
  assert.equal(computeInsertionIndex(ids, 'a', { before: 'a' }).ok, false);
  assert.deepEqual(computeInsertionIndex(ids, 'new', { before: '', after: null }), { ok: true, value: 0 });
});

test('upsertUserRule: ordering, enabled preserved on update, input untouched', () => {
  let list: PushRule[] = [];
  const put = (id: string, opts = {}, extra: Partial<PushRule> = {}) => {
    const r = upsertUserRule(list, user(id, { conditions: [], ...extra }), opts);
    assert.ok(r.ok);
    list = r.value;
  };
  put('a');
  put('b'); // new rules go first
  assert.deepEqual(list.map((r) => r.rule_id), ['b', 'a']);
  put('c', { after: 'a' });
  assert.deepEqual(list.map((r) => r.rule_id), ['b', 'a', 'c']);
  put('d', { before: 'a' });
  assert.deepEqual(list.map((r) => r.rule_id), ['b', 'd', 'a', 'c']);
  list = list.map((r) => (r.rule_id === 'a' ? { ...r, enabled: false } : r));
  const before = list;
  put('a', {}, { actions: [] }); // update in place
  assert.deepEqual(list.map((r) => r.rule_id), ['b', 'd', 'a', 'c']);
  assert.equal(list[2].enabled, false);
  assert.deepEqual(list[2].actions, []);
  assert.notEqual(before, list);
  put('a', { before: 'b' }); // move
  assert.deepEqual(list.map((r) => r.rule_id), ['a', 'b', 'd', 'c']);
  assert.equal(upsertUserRule(list, user('x'), { after: 'nope' }).ok, false);
});

test('user rule order (before/after) decides which rule fires', () => {
  const rule = (id: string, sound: string) => user(id, {
    conditions: [{ kind: 'event_match', key: 'content.body', pattern: 'tea' }],
    actions: ['notify', { set_tweak: 'sound', value: sound }],
  });
  let list: PushRule[] = [];
  for (const [r, opts] of [[rule('first', 's1'), {}], [rule('second', 's2'), { after: 'first' }]] as const) {
    const res = upsertUserRule(list, r, opts);
    assert.ok(res.ok);
    list = res.value;
  }
  const ev = { type: 'm.room.message', sender: OTHER, content: { body: "It's time for tea" } };
  const c = { userId: ME, roomMemberCount: 5, senderPowerLevel: 0 };
  assert.equal(evaluatePushRules(mergeRuleset(ME, { override: list }), ev, c).ruleId, 'first');
  const moved = upsertUserRule(list, rule('second', 's2'), { before: 'first' });
  assert.ok(moved.ok);
  const r = evaluatePushRules(mergeRuleset(ME, { override: moved.value }), ev, c);
  assert.equal(r.ruleId, 'second');
  assert.equal(r.sound, 's2');
});
