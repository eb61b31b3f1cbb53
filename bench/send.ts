// Messages through PUT /send: 10 and 100 concurrent clients, one room each and one shared room,
// on SQLite (and PostgreSQL with BENCH_DATABASE_URL). Prints messages/s and server CPU per message,
// next to a server that does no work (the ceiling of this load generator on this machine).
//   node --import tsx bench/send.ts [seconds]
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { cpuSeconds, drive, postgresCpuSeconds, register, post, startServerProcess } from './lib.js';

const seconds = Number(process.argv[2] ?? 5);
const pgUrl = process.env.BENCH_DATABASE_URL;

async function noWorkCeiling(concurrency: number): Promise<number> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end('{"event_id":"$x"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const r = await drive(url, concurrency, seconds, async (pool, w, n) => {
    const res = await pool.request({ method: 'PUT', path: `/_matrix/client/v3/rooms/x/send/m.room.message/${w}-${n}`, body: '{"msgtype":"m.text","body":"hello"}', headers: { 'content-type': 'application/json', authorization: 'Bearer x' } });
    await res.body.dump();
    return res.statusCode === 200;
  });
  server.close();
  return r.ok / r.elapsed;
}

async function run(label: string, databaseUrl: string | undefined, concurrency: number, shared: boolean) {
  const srv = await startServerProcess({ databaseUrl });
  try {
    const users = await Promise.all(Array.from({ length: concurrency }, (_, i) => register(srv.url, `bench${i}_${Date.now().toString(36)}`)));
    let rooms: string[];
    if (shared) {
      const { room_id } = await post(srv.url, '/_matrix/client/v3/createRoom', users[0].access_token, { preset: 'public_chat' });
      for (const u of users.slice(1)) await post(srv.url, `/_matrix/client/v3/join/${encodeURIComponent(room_id)}`, u.access_token, {});
      rooms = users.map(() => room_id);
    } else {
      rooms = [];
      for (const u of users) rooms.push((await post(srv.url, '/_matrix/client/v3/createRoom', u.access_token, {})).room_id);
    }
    const cpu0 = cpuSeconds(srv.pid);
    const pg0 = databaseUrl ? postgresCpuSeconds() : 0;
    const r = await drive(srv.url, concurrency, seconds, async (pool, w, n) => {
      const res = await pool.request({
        method: 'PUT',
        path: `/_matrix/client/v3/rooms/${encodeURIComponent(rooms[w])}/send/m.room.message/b${w}-${n}`,
        body: JSON.stringify({ msgtype: 'm.text', body: `message ${n} from ${w}` }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${users[w].access_token}` },
      });
      await res.body.dump();
      return res.statusCode === 200;
    });
    const cpu = cpuSeconds(srv.pid) - cpu0;
    const pg = databaseUrl ? postgresCpuSeconds() - pg0 : 0;
    const rate = r.ok / r.elapsed;
    console.log(`${label.padEnd(10)} ${String(concurrency).padStart(3)} clients ${shared ? 'shared room ' : 'room each  '} ${rate.toFixed(0).padStart(6)} msg/s  server CPU ${((cpu / r.ok) * 1000).toFixed(3)} ms/msg${databaseUrl ? `  +db ${((pg / r.ok) * 1000).toFixed(3)} ms/msg` : ''}  (${r.failed} failed)`);
  } finally {
    await srv.stop();
  }
}

for (const c of [10, 100]) console.log(`no-work    ${String(c).padStart(3)} clients ceiling      ${(await noWorkCeiling(c)).toFixed(0).padStart(6)} req/s`);
for (const [label, db] of [['sqlite', undefined], ...(pgUrl ? [['postgres', pgUrl]] : [])] as [string, string | undefined][]) {
  for (const c of [10, 100]) {
    await run(label, db, c, false);
    await run(label, db, c, true);
  }
}
