// Content hashes, redaction, reference hashes, event ids, room ids and event signatures.
// Oracles: the spec's signing vectors (test-vectors.json), tweetnacl, node:crypto sha256, and a
// redaction written separately below straight from the spec text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import nacl from 'tweetnacl';
import { decodeBase64 } from '../../src/crypto/base64.js';
import { signingKeyFromSeed } from '../../src/crypto/signing.js';
import {
  addContentHash,
  checkContentHash,
  computeContentHash,
  computeEventId,
  computeReferenceHash,
  eventIdOf,
  redactEvent,
  redactsOf,
  requiredSignatureServers,
  roomIdFromCreateEvent,
  signEvent,
  verifyEventSignature,
} from '../../src/rooms/hashing.js';
import { ROOM_VERSIONS, getRoomVersion, DEFAULT_ROOM_VERSION, type RoomVersion } from '../../src/rooms/versions.js';
import type { PDU } from '../../src/rooms/event.js';

type Json = Record<string, unknown>;
const V = (id: string): RoomVersion => getRoomVersion(id) as RoomVersion;

const vectors = JSON.parse(readFileSync('/work/shared/matrix-spec/test-vectors.json', 'utf8'));
const seed = decodeBase64(vectors.signing.key.seed_base64);
const key = signingKeyFromSeed(vectors.signing.key.key_id, seed);
const naclPair = nacl.sign.keyPair.fromSeed(new Uint8Array(seed));

// ---- independent oracles -----------------------------------------------------------------------

/** Canonical JSON for ASCII-keyed test data: recursively sorted keys, JSON.stringify. */
function canon(value: unknown): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v && typeof v === 'object') {
      const o = v as Json;
      return Object.fromEntries(Object.keys(o).sort().map((k) => [k, sort(o[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(value));
}

/** The redaction algorithms, transcribed from the spec's lists (rooms v1, v6, v8, v9, v11). */
const SPEC_REDACTION: Record<string, { top: string[]; content: Record<string, string[] | 'all'> }> = (() => {
  const top1 = 'event_id type room_id sender state_key content hashes signatures depth prev_events prev_state auth_events origin origin_server_ts membership'.split(' ');
  const top11 = 'event_id type room_id sender state_key content hashes signatures depth prev_events auth_events origin_server_ts'.split(' ');
  const pl = 'ban events events_default kick redact state_default users users_default'.split(' ');
  return {
    v1: {
      top: top1,
      content: {
        'm.room.member': ['membership'], 'm.room.create': ['creator'], 'm.room.join_rules': ['join_rule'],
        'm.room.power_levels': pl, 'm.room.aliases': ['aliases'], 'm.room.history_visibility': ['history_visibility'],
      },
    },
    v6: {
      top: top1,
      content: {
        'm.room.member': ['membership'], 'm.room.create': ['creator'], 'm.room.join_rules': ['join_rule'],
        'm.room.power_levels': pl, 'm.room.history_visibility': ['history_visibility'],
      },
    },
    v8: {
      top: top1,
      content: {
        'm.room.member': ['membership'], 'm.room.create': ['creator'], 'm.room.join_rules': ['join_rule', 'allow'],
        'm.room.power_levels': pl, 'm.room.history_visibility': ['history_visibility'],
      },
    },
    v9: {
      top: top1,
      content: {
        'm.room.member': ['membership', 'join_authorised_via_users_server'], 'm.room.create': ['creator'],
        'm.room.join_rules': ['join_rule', 'allow'], 'm.room.power_levels': pl,
        'm.room.history_visibility': ['history_visibility'],
      },
    },
    v11: {
      top: top11,
      content: {
        'm.room.member': ['membership', 'join_authorised_via_users_server'], 'm.room.create': 'all',
        'm.room.join_rules': ['join_rule', 'allow'], 'm.room.power_levels': [...pl, 'invite'],
        'm.room.history_visibility': ['history_visibility'], 'm.room.redaction': ['redacts'],
      },
    },
  };
})();

function specRedact(event: Json, algorithm: string): Json {
  const rules = SPEC_REDACTION[algorithm];
  const out: Json = {};
  for (const k of Object.keys(event)) if (rules.top.includes(k)) out[k] = event[k];
  const content = (event.content ?? {}) as Json;
  const keep = rules.content[event.type as string];
  const c: Json = {};
  if (keep === 'all') Object.assign(c, content);
  else if (keep) for (const k of keep) if (k in content) c[k] = content[k];
  if (algorithm === 'v11' && event.type === 'm.room.member' && content.third_party_invite && typeof content.third_party_invite === 'object') {
    const tpi = content.third_party_invite as Json;
    c.third_party_invite = 'signed' in tpi ? { signed: tpi.signed } : {};
  }
  out.content = c;
  return out;
}

function strip(obj: Json, ...keys: string[]): Json {
  const o = { ...obj };
  for (const k of keys) delete o[k];
  return o;
}

const b64 = (buf: Uint8Array) => Buffer.from(buf).toString('base64').replace(/=+$/, '');
const b64url = (buf: Uint8Array) => Buffer.from(buf).toString('base64url');
const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest();

function oracleContentHash(event: Json): string {
  return b64(sha(canon(strip(event, 'unsigned', 'signatures', 'hashes'))));
}
function oracleReferenceHash(event: Json, algorithm: string): Buffer {
  return sha(canon(strip(specRedact(event, algorithm), 'signatures', 'unsigned')));
}
function oracleVerify(event: Json, server: string, algorithm: string): boolean {
  const sig = ((event.signatures as Json)[server] as Record<string, string>)[key.keyId];
  const payload = Buffer.from(canon(strip(specRedact(event, algorithm), 'signatures', 'unsigned')), 'utf8');
  return nacl.sign.detached.verify(new Uint8Array(payload), new Uint8Array(decodeBase64(sig)), naclPair.publicKey);
}

// ---- versions ------------------------------------------------------------------------------------

test('room versions 1..12 exist with the default 12', () => {
  assert.deepEqual(Object.keys(ROOM_VERSIONS).sort((a, b) => Number(a) - Number(b)), ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10', '11', '12']);
  assert.equal(DEFAULT_ROOM_VERSION, '12');
  assert.equal(getRoomVersion('13'), undefined);
  assert.equal(getRoomVersion('toString'), undefined);
  assert.deepEqual(
    Object.values(ROOM_VERSIONS).map((v) => [v.id, v.redaction, v.eventIdFormat, v.stateRes]),
    [
      ['1', 'v1', 'v1', 'v1'], ['2', 'v1', 'v1', 'v2'], ['3', 'v1', 'v3', 'v2'], ['4', 'v1', 'v4', 'v2'],
      ['5', 'v1', 'v4', 'v2'], ['6', 'v6', 'v4', 'v2'], ['7', 'v6', 'v4', 'v2'], ['8', 'v8', 'v4', 'v2'],
      ['9', 'v9', 'v4', 'v2'], ['10', 'v9', 'v4', 'v2'], ['11', 'v11', 'v4', 'v2'], ['12', 'v11', 'v4', 'v2.1'],
    ],
  );
});

// ---- spec vectors ----------------------------------------------------------------------------------

test('spec signing vectors: content hash and signature reproduce byte for byte (v1–v10 redaction)', () => {
  assert.equal(Buffer.from(key.publicKey).toString('base64').replace(/=+$/, ''), vectors.derived.public_key_base64);
  assert.deepEqual(Buffer.from(key.publicKey), Buffer.from(naclPair.publicKey));
  for (const id of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']) {
    const version = V(id);
    for (const vec of vectors.signing.events) {
      const input = vec.input as Json;
      assert.equal(computeContentHash(input, version), vec.expected_content_hash_sha256);
      assert.equal(oracleContentHash(input), vec.expected_content_hash_sha256);
      const hashed = addContentHash(input, version);
      assert.equal(hashed.hashes.sha256, vec.expected_content_hash_sha256);
      const signed = signEvent(input, vectors.signing.key.server_name, key, version);
      assert.equal(canon(signed), canon(vec.expected_signed), `room v${id}`);
      assert.deepEqual(signed, vec.expected_signed);
      assert.ok(checkContentHash(signed, version));
      assert.ok(verifyEventSignature(signed, 'domain', 'ed25519:1', vectors.derived.public_key_base64, version));
      assert.ok(oracleVerify(signed, 'domain', 'v1'));
    }
  }
});

test('spec signing vectors: v11 redaction strips origin, so the published signature does not verify', () => {
  for (const vec of vectors.signing.events) {
    const signed = vec.expected_signed as Json;
    assert.equal(verifyEventSignature(signed, 'domain', 'ed25519:1', vectors.derived.public_key_base64, V('11')), false);
    assert.equal(verifyEventSignature(signed, 'domain', 'ed25519:1', vectors.derived.public_key_base64, V('10')), true);
    // the content hash does not depend on the redaction algorithm
    assert.ok(checkContentHash(signed, V('11')));
  }
});

test('reference hashes and event ids of the spec events (derived values)', () => {
  const [first, second] = vectors.derived.reference_hashes;
  const e0 = vectors.signing.events[0].expected_signed as Json;
  const e1 = vectors.signing.events[1].expected_signed as Json;
  assert.equal(b64(computeReferenceHash(e0, V('3'))), first.sha256_b64_redaction_v1_to_v10);
  assert.equal(b64(oracleReferenceHash(e0, 'v1')), first.sha256_b64_redaction_v1_to_v10);
  assert.equal(computeEventId(e0, V('3')), first.event_id_room_v3);
  assert.equal(computeEventId(e0, V('4')), first.event_id_room_v4_to_v10);
  assert.equal(computeEventId(e0, V('10')), first.event_id_room_v4_to_v10);
  assert.equal(b64(computeReferenceHash(e0, V('11'))), first.sha256_b64_redaction_v11_plus);
  assert.equal(computeEventId(e0, V('11')), first.event_id_if_same_json_under_v11_redaction);
  assert.equal(b64(computeReferenceHash(e1, V('1'))), second.sha256_b64_redaction_v1_to_v10);
  assert.equal(b64(oracleReferenceHash(e1, 'v1')), second.sha256_b64_redaction_v1_to_v10);
  // v1/v2: the event id is the one the event carries
  assert.equal(computeEventId(e1, V('1')), '$0:domain');
  assert.equal(computeEventId(e1, V('2')), '$0:domain');
  assert.throws(() => computeEventId(e0, V('1')));
});

test('event id formats: v3 standard base64 vs v4+ URL-safe, both unpadded', () => {
  // Search for an event whose reference hash has + or / in standard base64.
  let found = false;
  for (let i = 0; i < 200 && !found; i++) {
    const ev = { type: 'm.room.message', sender: '@a:x', room_id: '!r:x', content: { body: String(i) }, depth: 1, origin_server_ts: i, prev_events: [], auth_events: [], hashes: { sha256: 'x' }, signatures: {} };
    const h = oracleReferenceHash(ev, 'v1');
    if (!/[+/]/.test(b64(h))) continue;
    found = true;
    const v3 = computeEventId(ev, V('3'));
    const v4 = computeEventId(ev, V('4'));
    assert.equal(v3, '$' + b64(h));
    assert.equal(v4, '$' + b64url(h));
    assert.notEqual(v3, v4);
    assert.match(v3, /^\$[A-Za-z0-9+/]{43}$/);
    assert.match(v4, /^\$[A-Za-z0-9_-]{43}$/);
  }
  assert.ok(found);
});

test('eventIdOf memoises per object and version', () => {
  const ev = { type: 'X', sender: '@a:x', room_id: '!r:x', content: {}, depth: 1, origin_server_ts: 1, prev_events: [], auth_events: [], hashes: { sha256: 'x' }, signatures: {} } as PDU;
  assert.equal(eventIdOf(ev, V('4')), computeEventId(ev, V('4')));
  assert.equal(eventIdOf(ev, V('3')), computeEventId(ev, V('3')));
  assert.equal(eventIdOf(ev, V('11')), computeEventId(ev, V('11')));
});

// ---- redaction -----------------------------------------------------------------------------------

const battery: Json[] = [
  {
    type: 'm.room.member', state_key: '@b:x', sender: '@b:x', room_id: '!r:x', event_id: '$e:x', origin: 'x', membership: 'join',
    prev_state: [], depth: 5, origin_server_ts: 7, prev_events: ['$p'], auth_events: ['$a'], hashes: { sha256: 'h' },
    signatures: { x: { 'ed25519:1': 's' } }, unsigned: { age: 1 }, extra_top: true,
    content: {
      membership: 'join', displayname: 'B', avatar_url: 'mxc://x/y', join_authorised_via_users_server: '@a:x',
      third_party_invite: { display_name: 'b@example.com', signed: { mxid: '@b:x', token: 't', signatures: { id: { 'ed25519:0': 'z' } } } },
    },
  },
  { type: 'm.room.member', state_key: '@c:x', sender: '@c:x', content: { membership: 'invite', third_party_invite: { display_name: 'nosigned' } } },
  { type: 'm.room.create', state_key: '', sender: '@a:x', content: { creator: '@a:x', room_version: '9', 'm.federate': false, predecessor: { room_id: '!o:x' }, additional_creators: ['@z:y'] } },
  { type: 'm.room.join_rules', state_key: '', sender: '@a:x', content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }], other: 1 } },
  {
    type: 'm.room.power_levels', state_key: '', sender: '@a:x',
    content: { ban: 50, events: { 'm.room.name': 50 }, events_default: 0, invite: 0, kick: 50, redact: 50, state_default: 50, users: { '@a:x': 100 }, users_default: 0, notifications: { room: 50 }, historical: 1 },
  },
  { type: 'm.room.aliases', state_key: 'x', sender: '@a:x', content: { aliases: ['#a:x'] } },
  { type: 'm.room.history_visibility', state_key: '', sender: '@a:x', content: { history_visibility: 'shared', x: 1 } },
  { type: 'm.room.redaction', sender: '@a:x', redacts: '$old', content: { redacts: '$old', reason: 'spam' } },
  { type: 'm.room.message', sender: '@a:x', content: { body: 'hello', msgtype: 'm.text' } },
  { type: 'm.room.topic', state_key: '', sender: '@a:x', content: { topic: 'T' } },
];

test('redaction: every algorithm matches the spec lists for every room version', () => {
  for (const version of Object.values(ROOM_VERSIONS)) {
    for (const ev of battery) {
      assert.deepEqual(redactEvent(ev, version), specRedact(ev, version.redaction), `v${version.id} ${ev.type}`);
    }
  }
});

test('redaction: hand-derived expectations for the version differences', () => {
  const [member, , create, joinRules, powerLevels, aliases, , redaction] = battery;
  // v1: top-level origin/membership/prev_state kept, unknown keys dropped.
  assert.deepEqual(redactEvent(member, V('1')), {
    type: 'm.room.member', state_key: '@b:x', sender: '@b:x', room_id: '!r:x', event_id: '$e:x', origin: 'x', membership: 'join',
    prev_state: [], depth: 5, origin_server_ts: 7, prev_events: ['$p'], auth_events: ['$a'], hashes: { sha256: 'h' },
    signatures: { x: { 'ed25519:1': 's' } }, content: { membership: 'join' },
  });
  // v9 keeps join_authorised_via_users_server; v11 also third_party_invite.signed, drops origin etc.
  assert.deepEqual(redactEvent(member, V('8')).content, { membership: 'join' });
  assert.deepEqual(redactEvent(member, V('9')).content, { membership: 'join', join_authorised_via_users_server: '@a:x' });
  const v11 = redactEvent(member, V('11'));
  assert.deepEqual(v11.content, {
    membership: 'join', join_authorised_via_users_server: '@a:x',
    third_party_invite: { signed: { mxid: '@b:x', token: 't', signatures: { id: { 'ed25519:0': 'z' } } } },
  });
  assert.equal('origin' in v11, false);
  assert.equal('membership' in v11, false);
  assert.equal('prev_state' in v11, false);
  assert.equal('unsigned' in v11, false);
  assert.deepEqual(redactEvent(battery[1], V('11')).content, { membership: 'invite', third_party_invite: {} });
  // create: creator only before v11, everything from v11
  assert.deepEqual(redactEvent(create, V('10')).content, { creator: '@a:x' });
  assert.deepEqual(redactEvent(create, V('11')).content, create.content);
  // join rules: allow from v8
  assert.deepEqual(redactEvent(joinRules, V('7')).content, { join_rule: 'restricted' });
  assert.deepEqual(redactEvent(joinRules, V('8')).content, { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: '!s:x' }] });
  // power levels: invite from v11, notifications never
  const plContent = (powerLevels.content as Json);
  const { invite: _i, notifications: _n, historical: _h, ...plV1 } = plContent;
  assert.deepEqual(redactEvent(powerLevels, V('10')).content, plV1);
  assert.deepEqual(redactEvent(powerLevels, V('11')).content, { ...plV1, invite: 0 });
  // aliases: special until v5
  assert.deepEqual(redactEvent(aliases, V('5')).content, { aliases: ['#a:x'] });
  assert.deepEqual(redactEvent(aliases, V('6')).content, {});
  // redaction: top-level redacts is never protected; content.redacts from v11
  assert.deepEqual(redactEvent(redaction, V('10')), { type: 'm.room.redaction', sender: '@a:x', content: {} });
  assert.deepEqual(redactEvent(redaction, V('11')), { type: 'm.room.redaction', sender: '@a:x', content: { redacts: '$old' } });
  assert.equal(redactsOf(redaction as PDU, V('10')), '$old');
  assert.equal(redactsOf({ ...redaction, redacts: undefined } as PDU, V('11')), '$old');
  assert.equal(redactsOf({ ...redaction, content: {} } as PDU, V('11')), undefined);
});

test('redaction is idempotent and does not mutate its input', () => {
  for (const version of Object.values(ROOM_VERSIONS)) {
    for (const ev of battery) {
      const before = canon(ev);
      const once = redactEvent(ev, version);
      assert.deepEqual(redactEvent(once, version), once);
      assert.equal(canon(ev), before);
    }
  }
});

// ---- v11 / v12 own vectors ---------------------------------------------------------------------

test('v11 and v12 events: content hash, reference hash and signature agree with the oracles', () => {
  const events: Json[] = [
    {
      type: 'm.room.member', state_key: '@b:x', sender: '@b:x', room_id: '!abc', origin: 'x', membership: 'join',
      depth: 5, origin_server_ts: 1700000000000, prev_events: ['$p'], auth_events: ['$a'], signatures: {}, unsigned: { age: 4 },
      content: { membership: 'join', displayname: 'Bee', third_party_invite: { display_name: 'b', signed: { mxid: '@b:x', token: 't', signatures: {} } } },
    },
    { type: 'm.room.redaction', sender: '@a:x', room_id: '!abc', depth: 6, origin_server_ts: 1, prev_events: ['$p'], auth_events: ['$a'], content: { redacts: '$old', reason: 'r' } },
    { type: 'm.room.power_levels', state_key: '', sender: '@a:x', room_id: '!abc', depth: 3, origin_server_ts: 2, prev_events: ['$p'], auth_events: ['$a'], content: { invite: 50, users: { '@b:x': 10 }, notifications: { room: 20 } } },
  ];
  for (const id of ['11', '12']) {
    const version = V(id);
    for (const ev of events) {
      const signed = signEvent(ev, 'x', key, version);
      assert.equal((signed.hashes as Json).sha256, oracleContentHash(ev));
      assert.ok(oracleVerify(signed, 'x', 'v11'), `${ev.type} signature verifies with tweetnacl over the spec redaction`);
      assert.ok(verifyEventSignature(signed, 'x', key.keyId, b64(naclPair.publicKey), version));
      assert.equal(verifyEventSignature(signed, 'x', key.keyId, b64(nacl.sign.keyPair().publicKey), version), false);
      assert.equal(verifyEventSignature(signed, 'y', key.keyId, b64(naclPair.publicKey), version), false);
      assert.equal(computeEventId(signed, version), '$' + b64url(oracleReferenceHash(signed, 'v11')));
      // The signature covers only the redacted form: changing a redacted-away key keeps it valid.
      const edited = { ...signed, content: { ...(signed.content as Json), displayname: 'changed', reason: 'changed' } };
      assert.ok(verifyEventSignature(edited, 'x', key.keyId, b64(naclPair.publicKey), version));
      assert.equal(checkContentHash(edited, version), false);
      // ...while changing a protected key breaks it.
      const tampered = { ...signed, sender: '@evil:x' };
      assert.equal(verifyEventSignature(tampered, 'x', key.keyId, b64(naclPair.publicKey), version), false);
    }
  }
});

test('v12 room id is ! + URL-safe reference hash of the create event', () => {
  const create = {
    type: 'm.room.create', state_key: '', sender: '@alice:example.org', origin_server_ts: 1750000000000, depth: 1,
    prev_events: [], auth_events: [], content: { room_version: '12', additional_creators: ['@bob:example.org'] },
  };
  const signed = signEvent(create, 'example.org', key, V('12'));
  const roomId = roomIdFromCreateEvent(signed);
  assert.equal(roomId, '!' + b64url(oracleReferenceHash(signed, 'v11')));
  assert.match(roomId, /^![A-Za-z0-9_-]{43}$/);
  assert.equal(roomIdFromCreateEvent(signed, V('12')), roomId);
  assert.equal(computeEventId(signed, V('12')), '$' + roomId.slice(1));
  // unsigned data does not change the room id; content does (all of it survives v11 redaction)
  assert.equal(roomIdFromCreateEvent({ ...signed, unsigned: { age: 5 } }), roomId);
  assert.notEqual(roomIdFromCreateEvent({ ...signed, content: { ...signed.content, 'm.federate': false } }), roomId);
  assert.throws(() => roomIdFromCreateEvent({ ...signed, content: { room_version: '11' } }));
});

test('v6+ canonical JSON is strict: floats cannot be hashed; v1–v5 accept them', () => {
  const ev = { type: 'm.room.power_levels', state_key: '', sender: '@a:x', room_id: '!r:x', content: { users: { '@a:x': 50.5 } }, depth: 1, origin_server_ts: 1, prev_events: [], auth_events: [] };
  assert.throws(() => computeContentHash(ev, V('6')));
  assert.equal(checkContentHash({ ...ev, hashes: { sha256: 'x' } }, V('6')), false);
  assert.match(computeContentHash(ev, V('5')), /^[A-Za-z0-9+/]{43}$/);
  const big = { ...ev, content: { n: 2 ** 53 } };
  assert.throws(() => computeContentHash(big, V('6')));
  assert.doesNotThrow(() => computeContentHash(big, V('5')));
});

test('signEvent keeps an existing content hash and adds to existing signatures', () => {
  const ev = { type: 'X', sender: '@a:x', room_id: '!r:x', content: {}, depth: 1, origin_server_ts: 1, prev_events: [], auth_events: [], hashes: { sha256: 'keep' }, signatures: { other: { 'ed25519:o': 'sig' } } };
  const signed = signEvent(ev, 'x', key, V('10'));
  assert.equal(signed.hashes.sha256, 'keep');
  assert.deepEqual(Object.keys(signed.signatures).sort(), ['other', 'x']);
  assert.equal((ev.signatures as Record<string, unknown>).x, undefined); // input not mutated
});

test('required signature servers', () => {
  const base = { auth_events: [], prev_events: [], depth: 1, hashes: { sha256: '' }, origin_server_ts: 1, signatures: {} };
  const join: PDU = { ...base, type: 'm.room.member', state_key: '@u:a', sender: '@u:a', room_id: '!r:b', content: { membership: 'join', join_authorised_via_users_server: '@m:c' } };
  assert.deepEqual(requiredSignatureServers(join, V('7')), ['a']);
  assert.deepEqual(requiredSignatureServers(join, V('8')).sort(), ['a', 'c']);
  const v1: PDU = { ...base, type: 'm.room.message', sender: '@u:a', room_id: '!r:b', event_id: '$1:d', content: {} };
  assert.deepEqual(requiredSignatureServers(v1, V('1')).sort(), ['a', 'd']);
  assert.deepEqual(requiredSignatureServers(v1, V('3')), ['a']);
});
