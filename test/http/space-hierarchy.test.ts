// GET /rooms/{roomId}/hierarchy on one server: which rooms a user may see (joined, invited,
// public, knockable, world-readable, restricted to a room the user is in) and which stay hidden,
// and a child on another server skipped when federation is off.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer, api, registerUser, type TestServer } from '../harness.js';
import { assertMatchesSpec } from '../spec-schemas.js';

let srv: TestServer;
before(async () => {
  srv = await startTestServer({ federation: { enabled: false } });
});
after(async () => {
  await srv?.stop();
});

const enc = encodeURIComponent;
type Login = Awaited<ReturnType<typeof registerUser>>;

async function createRoom(u: Login, body: Record<string, unknown>): Promise<string> {
  const r = await api(srv.url, 'POST', '/_matrix/client/v3/createRoom', { token: u.access_token, body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.room_id as string;
}

async function addChild(u: Login, space: string, child: string, order: string): Promise<void> {
  const r = await api(srv.url, 'PUT', `/_matrix/client/v3/rooms/${enc(space)}/state/m.space.child/${enc(child)}`, { token: u.access_token, body: { via: [srv.serverName], order } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

const roomsSeen = async (u: Login, space: string): Promise<string[]> => {
  const r = await api(srv.url, 'GET', `/_matrix/client/v1/rooms/${enc(space)}/hierarchy`, { token: u.access_token });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assertMatchesSpec('client-server/space_hierarchy.yaml', '/rooms/{roomId}/hierarchy', 'get', 200, r.body);
  return r.body.rooms.map((x: { room_id: string }) => x.room_id);
};

test('the hierarchy shows each user the rooms they may see', async () => {
  const owner = await registerUser(srv.url);
  const member = await registerUser(srv.url);
  const outsider = await registerUser(srv.url);
  const invitee = await registerUser(srv.url);
  const space = await createRoom(owner, { preset: 'public_chat', name: 'Space', creation_content: { type: 'm.space' } });
  const join = await api(srv.url, 'POST', `/_matrix/client/v3/join/${enc(space)}`, { token: member.access_token, body: {} });
  assert.equal(join.status, 200);

  const restricted = await createRoom(owner, {
    preset: 'private_chat', name: 'Space members only',
    initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'restricted', allow: [{ type: 'm.room_membership', room_id: space }] } }],
  });
  const knock = await createRoom(owner, { preset: 'private_chat', initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'knock' } }] });
  const readable = await createRoom(owner, { preset: 'private_chat', initial_state: [{ type: 'm.room.history_visibility', state_key: '', content: { history_visibility: 'world_readable' } }] });
  const invited = await createRoom(owner, { preset: 'private_chat', invite: [invitee.user_id] });
  const secret = await createRoom(owner, { preset: 'private_chat', name: 'Secret' });
  await addChild(owner, space, restricted, 'a');
  await addChild(owner, space, knock, 'b');
  await addChild(owner, space, readable, 'c');
  await addChild(owner, space, invited, 'd');
  await addChild(owner, space, secret, 'e');
  // A room on another server: without federation nobody can describe it.
  await addChild(owner, space, '!elsewhere:other.example', 'f');

  assert.deepEqual(await roomsSeen(owner, space), [space, restricted, knock, readable, invited, secret]);
  assert.deepEqual(await roomsSeen(member, space), [space, restricted, knock, readable]);
  assert.deepEqual(await roomsSeen(outsider, space), [space, knock, readable]);
  assert.deepEqual(await roomsSeen(invitee, space), [space, knock, readable, invited]);

  // The restricted room's entry names the rooms that allow joining.
  const r = await api(srv.url, 'GET', `/_matrix/client/v1/rooms/${enc(space)}/hierarchy?limit=2`, { token: member.access_token });
  assert.equal(r.body.rooms[1].room_id, restricted);
  assert.equal(r.body.rooms[1].join_rule, 'restricted');
  assert.deepEqual(r.body.rooms[1].allowed_room_ids, [space]);
  assert.ok(r.body.next_batch);

  // A private space is hidden from non-members entirely.
  const hidden = await createRoom(owner, { preset: 'private_chat', creation_content: { type: 'm.space' } });
  const denied = await api(srv.url, 'GET', `/_matrix/client/v1/rooms/${enc(hidden)}/hierarchy`, { token: outsider.access_token });
  assert.equal(denied.status, 403);
  assert.equal(denied.body.errcode, 'M_FORBIDDEN');
  const noAuth = await api(srv.url, 'GET', `/_matrix/client/v1/rooms/${enc(space)}/hierarchy`);
  assert.equal(noAuth.status, 401);
});
