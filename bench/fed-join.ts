// Federation: joining a big room on another server. Two servers (test/federation-harness.ts: real
// TLS on loopback, both in this process). hs2.test has a public room with M members (local users of
// hs2 joined one by one through the normal send path; M-1 plus the creator); @alice:hs1.test
// joins it through hs2 (make_join, send_join with the room's whole state and auth chain, every
// event's signature and auth checked by hs1, state stored, join placed).
//   measured: alice's join call on hs1 (what POST /join waits for), then her first /sync with
//   the room (the member list she gets), then a message from hs2 reaching hs1.
//
//   node --import tsx bench/fed-join.ts [members=5000]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/fed-join.ts
//
// Goal: join a 5,000-member room in under 5 s.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { loadProbe, createUser, header, ms, profileInProcess, sleep, table, verdict, PG_URL } from './lib.js';

const members = Number(process.argv[2] ?? 5000);

await header(`federation: joining a room of ${members} members on another server`, [
  'both servers in this process (test/federation-harness.ts), TLS on 127.0.0.1; hs2 answers send_join in the same event loop',
]);

if (PG_URL) process.env.TEST_DATABASE_URL = PG_URL;
else delete process.env.TEST_DATABASE_URL;
const { startFederation, closeFedAgents } = await import('../test/federation-harness.js');
const fed = await startFederation(2);
const [hs1, hs2] = fed.servers;
const agent = new Agent({ connect: { ca: readFileSync(fed.ca.caFile, 'utf8'), servername: hs1.serverName }, connections: 4 });
try {
  const alice = await createUser(hs1, 'alice');
  const bob = await createUser(hs2, 'bob');
  const { roomId } = await hs2.hs.services.rooms.createRoom(bob.user_id, { preset: 'public_chat', name: 'Big room' });
  const s0 = performance.now();
  let last = s0;
  for (let i = 1; i < members; i++) {
    await hs2.hs.services.rooms.join(`@member${i}:${hs2.serverName}`, roomId);
    if (performance.now() - last > 10_000) {
      console.log(`  setup: ${i} members joined on hs2 (${((performance.now() - s0) / 1000).toFixed(0)} s)`);
      last = performance.now();
    }
  }
  const setupS = (performance.now() - s0) / 1000;
  const room2 = (await hs2.hs.services.roomData.room(roomId))!;
  const joined2 = (await hs2.hs.services.roomData.joinedMembers(room2)).length;
  await sleep(500);

  const probe = loadProbe();
  const t0 = performance.now();
  await profileInProcess(`hs1 joining a ${members}-member room on hs2`, () => hs1.hs.services.rooms.join(alice.user_id, roomId, { servers: [hs2.serverName] }));
  const joinMs = performance.now() - t0;

  const t1 = performance.now();
  const res = await request(`${hs1.url}/_matrix/client/v3/sync?timeout=0`, { headers: { authorization: `Bearer ${alice.access_token}`, host: hs1.serverName }, dispatcher: agent });
  const sync = (await res.body.json()) as { rooms?: { join?: Record<string, { summary?: Record<string, unknown>; state?: { events?: unknown[] } }> } };
  const syncMs = performance.now() - t1;
  const jr = sync.rooms?.join?.[roomId];
  const room1 = (await hs1.hs.services.roomData.room(roomId))!;
  const joined1 = (await hs1.hs.services.roomData.joinedMembers(room1, undefined, true)).length;

  // A message from hs2 after the join reaches hs1.
  const t2 = performance.now();
  const sent = await hs2.hs.services.rooms.send(bob.user_id, bob.device_id, roomId, 'm.room.message', { msgtype: 'm.text', body: 'welcome' }, 'welcome');
  let arrivedMs = NaN;
  for (let i = 0; i < 400; i++) {
    if (await hs1.hs.services.roomData.event(sent.eventId)) {
      arrivedMs = performance.now() - t2;
      break;
    }
    await sleep(25);
  }
  console.log(probe.end());
  table(['figure', 'value', 'goal'], [
    ['setup: members joined on hs2', `${joined2} in ${setupS.toFixed(1)} s`, ''],
    [`join of @alice:hs1 through hs2 (make_join + send_join + checks + store)`, ms(joinMs, 0), `< 5 s: ${verdict(joinMs < 5000)}`],
    ['members hs1 then knows as joined', `${joined1}`, `${joined2 + 1} expected: ${verdict(joined1 === joined2 + 1)}`],
    [`alice's first /sync (room summary joined: ${String(jr?.summary?.['m.joined_member_count'] ?? '?')}, ${jr?.state?.events?.length ?? 0} state events)`, ms(syncMs, 0), ''],
    ['a message from hs2 reaches hs1 after the join', ms(arrivedMs, 0), ''],
  ]);
} finally {
  await agent.close();
  await fed.stop();
  await closeFedAgents();
}
