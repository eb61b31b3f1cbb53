// Two and more matrix-js-sdk clients syncing against the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { RoomMemberEvent, type MatrixClient } from 'matrix-js-sdk';
import { startTestServer, type TestServer } from '../harness.js';
import { sdkUser, startSyncing, waitFor, timelineBodies } from '../sdk.js';

let srv: TestServer;
const clients: MatrixClient[] = [];
before(async () => { srv = await startTestServer(); });
after(async () => {
  for (const c of clients) c.stopClient();
  await srv?.stop();
});

async function user(): Promise<MatrixClient> {
  const c = await sdkUser(srv.url);
  clients.push(c);
  return c;
}

test('invite appears, turns into a join, messages flow both ways', async () => {
  const alice = await user();
  const bob = await user();
  await startSyncing(alice);
  await startSyncing(bob);
  const { room_id: roomId } = await alice.createRoom({ name: 'Chat', invite: [bob.getUserId()!] });
  await waitFor(bob, () => bob.getRoom(roomId)?.getMyMembership() === 'invite', 10_000, 'invite');
  assert.equal(bob.getRoom(roomId)!.name, 'Chat');
  await bob.joinRoom(roomId);
  await waitFor(bob, () => bob.getRoom(roomId)?.getMyMembership() === 'join', 10_000, 'join');
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === 'join', 10_000, 'alice sees bob join');
  await alice.sendTextMessage(roomId, 'hello bob');
  await waitFor(bob, () => timelineBodies(bob.getRoom(roomId)).includes('hello bob'), 10_000, 'bob gets message');
  await bob.sendTextMessage(roomId, 'hi alice');
  await waitFor(alice, () => timelineBodies(alice.getRoom(roomId)).includes('hi alice'), 10_000, 'alice gets reply');
  assert.deepEqual(timelineBodies(alice.getRoom(roomId)).slice(-2), ['hello bob', 'hi alice']);
});

test('typing, receipts, tags, account data and leaving', async () => {
  const alice = await user();
  const bob = await user();
  await startSyncing(alice);
  await startSyncing(bob);
  const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' as never });
  await bob.joinRoom(roomId);
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === 'join', 10_000, 'join');

  await bob.sendTyping(roomId, true, 20_000);
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.typing, 10_000, 'typing');
  await bob.sendTyping(roomId, false, 0);
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.typing === false, 10_000, 'stopped typing');

  const { event_id: eventId } = await alice.sendTextMessage(roomId, 'read this');
  const ev = await waitFor(bob, () => bob.getRoom(roomId)?.findEventById(eventId), 10_000, 'event at bob');
  await bob.sendReadReceipt(ev);
  await waitFor(alice, () => alice.getRoom(roomId)?.getEventReadUpTo(bob.getUserId()!) === eventId, 10_000, 'receipt');

  await bob.setRoomTag(roomId, 'm.favourite', { order: 0.25 });
  await waitFor(bob, () => bob.getRoom(roomId)?.tags['m.favourite']?.order === 0.25, 10_000, 'tag');
  await bob.setAccountData('org.example.settings' as never, { dark: true } as never);
  await waitFor(bob, () => (bob.getAccountData('org.example.settings' as never)?.getContent() as { dark?: boolean })?.dark, 10_000, 'account data');

  await bob.leave(roomId);
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bob.getUserId()!)?.membership === 'leave', 10_000, 'leave seen');
  await waitFor(bob, () => bob.getRoom(roomId)?.getMyMembership() === 'leave', 10_000, 'own leave');
  void RoomMemberEvent;
});

test('a gappy sync is filled by /messages', async () => {
  const alice = await user();
  const bob = await user();
  const { room_id: roomId } = await alice.createRoom({ invite: [bob.getUserId()!] });
  await bob.joinRoom(roomId);
  for (let i = 0; i < 30; i++) await alice.sendTextMessage(roomId, `m${i}`);
  await startSyncing(bob, { initialSyncLimit: 5 });
  const room = bob.getRoom(roomId)!;
  assert.deepEqual(timelineBodies(room), ['m25', 'm26', 'm27', 'm28', 'm29']);
  while (timelineBodies(room).length < 30 && (await bob.scrollback(room, 10))) {
    if (!room.getLiveTimeline().getPaginationToken('b' as never)) break;
  }
  assert.deepEqual(timelineBodies(room), Array.from({ length: 30 }, (_, i) => `m${i}`));
});

test('lazy-loaded members', async () => {
  const alice = await user();
  const others = [await user(), await user(), await user()];
  const { room_id: roomId } = await alice.createRoom({ preset: 'public_chat' as never });
  for (const o of others) await o.joinRoom(roomId);
  await others[0].sendTextMessage(roomId, 'from the first');
  const viewer = await user();
  await viewer.joinRoom(roomId);
  await startSyncing(viewer, { lazyLoadMembers: true });
  const room = viewer.getRoom(roomId)!;
  // Only the members the timeline needs were sent; the rest load on demand.
  await room.loadMembersIfNeeded();
  assert.equal(room.getJoinedMemberCount(), 5);
  assert.ok(room.getMember(others[2].getUserId()!));
});
