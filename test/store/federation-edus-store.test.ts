// FederationEdusStore on SQLite, or PostgreSQL when TEST_DATABASE_URL is set.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { openDatabase, migrate } from '../../src/storage/db.js';
import { FederationEdusStore } from '../../src/storage/federation-edus-store.js';
import { freshDatabase, type TestDatabase } from '../harness.js';

let tdb: TestDatabase;
let db: Knex;
let store: FederationEdusStore;
before(async () => {
  tdb = await freshDatabase();
  db = openDatabase({ url: tdb.url });
  await migrate(db);
  store = new FederationEdusStore(db);
  await db('rooms').insert([1, 2, 3].map((n) => ({ room_nid: n, room_id: `!r${n}:a.test`, room_version: '10', created_ts: 0 })));
  const member = (room: number, user: string, membership = 'join') => ({ room_nid: room, user_id: user, membership, event_nid: 0, stream_ordering: 0 });
  await db('room_members').insert([
    member(1, '@alice:a.test'), member(1, '@bob:b.test'), member(1, '@carol:c.test:8448'),
    member(2, '@alice:a.test'), member(2, '@dan:d.test', 'leave'),
    member(3, '@erin:e.test'), member(3, '@frank:f.test'),
  ]);
});
after(async () => {
  await db?.destroy();
  await tdb?.drop();
});

test('who shares a room with whom', async () => {
  assert.deepEqual((await store.serversSharingRoomWith('@alice:a.test')).sort(), ['a.test', 'b.test', 'c.test:8448']);
  assert.deepEqual(await store.serversSharingRoomWith('@dan:d.test'), []);
  assert.equal(await store.sharesRoomWithServer('@bob:b.test', 'a.test'), true);
  assert.equal(await store.sharesRoomWithServer('@dan:d.test', 'a.test'), false, 'left');
  assert.equal(await store.sharesRoomWithServer('@erin:e.test', 'a.test'), false);
  assert.deepEqual([...await store.usersSharingRoomWithServer(['@bob:b.test', '@carol:c.test:8448', '@erin:e.test'], 'a.test')].sort(), ['@bob:b.test', '@carol:c.test:8448']);
});

test('the outgoing device-list sequence counts up per user, in the caller\'s transaction', async () => {
  assert.equal(await store.outboundDeviceStream('@alice:a.test'), 0);
  assert.equal(await db.transaction((trx) => store.nextOutboundDeviceStream('@alice:a.test', trx)), 1);
  assert.equal(await db.transaction((trx) => store.nextOutboundDeviceStream('@alice:a.test', trx)), 2);
  assert.equal(await db.transaction((trx) => store.nextOutboundDeviceStream('@other:a.test', trx)), 1);
  await db.transaction(async (trx) => {
    await store.nextOutboundDeviceStream('@alice:a.test', trx);
    throw new Error('rolled back');
  }).catch(() => undefined);
  assert.equal(await store.outboundDeviceStream('@alice:a.test'), 2);
});

test('remote device lists: snapshot, single updates, stale, forget', async () => {
  const u = '@bob:b.test';
  await db.transaction((trx) => store.replaceRemoteDeviceList({ user_id: u, stream_id: 5, master_key: '{"m":1}', self_signing_key: null, updated_ts: 1 }, [{ device_id: 'A', keys: '{"a":1}' }, { device_id: 'B', keys: null }], trx));
  await db.transaction(async (trx) => {
    await store.upsertRemoteDevice(u, 'C', '{"c":1}', trx);
    await store.upsertRemoteDevice(u, 'A', '{"a":2}', trx);
    await store.deleteRemoteDevice(u, 'B', trx);
    await store.updateRemoteDeviceList(u, { stream_id: 6 }, trx);
  });
  assert.deepEqual((await store.remoteDevices([u])).map((d) => [d.device_id, d.keys]), [['A', '{"a":2}'], ['C', '{"c":1}']]);
  const [row] = await store.remoteDeviceLists([u]);
  assert.equal(Number(row.stream_id), 6);
  assert.equal(row.master_key, '{"m":1}');
  assert.equal(!!row.stale, false);
  // A new snapshot replaces everything.
  await db.transaction((trx) => store.replaceRemoteDeviceList({ user_id: u, stream_id: 9, master_key: null, self_signing_key: null, updated_ts: 2 }, [{ device_id: 'D', keys: '{}' }], trx));
  assert.deepEqual((await store.remoteDevices([u])).map((d) => d.device_id), ['D']);
  await store.markRemoteDeviceListStale(u, 3);
  assert.equal(!!(await store.remoteDeviceLists([u]))[0].stale, true);
  await store.markRemoteDeviceListStale('@new:b.test', 3);
  assert.deepEqual((await store.trackedRemoteUsers([u, '@new:b.test', '@x:b.test'])).sort(), ['@bob:b.test', '@new:b.test']);
  await store.deleteRemoteDeviceList(u);
  assert.deepEqual(await store.remoteDevices([u]), []);
  assert.deepEqual(await store.remoteDeviceLists([u]), []);
});

test('incoming to-device message ids are delivered once per origin', async () => {
  assert.equal(await db.transaction((trx) => store.insertToDeviceSeen('b.test', 'm1', 100, trx)), true);
  assert.equal(await db.transaction((trx) => store.insertToDeviceSeen('b.test', 'm1', 101, trx)), false);
  assert.equal(await db.transaction((trx) => store.insertToDeviceSeen('c.test', 'm1', 101, trx)), true);
  await store.deleteToDeviceSeenBefore(101);
  assert.equal(await db.transaction((trx) => store.insertToDeviceSeen('b.test', 'm1', 102, trx)), true);
});
