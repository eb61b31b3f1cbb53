// Federation queries between two servers over TLS, and their client-side counterparts: another
// server's room directory (client ?server= and the federation endpoints), space hierarchies that
// span both servers (client walk with pagination, max_depth, suggested_only and hidden rooms; the
// federation endpoint), OpenID tokens checked at /openid/userinfo, timestamp_to_event over
// federation and remote profile lookups. Responses are checked against the spec's schemas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, fetch as undiciFetch } from 'undici';
import { createClient, type MatrixClient } from 'matrix-js-sdk';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer, eventually, clientApi, registerUser } from '../federation-harness.js';
import { FederationError } from '../../src/federation/client.js';
import { assertMatchesSpec } from '../spec-schemas.js';

// The SDK logs at debug and info level; the test wants warnings only.
console.debug = () => undefined;
console.info = () => undefined;

let fed: Federation;
const agents: Agent[] = [];
before(async () => {
  fed = await startFederation(2);
});
after(async () => {
  await Promise.all(agents.map((a) => a.close()));
  await fed?.stop();
  await closeFedAgents();
});

const enc = encodeURIComponent;
const capi = (s: FedServer, method: string, p: string, opts: { token?: string; body?: unknown; prefix?: string } = {}) => clientApi(fed.ca, s, method, p, opts);
const user = (s: FedServer, name: string) => registerUser(fed.ca, s, name);
const unique = () => `${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Login { user_id: string; access_token: string; device_id: string }



/** A matrix-js-sdk client (not syncing) of `s`'s TLS listener, trusting the run's CA. */
function sdk(s: FedServer, u: Login): MatrixClient {
  const agent = new Agent({ connect: { ca: readFileSync(fed.ca.caFile, 'utf8'), servername: s.serverName } });
  agents.push(agent);
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(input as never, { ...(init as object), dispatcher: agent } as never)) as unknown as typeof globalThis.fetch;
  return createClient({ baseUrl: s.fedUrl, fetchFn, accessToken: u.access_token, userId: u.user_id, deviceId: u.device_id });
}

async function createRoom(s: FedServer, u: Login, body: Record<string, unknown>): Promise<string> {
  const r = await capi(s, 'POST', '/createRoom', { token: u.access_token, body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.room_id as string;
}

async function sendState(s: FedServer, u: Login, roomId: string, type: string, key: string, content: unknown): Promise<void> {
  const r = await capi(s, 'PUT', `/rooms/${enc(roomId)}/state/${type}/${enc(key)}`, { token: u.access_token, body: content });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function join(s: FedServer, u: Login, roomId: string, via: string): Promise<void> {
  const r = await capi(s, 'POST', `/join/${enc(roomId)}?server_name=${enc(via)}`, { token: u.access_token, body: {} });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

/** A signed federation request from `from` to `to`; an error status comes back as { status, body }. */
async function fedAs(from: FedServer, to: FedServer, method: string, path: string, opts: { query?: Record<string, string | number | boolean>; body?: unknown } = {}): Promise<{ status: number; body: any }> {
  try {
    return { status: 200, body: await from.hs.services.federationClient.request(to.serverName, method, path, opts) };
  } catch (err) {
    if (err instanceof FederationError) return { status: err.status, body: err.body };
    throw err;
  }
}


test('published room directory of another server: client ?server= (GET, POST with a filter, SDK) and the federation endpoints', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const tag = `dirq${unique()}`;
  const published = await createRoom(hs1, alice, { preset: 'public_chat', visibility: 'public', name: `Directory ${tag}`, topic: 'listed on hs1' });
  const other = await createRoom(hs1, alice, { preset: 'public_chat', visibility: 'public', name: 'Another listed room' });
  await createRoom(hs1, alice, { preset: 'public_chat', name: `Unlisted ${tag}` });

  // GET from hs2's client API: hs1's directory, asked over federation.
  const listed = await capi(hs2, 'GET', `/publicRooms?server=${hs1.serverName}`, { token: bob.access_token });
  assert.equal(listed.status, 200, JSON.stringify(listed.body));
  assertMatchesSpec('client-server/list_public_rooms.yaml', '/publicRooms', 'get', 200, listed.body);
  const ids = listed.body.chunk.map((c: any) => c.room_id);
  assert.ok(ids.includes(published) && ids.includes(other), `both published rooms listed (got ${ids})`);
  const entry = listed.body.chunk.find((c: any) => c.room_id === published);
  assert.equal(entry.name, `Directory ${tag}`);
  assert.equal(entry.topic, 'listed on hs1');
  assert.equal(entry.num_joined_members, 1);
  assert.equal(entry.join_rule, 'public');
  assert.ok(!listed.body.chunk.some((c: any) => c.name === `Unlisted ${tag}`), 'an unpublished room is not listed');

  // GET pages through hs1's tokens.
  const page1 = await capi(hs2, 'GET', `/publicRooms?server=${hs1.serverName}&limit=1`, { token: bob.access_token });
  assert.equal(page1.status, 200);
  assert.equal(page1.body.chunk.length, 1);
  assert.ok(page1.body.next_batch, 'a next_batch from hs1');
  const page2 = await capi(hs2, 'GET', `/publicRooms?server=${hs1.serverName}&limit=1&since=${enc(page1.body.next_batch)}`, { token: bob.access_token });
  assert.equal(page2.status, 200);
  assert.notEqual(page2.body.chunk[0].room_id, page1.body.chunk[0].room_id);

  // POST with generic_search_term: only the matching room.
  const filtered = await capi(hs2, 'POST', `/publicRooms?server=${hs1.serverName}`, { token: bob.access_token, body: { limit: 10, filter: { generic_search_term: tag } } });
  assert.equal(filtered.status, 200, JSON.stringify(filtered.body));
  assertMatchesSpec('client-server/list_public_rooms.yaml', '/publicRooms', 'post', 200, filtered.body);
  assert.deepEqual(filtered.body.chunk.map((c: any) => c.room_id), [published]);
  const none = await capi(hs2, 'POST', `/publicRooms?server=${hs1.serverName}`, { token: bob.access_token, body: { filter: { generic_search_term: `nothing-${tag}` } } });
  assert.equal(none.status, 200);
  assert.deepEqual(none.body.chunk, []);

  // The same through matrix-js-sdk (GET without a filter, POST with one).
  const client = sdk(hs2, bob);
  const all = await client.publicRooms({ server: hs1.serverName });
  assert.ok(all.chunk.some((c) => c.room_id === published));
  const viaSdk = await client.publicRooms({ server: hs1.serverName, filter: { generic_search_term: tag } });
  assert.deepEqual(viaSdk.chunk.map((c) => c.room_id), [published]);

  // Another server's directory needs an access token; a bad server name is refused; an unreachable server is 502.
  const anon = await capi(hs2, 'GET', `/publicRooms?server=${hs1.serverName}`);
  assert.equal(anon.status, 401);
  assert.equal(anon.body.errcode, 'M_MISSING_TOKEN');
  const bad = await capi(hs2, 'GET', `/publicRooms?server=${enc('bad name!')}`, { token: bob.access_token });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.errcode, 'M_INVALID_PARAM');
  const unreachable = await capi(hs2, 'GET', '/publicRooms?server=nowhere.invalid', { token: bob.access_token });
  assert.equal(unreachable.status, 502, JSON.stringify(unreachable.body));
  assert.equal(unreachable.body.errcode, 'M_UNKNOWN');
  // The local directory still works without a token.
  const local = await capi(hs1, 'GET', `/publicRooms?server=${hs1.serverName}`);
  assert.equal(local.status, 200);
  assert.ok(local.body.chunk.some((c: any) => c.room_id === published));

  // The federation endpoints themselves, signed by hs2.
  const fedGet = await fedAs(hs2, hs1, 'GET', '/_matrix/federation/v1/publicRooms', { query: { limit: 0, include_all_networks: false } });
  assert.equal(fedGet.status, 200, JSON.stringify(fedGet.body));
  assertMatchesSpec('server-server/public_rooms.yaml', '/publicRooms', 'get', 200, fedGet.body);
  assert.ok(fedGet.body.chunk.some((c: any) => c.room_id === published) && fedGet.body.chunk.some((c: any) => c.room_id === other), 'limit 0 is no limit');
  const fedPost = await fedAs(hs2, hs1, 'POST', '/_matrix/federation/v1/publicRooms', { body: { filter: { generic_search_term: tag } } });
  assert.equal(fedPost.status, 200, JSON.stringify(fedPost.body));
  assertMatchesSpec('server-server/public_rooms.yaml', '/publicRooms', 'post', 200, fedPost.body);
  assert.deepEqual(fedPost.body.chunk.map((c: any) => c.room_id), [published]);
  const fedNetwork = await fedAs(hs2, hs1, 'POST', '/_matrix/federation/v1/publicRooms', { body: { third_party_instance_id: 'irc', include_all_networks: true } });
  assert.equal(fedNetwork.status, 400);
  assert.equal(fedNetwork.body.errcode, 'M_INVALID_PARAM');
  const fedBadBody = await fedAs(hs2, hs1, 'POST', '/_matrix/federation/v1/publicRooms', { body: { limit: 'ten' } });
  assert.equal(fedBadBody.status, 400);
  assert.equal(fedBadBody.body.errcode, 'M_BAD_JSON');
  const unsigned = await fedApi(fed.ca, hs1, 'GET', '/_matrix/federation/v1/publicRooms');
  assert.equal(unsigned.status, 401);
});

test('space hierarchy across servers: client walk (pagination, max_depth, suggested_only, hidden rooms), SDK, federation endpoint', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const carol = await user(hs1, 'carol');
  const bob = await user(hs2, 'bob');
  const space = await createRoom(hs1, alice, { preset: 'public_chat', name: 'Top space', creation_content: { type: 'm.space' } });
  const localRoom = await createRoom(hs1, alice, { preset: 'public_chat', name: 'Local room' });
  const privateRoom = await createRoom(hs1, carol, { preset: 'private_chat', name: 'Carol only' });
  const remoteRoom = await createRoom(hs2, bob, { preset: 'public_chat', name: 'Room on hs2', topic: 'described by hs2' });
  const subspace = await createRoom(hs1, alice, { preset: 'public_chat', name: 'Subspace', creation_content: { type: 'm.space' } });
  const deepRoom = await createRoom(hs1, alice, { preset: 'public_chat', name: 'Deep room' });
  const h1 = hs1.serverName;
  // Children sort by `order`: local, remote, private, subspace. A child without `via` does not count.
  await sendState(hs1, alice, space, 'm.space.child', localRoom, { via: [h1], order: 'a', suggested: true });
  await sendState(hs1, alice, space, 'm.space.child', remoteRoom, { via: [hs2.serverName], order: 'b' });
  await sendState(hs1, alice, space, 'm.space.child', privateRoom, { via: [h1], order: 'c' });
  await sendState(hs1, alice, space, 'm.space.child', subspace, { via: [h1], order: 'd' });
  await sendState(hs1, alice, space, 'm.space.child', '!removed:hs1.test', {});
  await sendState(hs1, alice, subspace, 'm.space.child', deepRoom, { via: [h1] });

  const hierarchy = async (s: FedServer, u: Login, roomId: string, query = '') =>
    capi(s, 'GET', `/rooms/${enc(roomId)}/hierarchy${query}`, { token: u.access_token, prefix: '/_matrix/client/v1' });

  // Alice on hs1: depth first, the hs2 room described by hs2, carol's private room left out.
  const full = await hierarchy(hs1, alice, space);
  assert.equal(full.status, 200, JSON.stringify(full.body));
  assertMatchesSpec('client-server/space_hierarchy.yaml', '/rooms/{roomId}/hierarchy', 'get', 200, full.body);
  assert.deepEqual(full.body.rooms.map((r: any) => r.room_id), [space, localRoom, remoteRoom, subspace, deepRoom]);
  assert.equal(full.body.next_batch, undefined);
  const top = full.body.rooms[0];
  assert.equal(top.room_type, 'm.space');
  assert.equal(top.name, 'Top space');
  assert.deepEqual(top.children_state.map((c: any) => c.state_key), [localRoom, remoteRoom, privateRoom, subspace]);
  for (const c of top.children_state) {
    assert.equal(c.type, 'm.space.child');
    assert.equal(c.sender, alice.user_id);
    assert.equal(typeof c.origin_server_ts, 'number');
  }
  const remote = full.body.rooms[2];
  assert.equal(remote.name, 'Room on hs2');
  assert.equal(remote.topic, 'described by hs2');
  assert.equal(remote.num_joined_members, 1);
  assert.deepEqual(remote.children_state, []);
  assert.deepEqual(full.body.rooms[1].children_state, [], 'a room that is not a space has no children');
  assert.deepEqual(full.body.rooms[3].children_state.map((c: any) => c.state_key), [deepRoom]);

  // Carol sees her private room too (she is joined to it).
  const carols = await hierarchy(hs1, carol, space);
  assert.equal(carols.status, 200);
  assert.deepEqual(carols.body.rooms.map((r: any) => r.room_id), [space, localRoom, remoteRoom, privateRoom, subspace, deepRoom]);

  // limit=1: one room per page, the same order overall.
  const paged: string[] = [];
  let from: string | undefined;
  for (let i = 0; i < 10; i++) {
    const page = await hierarchy(hs1, alice, space, `?limit=1${from ? `&from=${enc(from)}` : ''}`);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    assertMatchesSpec('client-server/space_hierarchy.yaml', '/rooms/{roomId}/hierarchy', 'get', 200, page.body);
    assert.equal(page.body.rooms.length, 1);
    paged.push(page.body.rooms[0].room_id);
    from = page.body.next_batch;
    if (!from) break;
  }
  assert.deepEqual(paged, [space, localRoom, remoteRoom, subspace, deepRoom]);

  // max_depth and suggested_only.
  const depth1 = await hierarchy(hs1, alice, space, '?max_depth=1');
  assert.deepEqual(depth1.body.rooms.map((r: any) => r.room_id), [space, localRoom, remoteRoom, subspace]);
  const depth0 = await hierarchy(hs1, alice, space, '?max_depth=0');
  assert.deepEqual(depth0.body.rooms.map((r: any) => r.room_id), [space]);
  const suggested = await hierarchy(hs1, alice, space, '?suggested_only=true');
  assert.deepEqual(suggested.body.rooms.map((r: any) => r.room_id), [space, localRoom]);
  assert.deepEqual(suggested.body.rooms[0].children_state.map((c: any) => c.state_key), [localRoom]);

  // A token keeps its query: changing max_depth is 400; a garbled token is 400.
  const first = await hierarchy(hs1, alice, space, '?limit=2&max_depth=1');
  assert.ok(first.body.next_batch);
  const changed = await hierarchy(hs1, alice, space, `?limit=2&max_depth=2&from=${enc(first.body.next_batch)}`);
  assert.equal(changed.status, 400);
  assert.equal(changed.body.errcode, 'M_INVALID_PARAM');
  const garbled = await hierarchy(hs1, alice, space, '?from=nonsense');
  assert.equal(garbled.status, 400);
  assert.equal(garbled.body.errcode, 'M_INVALID_PARAM');
  const badLimit = await hierarchy(hs1, alice, space, '?limit=0');
  assert.equal(badLimit.status, 400);

  // Rooms the user may not see, and unknown rooms, are 403 (spec: "The room does not exist").
  const hidden = await hierarchy(hs1, alice, privateRoom);
  assert.equal(hidden.status, 403);
  assert.equal(hidden.body.errcode, 'M_FORBIDDEN');
  assertMatchesSpec('client-server/space_hierarchy.yaml', '/rooms/{roomId}/hierarchy', 'get', 403, hidden.body);
  const unknown = await hierarchy(hs1, alice, '!nosuchroom:hs1.test');
  assert.equal(unknown.status, 403);

  // matrix-js-sdk's getRoomHierarchy, paging with its tokens.
  const client = sdk(hs1, alice);
  const seen: string[] = [];
  let token: string | undefined;
  do {
    const res = await client.getRoomHierarchy(space, 2, undefined, false, token);
    seen.push(...res.rooms.map((r) => r.room_id));
    token = res.next_batch;
  } while (token);
  assert.deepEqual(seen, [space, localRoom, remoteRoom, subspace, deepRoom]);
  const sdkSuggested = await client.getRoomHierarchy(space, 10, 3, true);
  assert.deepEqual(sdkSuggested.rooms.map((r) => r.room_id), [space, localRoom]);

  // The federation endpoint on hs1, asked by hs2: the space, its accessible local children, the
  // private room as inaccessible; the hs2 room (unknown to hs1) left out.
  const fh = await fedAs(hs2, hs1, 'GET', `/_matrix/federation/v1/hierarchy/${enc(space)}`);
  assert.equal(fh.status, 200, JSON.stringify(fh.body));
  assertMatchesSpec('server-server/space_hierarchy.yaml', '/hierarchy/{roomId}', 'get', 200, fh.body);
  assert.equal(fh.body.room.room_id, space);
  assert.equal(fh.body.room.children_state.length, 4);
  assert.deepEqual(fh.body.children.map((c: any) => c.room_id), [localRoom, subspace]);
  assert.deepEqual(fh.body.inaccessible_children, [privateRoom]);
  const fhSuggested = await fedAs(hs2, hs1, 'GET', `/_matrix/federation/v1/hierarchy/${enc(space)}`, { query: { suggested_only: true } });
  assert.deepEqual(fhSuggested.body.room.children_state.map((c: any) => c.state_key), [localRoom]);
  assert.deepEqual(fhSuggested.body.children.map((c: any) => c.room_id), [localRoom]);
  const fhPrivate = await fedAs(hs2, hs1, 'GET', `/_matrix/federation/v1/hierarchy/${enc(privateRoom)}`);
  assert.equal(fhPrivate.status, 404);
  assert.equal(fhPrivate.body.errcode, 'M_NOT_FOUND');
  assertMatchesSpec('server-server/space_hierarchy.yaml', '/hierarchy/{roomId}', 'get', 404, fhPrivate.body);
  const fhUnknown = await fedAs(hs2, hs1, 'GET', `/_matrix/federation/v1/hierarchy/${enc('!unknown:hs1.test')}`);
  assert.equal(fhUnknown.status, 404);
  assert.equal(fhUnknown.body.errcode, 'M_NOT_FOUND');

  // From hs2: before bob joins, hs2 does not know the space (403); after, hs2 walks it, asking
  // hs1 about hs1's rooms, and describes its own room itself.
  const before = await hierarchy(hs2, bob, space);
  assert.equal(before.status, 403);
  await join(hs2, bob, space, h1);
  const fromHs2 = await eventually('hs2 walks the space', async () => {
    const r = await hierarchy(hs2, bob, space);
    return r.status === 200 && r.body.rooms.length === 5 ? r : undefined;
  });
  assertMatchesSpec('client-server/space_hierarchy.yaml', '/rooms/{roomId}/hierarchy', 'get', 200, fromHs2.body);
  assert.deepEqual(fromHs2.body.rooms.map((r: any) => r.room_id), [space, localRoom, remoteRoom, subspace, deepRoom]);
  assert.equal(fromHs2.body.rooms[1].name, 'Local room');
  assert.equal(fromHs2.body.rooms[4].name, 'Deep room');
});

test('OpenID: request_token on hs1, checked at hs1\'s /openid/userinfo; bad, foreign and expired tokens refused', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const other = await user(hs1, 'other');
  const res = await capi(hs1, 'POST', `/user/${enc(alice.user_id)}/openid/request_token`, { token: alice.access_token, body: {} });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assertMatchesSpec('client-server/openid.yaml', '/user/{userId}/openid/request_token', 'post', 200, res.body);
  assert.equal(res.body.token_type, 'Bearer');
  assert.equal(res.body.matrix_server_name, hs1.serverName);
  assert.equal(res.body.expires_in, 3600);
  const token = res.body.access_token as string;

  // A third party (here over HTTPS without any X-Matrix signature) exchanges it for the user ID.
  const info = await fedApi(fed.ca, hs1, 'GET', `/_matrix/federation/v1/openid/userinfo?access_token=${enc(token)}`);
  assert.equal(info.status, 200, JSON.stringify(info.body));
  assertMatchesSpec('server-server/openid.yaml', '/openid/userinfo', 'get', 200, info.body);
  assert.deepEqual(info.body, { sub: alice.user_id });
  // Only the hash is stored.
  const stored = await hs1.hs.services.db('openid_tokens').where({ user_id: alice.user_id });
  assert.equal(stored.length, 1);
  assert.notEqual(stored[0].token_hash, token);
  assert.ok(!JSON.stringify(stored).includes(token));

  // hs2 does not know hs1's tokens.
  const elsewhere = await fedApi(fed.ca, hs2, 'GET', `/_matrix/federation/v1/openid/userinfo?access_token=${enc(token)}`);
  assert.equal(elsewhere.status, 401);
  assert.equal(elsewhere.body.errcode, 'M_UNKNOWN_TOKEN');
  const bad = await fedApi(fed.ca, hs1, 'GET', '/_matrix/federation/v1/openid/userinfo?access_token=not-a-token');
  assert.equal(bad.status, 401);
  assert.equal(bad.body.errcode, 'M_UNKNOWN_TOKEN');
  assertMatchesSpec('server-server/openid.yaml', '/openid/userinfo', 'get', 401, bad.body);
  const missing = await fedApi(fed.ca, hs1, 'GET', '/_matrix/federation/v1/openid/userinfo');
  assert.equal(missing.status, 401);

  // An OpenID token is not an access token, and a user asks only for themselves.
  const whoami = await capi(hs1, 'GET', '/account/whoami', { token });
  assert.equal(whoami.status, 401);
  const foreign = await capi(hs1, 'POST', `/user/${enc(other.user_id)}/openid/request_token`, { token: alice.access_token, body: {} });
  assert.equal(foreign.status, 403);
  assert.equal(foreign.body.errcode, 'M_FORBIDDEN');
  const anon = await capi(hs1, 'POST', `/user/${enc(alice.user_id)}/openid/request_token`, { body: {} });
  assert.equal(anon.status, 401);

  // Expired: the token's hour is over.
  await hs1.hs.services.db('openid_tokens').where({ user_id: alice.user_id }).update({ expires_ts: Date.now() - 1 });
  const expired = await fedApi(fed.ca, hs1, 'GET', `/_matrix/federation/v1/openid/userinfo?access_token=${enc(token)}`);
  assert.equal(expired.status, 401);
  assert.equal(expired.body.errcode, 'M_UNKNOWN_TOKEN');
  // A new token still works (and the expired one was swept when it was made).
  const again = await capi(hs1, 'POST', `/user/${enc(alice.user_id)}/openid/request_token`, { token: alice.access_token, body: {} });
  const info2 = await fedApi(fed.ca, hs1, 'GET', `/_matrix/federation/v1/openid/userinfo?access_token=${enc(again.body.access_token)}`);
  assert.deepEqual(info2.body, { sub: alice.user_id });
  assert.equal((await hs1.hs.services.db('openid_tokens').where({ user_id: alice.user_id })).length, 1);
});

test('timestamp_to_event over federation: servers in the room get the closest event; others are refused', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const roomId = await createRoom(hs1, alice, { preset: 'public_chat', name: 'Timestamps' });
  const send = async (txn: string, body: string) => {
    const r = await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/${txn}`, { token: alice.access_token, body: { msgtype: 'm.text', body } });
    assert.equal(r.status, 200);
    const ev = await capi(hs1, 'GET', `/rooms/${enc(roomId)}/event/${enc(r.body.event_id)}`, { token: alice.access_token });
    return { id: r.body.event_id as string, ts: ev.body.origin_server_ts as number };
  };
  await sleep(5);
  const m1 = await send('t1', 'first');
  await sleep(10);
  const m2 = await send('t2', 'second');
  await sleep(10);
  const path = `/_matrix/federation/v1/timestamp_to_event/${enc(roomId)}`;

  // hs2 has nobody in the room (and its history is not world-readable).
  const refused = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m1.ts, dir: 'f' } });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.errcode, 'M_FORBIDDEN');

  await join(hs2, bob, roomId, hs1.serverName);
  const forward = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m2.ts, dir: 'f' } });
  assert.equal(forward.status, 200, JSON.stringify(forward.body));
  assertMatchesSpec('server-server/events.yaml', '/timestamp_to_event/{roomId}', 'get', 200, forward.body);
  assert.deepEqual(forward.body, { event_id: m2.id, origin_server_ts: m2.ts });
  const backward = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m2.ts - 1, dir: 'b' } });
  assert.deepEqual(backward.body, { event_id: m1.id, origin_server_ts: m1.ts });
  const between = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m1.ts + 1, dir: 'f' } });
  assert.equal(between.body.event_id, m2.id);

  const future = await fedAs(hs2, hs1, 'GET', path, { query: { ts: Date.now() + 3_600_000, dir: 'f' } });
  assert.equal(future.status, 404);
  assert.equal(future.body.errcode, 'M_NOT_FOUND');
  assertMatchesSpec('server-server/events.yaml', '/timestamp_to_event/{roomId}', 'get', 404, future.body);
  const unknown = await fedAs(hs2, hs1, 'GET', `/_matrix/federation/v1/timestamp_to_event/${enc('!nope:hs1.test')}`, { query: { ts: 1, dir: 'f' } });
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.errcode, 'M_NOT_FOUND');
  const noDir = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m1.ts } });
  assert.equal(noDir.status, 400);
  const badDir = await fedAs(hs2, hs1, 'GET', path, { query: { ts: m1.ts, dir: 'x' } });
  assert.equal(badDir.status, 400);
  assert.equal(badDir.body.errcode, 'M_INVALID_PARAM');
  const unsigned = await fedApi(fed.ca, hs1, 'GET', `${path}?ts=1&dir=f`);
  assert.equal(unsigned.status, 401);
});

test('profile of another server\'s user from the client API, asked over federation', async () => {
  const [hs1, hs2] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const set = await capi(hs2, 'PUT', `/profile/${enc(bob.user_id)}/displayname`, { token: bob.access_token, body: { displayname: 'Bob of hs2' } });
  assert.equal(set.status, 200);
  await capi(hs2, 'PUT', `/profile/${enc(bob.user_id)}/avatar_url`, { token: bob.access_token, body: { avatar_url: 'mxc://hs2.test/bobface' } });

  // alice and bob share no room: hs1 asks hs2.
  const profile = await capi(hs1, 'GET', `/profile/${enc(bob.user_id)}`, { token: alice.access_token });
  assert.equal(profile.status, 200, JSON.stringify(profile.body));
  assertMatchesSpec('client-server/profile.yaml', '/profile/{userId}', 'get', 200, profile.body);
  assert.equal(profile.body.displayname, 'Bob of hs2');
  assert.equal(profile.body.avatar_url, 'mxc://hs2.test/bobface');
  const name = await capi(hs1, 'GET', `/profile/${enc(bob.user_id)}/displayname`, { token: alice.access_token });
  assert.deepEqual(name.body, { displayname: 'Bob of hs2' });
  const avatar = await capi(hs1, 'GET', `/profile/${enc(bob.user_id)}/avatar_url`, { token: alice.access_token });
  assert.deepEqual(avatar.body, { avatar_url: 'mxc://hs2.test/bobface' });

  // Through matrix-js-sdk.
  const info = await sdk(hs1, alice).getProfileInfo(bob.user_id);
  assert.equal(info.displayname, 'Bob of hs2');

  // An unknown user of hs2 is 404.
  const nobody = await capi(hs1, 'GET', `/profile/${enc('@nobody-here:hs2.test')}`, { token: alice.access_token });
  assert.equal(nobody.status, 404);
  assert.equal(nobody.body.errcode, 'M_NOT_FOUND');
});
