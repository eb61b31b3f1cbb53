import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  canonicalPropertyPath,
  compileCondition,
  evaluatePushRules,
  flattenEvent,
  globMatches,
  parsePropertyPath,
  type PushContext,
} from '../../src/push/evaluator.js';
import type { PushCondition, PushRule, PushRulesContent } from '../../src/push/rules.js';

const ME = '@alice:example.org';
const OTHER = '@bob:example.org';

const ctx: PushContext = { userId: ME, displayName: 'Alice', roomMemberCount: 10, senderPowerLevel: 0, notificationPowerLevels: { room: 50 } };

function matches(cond: PushCondition, event: Record<string, unknown>, c: Partial<PushContext> = {}): boolean {
  return compileCondition(cond)(flattenEvent({ sender: OTHER, ...event }), { ...ctx, ...c });
}

const em = (key: string, pattern: string): PushCondition => ({ kind: 'event_match', key, pattern });

test('property paths: parsing and escaping per the appendix', () => {
  assert.deepEqual(parsePropertyPath('content.body'), ['content', 'body']);
  assert.deepEqual(parsePropertyPath('content.m\\.relates_to.rel_type'), ['content', 'm.relates_to', 'rel_type']);
  assert.deepEqual(parsePropertyPath('content.m\\\\foo'), ['content', 'm\\foo']);
  assert.deepEqual(parsePropertyPath('content.a\\x'), ['content', 'a\\x']); // other escapes left as-is
  assert.deepEqual(parsePropertyPath('a..b'), ['a', '', 'b']);
  assert.equal(canonicalPropertyPath('content.a\\x'), 'content.a\\\\x');
});

test('flattenEvent: escaped keys, arrays and scalars are leaves, objects descended', () => {
  const f = flattenEvent({ type: 't', content: { 'm.x': { y: 1 }, 'a\\b': 'z', arr: [1, { o: 1 }], n: null, deep: { er: { est: true } } } });
  assert.equal(f.get('content.m\\.x.y'), 1);
  assert.equal(f.get('content.a\\\\b'), 'z');
  assert.deepEqual(f.get('content.arr'), [1, { o: 1 }]);
  assert.equal(f.get('content.arr.0'), undefined);
  assert.equal(f.get('content.n'), null);
  assert.equal(f.get('content.deep.er.est'), true);
  assert.equal(f.get('content.deep'), undefined);
});

test('event_match: spec topic example (lunc?*)', () => {
  const topic = (t: unknown) => matches(em('content.topic', 'lunc?*'), { type: 'm.room.topic', content: { topic: t } });
  assert.equal(topic('Lunch plans'), true);
  assert.equal(topic('LUNCH'), true);
  assert.equal(topic(' lunch'), false);
  assert.equal(topic('lunc'), false);
  assert.equal(topic(null), false);
});

test('event_match: * matches zero or more, ? exactly one, whole value, case-insensitive', () => {
  const t = (pattern: string, value: unknown) => matches(em('content.x', pattern), { content: { x: value } });
  assert.equal(t('*', ''), true);
  assert.equal(t('*', 'anything at all'), true);
  assert.equal(t('a*c', 'ac'), true);
  assert.equal(t('a*c', 'abbbc'), true);
  assert.equal(t('a*c', 'abbbcd'), false);
  assert.equal(t('a?c', 'abc'), true);
  assert.equal(t('a?c', 'ac'), false);
  assert.equal(t('a?c', 'abbc'), false);
  assert.equal(t('a?c', 'a😀c'), true); // ? is one character (code point)
  assert.equal(t('m.room.*', 'M.ROOM.MESSAGE'), true);
  assert.equal(t('m.room.message', 'mxroom.message'), false); // dots are literal
  assert.equal(t('a+b(c)[d]{2}|^$', 'A+B(C)[D]{2}|^$'), true); // regex metacharacters literal
  assert.equal(t('multi*line', 'multi\nline'), true);
  assert.equal(t('', ''), true);
  assert.equal(t('', 'x'), false);
});

test('event_match: absent or non-string values never match, even with *', () => {
  assert.equal(matches(em('content.missing', '*'), { content: {} }), false);
  assert.equal(matches(em('content.n', '*'), { content: { n: 5 } }), false);
  assert.equal(matches(em('content.b', '*'), { content: { b: true } }), false);
  assert.equal(matches(em('content.o', '*'), { content: { o: { a: 'x' } } }), false);
  assert.equal(matches(em('content.a', '*'), { content: { a: ['x'] } }), false);
  // Malformed conditions never match.
  assert.equal(matches({ kind: 'event_match', key: 'type' }, { type: 'x' }), false);
  assert.equal(matches({ kind: 'event_match', pattern: '*' }, { type: 'x' }), false);
});

test('event_match on content.body: word-boundary substring match (spec examples)', () => {
  const body = (pattern: string, b: string) => matches(em('content.body', pattern), { content: { body: b } });
  assert.equal(body('ex*ple', 'An example event.'), true);
  assert.equal(body('ex*ple', 'exple'), true);
  assert.equal(body('ex*ple', 'An exciting triple-whammy'), true);
  assert.equal(body('ex*ple', 'Anexample'), false);
  assert.equal(body('ex*ple', 'examples'), false);
  assert.equal(body('cake', 'I like CAKE.'), true);
  assert.equal(body('cake', 'cupcake'), false);
  assert.equal(body('cake', 'cake_walk'), false); // _ is a word character
  assert.equal(body('cake', 'cake-walk'), true);
  assert.equal(body('cake', 'ÄcakeÄ'), true); // non-ASCII letters are boundaries per the spec's sets
  assert.equal(body('@room', 'hi @room.'), true);
  assert.equal(body('@room', '@roomy'), false);
  // Other keys are whole-value matches, not word matches.
  assert.equal(matches(em('content.topic', 'cake'), { content: { topic: 'I like cake' } }), false);
});

test('globMatches helper', () => {
  assert.equal(globMatches('Foo*', 'foobar', false), true);
  assert.equal(globMatches('foo', 'a FOO b', true), true);
  assert.equal(globMatches('foo', 'a FOO b', false), false);
});

test('dotted keys with escapes', () => {
  const create = { type: 'm.room.create', content: { 'm.federate': true, creator: '@x:y' } };
  assert.equal(matches({ kind: 'event_property_is', key: 'content.m\\.federate', value: true }, create), true);
  // Unescaped: looks for content.m.federate (nested), which does not exist.
  assert.equal(matches({ kind: 'event_property_is', key: 'content.m.federate', value: true }, create), false);
  // And the reverse: nested object is not reachable by an escaped key.
  assert.equal(matches(em('content.a\\.b', 'x'), { content: { a: { b: 'x' } } }), false);
  assert.equal(matches(em('content.a.b', 'x'), { content: { a: { b: 'x' } } }), true);
  assert.equal(matches(em('content.a.b', 'x'), { content: { 'a.b': 'x' } }), false);
  // Backslash in a property name.
  assert.equal(matches(em('content.m\\\\foo', 'bar'), { content: { 'm\\foo': 'bar' } }), true);
  // Redundant escape (\x) is a literal backslash + x.
  assert.equal(matches(em('content.a\\x', 'bar'), { content: { 'a\\x': 'bar' } }), true);
  assert.equal(matches(em('content.a\\x', 'bar'), { content: { ax: 'bar' } }), false);
  // Top-level keys.
  assert.equal(matches(em('type', 'm.room.*'), { type: 'm.room.name' }), true);
  assert.equal(matches(em('sender', OTHER), {}), true);
});

test('event_property_is: exact typed values, null/bool/int, no casting', () => {
  const is = (value: PushCondition['value'], v: unknown, present = true) =>
    matches({ kind: 'event_property_is', key: 'content.v', value }, { content: present ? { v } : {} });
  assert.equal(is(true, true), true);
  assert.equal(is(true, 'true'), false);
  assert.equal(is(true, 1), false);
  assert.equal(is(false, false), true);
  assert.equal(is(false, null), false);
  assert.equal(is(null, null), true);
  assert.equal(is(null, null, false), false); // absent is not null
  assert.equal(is(null, false), false);
  assert.equal(is(1, 1), true);
  assert.equal(is(1, '1'), false);
  assert.equal(is(0, false), false);
  assert.equal(is(-5, -5), true);
  assert.equal(is('m.replace', 'm.replace'), true);
  assert.equal(is('m.replace', 'M.REPLACE'), false); // exact, case-sensitive
  assert.equal(is('x', ['x']), false);
  assert.equal(is('x', { a: 'x' }), false);
  // Compound condition values are invalid -> never match.
  assert.equal(matches({ kind: 'event_property_is', key: 'content.v', value: ['x'] as unknown as string }, { content: { v: ['x'] } }), false);
  assert.equal(matches({ kind: 'event_property_is', key: 'content.v' }, { content: { v: null } }), false);
});

test('event_property_contains: arrays only, exact scalar elements', () => {
  const has = (value: PushCondition['value'], arr: unknown) =>
    matches({ kind: 'event_property_contains', key: 'content.alt_aliases', value }, { content: { alt_aliases: arr } });
  assert.equal(has('#myroom:example.com', ['#somewhere:example.org', '#myroom:example.com']), true);
  assert.equal(has(':example.com', ['#myroom:example.com']), false); // partial values do not match
  assert.equal(has('#MYROOM:example.com', ['#myroom:example.com']), false);
  assert.equal(has('x', 'x'), false); // not an array
  assert.equal(has('x', undefined), false);
  assert.equal(has(3, [1, 2, 3]), true);
  assert.equal(has(3, ['3']), false);
  assert.equal(has(true, [false, true]), true);
  assert.equal(has(null, [null]), true);
  assert.equal(has(null, []), false);
  assert.equal(has('a', [{ a: 'a' }, ['a']]), false); // compound elements ignored
  // Spec example from the default rules.
  assert.equal(matches({ kind: 'event_property_contains', key: 'content.m\\.mentions.user_ids', value: ME },
    { content: { 'm.mentions': { user_ids: [ME] } } }), true);
});

test('room_member_count: ==, <, >, <=, >=, bare number, invalid', () => {
  const rmc = (is: string, n: number) => matches({ kind: 'room_member_count', is }, {}, { roomMemberCount: n });
  assert.equal(rmc('2', 2), true);
  assert.equal(rmc('2', 3), false);
  assert.equal(rmc('==2', 2), true);
  assert.equal(rmc('==2', 1), false);
  assert.equal(rmc('<10', 9), true);
  assert.equal(rmc('<10', 10), false);
  assert.equal(rmc('>10', 11), true);
  assert.equal(rmc('>10', 10), false);
  assert.equal(rmc('<=10', 10), true);
  assert.equal(rmc('<=10', 11), false);
  assert.equal(rmc('>=10', 10), true);
  assert.equal(rmc('>=10', 9), false);
  for (const bad of ['', 'abc', '=2', '=>2', '2.5', '-1', '<', ' 2']) assert.equal(rmc(bad, 2), false, bad);
  assert.equal(matches({ kind: 'room_member_count' }, {}, { roomMemberCount: 2 }), false);
});

test('sender_notification_permission', () => {
  const snp = (key: string, pl: number, levels?: Record<string, number>) =>
    matches({ kind: 'sender_notification_permission', key }, {}, { senderPowerLevel: pl, notificationPowerLevels: levels });
  assert.equal(snp('room', 50, { room: 50 }), true);
  assert.equal(snp('room', 49, { room: 50 }), false);
  assert.equal(snp('room', 0, { room: 0 }), true);
  assert.equal(snp('room', 50, {}), true); // default 50
  assert.equal(snp('room', 49, undefined), false);
  assert.equal(snp('custom', 10, { custom: 10 }), true);
  assert.equal(snp('custom', 100, {}), false); // no level for unknown keys
  assert.equal(snp('room', 75, { room: '75' as unknown as number }), true); // tolerate stringy PLs
});

test('contains_display_name condition', () => {
  const c = { kind: 'contains_display_name' };
  assert.equal(matches(c, { content: { body: 'hi alice' } }, { displayName: 'Alice' }), true);
  assert.equal(matches(c, { content: { body: 'hi alicex' } }, { displayName: 'Alice' }), false);
  assert.equal(matches(c, { content: {} }, { displayName: 'Alice' }), false);
  assert.equal(matches(c, { content: { body: 'hi alice' } }, { displayName: undefined }), false);
});

test('unknown condition kinds never match (rule effectively disabled)', () => {
  assert.equal(matches({ kind: 'org.example.future' }, { type: 'm.room.message' }), false);
  const rules: PushRulesContent = {
    global: {
      override: [
        { rule_id: 'future', default: false, enabled: true, conditions: [{ kind: 'org.example.future' }], actions: ['notify', { set_tweak: 'highlight' }] },
      ],
      content: [], room: [], sender: [],
      underride: [{ rule_id: 'all', default: false, enabled: true, conditions: [], actions: ['notify'] }],
    },
  };
  const r = evaluatePushRules(rules, { type: 'm.room.message', sender: OTHER, content: {} }, ctx);
  assert.equal(r.ruleId, 'all');
});

// ----- rule kinds, disabled rules, actions ---------------------------------------------------

function ruleset(partial: Partial<PushRulesContent['global']>): PushRulesContent {
  return { global: { override: [], content: [], room: [], sender: [], underride: [], ...partial } };
}
const user = (rule_id: string, actions: PushRule['actions'], extra: Partial<PushRule> = {}): PushRule =>
  ({ rule_id, default: false, enabled: true, actions, ...extra });

test('room, sender and content rules; kind priority order', () => {
  const rs = ruleset({
    content: [user('cake', ['notify', { set_tweak: 'sound', value: 'cake.wav' }], { pattern: 'cake*' })],
    room: [user('!r:x', ['notify', { set_tweak: 'sound', value: 'room' }])],
    sender: [user(OTHER, [])],
    underride: [user('fallback', ['notify'], { conditions: [] })],
  });
  const ev = (body: string, room = '!r:x', sender = OTHER) => ({ type: 'm.room.message', room_id: room, sender, content: { body } });
  assert.equal(evaluatePushRules(rs, ev('cakes!'), ctx).ruleId, 'cake');
  assert.equal(evaluatePushRules(rs, ev('cakes!'), ctx).sound, 'cake.wav');
  assert.equal(evaluatePushRules(rs, ev('pie'), ctx).ruleId, '!r:x');
  assert.equal(evaluatePushRules(rs, ev('pie', '!other:x'), ctx).ruleId, OTHER);
  assert.equal(evaluatePushRules(rs, ev('pie', '!other:x'), ctx).notify, false);
  assert.equal(evaluatePushRules(rs, ev('pie', '!other:x', '@carol:x'), ctx).ruleId, 'fallback');
  // Content rules need a string content.body.
  assert.equal(evaluatePushRules(rs, { type: 'x', room_id: '!o:x', sender: '@c:x', content: { body: 5 } }, ctx).ruleId, 'fallback');
});

test('disabled rules are skipped', () => {
  const rs = ruleset({
    override: [user('off', ['notify', { set_tweak: 'highlight' }], { enabled: false, conditions: [] })],
    underride: [user('on', ['notify'], { conditions: [] })],
  });
  assert.equal(evaluatePushRules(rs, { type: 'x', sender: OTHER, content: {} }, ctx).ruleId, 'on');
});

test('historical actions: dont_notify and coalesce are ignored', () => {
  const dn = ruleset({ override: [user('dn', ['dont_notify'], { conditions: [] })] });
  const r = evaluatePushRules(dn, { type: 'x', sender: OTHER, content: {} }, ctx);
  assert.equal(r.ruleId, 'dn');
  assert.equal(r.notify, false);
  assert.deepEqual(r.actions, []);
  const co = ruleset({ override: [user('co', ['notify', 'coalesce'], { conditions: [] })] });
  const r2 = evaluatePushRules(co, { type: 'x', sender: OTHER, content: {} }, ctx);
  assert.equal(r2.notify, true);
  assert.deepEqual(r2.actions, ['notify']);
});

test('highlight tweak: missing value = true, explicit false, no highlight without notify', () => {
  const ev = { type: 'x', sender: OTHER, content: {} };
  const h = (actions: PushRule['actions']) => evaluatePushRules(ruleset({ override: [user('r', actions, { conditions: [] })] }), ev, ctx);
  assert.equal(h(['notify', { set_tweak: 'highlight' }]).highlight, true);
  assert.equal(h(['notify', { set_tweak: 'highlight', value: true }]).highlight, true);
  assert.equal(h(['notify', { set_tweak: 'highlight', value: false }]).highlight, false);
  assert.equal(h(['notify']).highlight, false);
  assert.equal(h([{ set_tweak: 'highlight' }]).highlight, false);
  const custom = h(['notify', { set_tweak: 'org.example.led', value: 'blue' }, { set_tweak: 'sound', value: 'x' }]);
  assert.deepEqual(custom.tweaks, { 'org.example.led': 'blue', sound: 'x' });
  assert.equal(custom.sound, 'x');
  const proto = h(['notify', { set_tweak: '__proto__', value: { polluted: true } }]);
  assert.equal(Object.getPrototypeOf(proto.tweaks), Object.prototype);
  assert.deepEqual(Object.keys(proto.tweaks), ['__proto__']);
  // Same summary shape, different tweak strings: no cache-key collisions.
  assert.equal(h(['notify', { set_tweak: 'sound', value: 'a\u0000tb' }]).sound, 'a\u0000tb');
  assert.equal(h(['notify', { set_tweak: 'sound', value: 'a' }]).sound, 'a');
});

test('a pre-flattened event can be reused across users; results are frozen', () => {
  const rs = ruleset({ underride: [user('all', ['notify'], { conditions: [{ kind: 'event_match', key: 'type', pattern: 'm.room.message' }] })] });
  const f = flattenEvent({ type: 'm.room.message', sender: OTHER, content: { body: 'x' } });
  const a = evaluatePushRules(rs, f, { ...ctx, userId: '@a:x' });
  const b = evaluatePushRules(rs, f, { ...ctx, userId: '@b:x' });
  assert.equal(a.ruleId, 'all');
  assert.equal(b.ruleId, 'all');
  assert.ok(Object.isFrozen(a));
  assert.equal(evaluatePushRules(rs, f, { ...ctx, userId: OTHER }).notify, false); // sender's own
});
