// matrix-js-sdk clients on three servers federating over TLS: alice (hs1) creates a room with an
// alias, bob (hs2) joins it by alias, carol (hs3) is invited and joins. Messages, edits, reactions,
// typing, read receipts and presence each travel hs1→hs2, hs2→hs3 and hs3→hs1, as the clients'
// sync loops see them; a display name set on hs2 shows on hs1 and hs3; hs3 resolves hs1's alias.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, fetch as undiciFetch } from 'undici';
import { createClient, RoomEvent, type MatrixClient, type MatrixEvent, type Room } from 'matrix-js-sdk';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer } from '../federation-harness.js';
import { startSyncing, waitFor } from '../sdk.js';

// The SDK logs its sync loop at debug and info level; the test wants warnings only.
console.debug = () => undefined;
console.info = () => undefined;

interface Login { user_id: string; access_token: string; device_id: string }
interface Person { name: string; server: FedServer; login: Login; client: MatrixClient; userId: string; live: MatrixEvent[] }

let fed: Federation;
const agents: Agent[] = [];
let alice: Person;
let bob: Person;
let carol: Person;
let roomId: string;
let alias: string;

const enc = encodeURIComponent;

async function register(s: FedServer, name: string): Promise<Login> {
  const username = `${name}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
  const r = await fedApi(fed.ca, s, 'POST', '/_matrix/client/v3/register', { body: { username, password: 'pw', auth: { type: 'm.login.dummy' } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as Login;
}

/** A syncing client of `s`'s TLS listener (which serves the client API too), trusting the run's CA. */
async function person(s: FedServer, name: string): Promise<Person> {
  const login = await register(s, name);
  const agent = new Agent({ connect: { ca: readFileSync(fed.ca.caFile, 'utf8'), servername: s.serverName } });
  agents.push(agent);
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(input as never, { ...(init as object), dispatcher: agent } as never)) as unknown as typeof globalThis.fetch;
  const client = createClient({ baseUrl: s.fedUrl, fetchFn, accessToken: login.access_token, userId: login.user_id, deviceId: login.device_id });
  // Events the sync loop delivers live (not back-paginated history).
  const live: MatrixEvent[] = [];
  client.on(RoomEvent.Timeline, (ev, _room, toStartOfTimeline, _removed, data) => {
    if (!toStartOfTimeline && data?.liveEvent) live.push(ev);
  });
  await startSyncing(client);
  return { name, server: s, login, client, userId: login.user_id, live };
}

/** The client-server API of a person's own server, as that person. */
async function capi(p: Person, method: string, path: string, body?: unknown) {
  return fedApi(fed.ca, p.server, method, path, { body, headers: { authorization: `Bearer ${p.login.access_token}` } });
}

const room = (p: Person): Room | null => p.client.getRoom(roomId);

/** Live timeline events of the room at `p` of `type` whose content passes `match`. */
function liveEvent(p: Person, type: string, match: (content: Record<string, any>) => boolean): MatrixEvent | undefined {
  return p.live.find((e) => e.getRoomId() === roomId && e.getType() === type && match(e.getContent()));
}

/** Each direction the features must travel: hs1→hs2, hs2→hs3, hs3→hs1. */
const directions = (): [Person, Person][] => [[alice, bob], [bob, carol], [carol, alice]];

before(async () => {
  fed = await startFederation(3);
  const [hs1, hs2, hs3] = fed.servers;
  [alice, bob, carol] = await Promise.all([person(hs1, 'alice'), person(hs2, 'bob'), person(hs3, 'carol')]);

  const aliasName = `sdk${Date.now().toString(36)}`;
  ({ room_id: roomId } = await alice.client.createRoom({ preset: 'public_chat' as never, name: 'Three servers', room_alias_name: aliasName }));
  alias = `#${aliasName}:${hs1.serverName}`;

  // bob joins by alias: hs2 asks hs1's directory, then joins through it.
  const joined = await bob.client.joinRoom(alias);
  assert.equal(joined.roomId, roomId);
  // carol is invited and accepts.
  await alice.client.invite(roomId, carol.userId);
  await waitFor(carol.client, () => room(carol)?.getMyMembership() === 'invite', 20_000, 'carol gets the invite');
  await carol.client.joinRoom(roomId);

  for (const p of [alice, bob, carol]) {
    await waitFor(p.client, () => [alice, bob, carol].every((q) => room(p)?.getMember(q.userId)?.membership === 'join'), 20_000, `${p.name} sees all three joined`);
  }
});

after(async () => {
  for (const p of [alice, bob, carol]) p?.client.stopClient();
  await fed?.stop();
  await closeFedAgents();
  await Promise.all(agents.map((a) => a.close()));
});

const sent = new Map<string, string>(); // name → event id of that person's message

test('the clients of the joining servers get the room\'s state from their own server', () => {
  // The SDK asks /sync for MSC4222's state_after (org.matrix.msc4222.use_state_after) and reads it
  // from org.matrix.msc4222.state_after: the state from the join must arrive there.
  for (const p of [bob, carol]) {
    const r = room(p)!;
    assert.equal(r.name, 'Three servers', `${p.name} knows the room name`);
    assert.equal(r.getMember(alice.userId)?.membership, 'join', `${p.name} knows alice from the room state`);
    assert.equal(r.currentState.getStateEvents('m.room.canonical_alias', '')?.getContent().alias, alias);
    assert.equal(r.currentState.getStateEvents('m.room.create', '')?.getSender(), alice.userId, `${p.name} has the create event`);
    assert.equal(r.currentState.getStateEvents('m.room.join_rules', '')?.getContent().join_rule, 'public');
  }
});

test('messages flow every way and arrive live in each sync loop', async () => {
  // Each message is sent once the previous one reached everyone, so each follows the last.
  for (const p of [alice, bob, carol]) {
    const body = `hello from ${p.name} on ${p.server.serverName}`;
    const { event_id } = await p.client.sendTextMessage(roomId, body);
    sent.set(p.name, event_id);
    for (const q of [alice, bob, carol].filter((x) => x !== p)) {
      const ev = await waitFor(q.client, () => liveEvent(q, 'm.room.message', (c) => c.body === body), 20_000, `${q.name} gets "${body}"`);
      assert.equal(ev.getId(), event_id);
      assert.equal(ev.getSender(), p.userId);
    }
  }
  // The same order on every server.
  const order = (p: Person) => (room(p)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === 'm.room.message').map((e) => e.getId());
  assert.deepEqual(order(bob).slice(-3), order(alice).slice(-3));
  assert.deepEqual(order(carol).slice(-3), order(alice).slice(-3));
});

test('edits (m.replace) replace the original for the next server\'s client', async () => {
  for (const [from, to] of directions()) {
    const original = sent.get(from.name)!;
    const newBody = `edited by ${from.name}`;
    const edit = await from.client.sendEvent(roomId, 'm.room.message' as never, {
      msgtype: 'm.text', body: `* ${newBody}`,
      'm.new_content': { msgtype: 'm.text', body: newBody },
      'm.relates_to': { rel_type: 'm.replace', event_id: original },
    } as never);
    const replaced = await waitFor(to.client, () => {
      const ev = room(to)?.findEventById(original);
      return ev?.replacingEventId() === edit.event_id ? ev : undefined;
    }, 20_000, `${to.name} sees ${from.name}'s edit`);
    assert.equal(replaced.getContent().body, newBody, 'the SDK shows the new body');
    assert.equal(replaced.getOriginalContent().body, `hello from ${from.name} on ${from.server.serverName}`);
    // The receiving server bundles the edit with the original.
    const got = await capi(to, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/event/${enc(original)}`);
    assert.equal(got.status, 200, JSON.stringify(got.body));
    assert.equal(got.body.unsigned?.['m.relations']?.['m.replace']?.event_id, edit.event_id);
  }
});

test('reactions (m.annotation) reach the next server and aggregate in its /relations', async () => {
  const keys = ['👍', '🎉', '🚀'];
  for (const [i, [from, to]] of directions().entries()) {
    // React to the receiver's own message.
    const target = sent.get(to.name)!;
    const reaction = await from.client.sendEvent(roomId, 'm.reaction' as never, { 'm.relates_to': { rel_type: 'm.annotation', event_id: target, key: keys[i] } } as never);
    await waitFor(to.client, () => liveEvent(to, 'm.reaction', (c) => c['m.relates_to']?.key === keys[i] && c['m.relates_to']?.event_id === target), 20_000, `${to.name} gets ${from.name}'s reaction`);
    const rel = await capi(to, 'GET', `/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(target)}/m.annotation/m.reaction`);
    assert.equal(rel.status, 200, JSON.stringify(rel.body));
    const found = rel.body.chunk.find((e: any) => e.event_id === reaction.event_id);
    assert.ok(found, `${to.server.serverName} lists the reaction: ${JSON.stringify(rel.body.chunk)}`);
    assert.equal(found.sender, from.userId);
    assert.equal(found.content['m.relates_to'].key, keys[i]);
  }
  // Every server ends with the same reactions on each message.
  for (const target of sent.values()) {
    const lists = await Promise.all([alice, bob, carol].map(async (p) => {
      const rel = await capi(p, 'GET', `/_matrix/client/v1/rooms/${enc(roomId)}/relations/${enc(target)}/m.annotation`);
      return rel.body.chunk.map((e: any) => e.event_id).sort();
    }));
    assert.equal(lists[0].length, 1);
    assert.deepEqual(lists[1], lists[0]);
    assert.deepEqual(lists[2], lists[0]);
  }
});

test('typing notifications reach the next server\'s client, and stop', async () => {
  for (const [from, to] of directions()) {
    await from.client.sendTyping(roomId, true, 30_000);
    await waitFor(to.client, () => room(to)?.getMember(from.userId)?.typing === true, 20_000, `${to.name} sees ${from.name} typing`);
    await from.client.sendTyping(roomId, false, 0);
    await waitFor(to.client, () => room(to)?.getMember(from.userId)?.typing === false, 20_000, `${to.name} sees ${from.name} stop typing`);
  }
});

test('read receipts reach the next server\'s client', async () => {
  for (const [reader, observer] of directions()) {
    // A fresh message from the third person, which both have.
    const third = [alice, bob, carol].find((p) => p !== reader && p !== observer)!;
    const { event_id: eventId } = await third.client.sendTextMessage(roomId, `${third.name} asks ${reader.name} to read this`);
    const ev = await waitFor(reader.client, () => room(reader)?.findEventById(eventId), 20_000, `${reader.name} has the message`);
    await waitFor(observer.client, () => room(observer)?.findEventById(eventId), 20_000, `${observer.name} has the message`);
    assert.notEqual(room(observer)?.getReadReceiptForUserId(reader.userId, true)?.eventId, eventId);
    await reader.client.sendReadReceipt(ev);
    await waitFor(observer.client, () => room(observer)?.getReadReceiptForUserId(reader.userId, true)?.eventId === eventId, 20_000, `${observer.name} sees ${reader.name}'s receipt`);
  }
});

test('presence reaches the next server\'s client', async () => {
  for (const [from, to] of directions()) {
    const status = `${from.name} is around (${Date.now()})`;
    await from.client.setPresence({ presence: 'online', status_msg: status });
    const u = await waitFor(to.client, () => {
      const x = to.client.getUser(from.userId);
      return x?.presenceStatusMsg === status ? x : undefined;
    }, 20_000, `${to.name} sees ${from.name}'s presence`);
    assert.equal(u.presence, 'online');
  }
  // (Not 'unavailable': each client's sync loop polls with the default set_presence=online, which
  // turns an idle user back online, so that state would race the next /sync.)
});

test('a display name set on hs2 becomes bob\'s member name on hs1 and hs3', async () => {
  await bob.client.setDisplayName('Bob of hs2');
  for (const p of [alice, carol]) {
    await waitFor(p.client, () => room(p)?.getMember(bob.userId)?.rawDisplayName === 'Bob of hs2', 20_000, `${p.name} sees bob's new name`);
    const members = await capi(p, 'GET', `/_matrix/client/v3/rooms/${enc(roomId)}/joined_members`);
    assert.equal(members.body.joined[bob.userId]?.display_name, 'Bob of hs2');
  }
});

test('hs3 resolves hs1\'s alias to the room and servers to join through', async () => {
  const res = await carol.client.getRoomIdForAlias(alias);
  assert.equal(res.room_id, roomId);
  assert.ok(res.servers.includes(fed.servers[0].serverName), JSON.stringify(res.servers));
  // An alias hs1 does not have is 404 through hs3.
  const missing = await capi(carol, 'GET', `/_matrix/client/v3/directory/room/${enc(`#nope${Date.now()}:${fed.servers[0].serverName}`)}`);
  assert.equal(missing.status, 404, JSON.stringify(missing.body));
  assert.equal(missing.body.errcode, 'M_NOT_FOUND');
});
