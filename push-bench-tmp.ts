import { performance } from 'node:perf_hooks';
import { startTestServer } from './test/harness.js';

const MEMBERS = Number(process.env.MEMBERS ?? 100);
const BLOCK = 50, ROUNDS = 8;
const srv = await startTestServer();
const s = srv.hs.services;
const users: string[] = [];
for (let i = 0; i <= MEMBERS; i++) users.push(await s.accounts.register({ localpart: `u${i}` }));
const { roomId } = await s.rooms.createRoom(users[0], { preset: 'public_chat' } as any);
for (const u of users.slice(1)) await s.rooms.join(u, roomId);
const hook = s.persister.hooks.find((h) => h.constructor.name === 'BulkPushEvaluator')!;
let hookMs = 0;
const orig = hook.inTransaction!.bind(hook);
hook.inTransaction = async (...args) => { const t = performance.now(); await orig(...args); hookMs += performance.now() - t; };
let n = 0;
async function block(): Promise<number> {
  const t = performance.now();
  for (let i = 0; i < BLOCK; i++) await s.rooms.send(users[0], 'D', roomId, 'm.room.message', { msgtype: 'm.text', body: `hello ${n}` }, `t${n++}`);
  return (performance.now() - t) / BLOCK;
}
await block();
const on: number[] = [], off: number[] = [], hk: number[] = [];
for (let r = 0; r < ROUNDS; r++) {
  hookMs = 0;
  on.push(await block());
  hk.push(hookMs / BLOCK);
  s.persister.hooks.splice(s.persister.hooks.indexOf(hook), 1);
  off.push(await block());
  s.persister.hooks.push(hook);
}
const med = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)].toFixed(2);
console.log(`${MEMBERS} local members: persist ${med(off)} ms/event without push, ${med(on)} ms with; hook itself ${med(hk)} ms (medians of ${ROUNDS} blocks of ${BLOCK})`);
const nid = (await s.roomData.room(roomId))!.nid;
let t = performance.now();
for (let i = 0; i < 100; i++) await s.pushNotifications.unreadCounts(users[1], nid, {});
console.log(`unreadCounts with ${BLOCK * ROUNDS + BLOCK} unread: ${((performance.now() - t) / 100).toFixed(2)} ms`);
t = performance.now();
for (let i = 0; i < 100; i++) await s.pushNotifications.notifications(users[1], { limit: 20 });
console.log(`GET /notifications (limit 20): ${((performance.now() - t) / 100).toFixed(2)} ms`);

await srv.stop();
