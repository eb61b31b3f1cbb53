// Authorization rules, one test per rule per version where the versions differ.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { signJson, signingKeyFromSeed } from '../../src/crypto/signing.js';
import {
  AuthError,
  authEventTypesFor,
  authStateFromEvents,
  authStateFromMap,
  checkAuth,
  isRedactionApplicable,
  powerLevelOf,
  requiredPowerLevelFor,
} from '../../src/rooms/auth-rules.js';
import { authEventIds, domainOf, stateKey, type PDU, type StateMap } from '../../src/rooms/event.js';
import { computeEventId, computeReferenceHash, roomIdFromCreateEvent } from '../../src/rooms/hashing.js';
import { getRoomVersion, type RoomVersion } from '../../src/rooms/versions.js';

type Json = Record<string, unknown>;
const ALICE = '@alice:a.test';
const BOB = '@bob:b.test';
const CAROL = '@carol:c.test';
const MALLORY = '@mallory:m.test';
const ALL = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12'];
const range = (from: number, to: number) => ALL.filter((v) => Number(v) >= from && Number(v) <= to);

interface Template {
  type: string;
  sender: string;
  state_key?: string;
  content: Json;
  redacts?: string;
  /** extra servers that signed the event */
  signedBy?: string[];
  prev?: string[];
  /** replace the selected auth events */
  authIds?: string[];
  room_id?: string;
  origin_server_ts?: number;
}

/** A linear room: each event's prev event is the last one; auth events are selected per spec. */
class Room {
  readonly version: RoomVersion;
  readonly events = new Map<string, PDU>();
  readonly state: StateMap = new Map();
  readonly roomId: string;
  readonly createId: string;
  private last: string[] = [];
  private counter = 0;

  constructor(versionId: string, opts: { createSender?: string; createContent?: Json; roomId?: string } = {}) {
    this.version = getRoomVersion(versionId) as RoomVersion;
    const sender = opts.createSender ?? ALICE;
    const content: Json = this.version.implicitRoomCreator ? { room_version: versionId } : { creator: sender, room_version: versionId };
    Object.assign(content, opts.createContent ?? {});
    const create = this.build({ type: 'm.room.create', sender, state_key: '', content, prev: [] }, opts.roomId ?? `!room:${domainOf(sender)}`);
    if (this.version.roomIdFromCreateEvent) {
      delete create.room_id;
      this.roomId = roomIdFromCreateEvent(create, this.version);
    } else {
      this.roomId = create.room_id as string;
    }
    this.createId = this.apply(create);
  }

  get lookup() {
    return authStateFromMap(this.state, (id) => this.events.get(id));
  }

  idOf(e: PDU): string {
    return computeEventId(e, this.version);
  }

  private ref(id: string): string | [string, Record<string, string>] {
    if (this.version.eventIdFormat !== 'v1') return id;
    const e = this.events.get(id) as PDU;
    return [id, { sha256: encodeBase64(computeReferenceHash(e, this.version)) }];
  }

  build(t: Template, roomId = this.roomId): PDU {
    const e: PDU = {
      type: t.type,
      sender: t.sender,
      room_id: t.room_id ?? roomId,
      content: t.content,
      depth: this.events.size + 1,
      origin_server_ts: t.origin_server_ts ?? 1000 + this.counter,
      prev_events: [] as string[],
      auth_events: [] as string[],
      hashes: { sha256: 'AAAA' },
      signatures: {},
    };
    if (t.state_key !== undefined) e.state_key = t.state_key;
    if (t.redacts !== undefined) e.redacts = t.redacts;
    const sigs: Record<string, Record<string, string>> = {};
    for (const s of [domainOf(t.sender) as string, ...(t.signedBy ?? [])]) sigs[s] = { 'ed25519:k': 'c2ln' };
    e.signatures = sigs;
    if (this.version.eventIdFormat === 'v1') e.event_id = `$${++this.counter}:${domainOf(t.sender)}`;
    else this.counter++;
    const authIds =
      t.authIds ??
      (t.type === 'm.room.create'
        ? []
        : authEventTypesFor(e, this.version)
            .map(([ty, k]) => this.state.get(stateKey(ty, k)))
            .filter((x): x is string => x !== undefined));
    const prevs = t.prev ?? this.last;
    e.prev_events = prevs.map((p) => this.ref(p)) as PDU['prev_events'];
    e.auth_events = authIds.map((a) => this.ref(a)) as PDU['auth_events'];
    return e;
  }

  apply(e: PDU): string {
    const id = this.idOf(e);
    this.events.set(id, e);
    if (typeof e.state_key === 'string') this.state.set(stateKey(e.type, e.state_key), id);
    this.last = [id];
    return id;
  }

  /** Checks against the current state, and the shape of the selected auth events. */
  check(t: Template | PDU): string {
    const e = 'hashes' in t ? (t as PDU) : this.build(t as Template);
    try {
      checkAuth(e, this.lookup, this.version, { authEvents: authEventIds(e).map((id) => this.events.get(id) as PDU) });
      return 'ok';
    } catch (err) {
      if (err instanceof AuthError) return err.reason;
      throw err;
    }
  }

  send(t: Template): string {
    const e = this.build(t);
    const r = this.check(e);
    if (r !== 'ok') throw new Error(`setup event rejected: ${r}`);
    return this.apply(e);
  }
}

const member = (sender: string, target: string, membership: string, extra: Json = {}): Template => ({
  type: 'm.room.member', sender, state_key: target, content: { membership, ...extra },
});
const join = (user: string, extra: Json = {}) => member(user, user, 'join', extra);

function powerLevels(room: Room, users: Record<string, number>, extra: Json = {}): Template {
  const u = { ...users };
  if (room.version.privilegedCreators) delete u[ALICE];
  return { type: 'm.room.power_levels', sender: ALICE, state_key: '', content: { users: u, ...extra } };
}

/** create, alice joins, power levels (alice 100 + given), join rules. */
function setup(versionId: string, opts: { joinRule?: string; users?: Record<string, number>; pl?: Json; createContent?: Json } = {}): Room {
  const room = new Room(versionId, { createContent: opts.createContent });
  room.send(join(ALICE));
  room.send(powerLevels(room, { [ALICE]: 100, ...(opts.users ?? {}) }, opts.pl));
  room.send({ type: 'm.room.join_rules', sender: ALICE, state_key: '', content: { join_rule: opts.joinRule ?? 'public' } });
  return room;
}

const ok = (room: Room, t: Template, msg?: string) => assert.equal(room.check(t), 'ok', msg ?? `v${room.version.id}`);
const no = (room: Room, t: Template, pattern?: RegExp) => {
  const r = room.check(t);
  assert.notEqual(r, 'ok', `v${room.version.id}: expected rejection`);
  if (pattern) assert.match(r, pattern, `v${room.version.id}`);
};

// ---- rule 1: m.room.create ----------------------------------------------------------------------

test('create: prev_events, room_id domain (v1–v11) / absent room_id (v12), room_version, creator, additional_creators', () => {
  for (const v of ALL) {
    const room = new Room(v);
    const create = room.events.get(room.createId) as PDU;
    assert.equal(room.check(create), 'ok', `v${v}`);
    no(room, { ...create, prev_events: [room.createId] } as PDU, /prev_events/);
    no(room, { ...create, content: { ...create.content, room_version: '99' } } as PDU, /room_version/);
    no(room, { ...create, content: { ...create.content, room_version: 12 } } as PDU, /room_version/);
    if (Number(v) <= 11) {
      no(room, { ...create, room_id: '!room:elsewhere.test' } as PDU, /domain/);
      no(room, { ...create, room_id: undefined } as PDU, /domain/);
    } else {
      no(room, { ...create, room_id: room.roomId } as PDU, /must not have a room_id/);
    }
    const { creator: _c, ...noCreator } = create.content;
    if (Number(v) <= 10) no(room, { ...create, content: noCreator } as PDU, /creator/);
    else ok(room, { ...create, content: noCreator } as PDU);
  }
  // v12: additional_creators must be user ids; ignored before
  const r12 = new Room('12');
  const c12 = r12.events.get(r12.createId) as PDU;
  ok(r12, { ...c12, content: { ...c12.content, additional_creators: [BOB, CAROL] } } as PDU);
  no(r12, { ...c12, content: { ...c12.content, additional_creators: [BOB, 'carol'] } } as PDU, /additional_creators/);
  no(r12, { ...c12, content: { ...c12.content, additional_creators: BOB } } as PDU, /additional_creators/);
  const r11 = new Room('11');
  const c11 = r11.events.get(r11.createId) as PDU;
  ok(r11, { ...c11, content: { ...c11.content, additional_creators: 'anything' } } as PDU);
});

// ---- auth events shape, room id, m.federate -----------------------------------------------------

test('auth_events: duplicates, unexpected entries, create presence (v1–v11) / absence (v12)', () => {
  for (const v of ALL) {
    const room = setup(v);
    const s = (t: string, k = '') => room.state.get(stateKey(t, k)) as string;
    const base = join(BOB);
    ok(room, base);
    const selected = room.build(base);
    const ids = authEventIds(selected);
    no(room, { ...base, authIds: [...ids, s('m.room.join_rules')] }, /duplicate/);
    no(room, { ...base, authIds: [...ids, s('m.room.member', ALICE)] }, /unexpected/);
    if (Number(v) <= 11) {
      no(room, { ...base, authIds: ids.filter((i) => i !== room.createId) }, /no m.room.create/);
    } else {
      assert.ok(!ids.includes(room.createId));
      no(room, { ...base, authIds: [...ids, room.createId] }, /unexpected/);
    }
  }
});

test('v12: room_id must be the create event id; create is found from the lookup, not auth_events', () => {
  const room = setup('12');
  ok(room, join(BOB));
  no(room, { ...join(BOB), room_id: '!notTheCreateEvent' }, /room_id/);
  const other = new Room('12', { createContent: { 'something': 1 } });
  no(room, { ...join(BOB), room_id: other.roomId }, /room_id/);
  // before v12 the room id is not tied to the create event (only the auth events' rooms are compared)
  const r11 = setup('11');
  const moved = r11.build({ ...join(BOB), room_id: '!anything:a.test' });
  assert.doesNotThrow(() => checkAuth(moved, r11.lookup, r11.version));
  const moved12 = room.build({ ...join(BOB), room_id: '!anything' });
  assert.throws(() => checkAuth(moved12, room.lookup, room.version), /room_id/);
});

test('m.federate: false rejects events from other servers', () => {
  for (const v of ALL) {
    const room = setup(v, { createContent: { 'm.federate': false } });
    no(room, join(BOB), /federated/);
    ok(room, join('@alice2:a.test'));
  }
});

test('missing create event in the auth state rejects', () => {
  const room = setup('10');
  const e = room.build(join(BOB));
  assert.throws(() => checkAuth(e, () => undefined, room.version), AuthError);
});

// ---- aliases (v1–v5) -----------------------------------------------------------------------------

test('m.room.aliases: v1–v5 special case by server; v6+ ordinary state', () => {
  for (const v of ALL) {
    const room = setup(v);
    const aliases = (sender: string, sk?: string): Template => ({ type: 'm.room.aliases', sender, state_key: sk, content: { aliases: ['#x:b.test'] } });
    if (Number(v) <= 5) {
      ok(room, aliases(BOB, 'b.test')); // not even a member
      no(room, aliases(BOB, 'a.test'), /aliases/);
      no(room, aliases(BOB), /aliases/);
    } else {
      no(room, aliases(BOB, 'b.test'), /not joined/);
      ok(room, aliases(ALICE, 'a.test'));
    }
  }
});

// ---- joins --------------------------------------------------------------------------------------

test('join: the creator\'s first join (content.creator before v11, sender from v11)', () => {
  for (const v of ALL) {
    // create sent by alice naming bob as creator (pre-v11 field)
    const room = new Room(v, { createContent: Number(v) <= 10 ? { creator: BOB } : {} });
    if (Number(v) <= 10) {
      ok(room, join(BOB));
      no(room, join(ALICE));
    } else {
      ok(room, join(ALICE));
      no(room, join(BOB));
    }
    // only when the create event is the only prev event
    const otherPrev = room.build({ type: 'm.room.topic', sender: ALICE, state_key: '', content: {} });
    const fake = room.idOf(otherPrev);
    room.events.set(fake, otherPrev);
    no(room, { ...join(Number(v) <= 10 ? BOB : ALICE), prev: [fake] });
    no(room, { ...join(Number(v) <= 10 ? BOB : ALICE), prev: [room.createId, fake] });
  }
});

test('join: public, invite-only, bans, joining for others', () => {
  for (const v of ALL) {
    const pub = setup(v);
    ok(pub, join(BOB));
    no(pub, member(ALICE, BOB, 'join'), /behalf/);
    pub.send(member(ALICE, BOB, 'ban'));
    no(pub, join(BOB), /banned/);

    const inv = setup(v, { joinRule: 'invite' });
    no(inv, join(BOB), /invite/);
    inv.send(member(ALICE, BOB, 'invite'));
    ok(inv, join(BOB));

    const priv = setup(v, { joinRule: 'private' });
    no(priv, join(BOB), /not public/);
  }
});

test('join rule knock: allows invited joins from v7; unknown before', () => {
  for (const v of ALL) {
    const room = setup(v, { joinRule: 'knock' });
    room.send(member(ALICE, BOB, 'invite'));
    if (Number(v) >= 7) ok(room, join(BOB));
    else no(room, join(BOB), /not public/);
    no(room, join(CAROL));
  }
});

test('restricted joins: v8+ with an authorising, signed, invite-capable, joined user; knock_restricted v10+', () => {
  for (const v of ALL) {
    for (const rule of ['restricted', 'knock_restricted']) {
      const room = setup(v, { joinRule: rule, users: { [BOB]: 0 }, pl: { invite: 50 } });
      const via = (user: string, signedBy: string[]): Template => ({ ...join(CAROL, { join_authorised_via_users_server: user }), signedBy });
      const supported = rule === 'restricted' ? Number(v) >= 8 : Number(v) >= 10;
      room.send(member(ALICE, BOB, 'invite'));
      if (!supported) {
        no(room, via(ALICE, ['a.test']), /not public/);
        no(room, join(BOB), /not public/); // not even with an invite
        continue;
      }
      room.send(join(BOB)); // invited users join restricted rooms directly
      ok(room, via(ALICE, ['a.test']), `v${v} ${rule}`);
      no(room, via(ALICE, []), /signed/);
      no(room, via(BOB, ['b.test']), /may not invite/); // bob is joined but below the invite level
      no(room, join(CAROL), /join_authorised_via_users_server/);
      no(room, via(MALLORY, ['m.test']), /not joined/);
      // invited users need no authoriser
      room.send(member(ALICE, CAROL, 'invite'));
      ok(room, join(CAROL));
    }
  }
});

// Bob cannot join an invite-only-ish room before the version supports the rule: adjust setup.
test('restricted join rule before v8 behaves as "not public"', () => {
  for (const v of range(1, 7)) {
    const room = setup(v, { joinRule: 'restricted' });
    no(room, join(BOB), /not public/);
    no(room, { ...join(BOB, { join_authorised_via_users_server: ALICE }), signedBy: ['a.test'] }, /not public/);
  }
});

// ---- invites ------------------------------------------------------------------------------------

test('invite: sender joined, target not joined/banned, invite level', () => {
  for (const v of ALL) {
    const room = setup(v, { pl: { invite: 50 } });
    ok(room, member(ALICE, BOB, 'invite'));
    no(room, member(CAROL, BOB, 'invite'), /not joined/);
    room.send(join(CAROL));
    no(room, member(CAROL, BOB, 'invite'), /may not invite/);
    room.send(join(BOB));
    no(room, member(ALICE, BOB, 'invite'), /joined or banned/);
    room.send(member(ALICE, BOB, 'ban'));
    no(room, member(ALICE, BOB, 'invite'), /joined or banned/);
  }
});

test('third party invites: signature over signed with the 3pid invite public keys (all versions)', () => {
  const idKey = signingKeyFromSeed('ed25519:0', Buffer.alloc(32, 7));
  const wrongKey = signingKeyFromSeed('ed25519:0', Buffer.alloc(32, 8));
  for (const v of ALL) {
    const room = setup(v);
    room.send(join(BOB));
    room.send({
      type: 'm.room.third_party_invite', sender: ALICE, state_key: 'tok',
      content: { display_name: 'c…@example.com', key_validity_url: 'https://id.test/isvalid', public_key: 'unused', public_keys: [{ public_key: encodeBase64(idKey.publicKey) }] },
    });
    const signed = (mxid: string, token: string, k = idKey) => signJson({ mxid, token }, 'id.test', k);
    const tpi = (sender: string, s: Json) => member(sender, CAROL, 'invite', { third_party_invite: { display_name: 'c', signed: s } });
    ok(room, tpi(ALICE, signed(CAROL, 'tok')));
    no(room, tpi(ALICE, signed(CAROL, 'tok', wrongKey)), /signature/);
    no(room, tpi(ALICE, signed(BOB, 'tok')), /mxid/);
    no(room, tpi(ALICE, signed(CAROL, 'nope')), /no matching/);
    no(room, tpi(BOB, signed(CAROL, 'tok')), /did not send/);
    no(room, member(ALICE, CAROL, 'invite', { third_party_invite: { display_name: 'c' } }), /no signed/);
    no(room, tpi(ALICE, { mxid: CAROL }), /mxid or token/);
    // tampering with the signed object breaks the signature
    no(room, tpi(ALICE, { ...signed(CAROL, 'tok'), extra: 1 }), /signature/);
    // banned targets cannot be 3pid-invited
    room.send(member(ALICE, CAROL, 'ban'));
    no(room, tpi(ALICE, signed(CAROL, 'tok')), /banned/);
  }
});

test('m.room.third_party_invite events need the invite level', () => {
  for (const v of ALL) {
    const room = setup(v, { pl: { invite: 50 } });
    room.send(join(BOB));
    const ev = (s: string): Template => ({ type: 'm.room.third_party_invite', sender: s, state_key: 't', content: { public_key: 'x' } });
    ok(room, ev(ALICE));
    no(room, ev(BOB), /may not invite/);
  }
});

// ---- leave / kick / ban ---------------------------------------------------------------------------

test('leave: self-leave from join/invite (and knock v7+), kicks and unbans by level', () => {
  for (const v of ALL) {
    const room = setup(v, { users: { [BOB]: 50 } });
    room.send(join(BOB));
    room.send(join(CAROL));
    ok(room, member(CAROL, CAROL, 'leave'));
    no(room, member(MALLORY, MALLORY, 'leave'), /current membership/);
    ok(room, member(BOB, CAROL, 'leave')); // kick: bob 50 >= kick 50 > carol 0
    no(room, member(CAROL, BOB, 'leave'), /kick/);
    no(room, member(BOB, ALICE, 'leave'), /kick/);
    room.send(member(ALICE, MALLORY, 'ban'));
    no(room, member(MALLORY, MALLORY, 'leave'), /current membership/);
    room.send({ ...powerLevels(room, { [ALICE]: 100, [BOB]: 50 }, { ban: 60 }) });
    no(room, member(BOB, MALLORY, 'leave'), /unban/);
    ok(room, member(ALICE, MALLORY, 'leave'));
    room.send(member(ALICE, '@dave:d.test', 'invite'));
    ok(room, member('@dave:d.test', '@dave:d.test', 'leave'));
  }
});

test('ban: sender joined, ban level, target below sender', () => {
  for (const v of ALL) {
    const room = setup(v, { users: { [BOB]: 50, [CAROL]: 50 } });
    room.send(join(BOB));
    ok(room, member(BOB, MALLORY, 'ban')); // not even in the room
    no(room, member(BOB, CAROL, 'ban'), /ban/);
    no(room, member(MALLORY, BOB, 'ban'), /not joined/);
    ok(room, member(ALICE, BOB, 'ban'));
  }
});

// ---- knock ----------------------------------------------------------------------------------------

test('knock: unknown before v7; join rule knock (v7+) or knock_restricted (v10+)', () => {
  for (const v of ALL) {
    const room = setup(v, { joinRule: 'knock' });
    if (Number(v) < 7) {
      no(room, member(BOB, BOB, 'knock'), /unknown membership/);
      continue;
    }
    ok(room, member(BOB, BOB, 'knock'));
    no(room, member(ALICE, BOB, 'knock'), /behalf/);
    const kr = setup(v, { joinRule: 'knock_restricted' });
    if (Number(v) >= 10) ok(kr, member(BOB, BOB, 'knock'));
    else no(kr, member(BOB, BOB, 'knock'), /knocking/);
    const pub = setup(v);
    no(pub, member(BOB, BOB, 'knock'), /knocking/);
    // knock → leave (rescind) allowed; banned/invited/joined cannot knock
    room.send(member(BOB, BOB, 'knock'));
    ok(room, member(BOB, BOB, 'leave'));
    room.send(member(ALICE, CAROL, 'invite'));
    no(room, member(CAROL, CAROL, 'knock'), /current membership/);
    no(room, member(ALICE, ALICE, 'knock'), /current membership/);
  }
});

test('unknown membership values are rejected', () => {
  for (const v of ALL) {
    const room = setup(v);
    no(room, member(BOB, BOB, 'dance'), /unknown membership/);
    no(room, { type: 'm.room.member', sender: BOB, state_key: BOB, content: {} }, /membership/);
  }
});

// ---- general rules -----------------------------------------------------------------------------------

test('non-members cannot send; required power levels; @-state keys', () => {
  for (const v of ALL) {
    const room = setup(v, { users: { [BOB]: 10 }, pl: { events: { 'm.room.name': 20 }, events_default: 5 } });
    no(room, { type: 'm.room.message', sender: BOB, content: { body: 'x' } }, /not joined/);
    room.send(join(BOB));
    room.send(join(CAROL));
    ok(room, { type: 'm.room.message', sender: BOB, content: { body: 'x' } });
    no(room, { type: 'm.room.message', sender: CAROL, content: { body: 'x' } }, /power level/); // 0 < events_default 5
    no(room, { type: 'm.room.name', sender: BOB, state_key: '', content: { name: 'x' } }, /power level/);
    no(room, { type: 'm.room.topic', sender: BOB, state_key: '', content: { topic: 'x' } }, /power level/); // state_default 50
    ok(room, { type: 'm.room.name', sender: ALICE, state_key: '', content: { name: 'x' } });
    no(room, { type: 'org.example.state', sender: ALICE, state_key: BOB, content: {} }, /@/);
    ok(room, { type: 'org.example.state', sender: ALICE, state_key: ALICE, content: {} });
  }
});

test('without power levels the creator has 100 (content.creator before v11, sender after)', () => {
  for (const v of ALL) {
    const room = new Room(v, { createContent: Number(v) <= 10 ? { creator: BOB } : {} });
    const creator = Number(v) <= 10 ? BOB : ALICE;
    assert.equal(powerLevelOf(creator, room.lookup, room.version), Number(v) >= 12 ? Infinity : 100);
    assert.equal(powerLevelOf(CAROL, room.lookup, room.version), 0);
    assert.equal(requiredPowerLevelFor('m.room.topic', true, room.lookup, room.version), 50);
    assert.equal(requiredPowerLevelFor('m.room.message', false, room.lookup, room.version), 0);
  }
});

// ---- power levels ----------------------------------------------------------------------------------

test('power levels: string values accepted before v10, rejected from v10', () => {
  for (const v of ALL) {
    const room = setup(v);
    const t = powerLevels(room, { [ALICE]: 100, [BOB]: ' +050 ' as unknown as number }, { ban: '50' });
    if (Number(v) < 10) {
      ok(room, t);
      room.send(t);
      assert.equal(powerLevelOf(BOB, room.lookup, room.version), 50);
    } else {
      no(room, t, /integer/);
      no(room, powerLevels(room, { [ALICE]: 100 }, { events: { 'm.room.name': '50' } }), /integer/);
      no(room, powerLevels(room, { [ALICE]: 100 }, { notifications: { room: '50' } }), /integer/);
      no(room, powerLevels(room, { [ALICE]: 100 }, { events: [] }), /integer/);
      no(room, powerLevels(room, { [ALICE]: 100 }, { kick: 1.5 }), /integer/);
    }
    no(room, powerLevels(room, { [ALICE]: 100, [BOB]: 'fifty' as unknown as number }), /not an integer/);
  }
});

test('power levels: floats truncated in v1–v5, rejected from v6', () => {
  for (const v of ALL) {
    const room = setup(v);
    const t = powerLevels(room, { [ALICE]: 100, [BOB]: 50.9 });
    if (Number(v) <= 5) {
      room.send(t);
      assert.equal(powerLevelOf(BOB, room.lookup, room.version), 50);
    } else {
      no(room, t);
    }
  }
});

test('power levels: users must be valid user ids; changes bounded by the sender\'s level', () => {
  for (const v of ALL) {
    const EV = { 'm.room.power_levels': 50, 'm.room.tombstone': 100 };
    const room = setup(v, { users: { [BOB]: 50, [CAROL]: 50 }, pl: { events: EV } });
    room.send(join(BOB));
    no(room, powerLevels(room, { [ALICE]: 100, 'not-a-user': 1 }), /user id/);
    no(room, { type: 'm.room.power_levels', sender: ALICE, state_key: '', content: { users: [] } }, /not an object/);
    const bobPl = (users: Record<string, number>, extra: Json = {}): Template => ({ ...powerLevels(room, users, extra), sender: BOB });
    // bob (50) may add a user up to his level, not above; may not change carol (equal level)
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50, [MALLORY]: 50 }, { events: EV }));
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50, [MALLORY]: 51 }, { events: EV }), /above your own/);
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 10 }, { events: EV }), /change the level/);
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50 }, { events: EV }), /change the level/);
    // bob may lower himself
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 10, [CAROL]: 50 }, { events: EV }));
    // top-level and events changes
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: EV, ban: 60 }), /ban above/);
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: EV, ban: 50 })); // 50 → 50 is no change
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: EV, kick: 20 }));
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: { 'm.room.power_levels': 50 } }), /m.room.tombstone/);
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: { ...EV, 'm.room.tombstone': 50 } }), /m.room.tombstone/);
    no(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: { ...EV, 'm.room.name': 60 } }), /m.room.name/);
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: { ...EV, 'm.room.name': 40 } }));
    ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: 50 }, { events: { ...EV, 'm.room.power_levels': 0 } }));
    // equivalent values are not changes (before v10 strings may be used)
    if (Number(v) < 10) ok(room, bobPl({ [ALICE]: 100, [BOB]: 50, [CAROL]: '50' as unknown as number }, { events: EV }));
  }
});

test('power levels: notifications changes checked from v6', () => {
  for (const v of ALL) {
    const room = setup(v, { users: { [BOB]: 50 }, pl: { events: { 'm.room.power_levels': 50 }, notifications: { room: 60 } } });
    room.send(join(BOB));
    const t: Template = { ...powerLevels(room, { [ALICE]: 100, [BOB]: 50 }, { events: { 'm.room.power_levels': 50 }, notifications: { room: 10 } }), sender: BOB };
    if (Number(v) >= 6) no(room, t, /notifications/);
    else ok(room, t);
  }
});

// ---- redactions ------------------------------------------------------------------------------------

test('redaction: auth rule in v1–v2 (redact level or same event_id server); v3+ only the send level', () => {
  for (const v of ALL) {
    const room = setup(v, { users: { [BOB]: 0 } });
    room.send(join(BOB));
    const msg = room.send({ type: 'm.room.message', sender: ALICE, content: { body: 'x' } });
    const redaction = (sender: string, redacts: string): Template => ({
      type: 'm.room.redaction', sender, content: room.version.redactsInContent ? { redacts } : {}, redacts,
    });
    if (Number(v) <= 2) {
      no(room, redaction(BOB, msg), /redact/);
      ok(room, redaction(ALICE, msg));
      ok(room, redaction(BOB, '$123:b.test'));
    } else {
      ok(room, redaction(BOB, msg));
    }
    // applying redactions (v3 "Handling redactions")
    const original = room.events.get(msg) as PDU;
    const red = room.build(redaction(BOB, msg));
    assert.equal(isRedactionApplicable(red, original, room.lookup, room.version), false);
    assert.equal(isRedactionApplicable(room.build(redaction(ALICE, msg)), original, room.lookup, room.version), true);
    const bobMsg = room.events.get(room.send({ type: 'm.room.message', sender: BOB, content: { body: 'y' } })) as PDU;
    const own = room.build(redaction(BOB, 'x'));
    assert.equal(isRedactionApplicable(own, bobMsg, room.lookup, room.version), true);
  }
});

// ---- v12 creators ------------------------------------------------------------------------------------

test('v12: creators (sender + additional_creators) have infinite power and may not be in users', () => {
  const room = setup('12', { createContent: { additional_creators: [BOB] }, users: { [CAROL]: 100 } });
  room.send(join(BOB));
  room.send(join(CAROL));
  assert.equal(powerLevelOf(ALICE, room.lookup, room.version), Infinity);
  assert.equal(powerLevelOf(BOB, room.lookup, room.version), Infinity);
  assert.equal(powerLevelOf(CAROL, room.lookup, room.version), 100);
  no(room, powerLevels(room, { [BOB]: 100, [CAROL]: 100 }), /creators/);
  no(room, { type: 'm.room.power_levels', sender: ALICE, state_key: '', content: { users: { [ALICE]: 100 } } }, /creators/);
  // carol (100) cannot kick or ban creators; creators can act on each other's lower members only
  no(room, member(CAROL, BOB, 'ban'), /ban/);
  no(room, member(CAROL, ALICE, 'leave'), /kick/);
  no(room, member(BOB, ALICE, 'ban'), /ban/); // ∞ is not below ∞
  ok(room, member(BOB, CAROL, 'ban'));
  // a creator can set any level, including above 100 for others
  ok(room, { type: 'm.room.power_levels', sender: BOB, state_key: '', content: { users: { [CAROL]: 9000 } } });
  // before v12 additional_creators means nothing
  const r11 = setup('11', { createContent: { additional_creators: [BOB] } });
  r11.send(join(BOB));
  assert.equal(powerLevelOf(BOB, r11.lookup, r11.version), 0);
  assert.equal(powerLevelOf(ALICE, r11.lookup, r11.version), 100);
  ok(r11, powerLevels(r11, { [ALICE]: 100, [BOB]: 50 }));
});

// ---- auth events selection --------------------------------------------------------------------------

test('authEventTypesFor follows the auth events selection per version', () => {
  const base = { auth_events: [], prev_events: [], depth: 1, hashes: { sha256: '' }, origin_server_ts: 1, signatures: {}, room_id: '!r:x' };
  const msg: PDU = { ...base, type: 'm.room.message', sender: ALICE, content: {} };
  assert.deepEqual(authEventTypesFor(msg, getRoomVersion('11') as RoomVersion), [['m.room.create', ''], ['m.room.power_levels', ''], ['m.room.member', ALICE]]);
  assert.deepEqual(authEventTypesFor(msg, getRoomVersion('12') as RoomVersion), [['m.room.power_levels', ''], ['m.room.member', ALICE]]);
  const restricted: PDU = { ...base, type: 'm.room.member', sender: BOB, state_key: BOB, content: { membership: 'join', join_authorised_via_users_server: ALICE } };
  assert.deepEqual(authEventTypesFor(restricted, getRoomVersion('7') as RoomVersion).map((x) => x.join('|')), ['m.room.create|', 'm.room.power_levels|', `m.room.member|${BOB}`, 'm.room.join_rules|']);
  assert.deepEqual(authEventTypesFor(restricted, getRoomVersion('8') as RoomVersion).map((x) => x.join('|')), ['m.room.create|', 'm.room.power_levels|', `m.room.member|${BOB}`, 'm.room.join_rules|', `m.room.member|${ALICE}`]);
  const tpi: PDU = { ...base, type: 'm.room.member', sender: ALICE, state_key: CAROL, content: { membership: 'invite', third_party_invite: { signed: { token: 'tok' } } } };
  assert.deepEqual(authEventTypesFor(tpi, getRoomVersion('12') as RoomVersion).map((x) => x.join('|')), ['m.room.power_levels|', `m.room.member|${ALICE}`, `m.room.member|${CAROL}`, 'm.room.join_rules|', 'm.room.third_party_invite|tok']);
  const knock: PDU = { ...base, type: 'm.room.member', sender: BOB, state_key: BOB, content: { membership: 'knock' } };
  assert.ok(authEventTypesFor(knock, getRoomVersion('7') as RoomVersion).some(([t]) => t === 'm.room.join_rules'));
  const leave: PDU = { ...base, type: 'm.room.member', sender: BOB, state_key: BOB, content: { membership: 'leave' } };
  assert.ok(!authEventTypesFor(leave, getRoomVersion('7') as RoomVersion).some(([t]) => t === 'm.room.join_rules'));
  const create: PDU = { ...base, type: 'm.room.create', sender: ALICE, state_key: '', content: {} };
  assert.deepEqual(authEventTypesFor(create, getRoomVersion('1') as RoomVersion), []);
});

test('checking against the event\'s own auth events (authStateFromEvents)', () => {
  const room = setup('11');
  const e = room.build(join(BOB));
  const authEvents = authEventIds(e).map((id) => room.events.get(id) as PDU);
  assert.doesNotThrow(() => checkAuth(e, authStateFromEvents(authEvents), room.version, { authEvents }));
  // without join rules in its auth events the join is not public
  const withoutJr = authEvents.filter((x) => x.type !== 'm.room.join_rules');
  assert.throws(() => checkAuth(e, authStateFromEvents(withoutJr), room.version), /not public/);
  // v12: the create event comes from the room id, not from auth_events
  const r12 = setup('12');
  const e12 = r12.build(join(BOB));
  const ae12 = authEventIds(e12).map((id) => r12.events.get(id) as PDU);
  assert.ok(!ae12.some((x) => x.type === 'm.room.create'));
  assert.throws(() => checkAuth(e12, authStateFromEvents(ae12), r12.version, { authEvents: ae12 }), /no m.room.create/);
  const create = r12.events.get('$' + r12.roomId.slice(1)) as PDU;
  assert.doesNotThrow(() => checkAuth(e12, authStateFromEvents(ae12, create), r12.version, { authEvents: ae12 }));
});
