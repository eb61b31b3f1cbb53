// Hostile input over federation made of PROPERLY signed events: hs2 plays the attacker. It builds
// PDUs that fit hs1's room DAG, hashes and signs them with its real server key, and sends them to
// hs1 with its own (X-Matrix signing) federation client, so that each check on receipt is reached on
// its own (server-server API "Checks performed on receipt of a PDU", "Rejection", "Soft failure",
// "Server Access Control Lists (ACLs)", "Transactions").
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer, eventually, clientApi, registerUser } from '../federation-harness.js';
import { FederationError, type FederationRequestOptions } from '../../src/federation/client.js';
import { addContentHash, eventIdOf, signEvent } from '../../src/rooms/hashing.js';
import { stateKey, type PDU, type StateMap } from '../../src/rooms/event.js';
import type { RoomVersion } from '../../src/rooms/versions.js';

let fed: Federation;
let hs1: FedServer;
let hs2: FedServer;
before(async () => {
  fed = await startFederation(2);
  [hs1, hs2] = fed.servers;
});
after(async () => {
  await fed?.stop();
  await closeFedAgents();
});

const enc = encodeURIComponent;
const capi = (s: FedServer, method: string, p: string, opts: { token?: string; body?: unknown; prefix?: string } = {}) => clientApi(fed.ca, s, method, p, opts);
const user = (s: FedServer, name: string) => registerUser(fed.ca, s, name);
interface User { user_id: string; access_token: string }


function unique(name: string): string {
  return `${name}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
}



/** alice (hs1) creates a public room; bob (hs2) joins it through hs1; resolves once hs1 has the join. */
async function sharedRoom(alice: User, bob: User, version = '12'): Promise<string> {
  const created = await capi(hs1, 'POST', '/createRoom', { token: alice.access_token, body: { preset: 'public_chat', room_version: version } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id as string;
  const join = await capi(hs2, 'POST', `/join/${enc(roomId)}?server_name=${hs1.serverName}`, { token: bob.access_token, body: {} });
  assert.equal(join.status, 200, JSON.stringify(join.body));
  await eventually('hs1 sees bob join', async () => (await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token })).body.joined?.[bob.user_id]);
  return roomId;
}

// ---------------------------------------------------------------------------------------------------
// The attacker's tools

interface Head { version: Readonly<RoomVersion>; prev: string[]; depth: number; state: StateMap }

/**
 * The room's forward extremities and current state. Read from hs1's store: hs2 is in the room and
 * knows the same, this only saves waiting for it to catch up.
 */
async function headOf(roomId: string): Promise<Head> {
  const s = hs1.hs.services;
  const room = await s.roomData.room(roomId);
  assert.ok(room, `hs1 knows ${roomId}`);
  const head = await s.stores.events.roomHead(room.nid);
  return { version: room.version, prev: head.extremities.map((e) => e.event_id), depth: Math.max(...head.extremities.map((e) => e.depth)), state: await s.roomData.currentState(room) };
}

/** The auth events the spec selects ("Auth events selection") for an event, from `head`'s state. */
function authFor(head: Head, sender: string, type: string, target?: string): string[] {
  const keys = [stateKey('m.room.power_levels', ''), stateKey('m.room.member', sender)];
  // Room v12: the create event is implied by the room id and not listed.
  if (!head.version.roomIdFromCreateEvent) keys.unshift(stateKey('m.room.create', ''));
  if (type === 'm.room.member') {
    keys.push(stateKey('m.room.join_rules', ''));
    if (target && target !== sender) keys.push(stateKey('m.room.member', target));
  }
  return keys.map((k) => head.state.get(k)).filter((x): x is string => !!x);
}

interface Draft {
  sender: string;
  type: string;
  content: Record<string, unknown>;
  stateKey?: string;
  /** Defaults: the room's current extremities, depth and auth events. */
  head?: Head;
  prev?: string[];
  depth?: number;
  auth?: string[];
  /** Content the hash is computed over, when it should not match `content`. */
  hashedContent?: Record<string, unknown>;
}

/** An event hashed and signed by hs2's real signing key, and its id. */
async function craft(roomId: string, d: Draft): Promise<{ pdu: PDU; id: string }> {
  const head = d.head ?? (await headOf(roomId));
  const base: Record<string, unknown> = {
    room_id: roomId,
    sender: d.sender,
    type: d.type,
    content: d.hashedContent ?? d.content,
    depth: d.depth ?? head.depth + 1,
    origin_server_ts: Date.now(),
    prev_events: d.prev ?? head.prev,
    auth_events: d.auth ?? authFor(head, d.sender, d.type, d.stateKey),
  };
  if (d.stateKey !== undefined) base.state_key = d.stateKey;
  let hashed: Record<string, unknown> = addContentHash(base, head.version);
  // The signature covers the redacted event (with the hash), not the content: swapping the
  // content after hashing leaves the signature valid and the content hash wrong.
  if (d.hashedContent) hashed = { ...hashed, content: d.content };
  const pdu = signEvent(hashed, hs2.serverName, hs2.hs.services.serverKeys.signingKey, head.version) as unknown as PDU;
  return { pdu, id: eventIdOf(pdu, head.version) };
}

let txnSeq = 0;
/** PUT /send from hs2 to hs1; resolves with the per-PDU results. */
async function transact(pdus: unknown[], edus: unknown[] = []): Promise<Record<string, { error?: string }>> {
  const res = await hs2.hs.services.federationClient.request<{ pdus: Record<string, { error?: string }> }>(hs1.serverName, 'PUT', `/_matrix/federation/v1/send/${unique(`hostile${txnSeq++}-`)}`, {
    body: { origin: hs2.serverName, origin_server_ts: Date.now(), pdus, edus },
  });
  return res.pdus;
}

/** A federation request from hs2 to hs1, as status and errcode (200 when it succeeded). */
async function fedRequest(method: string, path: string, opts: FederationRequestOptions = {}): Promise<{ status: number; errcode?: string; body?: any }> {
  try {
    const body = await hs2.hs.services.federationClient.request<any>(hs1.serverName, method, path, opts);
    return { status: 200, body };
  } catch (err) {
    if (err instanceof FederationError) return { status: err.status, errcode: err.errcode, body: err.body };
    throw err;
  }
}

function typingEdu(roomId: string, userId: string, typing: boolean) {
  return { edu_type: 'm.typing', content: { room_id: roomId, user_id: userId, typing } };
}

// ---------------------------------------------------------------------------------------------------
// What hs1 keeps and shows

/** hs1's row for an event (undefined: never stored). */
async function row(eventId: string): Promise<{ json: string; rejected_reason: string | null; soft_failed: unknown; stream_ordering: unknown } | undefined> {
  return hs1.hs.services.db('events').where({ event_id: eventId }).first();
}

const truthy = (v: unknown) => v === true || Number(v) === 1;

/** The room's timeline on hs1 as `u` pages it (newest first). */
async function messages(s: FedServer, u: User, roomId: string): Promise<any[]> {
  const r = await capi(s, 'GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=200`, { token: u.access_token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.chunk;
}

const bodiesOf = (chunk: any[]) => chunk.filter((e) => e.type === 'm.room.message').map((e) => e.content?.body);

async function syncToken(s: FedServer, u: User): Promise<string> {
  const r = await capi(s, 'GET', '/sync?timeout=0', { token: u.access_token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.next_batch;
}

/** Incremental /sync responses from `since` until one has what `pick` wants; every response is kept. */
async function syncUntil(s: FedServer, u: User, since: string, what: string, pick: (body: any) => unknown): Promise<any[]> {
  const seen: any[] = [];
  let next = since;
  const until = Date.now() + 20_000;
  for (;;) {
    const r = await capi(s, 'GET', `/sync?timeout=1000&since=${enc(next)}`, { token: u.access_token });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    seen.push(r.body);
    if (pick(r.body)) return seen;
    next = r.body.next_batch;
    if (Date.now() > until) throw new Error(`timed out: ${what}`);
  }
}

/** Who hs1 tells `u` is typing in the room (a full /sync). */
async function typingOnHs1(u: User, roomId: string): Promise<string[]> {
  const r = await capi(hs1, 'GET', '/sync?timeout=0', { token: u.access_token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.rooms?.join?.[roomId]?.ephemeral?.events?.find((e: any) => e.type === 'm.typing')?.content.user_ids ?? [];
}

/** Rooms the earlier tests left with what hs1 must still have, for the last test. */
const survivors: { roomId: string; alice: User; bob: User; kept: string[] }[] = [];

// ---------------------------------------------------------------------------------------------------

for (const version of ['10', '12']) {
  test(`room v${version}: a validly signed event whose content hash does not match is kept in its redacted form`, async () => {
    const alice = await user(hs1, 'alice');
    const bob = await user(hs2, 'bob');
    const roomId = await sharedRoom(alice, bob, version);

    // Control: the same crafting with a matching hash arrives whole.
    const intact = await craft(roomId, { sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'crafted and intact' } });
    assert.deepEqual(await transact([intact.pdu]), { [intact.id]: {} });
    const got = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/event/${enc(intact.id)}`, { token: alice.access_token });
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.deepEqual(got.body.content, { msgtype: 'm.text', body: 'crafted and intact' });

    // Spec: "Passes hash checks, otherwise it is redacted before being processed further" — the
    // event is accepted (no per-PDU error) and hs1 uses the redacted copy it calculated.
    const tampered = await craft(roomId, {
      sender: bob.user_id, type: 'm.room.message',
      content: { msgtype: 'm.text', body: 'altered after signing' },
      hashedContent: { msgtype: 'm.text', body: 'what was hashed' },
    });
    assert.deepEqual(await transact([tampered.pdu]), { [tampered.id]: {} });
    const red = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/event/${enc(tampered.id)}`, { token: alice.access_token });
    assert.equal(red.status, 200, JSON.stringify(red.body));
    assert.equal(red.body.type, 'm.room.message');
    assert.equal(red.body.sender, bob.user_id);
    assert.deepEqual(red.body.content, {}, 'served without the body');
    const stored = JSON.parse((await row(tampered.id))!.json);
    assert.deepEqual(stored.content, {}, 'stored redacted');
    assert.equal(stored.hashes.sha256, (tampered.pdu.hashes as { sha256: string }).sha256, 'the hash it came with is kept (it is signed)');
    const timeline = await messages(hs1, alice, roomId);
    assert.ok(timeline.some((e) => e.event_id === tampered.id && Object.keys(e.content).length === 0), 'the redacted event is in the timeline');
    assert.ok(!bodiesOf(timeline).includes('altered after signing'));
    assert.ok(!bodiesOf(timeline).includes('what was hashed'));

    // A state event: a join whose displayname changed after hashing. Redacted, it is still a join
    // (spec "Rejection" note: a redacted join still makes the user joined), without the name.
    const rejoin = await craft(roomId, {
      sender: bob.user_id, type: 'm.room.member', stateKey: bob.user_id,
      content: { membership: 'join', displayname: 'Mallory' },
      hashedContent: { membership: 'join', displayname: 'Bob' },
    });
    assert.deepEqual(await transact([rejoin.pdu]), { [rejoin.id]: {} });
    const member = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.user_id)}`, { token: alice.access_token });
    assert.equal(member.status, 200, JSON.stringify(member.body));
    assert.deepEqual(member.body, { membership: 'join' });
    const joined = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token });
    assert.ok(joined.body.joined[bob.user_id], 'bob is still joined');
    assert.equal(joined.body.joined[bob.user_id].display_name, undefined);

    survivors.push({ roomId, alice, bob, kept: ['crafted and intact'] });
  });

  test(`room v${version}: validly signed and hashed events that fail authorization are rejected per PDU`, async () => {
    const alice = await user(hs1, 'alice');
    const bob = await user(hs2, 'bob');
    const roomId = await sharedRoom(alice, bob, version);
    const pl = (await capi(hs1, 'GET', `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { token: alice.access_token })).body;
    assert.equal(pl.users?.[bob.user_id], undefined, 'bob has the default level');
    const since = await syncToken(hs1, alice);

    const head = await headOf(roomId);
    // bob (level 0) raises himself to 100: fails against its own auth events.
    const grab = await craft(roomId, { head, sender: bob.user_id, type: 'm.room.power_levels', stateKey: '', content: { ...pl, users: { ...pl.users, [bob.user_id]: 100 } } });
    // A user of hs2 who never joined speaks in the room.
    const ghost = `@${unique('ghost')}:${hs2.serverName}`;
    const intruder = await craft(roomId, { head, sender: ghost, type: 'm.room.message', content: { msgtype: 'm.text', body: 'from outside the room' } });
    // In the same transaction, a valid event is unaffected.
    const fine = await craft(roomId, { head, sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'a legitimate message' } });

    const res = await transact([grab.pdu, intruder.pdu, fine.pdu]);
    assert.deepEqual(Object.keys(res).sort(), [grab.id, intruder.id, fine.id].sort());
    assert.match(res[grab.id].error ?? '', /.+/, 'the power levels grab is rejected');
    assert.match(res[intruder.id].error ?? '', /.+/, 'the outsider\'s message is rejected');
    assert.deepEqual(res[fine.id], {});

    // Rejected events are neither relayed to clients nor change state.
    const plAfter = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/state/m.room.power_levels/`, { token: alice.access_token });
    assert.deepEqual(plAfter.body, pl);
    for (const id of [grab.id, intruder.id]) {
      const ev = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/event/${enc(id)}`, { token: alice.access_token });
      assert.equal(ev.status, 404, `GET /event of rejected ${id}: ${JSON.stringify(ev.body)}`);
      const ctx = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/context/${enc(id)}`, { token: alice.access_token });
      assert.equal(ctx.status, 404, `GET /context of rejected ${id}: ${JSON.stringify(ctx.body)}`);
    }
    const timeline = await messages(hs1, alice, roomId);
    const ids = timeline.map((e) => e.event_id);
    assert.ok(!ids.includes(grab.id) && !ids.includes(intruder.id));
    assert.ok(ids.includes(fine.id));
    const state = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/state`, { token: alice.access_token });
    assert.ok(!state.body.some((e: any) => e.event_id === grab.id));
    const joined = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token });
    assert.equal(joined.body.joined[ghost], undefined);

    // Nor are they built upon: alice's next event follows the valid one only.
    const next = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/after-auth`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'alice after the attempts' } });
    assert.equal(next.status, 200, JSON.stringify(next.body));
    const prev = JSON.parse((await row(next.body.event_id))!.json).prev_events as string[];
    assert.ok(prev.includes(fine.id), `prev_events ${JSON.stringify(prev)}`);
    assert.ok(!prev.includes(grab.id) && !prev.includes(intruder.id));
    const synced = await syncUntil(hs1, alice, since, 'alice syncs her message', (b) => b.rooms?.join?.[roomId]?.timeline?.events?.some((e: any) => e.event_id === next.body.event_id));
    const syncedIds = synced.flatMap((b) => b.rooms?.join?.[roomId]?.timeline?.events ?? []).map((e: any) => e.event_id);
    assert.ok(syncedIds.includes(fine.id));
    assert.ok(!syncedIds.includes(grab.id) && !syncedIds.includes(intruder.id));

    survivors.push({ roomId, alice, bob, kept: ['a legitimate message'] });
  });
}

test('room ACL: once hs2 is denied, its PDUs, typing and room requests are refused', async () => {
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(alice, bob);
  const anyEvent = (await headOf(roomId)).prev[0];
  const newcomer = `@${unique('newcomer')}:${hs2.serverName}`;
  const requests: [string, string, FederationRequestOptions?][] = [
    ['GET', `/_matrix/federation/v1/make_join/${enc(roomId)}/${enc(newcomer)}?ver=10&ver=12`],
    ['GET', `/_matrix/federation/v1/make_leave/${enc(roomId)}/${enc(bob.user_id)}`],
    ['GET', `/_matrix/federation/v1/state/${enc(roomId)}`, { query: { event_id: anyEvent } }],
    ['GET', `/_matrix/federation/v1/state_ids/${enc(roomId)}`, { query: { event_id: anyEvent } }],
    ['GET', `/_matrix/federation/v1/backfill/${enc(roomId)}`, { query: { v: [anyEvent], limit: '10' } }],
    ['GET', `/_matrix/federation/v1/event_auth/${enc(roomId)}/${enc(anyEvent)}`],
    ['POST', `/_matrix/federation/v1/get_missing_events/${enc(roomId)}`, { body: { earliest_events: [], latest_events: [anyEvent], limit: 10 } }],
  ];

  // Before the ACL all of it works, so what follows is the ACL's doing.
  assert.deepEqual(await transact([], [typingEdu(roomId, bob.user_id, true)]), {});
  assert.deepEqual(await typingOnHs1(alice, roomId), [bob.user_id]);
  assert.deepEqual(await transact([], [typingEdu(roomId, bob.user_id, false)]), {});
  assert.deepEqual(await typingOnHs1(alice, roomId), []);
  for (const [method, path, opts] of requests) {
    const r = await fedRequest(method, path, opts);
    assert.equal(r.status, 200, `${method} ${path} before the ACL: ${JSON.stringify(r.body)}`);
  }

  const acl = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/state/m.room.server_acl/`, { token: alice.access_token, body: { allow: ['*'], deny: [hs2.serverName], allow_ip_literals: false } });
  assert.equal(acl.status, 200, JSON.stringify(acl.body));

  // A PDU that passes every other check (bob is joined, it is signed and hashed) and a typing EDU.
  const msg = await craft(roomId, { sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'from a denied server' } });
  const res = await transact([msg.pdu], [typingEdu(roomId, bob.user_id, true)]);
  assert.deepEqual(Object.keys(res), [msg.id]);
  assert.match(res[msg.id].error ?? '', /ACL/i);
  assert.equal(await row(msg.id), undefined, 'not stored');
  assert.ok(!bodiesOf(await messages(hs1, alice, roomId)).includes('from a denied server'));
  // /send answered after handling the EDUs, so this is not racing the typing update.
  assert.deepEqual(await typingOnHs1(alice, roomId), [], 'the typing EDU was ignored');

  for (const [method, path, opts] of requests) {
    const r = await fedRequest(method, path, opts);
    assert.equal(r.status, 403, `${method} ${path}: ${JSON.stringify(r.body)}`);
    assert.equal(r.errcode, 'M_FORBIDDEN', `${method} ${path}`);
  }
  assert.equal((await capi(hs1, 'GET', `/rooms/${enc(roomId)}/joined_members`, { token: alice.access_token })).body.joined[newcomer], undefined);

  // Lifting the ACL lets hs2 back in.
  const lift = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/state/m.room.server_acl/`, { token: alice.access_token, body: { allow: ['*'], deny: [] } });
  assert.equal(lift.status, 200, JSON.stringify(lift.body));
  const again = await craft(roomId, { sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'allowed again' } });
  assert.deepEqual(await transact([again.pdu]), { [again.id]: {} });
  survivors.push({ roomId, alice, bob, kept: ['allowed again'] });
});

test('transaction limits: 51 PDUs or 101 EDUs are refused whole; a PDU over 64 KiB is rejected alone', async () => {
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(alice, bob);

  // A chain of 51 valid messages, each after the previous one.
  const head = await headOf(roomId);
  const auth = authFor(head, bob.user_id, 'm.room.message');
  const chain: { pdu: PDU; id: string }[] = [];
  for (let i = 0; i < 51; i++) {
    const prev = i === 0 ? head.prev : [chain[i - 1].id];
    chain.push(await craft(roomId, { head, prev, depth: head.depth + 1 + i, auth, sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: `chain ${i}` } }));
  }
  const send = (txn: string, pdus: unknown[], edus: unknown[]) => fedRequest('PUT', `/_matrix/federation/v1/send/${txn}`, { body: { origin: hs2.serverName, origin_server_ts: Date.now(), pdus, edus } });

  const tooManyPdus = await send(unique('pdus51-'), chain.map((c) => c.pdu), []);
  assert.equal(tooManyPdus.status, 400, JSON.stringify(tooManyPdus.body));
  for (const c of chain) assert.equal(await row(c.id), undefined, 'nothing of the refused transaction is stored');

  const tooManyEdus = await send(unique('edus101-'), [], Array.from({ length: 101 }, () => typingEdu(roomId, bob.user_id, true)));
  assert.equal(tooManyEdus.status, 400, JSON.stringify(tooManyEdus.body));
  assert.deepEqual(await typingOnHs1(alice, roomId), [], 'no EDU of the refused transaction was handled');

  // 50 and 100 are the limits, not over them: all handled (the last EDU leaves bob typing).
  const edus = [...Array.from({ length: 99 }, () => typingEdu(roomId, bob.user_id, false)), typingEdu(roomId, bob.user_id, true)];
  const ok = await send(unique('full-'), chain.slice(0, 50).map((c) => c.pdu), edus);
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.deepEqual(ok.body.pdus, Object.fromEntries(chain.slice(0, 50).map((c) => [c.id, {}])));
  assert.deepEqual(await typingOnHs1(alice, roomId), [bob.user_id]);
  const bodies = bodiesOf(await messages(hs1, alice, roomId));
  for (let i = 0; i < 50; i++) assert.ok(bodies.includes(`chain ${i}`), `chain ${i} is on hs1`);
  assert.ok(!bodies.includes('chain 50'));

  // A PDU over 65536 bytes (signed and hashed like any other) is rejected; its sibling is not.
  const big = await craft(roomId, { sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'x'.repeat(70_000) } });
  const small = await craft(roomId, { sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'small sibling' } });
  const res = await transact([big.pdu, small.pdu]);
  assert.match(res[big.id]?.error ?? '', /64 KiB|large/i);
  assert.deepEqual(res[small.id], {});
  assert.equal(await row(big.id), undefined, 'the oversized PDU is not stored');
  const after = bodiesOf(await messages(hs1, alice, roomId));
  assert.ok(after.includes('small sibling'));
  assert.ok(!after.some((b) => typeof b === 'string' && b.length > 60_000));
  survivors.push({ roomId, alice, bob, kept: ['chain 0', 'chain 49', 'small sibling'] });
});

test('soft failure: a banned user\'s event citing the state before the ban is stored but never shown', async () => {
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await sharedRoom(alice, bob);
  const beforeBan = await headOf(roomId);
  const ban = await capi(hs1, 'POST', `/rooms/${enc(roomId)}/ban`, { token: alice.access_token, body: { user_id: bob.user_id, reason: 'test' } });
  assert.equal(ban.status, 200, JSON.stringify(ban.body));
  const since = await syncToken(hs1, alice);

  // Passes auth against its auth events and against the state before it (bob joined), fails
  // against the current state (bob banned): soft-failed, which is not a rejection.
  const evading = await craft(roomId, { head: beforeBan, sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'evading the ban' } });
  assert.deepEqual(await transact([evading.pdu]), { [evading.id]: {} });
  const stored = await row(evading.id);
  assert.ok(stored, 'the soft-failed event is stored');
  assert.ok(truthy(stored.soft_failed), 'marked soft-failed');
  assert.equal(stored.rejected_reason, null, 'not rejected');

  // Not relayed to clients: not in /messages, not in /sync, not by id.
  const marker = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/marker`, { token: alice.access_token, body: { msgtype: 'm.text', body: 'alice after the ban' } });
  assert.equal(marker.status, 200, JSON.stringify(marker.body));
  const synced = await syncUntil(hs1, alice, since, 'alice syncs her marker', (b) => b.rooms?.join?.[roomId]?.timeline?.events?.some((e: any) => e.event_id === marker.body.event_id));
  assert.ok(!synced.flatMap((b) => b.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: any) => e.event_id === evading.id), 'not in /sync');
  const full = await capi(hs1, 'GET', '/sync?timeout=0', { token: alice.access_token });
  assert.ok(!(full.body.rooms?.join?.[roomId]?.timeline?.events ?? []).some((e: any) => e.event_id === evading.id), 'not in an initial /sync');
  const timeline = await messages(hs1, alice, roomId);
  assert.ok(!timeline.some((e) => e.event_id === evading.id), 'not in /messages');
  assert.ok(!bodiesOf(timeline).includes('evading the ban'));
  const byId = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/event/${enc(evading.id)}`, { token: alice.access_token });
  assert.equal(byId.status, 404, JSON.stringify(byId.body));
  const ctx = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/context/${enc(evading.id)}`, { token: alice.access_token });
  assert.equal(ctx.status, 404, JSON.stringify(ctx.body));

  // Not built upon: alice's marker does not follow it.
  const markerPrev = JSON.parse((await row(marker.body.event_id))!.json).prev_events as string[];
  assert.ok(!markerPrev.includes(evading.id), `prev_events ${JSON.stringify(markerPrev)}`);
  // But served over federation ("A soft failed event should be returned in response to federation
  // requests where appropriate (e.g. in /event/<event_id>)").
  const fedEvent = await fedRequest('GET', `/_matrix/federation/v1/event/${enc(evading.id)}`);
  assert.equal(fedEvent.status, 200, JSON.stringify(fedEvent.body));
  assert.equal(eventIdOf(fedEvent.body.pdus[0], beforeBan.version), evading.id);

  // Contrast: citing the state after the ban (while listing the old join as auth event) fails
  // against the state before the event, and is rejected.
  const now = await headOf(roomId);
  const late = await craft(roomId, { head: now, auth: authFor(beforeBan, bob.user_id, 'm.room.message'), sender: bob.user_id, type: 'm.room.message', content: { msgtype: 'm.text', body: 'citing the ban' } });
  const res = await transact([late.pdu]);
  assert.match(res[late.id]?.error ?? '', /state before/i);
  assert.ok(!bodiesOf(await messages(hs1, alice, roomId)).includes('citing the ban'));
  const member = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/state/m.room.member/${enc(bob.user_id)}`, { token: alice.access_token });
  assert.equal(member.body.membership, 'ban', 'bob is still banned');
});

test('after all of that, hs2\'s messages still arrive and nothing accepted was lost', async () => {
  assert.ok(survivors.length >= 6, `rooms from the earlier tests: ${survivors.length}`);
  await Promise.all(survivors.map(async ({ roomId, alice, bob, kept }, i) => {
    const sent = await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/final${i}`, { token: bob.access_token, body: { msgtype: 'm.text', body: `bob still here ${i}` } });
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    await eventually(`hs1 gets bob's message in room ${i}`, async () => bodiesOf(await messages(hs1, alice, roomId)).includes(`bob still here ${i}`));
    const reply = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/final${i}`, { token: alice.access_token, body: { msgtype: 'm.text', body: `alice still here ${i}` } });
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    await eventually(`hs2 gets alice's reply in room ${i}`, async () => bodiesOf(await messages(hs2, bob, roomId)).includes(`alice still here ${i}`));
    const onHs1 = bodiesOf(await messages(hs1, alice, roomId));
    for (const body of kept) assert.ok(onHs1.includes(body), `room ${i} still has "${body}" on hs1`);
  }));
});
