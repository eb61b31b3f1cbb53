// State resolution (src/rooms/state-res.ts resolveState) of a 10,000-member room with two forks:
//   fork A: new power levels (u0 → 50), 20 bans
//   fork B: other new power levels (u1 → 50), join rules → invite, a topic, 20 leaves, 20 profile
//           changes (one of them by a user fork A bans)
// Events are real: content hashes, Ed25519 signatures of 51 servers, reference-hash event ids
// (src/rooms/hashing.ts), auth_events chosen from the state before each event, prev_events
// forming the DAG. v2 = room version 11, v2.1 = room version 12.
// Timed: resolveState over the two forks' state maps, median of runs, each on freshly parsed PDU
// objects (as loaded from the database: no per-object id memo) and on the same objects again.
//
//   node --import tsx bench/state-res.ts [members=10000] [runs=7]
//
// Goal: < 100 ms.
import { generateSigningKey, type SigningKey } from '../src/crypto/signing.js';
import { authEventTypesFor } from '../src/rooms/auth-rules.js';
import { stateKey, type PDU, type StateMap } from '../src/rooms/event.js';
import { computeEventId, signEvent } from '../src/rooms/hashing.js';
import { resolveState, type StateResContext } from '../src/rooms/state-res.js';
import { getRoomVersion, type RoomVersion } from '../src/rooms/versions.js';
import { loadProbe, header, median, ms, profileInProcess, table, verdict, PROFILE } from './lib.js';

const members = Number(process.argv[2] ?? 10_000);
const runs = Number(process.argv[3] ?? 7);

await header(`state resolution: ${members.toLocaleString('en')}-member room, two forks (power levels, join rules, bans, leaves, profile changes)`, [
  'pure CPU in this process (no database); each run resolves the same two state maps; garbage collection during a run counts',
], { database: false });

const keys = new Map<string, SigningKey>();
const keyOf = (server: string) => {
  let k = keys.get(server);
  if (!k) keys.set(server, (k = generateSigningKey()));
  return k;
};
const ALICE = '@alice:a.test';
const user = (i: number) => `@u${i}:s${i % 50}.test`;

interface Built { version: RoomVersion; json: Map<string, string>; a: StateMap; b: StateMap; ids: Record<string, string>; count: number }

function build(versionId: string): Built {
  const version = getRoomVersion(versionId)!;
  const json = new Map<string, string>();
  const events = new Map<string, PDU>();
  let roomId = '!bench:a.test';
  let ts = 1_700_000_000_000;
  const ids: Record<string, string> = {};
  const add = (state: StateMap, prev: string[], type: string, sender: string, sk: string | undefined, content: Record<string, unknown>): string => {
    const depth = 1 + Math.max(0, ...prev.map((p) => events.get(p)!.depth));
    const draft: PDU = { type, sender, room_id: roomId, content, depth, origin_server_ts: ts++, prev_events: prev, auth_events: [], hashes: { sha256: '' }, signatures: {} };
    delete (draft as { hashes?: unknown }).hashes;
    if (sk !== undefined) draft.state_key = sk;
    if (type === 'm.room.create' && version.roomIdFromCreateEvent) delete draft.room_id;
    draft.auth_events = authEventTypesFor(draft, version).map(([t, k]) => state.get(stateKey(t, k))).filter((x): x is string => !!x);
    const server = sender.slice(sender.indexOf(':') + 1);
    const signed = signEvent(draft as unknown as Record<string, unknown>, server, keyOf(server), version) as unknown as PDU;
    const id = computeEventId(signed as unknown as Record<string, unknown>, version);
    if (type === 'm.room.create') roomId = version.roomIdFromCreateEvent ? '!' + id.slice(1) : roomId;
    events.set(id, signed);
    json.set(id, JSON.stringify(signed));
    if (sk !== undefined) state.set(stateKey(type, sk), id);
    return id;
  };
  const base: StateMap = new Map();
  let last = add(base, [], 'm.room.create', ALICE, '', version.implicitRoomCreator ? { room_version: versionId } : { creator: ALICE, room_version: versionId });
  ids.create = last;
  last = add(base, [last], 'm.room.member', ALICE, ALICE, { membership: 'join', displayname: 'Alice' });
  const plUsers = (extra: Record<string, number>) => ({ ...(version.privilegedCreators ? {} : { [ALICE]: 100 }), ...extra });
  last = ids.pl0 = add(base, [last], 'm.room.power_levels', ALICE, '', { users: plUsers({}), users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 });
  last = ids.jr0 = add(base, [last], 'm.room.join_rules', ALICE, '', { join_rule: 'public' });
  for (let i = 0; i < members; i++) last = add(base, [last], 'm.room.member', user(i), user(i), { membership: 'join', displayname: `user ${i}` });
  const fork = last;

  const a = new Map(base);
  last = ids.plA = add(a, [fork], 'm.room.power_levels', ALICE, '', { users: plUsers({ [user(0)]: 50 }), users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 });
  for (let i = 1; i <= 20; i++) last = add(a, [last], 'm.room.member', ALICE, user(i), { membership: 'ban', reason: 'spam' });

  const b = new Map(base);
  last = ids.plB = add(b, [fork], 'm.room.power_levels', ALICE, '', { users: plUsers({ [user(1)]: 50 }), users_default: 0, events_default: 0, state_default: 50, ban: 50, kick: 50, redact: 50, invite: 0 });
  last = ids.jrB = add(b, [last], 'm.room.join_rules', ALICE, '', { join_rule: 'invite' });
  last = ids.topic = add(b, [last], 'm.room.topic', ALICE, '', { topic: 'forked' });
  for (let i = 21; i <= 40; i++) last = add(b, [last], 'm.room.member', user(i), user(i), { membership: 'leave' });
  for (let i = 41; i <= 60; i++) last = add(b, [last], 'm.room.member', user(i), user(i), { membership: 'join', displayname: `renamed ${i}` });
  last = ids.rename5 = add(b, [last], 'm.room.member', user(5), user(5), { membership: 'join', displayname: 'five' });
  return { version, json, a, b, ids, count: events.size };
}

const rows: string[][] = [];
const probe = loadProbe();
for (const v of ['11', '12']) {
  let t = performance.now();
  const built = build(v);
  const buildMs = performance.now() - t;
  const parse = () => {
    const m = new Map<string, PDU>();
    for (const [id, j] of built.json) m.set(id, JSON.parse(j));
    return m;
  };
  const run = (events: Map<string, PDU>) => {
    const ctx: StateResContext = { getEvent: (id) => events.get(id) };
    const t0 = performance.now();
    const s = resolveState(built.version, [built.a, built.b], ctx);
    return { ms: performance.now() - t0, s };
  };
  // Warm-up (JIT), then check the outcome.
  const { s } = run(parse());
  const pl = s.get(stateKey('m.room.power_levels', ''));
  const jr = s.get(stateKey('m.room.join_rules', ''));
  const u5 = s.get(stateKey('m.room.member', user(5)));
  const check = `${s.size} entries; PL ${pl === built.ids.plA ? 'A' : pl === built.ids.plB ? 'B' : '?'}, join rules ${jr === built.ids.jrB ? 'B (invite)' : jr === built.ids.jr0 ? 'base (public)' : '?'}, u5 ${u5 === built.ids.rename5 ? 'renamed' : 'banned'}`;
  // Fresh objects for every run, parsed before the timed part.
  const copies = Array.from({ length: runs }, parse);
  const fresh: number[] = [];
  for (const c of copies) fresh.push(run(c).ms);
  const same = parse();
  run(same);
  const warm: number[] = [];
  for (let i = 0; i < runs; i++) warm.push(run(same).ms);
  const m = median(fresh);
  rows.push([`v${built.version.stateRes.slice(1)} (room v${v})`, `${built.count} events built+signed in ${(buildMs / 1000).toFixed(1)} s`, ms(m), ms(Math.min(...fresh)), ms(median(warm)), check, `< 100 ms: ${verdict(m < 100)}`]);
  const profCopies = PROFILE ? Array.from({ length: runs }, parse) : [];
  await profileInProcess(`state res room v${v}, ${runs} runs on fresh PDUs (parsed beforehand)`, async () => {
    for (const c of profCopies) run(c);
  });
}
console.log(probe.end());
table(['state res', 'set-up', `median of ${runs} (fresh PDUs)`, 'min (fresh)', 'median (same objects)', 'outcome', 'goal'], rows);
