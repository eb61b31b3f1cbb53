// Database bytes per message event, indexes included: one room, N messages (default 10,000) sent
// through services.rooms.send in-process; sizes before and after, per table/index.
//   SQLite: PRAGMA page_count × page_size after a WAL checkpoint, raw and after VACUUM; per table
//           and index from the dbstat virtual table.
//   PostgreSQL: sum of pg_total_relation_size over the tables (heap + indexes + TOAST), raw and
//           after VACUUM FULL; per table heap / indexes.
//
//   node --import tsx bench/storage.ts [messages=10000]
//   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres node --import tsx bench/storage.ts
//
// Goal: < 1.5 KB per message event.
import type { Knex } from 'knex';
import { createUser, freshDatabase, header, kb, mapLimit, mb, startInProcess, table, verdict, PG_URL } from './lib.js';

const count = Number(process.argv[2] ?? 10_000);

await header(`storage: bytes per message event (${count} messages in one room)`, [
  'messages: {"msgtype":"m.text","body":"message <n>: the quick brown fox jumps over the lazy dog"} from 2 senders, one room, room version default',
]);

interface Sizes { total: number; perObject: Map<string, number> }

async function sqliteSizes(knex: Knex, vacuum: boolean): Promise<Sizes> {
  await knex.raw('PRAGMA wal_checkpoint(TRUNCATE)');
  if (vacuum) await knex.raw('VACUUM');
  const pc = (await knex.raw('PRAGMA page_count')) as { page_count: number }[];
  const ps = (await knex.raw('PRAGMA page_size')) as { page_size: number }[];
  const perObject = new Map<string, number>();
  try {
    const rows = (await knex.raw('SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name')) as { name: string; bytes: number }[];
    for (const r of rows) perObject.set(r.name, Number(r.bytes));
  } catch { /* dbstat not compiled in */ }
  return { total: pc[0].page_count * ps[0].page_size, perObject };
}

async function pgSizes(knex: Knex, vacuum: boolean): Promise<Sizes> {
  if (vacuum) await knex.raw('VACUUM FULL');
  const perObject = new Map<string, number>();
  const r = await knex.raw(`SELECT c.relname AS name, pg_relation_size(c.oid) + COALESCE(pg_total_relation_size(c.reltoastrelid), 0) AS heap, pg_indexes_size(c.oid) AS idx, pg_total_relation_size(c.oid) AS total
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'`);
  let total = 0;
  for (const row of r.rows as { name: string; heap: string; idx: string; total: string }[]) {
    perObject.set(`${row.name} (heap+toast)`, Number(row.heap));
    perObject.set(`${row.name} (indexes)`, Number(row.idx));
    total += Number(row.total);
  }
  return { total, perObject };
}

const db = await freshDatabase();
try {
  const srv = await startInProcess(db);
  try {
    const s = srv.hs.services;
    const knex = s.db;
    const sizes = (vacuum: boolean) => (PG_URL ? pgSizes(knex, vacuum) : sqliteSizes(knex, vacuum));
    const alice = await createUser(srv, 'alice');
    const bob = await createUser(srv, 'bob');
    const { roomId } = await s.rooms.createRoom(alice.user_id, { preset: 'public_chat', name: 'storage' });
    await s.rooms.join(bob.user_id, roomId);
    const beforeRaw = await sizes(false);
    const before = await sizes(true);
    const t = performance.now();
    await mapLimit(Array.from({ length: count }, (_, i) => i), 1, async (i) => {
      const who = i % 2 ? bob : alice;
      await s.rooms.send(who.user_id, who.device_id, roomId, 'm.room.message', { msgtype: 'm.text', body: `message ${i}: the quick brown fox jumps over the lazy dog` }, `s${i}`);
    });
    const sendSec = (performance.now() - t) / 1000;
    const afterRaw = await sizes(false);
    const after = await sizes(true);
    const json = await knex('events').where({ type: 'm.room.message' }).avg({ a: knex.raw('length(json)') }).first();
    const avgJson = Number((json as { a: number | string }).a);

    const perEvent = (after.total - before.total) / count;
    const perEventRaw = (afterRaw.total - beforeRaw.total) / count;
    console.log(`sent ${count} messages in ${sendSec.toFixed(1)} s (${(count / sendSec).toFixed(0)}/s in-process, sequential)`);
    table(['figure', 'value', 'goal'], [
      ['database before (compacted)', mb(before.total, 2), ''],
      ['database after (compacted)', mb(after.total, 2), ''],
      [`bytes per message event (compacted: ${PG_URL ? 'VACUUM FULL' : 'VACUUM'})`, `${perEvent.toFixed(0)} B (${kb(perEvent, 2)})`, `< 1.5 KB: ${verdict(perEvent < 1536)}`],
      ['bytes per message event (as written, no vacuum)', `${perEventRaw.toFixed(0)} B (${kb(perEventRaw, 2)})`, `< 1.5 KB: ${verdict(perEventRaw < 1536)}`],
      ['average PDU JSON length (events.json)', `${avgJson.toFixed(0)} B`, ''],
    ]);
    const names = new Set([...before.perObject.keys(), ...after.perObject.keys()]);
    const deltas = [...names].map((n) => [n, (after.perObject.get(n) ?? 0) - (before.perObject.get(n) ?? 0)] as const).filter(([, d]) => d !== 0).sort((a, b) => b[1] - a[1]);
    console.log(`growth per table / index (compacted), per message event:`);
    table(['object', 'bytes/event', 'share'], deltas.map(([n, d]) => [n, (d / count).toFixed(0), `${((100 * d) / (after.total - before.total)).toFixed(1)}%`]));
  } finally {
    await srv.stop();
  }
} finally {
  await db.drop();
}
