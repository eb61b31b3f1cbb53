// Federation: two servers (test/federation-harness.ts startFederation: real TLS on loopback, both
// in this process). hs2.test has a room; @alice:hs1.test joins it over federation.
//   1. latency: @bob:hs2.test sends M messages (spaced S ms, through the services); alice long-polls
//      hs1's /sync over HTTPS; time from just before the send on hs2 to alice's /sync answer with
//      the event (hs2 persist → outbox → transaction → hs1 checks + persist → wake).
//   2. ingest: N message PDUs built and signed as hs2 would (hs2's key, prev_events chained from the
//      room's head, auth_events from hs2's state), delivered to hs1 in transactions of 50, one at a
//      time (as a sender does per destination), signed with X-Matrix by hs2's federation client;
//      PDUs checked and persisted per second by hs1.
//
//   node --import tsx bench/fed-ingest.ts [pdus=2000] [messages=30] [spacingMs=100]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/fed-ingest.ts
//
// Goals: ingest ≥ 1,000 PDUs/s; send-to-receive latency p50 < 30 ms.
import { readFileSync } from 'node:fs';
import { Agent, request } from 'undici';
import { authEventTypesFor } from '../src/rooms/auth-rules.js';
import { stateKey, type PDU } from '../src/rooms/event.js';
import { eventIdOf, signEvent } from '../src/rooms/hashing.js';
import { loadProbe, createUser, header, median, ms, percentile, profileInProcess, sleep, table, verdict, PG_URL, PROFILE } from './lib.js';

const pduCount = Number(process.argv[2] ?? 2000);
const messages = Number(process.argv[3] ?? 30);
const spacing = Number(process.argv[4] ?? 100);

await header(`federation: ingest of ${pduCount} PDUs, send-to-receive latency over ${messages} messages`, [
  'both servers in this process (test/federation-harness.ts), TLS on 127.0.0.1; the sending side shares the event loop',
]);

// The federation harness takes its database from TEST_DATABASE_URL (a fresh one per server, dropped after).
if (PG_URL) process.env.TEST_DATABASE_URL = PG_URL;
else delete process.env.TEST_DATABASE_URL;
const { startFederation } = await import('../test/federation-harness.js');
const fed = await startFederation(2);
const [hs1, hs2] = fed.servers;
const agent = new Agent({ connect: { ca: readFileSync(fed.ca.caFile, 'utf8'), servername: hs1.serverName }, connections: 4 });
try {
  const alice = await createUser(hs1, 'alice');
  const bob = await createUser(hs2, 'bob');
  const { roomId } = await hs2.hs.services.rooms.createRoom(bob.user_id, { preset: 'public_chat' });
  await hs1.hs.services.rooms.join(alice.user_id, roomId, { servers: [hs2.serverName] });
  const room1 = (await hs1.hs.services.roomData.room(roomId))!;
  const room2 = (await hs2.hs.services.roomData.room(roomId))!;

  const sync = async (since?: string, timeout = 0) => {
    const q = `timeout=${timeout}${since ? `&since=${encodeURIComponent(since)}` : ''}`;
    const res = await request(`${hs1.url}/_matrix/client/v3/sync?${q}`, { headers: { authorization: `Bearer ${alice.access_token}`, host: hs1.serverName }, dispatcher: agent });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`sync ${res.statusCode} ${text.slice(0, 200)}`);
    return { at: performance.now(), text, json: JSON.parse(text) };
  };

  // ---- 1. latency
  const probe = loadProbe();
  let since = (await sync()).json.next_batch as string;
  const arrivals = new Map<number, number>();
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const r = await sync(since, 30_000);
      since = r.json.next_batch;
      for (const m of r.text.matchAll(/"seq":(\d+)/g)) if (!arrivals.has(Number(m[1]))) arrivals.set(Number(m[1]), r.at);
    }
  })();
  await sleep(300);
  const sentAt: number[] = [];
  for (let i = 0; i < messages; i++) {
    sentAt[i] = performance.now();
    await hs2.hs.services.rooms.send(bob.user_id, bob.device_id, roomId, 'm.room.message', { msgtype: 'm.text', body: `over federation ${i}`, seq: i }, `lat${i}`);
    await sleep(spacing);
  }
  for (let i = 0; i < 200 && arrivals.size < messages; i++) await sleep(50);
  polling = false;
  await hs1.hs.services.rooms.send(alice.user_id, alice.device_id, roomId, 'm.room.message', { msgtype: 'm.text', body: 'end of latency phase' }, 'end');
  await poller;
  const lat = [...arrivals].map(([i, at]) => at - sentAt[i]);

  // Let hs2 catch up with alice's last message, so both servers agree on the room's head.
  for (let i = 0; i < 100; i++) {
    const h1 = await hs1.hs.services.stores.events.roomHead(room1.nid);
    const h2 = await hs2.hs.services.stores.events.roomHead(room2.nid);
    if (h1.extremities.map((e) => e.event_id).sort().join() === h2.extremities.map((e) => e.event_id).sort().join()) break;
    await sleep(50);
  }

  // ---- 2. ingest: PDUs built as hs2 would, sent straight to hs1.
  const version = room2.version;
  const head = await hs2.hs.services.stores.events.roomHead(room2.nid);
  const state = await hs2.hs.services.roomData.currentState(room2);
  const key = hs2.hs.services.serverKeys.signingKey;
  let prev = head.extremities.map((e) => e.event_id);
  let depth = Math.max(...head.extremities.map((e) => e.depth));
  const pdus: PDU[] = [];
  let ts = Date.now();
  for (let i = 0; i < pduCount; i++) {
    const draft: PDU = { type: 'm.room.message', sender: bob.user_id, room_id: roomId, content: { msgtype: 'm.text', body: `ingest ${i}: the quick brown fox jumps over the lazy dog` }, depth: ++depth, origin_server_ts: ts++, prev_events: prev, auth_events: [], hashes: { sha256: '' }, signatures: {} };
    delete (draft as { hashes?: unknown }).hashes;
    draft.auth_events = authEventTypesFor(draft, version).map(([t, k]) => state.get(stateKey(t, k))).filter((x): x is string => !!x);
    const signed = signEvent(draft as unknown as Record<string, unknown>, hs2.serverName, key, version) as unknown as PDU;
    prev = [eventIdOf(signed, version)];
    pdus.push(signed);
  }
  // hs1's queries during the ingest (knex 'query' events on its services.db).
  const bySql = new Map<string, number>();
  let counting = false;
  hs1.hs.services.db.on('query', (q: { sql: string }) => {
    if (counting) bySql.set(q.sql, (bySql.get(q.sql) ?? 0) + 1);
  });
  const count1 = async () => Number(((await hs1.hs.services.db('events').where({ room_nid: room1.nid }).count({ n: '*' }).first()) as { n: number | string }).n);
  const before = await count1();
  const client = hs2.hs.services.federationClient;
  const errors: string[] = [];
  const txnMs: number[] = [];
  const t0 = performance.now();
  counting = true;
  await profileInProcess(`hs1 ingesting ${pduCount} PDUs (both servers in this process)`, async () => {
    for (let i = 0; i < pdus.length; i += 50) {
      const batch = pdus.slice(i, i + 50);
      const t1 = performance.now();
      const res = await client.request<{ pdus: Record<string, { error?: string }> }>(hs1.serverName, 'PUT', `/_matrix/federation/v1/send/bench${Date.now()}-${i}`, { body: { origin: hs2.serverName, origin_server_ts: Date.now(), pdus: batch, edus: [] } });
      txnMs.push(performance.now() - t1);
      for (const [id, r] of Object.entries(res.pdus)) if (r.error) errors.push(`${id}: ${r.error}`);
    }
  });
  const elapsed = (performance.now() - t0) / 1000;
  counting = false;
  const persisted = (await count1()) - before;
  const rate = persisted / elapsed;
  const p50 = median(lat);
  console.log(probe.end());
  table(['figure', 'value', 'goal'], [
    [`ingest: PDUs persisted by hs1 / s (${pduCount} in transactions of 50, one at a time)`, `${rate.toFixed(0)} /s (${persisted} in ${elapsed.toFixed(2)} s)`, `≥ 1,000/s: ${verdict(rate >= 1000)}`],
    ['ingest: time per 50-PDU transaction p50 / max', `${ms(median(txnMs))} / ${ms(Math.max(...txnMs))}`, ''],
    ['ingest: PDUs rejected', `${errors.length}${errors.length ? ` (first: ${errors[0]})` : ''}`, ''],
    [`latency hs2 send → hs1 /sync, p50 (${lat.length}/${messages} arrived)`, ms(p50), `< 30 ms: ${verdict(p50 < 30)}`],
    ['latency p90 / max', `${ms(percentile(lat, 90))} / ${ms(Math.max(...lat))}`, ''],
  ]);
  const totalQ = [...bySql.values()].reduce((a, b) => a + b, 0);
  console.log(`hs1 database queries while ingesting: ${totalQ}, ${(totalQ / pduCount).toFixed(1)} per PDU; most frequent:`);
  table(['per PDU', 'sql'], [...bySql].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([sql, n]) => [(n / pduCount).toFixed(2), sql.length > 140 ? sql.slice(0, 137) + '...' : sql]));
  if (PROFILE) console.log('(the ingest profile above covers hs1 and hs2\'s sending side: both run in this process)');
} finally {
  await agent.close();
  await fed.stop();
  const { closeFedAgents } = await import('../test/federation-harness.js');
  await closeFedAgents();
}
