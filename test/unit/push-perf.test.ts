import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';

import { defaultRuleset } from '../../src/push/default-rules.js';
import { compileRuleset, evaluatePushRules, flattenEvent, type PushContext } from '../../src/push/evaluator.js';
import type { PushRulesContent } from '../../src/push/rules.js';

const N = 1000;
const SENDER = '@sender:example.org';

function setup(legacyMentions: boolean): { rulesets: PushRulesContent[]; ctxs: PushContext[] } {
  const rulesets: PushRulesContent[] = [];
  const ctxs: PushContext[] = [];
  for (let i = 0; i < N; i++) {
    const userId = `@user${i}:example.org`;
    rulesets.push(defaultRuleset(userId, { legacyMentions }));
    ctxs.push({
      userId,
      displayName: `User Number ${i}`,
      roomMemberCount: N + 1,
      senderPowerLevel: 0,
      notificationPowerLevels: { room: 50 },
    });
  }
  return { rulesets, ctxs };
}

const event = {
  type: 'm.room.message',
  sender: SENDER,
  room_id: '!big:example.org',
  event_id: '$perf',
  origin_server_ts: 1,
  content: {
    msgtype: 'm.text',
    body: 'Hello everyone, this is a reasonably long message body mentioning user7 and User Number 42 in passing. '.repeat(4),
    format: 'org.matrix.custom.html',
    formatted_body: '<p>Hello</p>',
    'm.mentions': { user_ids: ['@user1:example.org', '@user500:example.org'] },
  },
  unsigned: { age: 10 },
};

function evaluateAll(rulesets: readonly PushRulesContent[], ctxs: readonly PushContext[]): { ms: number; notifies: number; highlights: number } {
  const t0 = performance.now();
  const flat = flattenEvent(event);
  let highlights = 0;
  let notifies = 0;
  for (let i = 0; i < N; i++) {
    const r = evaluatePushRules(rulesets[i], flat, ctxs[i]);
    if (r.notify) notifies++;
    if (r.highlight) highlights++;
  }
  return { ms: performance.now() - t0, notifies, highlights };
}

function run(label: string, legacyMentions: boolean): void {
  // 1. Fresh rulesets, first use: flatten + compile every ruleset + evaluate (includes JIT warm-up
  //    when this is the first test in the process).
  const a = setup(legacyMentions);
  const first = evaluateAll(a.rulesets, a.ctxs);
  assert.equal(first.notifies, N);
  assert.equal(first.highlights, 2); // user1 and user500 via m.mentions; legacy rules skipped (m.mentions present)

  // 2. Another set of never-seen rulesets (compile + evaluate, JIT warm).
  const b = setup(legacyMentions);
  const uncompiled = evaluateAll(b.rulesets, b.ctxs);
  assert.equal(uncompiled.highlights, 2);

  // 3. Rulesets already compiled (as a server caching compiled rules per user would): the
  //    steady-state cost of fanning one event out to 1,000 users, averaged over several events.
  const compiled = b.rulesets.map((r) => compileRuleset(r));
  const ROUNDS = 50;
  const t0 = performance.now();
  for (let round = 0; round < ROUNDS; round++) {
    const f = flattenEvent(event);
    for (let i = 0; i < N; i++) evaluatePushRules(compiled[i], f, b.ctxs[i]);
  }
  const warm = (performance.now() - t0) / ROUNDS;

  console.log(`push perf [${label}]: 1 message x ${N} users: compiled rulesets ${warm.toFixed(3)} ms; `
    + `uncompiled rulesets ${uncompiled.ms.toFixed(2)} ms; first use incl. JIT warm-up ${first.ms.toFixed(2)} ms`);
  // Generous bounds so CI noise does not flake; typical figures are far lower (see printed line).
  assert.ok(warm < 25, `warm evaluation too slow: ${warm} ms`);
  assert.ok(uncompiled.ms < 250, `uncompiled evaluation too slow: ${uncompiled.ms} ms`);
  assert.ok(first.ms < 1000, `first evaluation too slow: ${first.ms} ms`);
}

test('perf: one message against 1,000 users\' default rulesets (v1.19 rules)', () => run('v1.19', false));
test('perf: one message against 1,000 users\' default rulesets (legacy mention rules)', () => run('legacy', true));

test('perf: legacy plaintext matching with no m.mentions still cheap', () => {
  const { rulesets, ctxs } = setup(true);
  const { 'm.mentions': _m, ...content } = event.content;
  const flat = flattenEvent({ ...event, content });
  let t0 = performance.now();
  let highlights = 0;
  for (let i = 0; i < N; i++) if (evaluatePushRules(rulesets[i], flat, ctxs[i]).highlight) highlights++;
  const cold = performance.now() - t0;
  assert.equal(highlights, 2); // "user7" (localpart) and "User Number 42" (display name)
  t0 = performance.now();
  for (let i = 0; i < N; i++) evaluatePushRules(rulesets[i], flat, ctxs[i]);
  const warm = performance.now() - t0;
  console.log(`push perf [legacy, plaintext body]: cold ${cold.toFixed(2)} ms, warm ${warm.toFixed(2)} ms`);
  assert.ok(warm < 50, `too slow: ${warm} ms`);
});
