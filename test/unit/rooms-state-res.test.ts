// State resolution v1 / v2 / v2.1: forks over power levels, bans, join rules and topics, the
// MSC4297 problem scenarios, and a 10,000-member performance check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { authEventTypesFor } from '../../src/rooms/auth-rules.js';
import { domainOf, stateKey, type PDU, type StateMap } from '../../src/rooms/event.js';
import { computeEventId, computeReferenceHash, roomIdFromCreateEvent } from '../../src/rooms/hashing.js';
import { isPowerEvent, resolveState, StateResError, type StateResContext } from '../../src/rooms/state-res.js';
import { getRoomVersion, type RoomVersion } from '../../src/rooms/versions.js';

type Json = Record<string, unknown>;
const ALICE = '@alice:a.test';
const BOB = '@bob:b.test';
const CHARLIE = '@charlie:c.test';
const ZARA = '@zara:z.test';
const EVELYN = '@evelyn:e.test';

interface Spec {
  type: string;
  sender: string;
  state_key?: string;
  content: Json;
  ts?: number;
}

/**
 * An event DAG. The state before each event is the resolution of the states after its prev
 * events (rooms "State resolution" preamble); auth events are selected from that state. Events are
 * not auth-checked when added, as in a real room where other servers may send anything.
 */
class Dag {
  readonly version: RoomVersion;
  readonly events = new Map<string, PDU>();
  readonly after = new Map<string, StateMap>();
  readonly ids = new Map<string, string>(); // name → id
  roomId = '';
  private clock = 0;
  readonly ctx: StateResContext = { getEvent: (id) => this.events.get(id) };

  constructor(versionId: string) {
    this.version = getRoomVersion(versionId) as RoomVersion;
  }

  id(name: string): string {
    const id = this.ids.get(name);
    if (!id) throw new Error(`no event ${name}`);
    return id;
  }

  resolve(prevNames: string[]): StateMap {
    return resolveState(this.version, prevNames.map((n) => this.after.get(this.id(n)) as StateMap), this.ctx);
  }

  add(name: string, spec: Spec, prevNames: string[]): string {
    const before: StateMap = prevNames.length === 0 ? new Map() : this.resolve(prevNames);
    const e: PDU = {
      type: spec.type,
      sender: spec.sender,
      room_id: this.roomId,
      content: spec.content,
      depth: 1 + Math.max(0, ...prevNames.map((n) => (this.events.get(this.id(n)) as PDU).depth)),
      origin_server_ts: spec.ts ?? ++this.clock,
      prev_events: [] as string[],
      auth_events: [] as string[],
      hashes: { sha256: 'AAAA' },
      signatures: { [domainOf(spec.sender) as string]: { 'ed25519:k': 'c2ln' } },
    };
    if (spec.state_key !== undefined) e.state_key = spec.state_key;
    const authIds = spec.type === 'm.room.create'
      ? []
      : authEventTypesFor(e, this.version).map(([t, k]) => before.get(stateKey(t, k))).filter((x): x is string => x !== undefined);
    const ref = (id: string) =>
      this.version.eventIdFormat === 'v1' ? [id, { sha256: encodeBase64(computeReferenceHash(this.events.get(id) as PDU, this.version)) }] : id;
    e.prev_events = prevNames.map((n) => ref(this.id(n))) as PDU['prev_events'];
    e.auth_events = authIds.map(ref) as PDU['auth_events'];
    if (spec.type === 'm.room.create') {
      if (this.version.roomIdFromCreateEvent) delete e.room_id;
      else e.room_id = `!room:${domainOf(spec.sender)}`;
    }
    if (this.version.eventIdFormat === 'v1') e.event_id = `$${name}:${domainOf(spec.sender)}`;
    const id = computeEventId(e, this.version);
    if (spec.type === 'm.room.create') this.roomId = this.version.roomIdFromCreateEvent ? roomIdFromCreateEvent(e, this.version) : (e.room_id as string);
    this.events.set(id, e);
    this.ids.set(name, id);
    const after = new Map(before);
    if (spec.state_key !== undefined) after.set(stateKey(spec.type, spec.state_key), id);
    this.after.set(id, after);
    return id;
  }

  /** The names of the state entries, for readable assertions. */
  named(state: StateMap): Record<string, string> {
    const byId = new Map([...this.ids].map(([n, id]) => [id, n]));
    const out: Record<string, string> = {};
    for (const [k, id] of state) out[k.replace('\u0000', '|')] = byId.get(id) ?? id;
    return out;
  }
}

const mem = (sender: string, target: string, membership: string, extra: Json = {}): Spec => ({
  type: 'm.room.member', sender, state_key: target, content: { membership, ...extra },
});
const pl = (dag: Dag, sender: string, users: Record<string, number>, extra: Json = {}): Spec => {
  const u = { ...users };
  if (dag.version.privilegedCreators) delete u[ALICE];
  return { type: 'm.room.power_levels', sender, state_key: '', content: { users: u, ...extra } };
};
const topic = (sender: string, t: string): Spec => ({ type: 'm.room.topic', sender, state_key: '', content: { topic: t } });

/** The initial events of the state res v2 design examples: alice creates; bob, charlie, zara join. */
function initial(versionId: string): Dag {
  const dag = new Dag(versionId);
  const createContent: Json = dag.version.implicitRoomCreator ? { room_version: versionId } : { creator: ALICE, room_version: versionId };
  dag.add('CREATE', { type: 'm.room.create', sender: ALICE, state_key: '', content: createContent }, []);
  dag.add('IMA', mem(ALICE, ALICE, 'join'), ['CREATE']);
  dag.add('IPOWER', pl(dag, ALICE, { [ALICE]: 100 }), ['IMA']);
  dag.add('IJR', { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'public' } }, ['IPOWER']);
  dag.add('IMB', mem(BOB, BOB, 'join'), ['IJR']);
  dag.add('IMC', mem(CHARLIE, CHARLIE, 'join'), ['IMB']);
  dag.add('IMZ', mem(ZARA, ZARA, 'join'), ['IMC']);
  return dag;
}

const V2_FAMILY = ['2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'];

// ---- the state res v2 example graphs used by Synapse's test suite (tests/state/test_v2.py) ------
// Same events, edges and expected outcomes; the DAG is built in lexicographical topological order
// of the node names, which fixes the origin_server_ts order as in those tests.

type Node = [name: string, sender: string, type: string, stateKey: string | undefined, content: Json];
const EX = (u: string) => `@${u}:example.com`;
const [XA, XB, XC, XE, XZ] = ['alice', 'bob', 'charlie', 'evelyn', 'zara'].map(EX);
const X_INITIAL: Node[] = [
  ['CREATE', XA, 'm.room.create', '', { creator: XA }],
  ['IMA', XA, 'm.room.member', XA, { membership: 'join' }],
  ['IPOWER', XA, 'm.room.power_levels', '', { users: { [XA]: 100 } }],
  ['IJR', XA, 'm.room.join_rules', '', { join_rule: 'public' }],
  ['IMB', XB, 'm.room.member', XB, { membership: 'join' }],
  ['IMC', XC, 'm.room.member', XC, { membership: 'join' }],
  ['IMZ', XZ, 'm.room.member', XZ, { membership: 'join' }],
  ['START', XZ, 'm.room.message', undefined, {}],
  ['END', XZ, 'm.room.message', undefined, {}],
];
const X_INITIAL_EDGES = ['START', 'IMZ', 'IMC', 'IMB', 'IJR', 'IPOWER', 'IMA', 'CREATE'];

function scenario(versionId: string, nodes: Node[], edges: string[][], expected: string[]): void {
  const all = new Map([...X_INITIAL, ...nodes].map((n) => [n[0], n]));
  const prevs = new Map<string, Set<string>>([...all.keys()].map((k) => [k, new Set<string>()]));
  for (const chain of [X_INITIAL_EDGES, ...edges]) {
    for (let i = 0; i + 1 < chain.length; i++) (prevs.get(chain[i]) as Set<string>).add(chain[i + 1]);
  }
  const dag = new Dag(versionId);
  const done = new Set<string>();
  while (done.size < all.size) {
    const ready = [...all.keys()].filter((n) => !done.has(n) && [...(prevs.get(n) as Set<string>)].every((p) => done.has(p))).sort();
    const name = ready[0];
    const [, sender, type, sk, content] = all.get(name) as Node;
    const c = type === 'm.room.create' && dag.version.implicitRoomCreator ? {} : content;
    dag.add(name, { type, sender, state_key: sk, content: c }, [...(prevs.get(name) as Set<string>)]);
    done.add(name);
  }
  const start = dag.after.get(dag.id('START')) as StateMap;
  const end = dag.after.get(dag.id('END')) as StateMap;
  const want = new Map<string, string>();
  for (const n of expected) {
    const e = dag.events.get(dag.id(n)) as PDU;
    want.set(stateKey(e.type, e.state_key as string), dag.id(n));
  }
  const got = new Map([...end].filter(([k, v]) => want.has(k) || start.get(k) !== v));
  assert.deepEqual(dag.named(got), dag.named(want), `room v${versionId}`);
}

const X_VERSIONS = ['2', '3', '4', '5', '6', '7', '8', '9', '10', '11'];

test('Synapse v2 examples: ban vs power levels', () => {
  for (const v of X_VERSIONS) {
    scenario(v, [
      ['PA', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['MA', XA, 'm.room.member', XA, { membership: 'join' }],
      ['MB', XA, 'm.room.member', XB, { membership: 'ban' }],
      ['PB', XB, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
    ], [['END', 'MB', 'MA', 'PA', 'START'], ['END', 'PB', 'PA']], ['PA', 'MA', 'MB']);
  }
});

test('Synapse v2 examples: join rule evasion', () => {
  for (const v of X_VERSIONS) {
    scenario(v, [
      ['JR', XA, 'm.room.join_rules', '', { join_rules: 'private' }],
      ['ME', XE, 'm.room.member', XE, { membership: 'join' }],
    ], [['END', 'JR', 'START'], ['END', 'ME', 'START']], ['JR']);
  }
});

test('Synapse v2 examples: offtopic power levels', () => {
  for (const v of X_VERSIONS) {
    scenario(v, [
      ['PA', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['PB', XB, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50, [XC]: 50 } }],
      ['PC', XC, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50, [XC]: 0 } }],
    ], [['END', 'PC', 'PB', 'PA', 'START'], ['END', 'PA']], ['PC']);
  }
});

test('Synapse v2 examples: topic basic, topic reset, topic', () => {
  for (const v of X_VERSIONS) {
    scenario(v, [
      ['T1', XA, 'm.room.topic', '', {}],
      ['PA1', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T2', XA, 'm.room.topic', '', {}],
      ['PA2', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 0 } }],
      ['PB', XB, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T3', XB, 'm.room.topic', '', {}],
    ], [['END', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'T3', 'PB', 'PA1']], ['PA2', 'T2']);
    scenario(v, [
      ['T1', XA, 'm.room.topic', '', {}],
      ['PA', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T2', XB, 'm.room.topic', '', {}],
      ['MB', XA, 'm.room.member', XB, { membership: 'ban' }],
    ], [['END', 'MB', 'T2', 'PA', 'T1', 'START'], ['END', 'T1']], ['T1', 'MB', 'PA']);
    scenario(v, [
      ['T1', XA, 'm.room.topic', '', {}],
      ['PA1', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T2', XA, 'm.room.topic', '', {}],
      ['PA2', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 0 } }],
      ['PB', XB, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T3', XB, 'm.room.topic', '', {}],
      ['MZ1', XZ, 'm.room.message', undefined, {}],
      ['T4', XA, 'm.room.topic', '', {}],
    ], [['END', 'T4', 'MZ1', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'MZ1', 'T3', 'PB', 'PA1']], ['T4', 'PA2']);
  }
});

test('Synapse v2 examples: mainline sort', () => {
  for (const v of X_VERSIONS) {
    scenario(v, [
      ['T1', XA, 'm.room.topic', '', {}],
      ['PA1', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T2', XA, 'm.room.topic', '', {}],
      ['PA2', XA, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 }, events: { 'm.room.power_levels': 100 } }],
      ['PB', XB, 'm.room.power_levels', '', { users: { [XA]: 100, [XB]: 50 } }],
      ['T3', XB, 'm.room.topic', '', {}],
      ['T4', XA, 'm.room.topic', '', {}],
    ], [['END', 'T3', 'PA2', 'T2', 'PA1', 'T1', 'START'], ['END', 'T4', 'PB', 'PA1']], ['T3', 'PA2']);
  }
});

test('trivial inputs: no states, one state, identical states', () => {
  const dag = initial('11');
  assert.deepEqual(resolveState(dag.version, [], dag.ctx), new Map());
  const s = dag.after.get(dag.id('IMZ')) as StateMap;
  assert.deepEqual(resolveState(dag.version, [s], dag.ctx), s);
  assert.deepEqual(resolveState(dag.version, [s, new Map(s)], dag.ctx), s);
  assert.deepEqual(resolveState(getRoomVersion('1') as RoomVersion, [s, new Map(s)], dag.ctx), s);
});

test('ban vs power levels: the ban is applied first, so the banned user\'s power levels event fails', () => {
  for (const v of V2_FAMILY) {
    const dag = initial(v);
    dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['IMZ']);
    dag.add('MA', mem(ALICE, ALICE, 'join'), ['PA']);
    dag.add('MB', mem(ALICE, BOB, 'ban'), ['MA']);
    dag.add('PB', pl(dag, BOB, { [ALICE]: 100, [BOB]: 50 }), ['PA']);
    const s = dag.named(dag.resolve(['MB', 'PB']));
    assert.equal(s['m.room.power_levels|'], 'PA', `v${v}`);
    assert.equal(s[`m.room.member|${BOB}`], 'MB');
    assert.equal(s[`m.room.member|${ALICE}`], 'MA');
  }
});

test('join rule evasion: a join concurrent with a switch to invite-only is dropped', () => {
  for (const v of V2_FAMILY) {
    const dag = initial(v);
    dag.add('JR', { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'invite' } }, ['IMZ']);
    dag.add('ME', mem(EVELYN, EVELYN, 'join'), ['IMZ']);
    const s = dag.named(dag.resolve(['JR', 'ME']));
    assert.equal(s['m.room.join_rules|'], 'JR', `v${v}`);
    assert.equal(s[`m.room.member|${EVELYN}`], undefined);
  }
});

test('topic reset: a banned user\'s topic loses to the older topic (mainline ordering)', () => {
  for (const v of V2_FAMILY) {
    const dag = initial(v);
    dag.add('T1', topic(ALICE, 'one'), ['IMZ']);
    dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['T1']);
    dag.add('T2', topic(BOB, 'two'), ['PA']);
    dag.add('MB', mem(ALICE, BOB, 'ban'), ['PA']);
    const s = dag.named(dag.resolve(['T2', 'MB']));
    assert.equal(s['m.room.topic|'], 'T1', `v${v}`);
    assert.equal(s[`m.room.member|${BOB}`], 'MB');
    assert.equal(s['m.room.power_levels|'], 'PA');
  }
});

test('concurrent power level changes: reverse topological power ordering decides which applies last', () => {
  for (const v of V2_FAMILY) {
    const dag = initial(v);
    dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 100 }), ['IMZ']);
    // Same sender, same power: the later origin_server_ts sorts last and wins.
    dag.add('PX', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 100, [ZARA]: 10 }), ['PA']);
    dag.add('PY', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 100, [CHARLIE]: 50 }), ['PA']);
    assert.equal(dag.named(dag.resolve(['PX', 'PY']))['m.room.power_levels|'], 'PY', `v${v}`);
    assert.equal(dag.named(dag.resolve(['PY', 'PX']))['m.room.power_levels|'], 'PY', `v${v}`);
    // Bob's PB cites his join (sent at power 0), which is in the auth difference, so PB must come
    // after it; alice's PC (power 100) sorts before both even though it is later: PB wins.
    dag.add('PB', pl(dag, BOB, { [ALICE]: 100, [BOB]: 100, [ZARA]: 10 }), ['PA']);
    dag.add('PC', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 100, [CHARLIE]: 50 }), ['PA']);
    assert.equal(dag.named(dag.resolve(['PB', 'PC']))['m.room.power_levels|'], 'PB', `v${v}`);
  }
});

test('mainline tie-breaks: same mainline position orders by origin_server_ts, then event_id', () => {
  for (const v of ['4', '11', '12']) {
    const dag = initial(v);
    dag.add('N1', { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'first' }, ts: 500 }, ['IMZ']);
    dag.add('N2', { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'second' }, ts: 400 }, ['IMZ']);
    assert.equal(dag.named(dag.resolve(['N1', 'N2']))['m.room.name|'], 'N1'); // ts 500 applied last
    dag.add('N3', { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'third' }, ts: 500 }, ['IMZ']);
    const larger = dag.id('N1') > dag.id('N3') ? 'N1' : 'N3';
    assert.equal(dag.named(dag.resolve(['N1', 'N3']))['m.room.name|'], larger, `v${v}`);
    // the order of the input state sets does not matter
    assert.deepEqual(dag.resolve(['N3', 'N1']), dag.resolve(['N1', 'N3']));
  }
});

test('v1 vs v2: soft-failure example from the spec (ban vs topic by the banned user)', () => {
  for (const v of ['1', '2', '11', '12']) {
    const dag = initial(v);
    dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['IMZ']);
    dag.add('B', mem(ALICE, BOB, 'ban'), ['PA']);
    dag.add('C', topic(BOB, 'evading'), ['PA']);
    const s = dag.named(dag.resolve(['B', 'C']));
    assert.equal(s[`m.room.member|${BOB}`], 'B', `v${v}`);
    // "In the original version of the algorithm C would be in the resolved state, whereas in
    // latter versions the algorithm tries to prioritise the ban over the topic change."
    assert.equal(s['m.room.topic|'], v === '1' ? 'C' : undefined, `v${v}`);
  }
});

test('v1: conflicting power levels resolve by depth while authorised; other keys by highest depth', () => {
  const dag = initial('1');
  dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 100 }), ['IMZ']);
  dag.add('PB', pl(dag, BOB, { [ALICE]: 100, [BOB]: 100, [CHARLIE]: 75 }), ['PA']);
  dag.add('PC', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['PA']);
  dag.add('PD', pl(dag, BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 75 }), ['PB']);
  // PL conflict: PC (depth 10), PB (10), PD (11). Ascending depth then descending sha1: the first
  // is taken, each next one only while authorised against the previous one.
  const s = dag.named(dag.resolve(['PD', 'PC']));
  assert.ok(['PB', 'PC', 'PD'].includes(s['m.room.power_levels|']));
  // topic conflicts: the deepest authorised one
  dag.add('T1', topic(ALICE, 'a'), ['IMZ']);
  dag.add('T2a', topic(ALICE, 'b'), ['IMZ']);
  dag.add('T2', topic(ALICE, 'c'), ['T2a']);
  assert.equal(dag.named(dag.resolve(['T1', 'T2']))['m.room.topic|'], 'T2');
  // ...unless it is not authorised in the resolved state
  dag.add('MZ', mem(ALICE, ZARA, 'ban'), ['IMZ']);
  dag.add('X1', { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'a' } }, ['IMZ']);
  dag.add('X2a', mem(ZARA, ZARA, 'join', { displayname: 'z' }), ['IMZ']);
  dag.add('X2', { type: 'm.room.name', sender: ZARA, state_key: '', content: { name: 'z' } }, ['X2a']);
  const s2 = dag.named(dag.resolve(['X1', 'X2', 'MZ']));
  assert.equal(s2[`m.room.member|${ZARA}`], 'MZ');
  assert.equal(s2['m.room.name|'], 'X1');
});

// MSC4297 "Problem A": a stale state set holds an old join rules event; the unconflicted state
// says alice (who set both join rules) has left. v2 replays both join rules on top of that state
// and drops them; v2.1 starts from an empty state and keeps the newer one.
test('v2 vs v2.1: problem A (conflicting events unauthorised by the unconflicted state)', () => {
  for (const v of ['11', '12']) {
    const dag = new Dag(v);
    const createContent: Json = dag.version.implicitRoomCreator ? {} : { creator: ALICE };
    dag.add('CREATE', { type: 'm.room.create', sender: ALICE, state_key: '', content: createContent }, []);
    dag.add('IMA', mem(ALICE, ALICE, 'join'), ['CREATE']);
    dag.add('IPOWER', pl(dag, ALICE, { [ALICE]: 100 }), ['IMA']);
    dag.add('JR1', { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'public' } }, ['IPOWER']);
    dag.add('IMB', mem(BOB, BOB, 'join'), ['JR1']); // cites JR1
    dag.add('JR2', { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'invite' } }, ['IMB']);
    dag.add('INVC', mem(ALICE, CHARLIE, 'invite'), ['JR2']);
    dag.add('IMC', mem(CHARLIE, CHARLIE, 'join'), ['INVC']); // cites JR2
    dag.add('LA', mem(ALICE, ALICE, 'leave'), ['IMC']);
    const good = dag.after.get(dag.id('LA')) as StateMap;
    const stale = new Map(good);
    stale.set(stateKey('m.room.join_rules', ''), dag.id('JR1'));
    const s = dag.named(resolveState(dag.version, [good, stale], dag.ctx));
    assert.equal(s['m.room.join_rules|'], v === '12' ? 'JR2' : undefined, `v${v}`);
    assert.equal(s[`m.room.member|${ALICE}`], 'LA');
  }
});

// MSC4297 "Problem B": alice promotes bob (PL1), bob promotes charlie (PL2); a stale state set
// holds PL0. Both auth chains contain PL1, so it is not in the auth difference: v2 applies PL0 then
// rejects PL2 (bob has no power under PL0); v2.1 adds PL1 via the conflicted state subgraph.
test('v2 vs v2.1: problem B (conflicting events need events between them)', () => {
  for (const v of ['11', '12']) {
    const dag = new Dag(v);
    const createContent: Json = dag.version.implicitRoomCreator ? {} : { creator: ALICE };
    dag.add('CREATE', { type: 'm.room.create', sender: ALICE, state_key: '', content: createContent }, []);
    dag.add('IMA', mem(ALICE, ALICE, 'join'), ['CREATE']);
    dag.add('PL0', pl(dag, ALICE, { [ALICE]: 100 }), ['IMA']);
    dag.add('JR', { type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: 'public' } }, ['PL0']);
    dag.add('IMB', mem(BOB, BOB, 'join'), ['JR']);
    dag.add('PL1', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['IMB']);
    dag.add('PL2', pl(dag, BOB, { [ALICE]: 100, [BOB]: 50, [CHARLIE]: 50 }), ['PL1']);
    dag.add('IMC', mem(CHARLIE, CHARLIE, 'join'), ['PL2']); // cites PL2 (and so PL1)
    const good = dag.after.get(dag.id('IMC')) as StateMap;
    const stale = new Map(good);
    stale.set(stateKey('m.room.power_levels', ''), dag.id('PL0'));
    const s = dag.named(resolveState(dag.version, [good, stale], dag.ctx));
    assert.equal(s['m.room.power_levels|'], v === '12' ? 'PL2' : 'PL0', `v${v}`);
  }
});

test('power events definition', () => {
  const base = { auth_events: [], prev_events: [], depth: 1, hashes: { sha256: '' }, origin_server_ts: 1, signatures: {}, room_id: '!r' };
  const e = (type: string, sender: string, state_key: string | undefined, content: Json): PDU => ({ ...base, type, sender, state_key, content });
  assert.ok(isPowerEvent(e('m.room.power_levels', ALICE, '', {})));
  assert.ok(isPowerEvent(e('m.room.join_rules', ALICE, '', {})));
  assert.ok(isPowerEvent(e('m.room.member', ALICE, BOB, { membership: 'ban' })));
  assert.ok(isPowerEvent(e('m.room.member', ALICE, BOB, { membership: 'leave' })));
  assert.ok(!isPowerEvent(e('m.room.member', BOB, BOB, { membership: 'leave' })));
  assert.ok(!isPowerEvent(e('m.room.member', ALICE, BOB, { membership: 'invite' })));
  assert.ok(!isPowerEvent(e('m.room.topic', ALICE, '', {})));
  assert.ok(!isPowerEvent(e('m.room.power_levels', ALICE, undefined, {})));
});

test('missing events are reported, not silently skipped', () => {
  const dag = initial('11');
  const s1 = dag.after.get(dag.id('IMZ')) as StateMap;
  const s2 = new Map(s1);
  s2.set(stateKey('m.room.topic', ''), '$missing');
  assert.throws(() => resolveState(dag.version, [s1, s2], dag.ctx), StateResError);
});

test('authChain from the context is used when provided', () => {
  const dag = initial('11');
  dag.add('PA', pl(dag, ALICE, { [ALICE]: 100, [BOB]: 50 }), ['IMZ']);
  dag.add('MB', mem(ALICE, BOB, 'ban'), ['PA']);
  dag.add('PB', pl(dag, BOB, { [ALICE]: 100, [BOB]: 50 }), ['PA']);
  let calls = 0;
  const chain = (id: string): string[] => {
    const out = new Set<string>();
    const stack = [...((dag.events.get(id) as PDU).auth_events as string[])];
    while (stack.length) {
      const a = stack.pop() as string;
      if (out.has(a)) continue;
      out.add(a);
      stack.push(...((dag.events.get(a) as PDU).auth_events as string[]));
    }
    return [...out];
  };
  const ctx: StateResContext = { getEvent: dag.ctx.getEvent, authChain: (id) => { calls++; return chain(id); } };
  const states = ['MB', 'PB'].map((n) => dag.after.get(dag.id(n)) as StateMap);
  assert.deepEqual(resolveState(dag.version, states, ctx), resolveState(dag.version, states, dag.ctx));
  assert.ok(calls > 0);
});

// ---- performance ---------------------------------------------------------------------------------

function bigRoom(versionId: string, members: number) {
  const version = getRoomVersion(versionId) as RoomVersion;
  const events = new Map<string, PDU>();
  const roomId = version.roomIdFromCreateEvent ? '!create' : '!room:a.test';
  let ts = 0;
  let last = '';
  // synthetic event ids: the resolver takes ids from the context, so no hashing is needed
  const add = (id: string, type: string, sender: string, state_key: string | undefined, content: Json, auth: string[]) => {
    const e: PDU = {
      type, sender, room_id: roomId, content, depth: events.size + 1, origin_server_ts: ++ts,
      prev_events: last ? [last] : [], auth_events: version.createEventInAuthEvents ? auth : auth.filter((a) => a !== '$create'),
      hashes: { sha256: 'AAAA' }, signatures: {},
    };
    if (state_key !== undefined) e.state_key = state_key;
    if (type === 'm.room.create' && version.roomIdFromCreateEvent) delete e.room_id;
    events.set(id, e);
    last = id;
    return id;
  };
  const base: StateMap = new Map();
  const put = (s: StateMap, type: string, sk: string, id: string) => s.set(stateKey(type, sk), id);
  add('$create', 'm.room.create', ALICE, '', version.implicitRoomCreator ? {} : { creator: ALICE }, []);
  put(base, 'm.room.create', '', '$create');
  add('$ima', 'm.room.member', ALICE, ALICE, { membership: 'join' }, ['$create']);
  put(base, 'm.room.member', ALICE, '$ima');
  add('$ipower', 'm.room.power_levels', ALICE, '', { users: version.privilegedCreators ? {} : { [ALICE]: 100 } }, ['$create', '$ima']);
  put(base, 'm.room.power_levels', '', '$ipower');
  add('$ijr', 'm.room.join_rules', ALICE, '', { join_rule: 'public' }, ['$create', '$ipower', '$ima']);
  put(base, 'm.room.join_rules', '', '$ijr');
  const user = (i: number) => `@u${i}:s${i % 50}.test`;
  for (let i = 0; i < members; i++) {
    const id = add(`$join${i}`, 'm.room.member', user(i), user(i), { membership: 'join' }, ['$create', '$ipower', '$ijr']);
    put(base, 'm.room.member', user(i), id);
  }
  const fork = last;
  // fork A: new power levels, 20 bans
  const a = new Map(base);
  add('$pa', 'm.room.power_levels', ALICE, '', { users: { ...(version.privilegedCreators ? {} : { [ALICE]: 100 }), [user(0)]: 50 } }, ['$create', '$ipower', '$ima']);
  put(a, 'm.room.power_levels', '', '$pa');
  for (let i = 1; i <= 20; i++) {
    add(`$ban${i}`, 'm.room.member', ALICE, user(i), { membership: 'ban' }, ['$create', '$pa', '$ima', `$join${i}`]);
    put(a, 'm.room.member', user(i), `$ban${i}`);
  }
  // fork B (from the same point): a topic, 20 leaves, 20 profile changes
  last = fork;
  const b = new Map(base);
  add('$topic', 'm.room.topic', ALICE, '', { topic: 'hello' }, ['$create', '$ipower', '$ima']);
  put(b, 'm.room.topic', '', '$topic');
  for (let i = 21; i <= 40; i++) {
    add(`$leave${i}`, 'm.room.member', user(i), user(i), { membership: 'leave' }, ['$create', '$ipower', `$join${i}`]);
    put(b, 'm.room.member', user(i), `$leave${i}`);
  }
  for (let i = 41; i <= 60; i++) {
    add(`$rejoin${i}`, 'm.room.member', user(i), user(i), { membership: 'join', displayname: `u${i}` }, ['$create', '$ipower', '$ijr', `$join${i}`]);
    put(b, 'm.room.member', user(i), `$rejoin${i}`);
  }
  // one of the banned users also changed profile on fork B: the ban must win
  add('$rejoin5', 'm.room.member', user(5), user(5), { membership: 'join', displayname: 'five' }, ['$create', '$ipower', '$ijr', '$join5']);
  put(b, 'm.room.member', user(5), '$rejoin5');
  return { version, events, a, b, user };
}

test('performance: 10,000-member room with two forks resolves quickly (v1, v2, v2.1)', () => {
  for (const v of ['1', '11', '12']) {
    const { version, events, a, b, user } = bigRoom(v, 10_000);
    const ctx: StateResContext = { getEvent: (id) => events.get(id) };
    resolveState(version, [a, b], ctx); // warm-up (JIT)
    const t0 = performance.now();
    const s = resolveState(version, [a, b], ctx);
    const ms = performance.now() - t0;
    console.log(`state res ${version.stateRes} (room v${v}): 10,000 members, ${s.size} state entries, ${ms.toFixed(1)} ms`);
    assert.ok(ms < 1000, `took ${ms} ms`);
    assert.equal(s.size, 10_000 + 5);
    assert.equal(s.get(stateKey('m.room.power_levels', '')), '$pa');
    assert.equal(s.get(stateKey('m.room.topic', '')), '$topic');
    assert.equal(s.get(stateKey('m.room.member', user(3))), '$ban3');
    assert.equal(s.get(stateKey('m.room.member', user(5))), '$ban5');
    assert.equal(s.get(stateKey('m.room.member', user(30))), '$leave30');
    assert.equal(s.get(stateKey('m.room.member', user(50))), '$rejoin50');
    assert.equal(s.get(stateKey('m.room.member', user(9999))), '$join9999');
  }
});
