// matrix-js-sdk clients drive rooms: presets, invites and joins, messages, redactions, edits,
// reactions, threads, relations, upgrades, aliases, the published directory, timestamp_to_event,
// room summaries, profile propagation and deactivation. Responses are checked against the spec's
// own OpenAPI schemas.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient, Direction, Method, type MatrixClient } from 'matrix-js-sdk';
import { startTestServer, api, registerUser, uniqueName, type TestServer } from '../harness.js';
import { assertMatchesSpec } from '../spec-schemas.js';

let srv: TestServer;
before(async () => { srv = await startTestServer(); });
after(async () => srv?.stop());

interface User { client: MatrixClient; userId: string; token: string; password: string }

async function user(): Promise<User> {
  const r = await registerUser(srv.url);
  return {
    client: createClient({ baseUrl: srv.url, accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id }),
    userId: r.user_id,
    token: r.access_token,
    password: r.password,
  };
}

const enc = encodeURIComponent;
const v1 = { prefix: '/_matrix/client/v1' };
const rejectsWith = (status: number, errcode: string) => (e: any) => {
  assert.equal(e.httpStatus, status, `${e.httpStatus} ${e.errcode} ${e.message}`);
  assert.equal(e.errcode, errcode);
  return true;
};

/** A raw GET through the client's own HTTP layer, for responses the SDK wrappers reshape. */
const get = (c: MatrixClient, path: string, query?: Record<string, string>, opts?: { prefix: string }) =>
  c.http.authedRequest<any>(Method.Get, path, query, undefined, opts as any);

async function stateContent(c: MatrixClient, roomId: string, type: string, key = ''): Promise<any> {
  return c.getStateEvent(roomId, type, key);
}

for (const preset of ['private_chat', 'trusted_private_chat', 'public_chat'] as const) {
  test(`preset ${preset}: state, invites, joins, members`, async () => {
    const alice = await user();
    const bob = await user();
    const carol = await user();
    const created = await alice.client.createRoom({ preset: preset as any, name: `room ${preset}`, topic: 'about things', invite: preset === 'public_chat' ? [] : [bob.userId] });
    assertMatchesSpec('client-server/create_room.yaml', '/createRoom', 'post', 200, created);
    const roomId = created.room_id;

    const expected = {
      private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join' },
      trusted_private_chat: { join_rule: 'invite', history_visibility: 'shared', guest_access: 'can_join' },
      public_chat: { join_rule: 'public', history_visibility: 'shared', guest_access: 'forbidden' },
    }[preset];
    assert.equal((await stateContent(alice.client, roomId, 'm.room.join_rules')).join_rule, expected.join_rule);
    assert.equal((await stateContent(alice.client, roomId, 'm.room.history_visibility')).history_visibility, expected.history_visibility);
    assert.equal((await stateContent(alice.client, roomId, 'm.room.guest_access')).guest_access, expected.guest_access);
    assert.equal((await stateContent(alice.client, roomId, 'm.room.name')).name, `room ${preset}`);
    const create = await stateContent(alice.client, roomId, 'm.room.create');
    const pl = await stateContent(alice.client, roomId, 'm.room.power_levels');
    if (preset === 'trusted_private_chat') {
      // Default room version 12: trusted invitees become additional creators.
      assert.deepEqual(create.additional_creators, [bob.userId]);
      assert.equal(pl.users?.[bob.userId], undefined);
    } else {
      assert.equal(create.additional_creators, undefined);
    }

    const state = await get(alice.client, `/rooms/${enc(roomId)}/state`);
    assertMatchesSpec('client-server/rooms.yaml', '/rooms/{roomId}/state', 'get', 200, state);

    if (preset === 'public_chat') {
      await bob.client.joinRoom(roomId);
      await carol.client.joinRoom(roomId);
    } else {
      // bob was invited; carol was not and cannot join until invited.
      await bob.client.joinRoom(roomId);
      await assert.rejects(carol.client.joinRoom(roomId), rejectsWith(403, 'M_FORBIDDEN'));
      await assert.rejects(carol.client.sendMessage(roomId, { msgtype: 'm.text', body: 'let me in' } as any), rejectsWith(403, 'M_FORBIDDEN'));
      await alice.client.invite(roomId, carol.userId);
      await carol.client.joinRoom(roomId);
    }

    const members = await get(carol.client, `/rooms/${enc(roomId)}/members`);
    assertMatchesSpec('client-server/rooms.yaml', '/rooms/{roomId}/members', 'get', 200, members);
    assert.deepEqual(members.chunk.filter((e: any) => e.content.membership === 'join').map((e: any) => e.state_key).sort(), [alice.userId, bob.userId, carol.userId].sort());
    const joined = await carol.client.getJoinedRoomMembers(roomId);
    assertMatchesSpec('client-server/rooms.yaml', '/rooms/{roomId}/joined_members', 'get', 200, joined);
    assert.equal(Object.keys(joined.joined).length, 3);
    assert.ok((await carol.client.getJoinedRooms()).joined_rooms.includes(roomId));
  });
}

test('messages, context, event, redaction, edits, reactions', async () => {
  const alice = await user();
  const bob = await user();
  const { room_id: roomId } = await alice.client.createRoom({ preset: 'public_chat' as any });
  await bob.client.joinRoom(roomId);

  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push((await (i % 2 ? bob : alice).client.sendMessage(roomId, { msgtype: 'm.text', body: `message ${i}` } as any)).event_id);

  const page = await alice.client.createMessagesRequest(roomId, null, 4, Direction.Backward);
  assertMatchesSpec('client-server/message_pagination.yaml', '/rooms/{roomId}/messages', 'get', 200, page);
  assert.deepEqual(page.chunk.map((e) => e.event_id), ids.slice(2).reverse());
  const next = await alice.client.createMessagesRequest(roomId, page.end!, 2, Direction.Backward);
  assert.deepEqual(next.chunk.map((e) => e.event_id), [ids[1], ids[0]]);

  const ctx = await get(alice.client, `/rooms/${enc(roomId)}/context/${enc(ids[3])}`, { limit: '2' });
  assertMatchesSpec('client-server/event_context.yaml', '/rooms/{roomId}/context/{eventId}', 'get', 200, ctx);
  assert.equal(ctx.event.event_id, ids[3]);
  assert.deepEqual(ctx.events_before.map((e: any) => e.event_id), [ids[2]]);
  assert.deepEqual(ctx.events_after.map((e: any) => e.event_id), [ids[4]]);

  const ev = await alice.client.fetchRoomEvent(roomId, ids[1]);
  assertMatchesSpec('client-server/rooms.yaml', '/rooms/{roomId}/event/{eventId}', 'get', 200, ev);
  assert.equal(ev.sender, bob.userId);
  await assert.rejects(alice.client.fetchRoomEvent(roomId, '$doesnotexist'), rejectsWith(404, 'M_NOT_FOUND'));

  // Redaction: bob may not redact alice's message; alice (PL 100) may redact bob's.
  await assert.rejects(bob.client.redactEvent(roomId, ids[0]), rejectsWith(403, 'M_FORBIDDEN'));
  await alice.client.redactEvent(roomId, ids[1], undefined, { reason: 'off topic' });
  const redacted = await alice.client.fetchRoomEvent(roomId, ids[1]);
  assert.deepEqual(redacted.content, {});
  assert.equal((redacted.unsigned as any).redacted_because.content.reason, 'off topic');

  // An edit (m.replace) and reactions (m.annotation).
  const edit = await alice.client.sendEvent(roomId, 'm.room.message' as any, {
    msgtype: 'm.text', body: '* message 0 (edited)',
    'm.new_content': { msgtype: 'm.text', body: 'message 0 (edited)' },
    'm.relates_to': { rel_type: 'm.replace', event_id: ids[0] },
  } as any);
  // Someone else's "edit" is not a valid replacement and is not bundled.
  await bob.client.sendEvent(roomId, 'm.room.message' as any, {
    msgtype: 'm.text', body: '* hijack', 'm.new_content': { msgtype: 'm.text', body: 'hijack' }, 'm.relates_to': { rel_type: 'm.replace', event_id: ids[0] },
  } as any);
  const r1 = await bob.client.sendEvent(roomId, 'm.reaction' as any, { 'm.relates_to': { rel_type: 'm.annotation', event_id: ids[0], key: '👍' } } as any);
  await alice.client.sendEvent(roomId, 'm.reaction' as any, { 'm.relates_to': { rel_type: 'm.annotation', event_id: ids[0], key: '🎉' } } as any);

  const original = await alice.client.fetchRoomEvent(roomId, ids[0]);
  const bundled = (original.unsigned as any)['m.relations'];
  assert.equal(bundled['m.replace'].event_id, edit.event_id);
  assert.equal(bundled['m.annotation'], undefined, 'annotations are not bundled (spec v1.7)');

  const reactions = await alice.client.fetchRelations(roomId, ids[0], 'm.annotation' as any, 'm.reaction');
  assertMatchesSpec('client-server/relations.yaml', '/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}', 'get', 200, reactions);
  assert.equal(reactions.chunk.length, 2);
  assert.ok(reactions.chunk.some((e: any) => e.event_id === r1.event_id));
  const all = await alice.client.fetchRelations(roomId, ids[0], null, null);
  assertMatchesSpec('client-server/relations.yaml', '/rooms/{roomId}/relations/{eventId}', 'get', 200, all);
  assert.equal(all.chunk.length, 4);
  const paged = await get(alice.client, `/rooms/${enc(roomId)}/relations/${enc(ids[0])}/m.annotation`, { limit: '1' }, v1);
  assertMatchesSpec('client-server/relations.yaml', '/rooms/{roomId}/relations/{eventId}/{relType}', 'get', 200, paged);
  assert.equal(paged.chunk.length, 1);
  assert.ok(paged.next_batch);
  const rest = await get(alice.client, `/rooms/${enc(roomId)}/relations/${enc(ids[0])}/m.annotation`, { limit: '5', from: paged.next_batch }, v1);
  assert.equal(rest.chunk.length, 1);
  assert.notEqual(rest.chunk[0].event_id, paged.chunk[0].event_id);

  // The redacted event's relations and the event itself stay readable in /messages.
  const fwd = await alice.client.createMessagesRequest(roomId, null, 100, Direction.Forward);
  assert.ok(fwd.chunk.some((e) => e.event_id === ids[1] && Object.keys(e.content).length === 0));
});

test('threads: m.thread relations, bundled summary, /threads', async () => {
  const alice = await user();
  const bob = await user();
  const { room_id: roomId } = await alice.client.createRoom({ preset: 'public_chat' as any });
  await bob.client.joinRoom(roomId);
  const root = (await alice.client.sendMessage(roomId, { msgtype: 'm.text', body: 'thread root' } as any)).event_id;
  const other = (await alice.client.sendMessage(roomId, { msgtype: 'm.text', body: 'second root' } as any)).event_id;
  const replies: string[] = [];
  for (let i = 0; i < 3; i++) {
    const c = i === 1 ? bob : alice;
    replies.push((await c.client.sendEvent(roomId, 'm.room.message' as any, {
      msgtype: 'm.text', body: `reply ${i}`,
      'm.relates_to': { rel_type: 'm.thread', event_id: root, is_falling_back: true, 'm.in_reply_to': { event_id: replies[i - 1] ?? root } },
    } as any)).event_id);
  }
  await bob.client.sendEvent(roomId, 'm.room.message' as any, { msgtype: 'm.text', body: 'other thread', 'm.relates_to': { rel_type: 'm.thread', event_id: other } } as any);

  const rootEv = await bob.client.fetchRoomEvent(roomId, root);
  const summary = (rootEv.unsigned as any)['m.relations']['m.thread'];
  assert.equal(summary.count, 3);
  assert.equal(summary.latest_event.event_id, replies[2]);
  assert.equal(summary.current_user_participated, true);

  const rel = await bob.client.fetchRelations(roomId, root, 'm.thread' as any, null, { dir: Direction.Forward });
  assertMatchesSpec('client-server/relations.yaml', '/rooms/{roomId}/relations/{eventId}/{relType}', 'get', 200, rel);
  assert.deepEqual(rel.chunk.map((e: any) => e.event_id), replies);

  const threads = await get(alice.client, `/rooms/${enc(roomId)}/threads`, {}, v1);
  assertMatchesSpec('client-server/threads_list.yaml', '/rooms/{roomId}/threads', 'get', 200, threads);
  assert.deepEqual(threads.chunk.map((e: any) => e.event_id), [other, root], 'latest activity first');
  const mine = await get(alice.client, `/rooms/${enc(roomId)}/threads`, { include: 'participated', limit: '1' }, v1);
  assert.equal(mine.chunk.length, 1);
  assert.ok(mine.next_batch);
});

test('room upgrade: replacement room, copied state, moved aliases, tombstone, restricted old room', async () => {
  const alice = await user();
  const bob = await user();
  const carol = await user();
  const aliasName = uniqueName('upg');
  const alias = `#${aliasName}:${srv.serverName}`;
  const { room_id: oldId } = await alice.client.createRoom({
    preset: 'public_chat' as any, room_version: '10', name: 'Old name', topic: 'Old topic', room_alias_name: aliasName, visibility: 'public' as any,
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  } as any);
  await bob.client.joinRoom(oldId);
  await carol.client.joinRoom(oldId);
  await alice.client.ban(oldId, carol.userId, 'spam');
  await alice.client.sendStateEvent(oldId, 'm.room.avatar' as any, { url: 'mxc://localhost/avatar' } as any, '');

  // Permission, and unknown versions.
  await assert.rejects(bob.client.http.authedRequest(Method.Post, `/rooms/${enc(oldId)}/upgrade`, undefined, { new_version: '11' }), rejectsWith(403, 'M_FORBIDDEN'));
  await assert.rejects(alice.client.http.authedRequest(Method.Post, `/rooms/${enc(oldId)}/upgrade`, undefined, { new_version: '999' }), rejectsWith(400, 'M_UNSUPPORTED_ROOM_VERSION'));
  await assert.rejects(alice.client.http.authedRequest(Method.Post, `/rooms/${enc(oldId)}/upgrade`, undefined, {}), rejectsWith(400, 'M_MISSING_PARAM'));

  const res = await alice.client.http.authedRequest<any>(Method.Post, `/rooms/${enc(oldId)}/upgrade`, undefined, { new_version: '11' });
  assertMatchesSpec('client-server/room_upgrades.yaml', '/rooms/{roomId}/upgrade', 'post', 200, res);
  const newId = res.replacement_room;
  assert.notEqual(newId, oldId);

  const create = await stateContent(alice.client, newId, 'm.room.create');
  assert.equal(create.room_version, '11');
  assert.equal(create.predecessor.room_id, oldId);
  assert.match(create.predecessor.event_id, /^\$/);
  assert.equal((await stateContent(alice.client, newId, 'm.room.name')).name, 'Old name');
  assert.equal((await stateContent(alice.client, newId, 'm.room.topic')).topic, 'Old topic');
  assert.equal((await stateContent(alice.client, newId, 'm.room.avatar')).url, 'mxc://localhost/avatar');
  assert.equal((await stateContent(alice.client, newId, 'm.room.join_rules')).join_rule, 'public');
  assert.equal((await stateContent(alice.client, newId, 'm.room.encryption')).algorithm, 'm.megolm.v1.aes-sha2');
  assert.equal((await stateContent(alice.client, newId, 'm.room.member', carol.userId)).membership, 'ban');
  assert.equal((await stateContent(alice.client, newId, 'm.room.canonical_alias')).alias, alias);
  assert.equal((await stateContent(alice.client, newId, 'm.room.power_levels')).users[alice.userId], 100);

  const tomb = await stateContent(bob.client, oldId, 'm.room.tombstone');
  assert.equal(tomb.replacement_room, newId);
  const oldPl = await stateContent(bob.client, oldId, 'm.room.power_levels');
  assert.ok(oldPl.events_default >= 50 && oldPl.invite >= 50);
  await assert.rejects(bob.client.sendMessage(oldId, { msgtype: 'm.text', body: 'still here?' } as any), rejectsWith(403, 'M_FORBIDDEN'));
  assert.equal((await stateContent(alice.client, oldId, 'm.room.canonical_alias')).alias, undefined);

  assert.equal((await bob.client.getRoomIdForAlias(alias)).room_id, newId);
  assert.equal((await bob.client.getRoomDirectoryVisibility(newId)).visibility, 'public');
  assert.equal((await bob.client.getRoomDirectoryVisibility(oldId)).visibility, 'private');

  // bob follows the tombstone; carol stays banned.
  await bob.client.joinRoom(newId);
  await assert.rejects(carol.client.joinRoom(newId), rejectsWith(403, 'M_FORBIDDEN'));

  // To v12 with an additional creator: creators are not in power levels users.
  const res12 = await alice.client.http.authedRequest<any>(Method.Post, `/rooms/${enc(newId)}/upgrade`, undefined, { new_version: '12', additional_creators: [bob.userId] });
  const v12 = res12.replacement_room;
  assert.ok(!v12.includes(':'));
  const create12 = await stateContent(alice.client, v12, 'm.room.create');
  assert.equal(create12.room_version, '12');
  assert.deepEqual(create12.additional_creators, [bob.userId]);
  assert.equal(create12.predecessor.room_id, newId);
  const pl12 = await stateContent(alice.client, v12, 'm.room.power_levels');
  assert.equal(pl12.users[alice.userId], undefined);
  assert.equal(pl12.users[bob.userId], undefined);
  assert.equal((await bob.client.getRoomIdForAlias(alias)).room_id, v12);
  // Upgrading back from v12 to v11 gives the v12 creators an explicit level.
  const back = await alice.client.http.authedRequest<any>(Method.Post, `/rooms/${enc(v12)}/upgrade`, undefined, { new_version: '11' });
  const plBack = await stateContent(alice.client, back.replacement_room, 'm.room.power_levels');
  assert.equal(plBack.users[alice.userId], 100);
  assert.equal(plBack.users[bob.userId], 100);
});

for (const [from, to] of [['1', '6'], ['6', '12'], ['12', '1'], ['9', '10'], ['11', '11']]) {
  test(`room upgrade from v${from} to v${to}`, async () => {
    const alice = await user();
    const bob = await user();
    const { room_id: oldId } = await alice.client.createRoom({ preset: 'private_chat' as any, room_version: from, name: `v${from}`, invite: [bob.userId] });
    await bob.client.joinRoom(oldId);
    await alice.client.setPowerLevel(oldId, bob.userId, 50);
    const res = await alice.client.http.authedRequest<any>(Method.Post, `/rooms/${enc(oldId)}/upgrade`, undefined, { new_version: to });
    const newId = res.replacement_room;
    const create = await stateContent(alice.client, newId, 'm.room.create');
    assert.equal(create.room_version, to);
    assert.equal(create.predecessor.room_id, oldId);
    assert.equal((await stateContent(alice.client, newId, 'm.room.name')).name, `v${from}`);
    assert.equal((await stateContent(alice.client, newId, 'm.room.join_rules')).join_rule, 'invite');
    const pl = await stateContent(alice.client, newId, 'm.room.power_levels');
    assert.equal(pl.users[bob.userId], 50);
    assert.equal(pl.users[alice.userId], to === '12' ? undefined : 100);
    assert.equal((await stateContent(bob.client, oldId, 'm.room.tombstone')).replacement_room, newId);
    // Bob was not invited to the new room (clients follow the tombstone); with an invite he joins.
    await assert.rejects(bob.client.joinRoom(newId), rejectsWith(403, 'M_FORBIDDEN'));
    await alice.client.invite(newId, bob.userId);
    await bob.client.joinRoom(newId);
    await bob.client.sendMessage(newId, { msgtype: 'm.text', body: 'upgraded' } as any);
  });
}

test('aliases: create, resolve, list, delete, errors', async () => {
  const alice = await user();
  const bob = await user();
  const { room_id: roomId } = await alice.client.createRoom({ preset: 'public_chat' as any });
  await bob.client.joinRoom(roomId);
  const a1 = `#${uniqueName('al')}:${srv.serverName}`;
  const a2 = `#${uniqueName('al')}:${srv.serverName}`;
  await alice.client.createAlias(a1, roomId);
  await bob.client.createAlias(a2, roomId);
  const resolved = await bob.client.getRoomIdForAlias(a1);
  assert.equal(resolved.room_id, roomId);
  assert.deepEqual(resolved.servers, [srv.serverName]);
  await assert.rejects(bob.client.createAlias(a1, roomId), rejectsWith(409, 'M_UNKNOWN'));
  await assert.rejects(alice.client.createAlias('#nocolon', roomId), rejectsWith(400, 'M_INVALID_PARAM'));
  await assert.rejects(alice.client.createAlias(`#${uniqueName('x')}:elsewhere.example`, roomId), rejectsWith(400, 'M_INVALID_PARAM'));
  await assert.rejects(alice.client.createAlias(`#${uniqueName('x')}:${srv.serverName}`, '!unknown:localhost'), rejectsWith(404, 'M_NOT_FOUND'));
  const outsider = await user();
  await assert.rejects(outsider.client.createAlias(`#${uniqueName('x')}:${srv.serverName}`, roomId), rejectsWith(403, 'M_FORBIDDEN'));

  const local = await bob.client.getLocalAliases(roomId);
  assert.deepEqual(local.aliases, [a1, a2].sort());
  await assert.rejects(outsider.client.getLocalAliases((await alice.client.createRoom({ preset: 'private_chat' as any })).room_id), rejectsWith(403, 'M_FORBIDDEN'));

  // bob (PL 0) cannot delete alice's alias; he can delete his own; alice (moderator) can delete any.
  await alice.client.sendStateEvent(roomId, 'm.room.canonical_alias' as any, { alias: a1, alt_aliases: [a2] } as any, '');
  await assert.rejects(bob.client.deleteAlias(a1), rejectsWith(403, 'M_FORBIDDEN'));
  await bob.client.deleteAlias(a2);
  // bob may not edit the canonical alias, so alt_aliases still lists a2 (the alias is gone anyway).
  assert.deepEqual((await stateContent(alice.client, roomId, 'm.room.canonical_alias')).alt_aliases, [a2]);
  await alice.client.deleteAlias(a1);
  // alice may: the canonical alias loses the deleted alias.
  assert.equal((await stateContent(alice.client, roomId, 'm.room.canonical_alias')).alias, undefined);
  await assert.rejects(bob.client.getRoomIdForAlias(a1), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(alice.client.deleteAlias(a1), rejectsWith(404, 'M_NOT_FOUND'));
  assert.deepEqual((await bob.client.getLocalAliases(roomId)).aliases, []);

  // createRoom with a taken alias name.
  const name = uniqueName('taken');
  await alice.client.createRoom({ room_alias_name: name });
  await assert.rejects(bob.client.createRoom({ room_alias_name: name }), rejectsWith(400, 'M_ROOM_IN_USE'));
  await alice.client.joinRoom(`#${name}:${srv.serverName}`);
});

test('published room directory: visibility, publicRooms with filters and pagination', async () => {
  const alice = await user();
  const bob = await user();
  const tag = uniqueName('dir');
  const big = await alice.client.createRoom({ preset: 'public_chat' as any, visibility: 'public' as any, name: `${tag} big`, topic: 'lots of people' });
  const small = await alice.client.createRoom({ preset: 'public_chat' as any, name: `${tag} small`, room_alias_name: uniqueName('small') });
  const space = await alice.client.createRoom({ preset: 'public_chat' as any, visibility: 'public' as any, name: `${tag} space`, creation_content: { type: 'm.space' } } as any);
  await bob.client.joinRoom(big.room_id);

  assert.equal((await bob.client.getRoomDirectoryVisibility(small.room_id)).visibility, 'private');
  await assert.rejects(bob.client.setRoomDirectoryVisibility(small.room_id, 'public' as any), rejectsWith(403, 'M_FORBIDDEN'));
  await assert.rejects(alice.client.getRoomDirectoryVisibility('!unknown:localhost'), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(alice.client.setRoomDirectoryVisibility('!unknown:localhost', 'public' as any), rejectsWith(404, 'M_NOT_FOUND'));
  await alice.client.setRoomDirectoryVisibility(small.room_id, 'public' as any);
  assert.equal((await bob.client.getRoomDirectoryVisibility(small.room_id)).visibility, 'public');

  const found = await bob.client.publicRooms({ filter: { generic_search_term: tag } });
  assertMatchesSpec('client-server/list_public_rooms.yaml', '/publicRooms', 'post', 200, found);
  assert.equal(found.chunk.length, 3);
  assert.equal(found.chunk[0].room_id, big.room_id, 'most joined members first');
  assert.deepEqual(found.chunk.slice(1).map((r) => r.room_id).sort(), [small.room_id, space.room_id].sort());
  const bigEntry = found.chunk[0];
  assert.equal(bigEntry.num_joined_members, 2);
  assert.equal(bigEntry.topic, 'lots of people');
  assert.equal(bigEntry.join_rule, 'public');
  assert.equal(bigEntry.world_readable, false);
  assert.equal(bigEntry.guest_can_join, false);
  assert.ok(found.chunk.find((r) => r.room_id === small.room_id)?.canonical_alias?.startsWith('#small'));

  const spaces = await bob.client.publicRooms({ filter: { generic_search_term: tag, room_types: ['m.space'] } } as any);
  assert.deepEqual(spaces.chunk.map((r) => r.room_id), [space.room_id]);
  assert.equal(spaces.chunk[0].room_type, 'm.space');
  const plain = await bob.client.publicRooms({ filter: { generic_search_term: tag, room_types: [null] } } as any);
  assert.equal(plain.chunk.length, 2);

  // Pagination, both directions.
  const p1 = await bob.client.publicRooms({ limit: 1, filter: { generic_search_term: tag } });
  assert.equal(p1.chunk.length, 1);
  assert.equal(p1.total_room_count_estimate, 3);
  assert.equal(p1.prev_batch, undefined);
  const p2 = await bob.client.publicRooms({ limit: 1, since: p1.next_batch, filter: { generic_search_term: tag } });
  assert.equal(p2.chunk.length, 1);
  assert.notEqual(p2.chunk[0].room_id, p1.chunk[0].room_id);
  const back = await bob.client.publicRooms({ limit: 1, since: p2.prev_batch, filter: { generic_search_term: tag } });
  assert.equal(back.chunk[0].room_id, p1.chunk[0].room_id);

  // GET, without an access token too.
  const anon = await api(srv.url, 'GET', '/_matrix/client/v3/publicRooms?limit=1000');
  assert.equal(anon.status, 200);
  assertMatchesSpec('client-server/list_public_rooms.yaml', '/publicRooms', 'get', 200, anon.body);
  assert.ok(anon.body.chunk.some((r: any) => r.room_id === big.room_id));
  const listed = await bob.client.publicRooms({ limit: 1000 });
  assert.ok(listed.chunk.some((r) => r.room_id === small.room_id));
  await alice.client.setRoomDirectoryVisibility(small.room_id, 'private' as any);
  assert.ok(!(await bob.client.publicRooms({ filter: { generic_search_term: tag } })).chunk.some((r) => r.room_id === small.room_id));
  await assert.rejects(bob.client.publicRooms({ since: 'garbage' }), rejectsWith(400, 'M_INVALID_PARAM'));
  const network = await bob.client.publicRooms({ third_party_instance_id: 'irc', filter: { generic_search_term: tag } } as any);
  assert.deepEqual(network.chunk, []);
});

test('timestamp_to_event', async () => {
  const alice = await user();
  const outsider = await user();
  const { room_id: roomId } = await alice.client.createRoom({ preset: 'private_chat' as any });
  const before = Date.now();
  await new Promise((r) => setTimeout(r, 5));
  const first = (await alice.client.sendMessage(roomId, { msgtype: 'm.text', body: 'one' } as any)).event_id;
  await new Promise((r) => setTimeout(r, 5));
  const mid = Date.now();
  await new Promise((r) => setTimeout(r, 5));
  const second = (await alice.client.sendMessage(roomId, { msgtype: 'm.text', body: 'two' } as any)).event_id;

  const f = await alice.client.timestampToEvent(roomId, before, Direction.Forward);
  assertMatchesSpec('client-server/room_event_by_timestamp.yaml', '/rooms/{roomId}/timestamp_to_event', 'get', 200, f);
  assert.equal(f.event_id, first);
  assert.equal((await alice.client.timestampToEvent(roomId, mid, Direction.Forward)).event_id, second);
  assert.equal((await alice.client.timestampToEvent(roomId, mid, Direction.Backward)).event_id, first);
  assert.equal((await alice.client.timestampToEvent(roomId, Date.now() + 1000, Direction.Backward)).event_id, second);
  await assert.rejects(alice.client.timestampToEvent(roomId, Date.now() + 60_000, Direction.Forward), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(alice.client.timestampToEvent(roomId, 1, Direction.Backward), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(outsider.client.timestampToEvent(roomId, before, Direction.Forward), rejectsWith(403, 'M_FORBIDDEN'));
  const bad = await api(srv.url, 'GET', `/_matrix/client/v1/rooms/${enc(roomId)}/timestamp_to_event?ts=1`, { token: alice.token });
  assert.equal(bad.status, 400);
});

test('room summary: public, private, invited, by alias, unauthenticated', async () => {
  const alice = await user();
  const bob = await user();
  const aliasName = uniqueName('sum');
  const pub = await alice.client.createRoom({ preset: 'public_chat' as any, name: 'Summary', topic: 'A topic', room_alias_name: aliasName });
  const priv = await alice.client.createRoom({ preset: 'private_chat' as any, name: 'Secret' });

  const s1 = await get(bob.client, `/room_summary/${enc(`#${aliasName}:${srv.serverName}`)}`, {}, v1);
  assertMatchesSpec('client-server/room_summary.yaml', '/room_summary/{roomIdOrAlias}', 'get', 200, s1);
  assert.equal(s1.room_id, pub.room_id);
  assert.equal(s1.name, 'Summary');
  assert.equal(s1.topic, 'A topic');
  assert.equal(s1.join_rule, 'public');
  assert.equal(s1.num_joined_members, 1);
  assert.equal(s1.room_version, '12');
  assert.equal(s1.membership, 'leave');
  const anon = await api(srv.url, 'GET', `/_matrix/client/v1/room_summary/${enc(pub.room_id)}`);
  assert.equal(anon.status, 200);
  assert.equal(anon.body.membership, undefined);

  await assert.rejects(get(bob.client, `/room_summary/${enc(priv.room_id)}`, {}, v1), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(get(bob.client, `/room_summary/${enc('!nope:localhost')}`, {}, v1), rejectsWith(404, 'M_NOT_FOUND'));
  await alice.client.invite(priv.room_id, bob.userId);
  const s2 = await get(bob.client, `/room_summary/${enc(priv.room_id)}`, {}, v1);
  assert.equal(s2.membership, 'invite');
  assert.equal(s2.name, 'Secret');
  // matrix-js-sdk still calls MSC3266's unstable path.
  const viaSdk = await bob.client.getRoomSummary(priv.room_id);
  assert.equal(viaSdk.room_id, priv.room_id);
});

test('profile changes update member events in joined rooms', async () => {
  const alice = await user();
  const bob = await user();
  const r1 = await alice.client.createRoom({ preset: 'public_chat' as any });
  const r2 = await alice.client.createRoom({ preset: 'public_chat' as any });
  const r3 = await alice.client.createRoom({ preset: 'public_chat' as any });
  await bob.client.joinRoom(r1.room_id);
  await bob.client.joinRoom(r2.room_id);
  await bob.client.joinRoom(r3.room_id);
  await bob.client.leave(r3.room_id);
  await bob.client.setDisplayName('Bobby');
  await bob.client.setAvatarUrl('mxc://localhost/bobby');
  for (const r of [r1, r2]) {
    const m = await stateContent(alice.client, r.room_id, 'm.room.member', bob.userId);
    assert.equal(m.membership, 'join');
    assert.equal(m.displayname, 'Bobby');
    assert.equal(m.avatar_url, 'mxc://localhost/bobby');
    const joined = await alice.client.getJoinedRoomMembers(r.room_id);
    assert.equal(joined.joined[bob.userId].display_name, 'Bobby');
  }
  const left = await stateContent(alice.client, r3.room_id, 'm.room.member', bob.userId);
  assert.equal(left.membership, 'leave');
  assert.equal(left.displayname, undefined);
});

test('deactivation leaves rooms and rejects invites; room account data needs a membership', async () => {
  const alice = await user();
  const bob = await user();
  const joined = await alice.client.createRoom({ preset: 'public_chat' as any });
  const invited = await alice.client.createRoom({ preset: 'private_chat' as any, invite: [bob.userId] });
  const stranger = await alice.client.createRoom({ preset: 'private_chat' as any });
  await bob.client.joinRoom(joined.room_id);

  await bob.client.setRoomAccountData(joined.room_id, 'org.example.k', { v: 1 });
  await bob.client.setRoomAccountData(invited.room_id, 'org.example.k', { v: 2 });
  await assert.rejects(bob.client.setRoomAccountData(stranger.room_id, 'org.example.k', { v: 3 }), rejectsWith(403, 'M_FORBIDDEN'));
  await assert.rejects(bob.client.setRoomAccountData('!unknown:localhost', 'org.example.k', { v: 3 }), rejectsWith(403, 'M_FORBIDDEN'));

  await bob.client.deactivateAccount({ type: 'm.login.password', identifier: { type: 'm.id.user', user: bob.userId }, password: bob.password } as any, false);
  assert.equal((await stateContent(alice.client, joined.room_id, 'm.room.member', bob.userId)).membership, 'leave');
  assert.equal((await stateContent(alice.client, invited.room_id, 'm.room.member', bob.userId)).membership, 'leave');
  assert.deepEqual(Object.keys((await alice.client.getJoinedRoomMembers(joined.room_id)).joined), [alice.userId]);
});

test('errors: M_BAD_JSON, M_NOT_JSON, M_NOT_FOUND, M_FORBIDDEN', async () => {
  const alice = await user();
  await assert.rejects(alice.client.createRoom({ invite: 'not-a-list' } as any), rejectsWith(400, 'M_BAD_JSON'));
  await assert.rejects(alice.client.createRoom({ preset: 'party' } as any), rejectsWith(400, 'M_BAD_JSON'));
  await assert.rejects(alice.client.createRoom({ room_version: 'x1' }), rejectsWith(400, 'M_UNSUPPORTED_ROOM_VERSION'));
  const { room_id: roomId } = await alice.client.createRoom({});
  const notJson = await api(srv.url, 'PUT', `/_matrix/client/v3/rooms/${enc(roomId)}/send/m.room.message/t1`, { token: alice.token, rawBody: '{nope', headers: { 'content-type': 'application/json' } });
  assert.equal(notJson.body.errcode, 'M_NOT_JSON');
  await assert.rejects(alice.client.http.authedRequest(Method.Post, `/rooms/${enc('!unknown:localhost')}/upgrade`, undefined, { new_version: '11' }), rejectsWith(404, 'M_NOT_FOUND'));
  await assert.rejects(alice.client.getStateEvent(roomId, 'm.room.topic', ''), rejectsWith(404, 'M_NOT_FOUND'));
  const stranger = await user();
  await assert.rejects(stranger.client.roomState(roomId), rejectsWith(403, 'M_FORBIDDEN'));
  await assert.rejects(stranger.client.createMessagesRequest(roomId, null, 10, Direction.Backward), rejectsWith(403, 'M_FORBIDDEN'));
});
