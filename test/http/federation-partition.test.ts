// A network split: hs2 cannot reach or be reached; the room goes on; conflicting state is made on
// both sides; after the split heals, every server resolves the same state and has every message.
// Then hs2 restarts (a new process on the same database) and catches up on what it missed.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer, eventually, registerUser } from '../federation-harness.js';
import { FederationClientTransport, TransportError, type TransactionTransport, type TransactionBody } from '../../src/federation/sender.js';
import { startHomeserver } from '../../src/main.js';

const enc = encodeURIComponent;
const user = (s: FedServer, name: string) => registerUser(fed.ca, s, name);
let fed: Federation;
after(async () => {
  await fed?.stop();
  await closeFedAgents();
});

/** A transport that drops what goes to blocked servers (the test's network split). */
class SplitTransport implements TransactionTransport {
  constructor(private readonly inner: TransactionTransport, readonly blocked: Set<string>) {}
  async sendTransaction(destination: string, txnId: string, body: TransactionBody) {
    if (this.blocked.has(destination)) throw new TransportError('network split', null);
    return this.inner.sendTransaction(destination, txnId, body);
  }
}

async function capi(s: FedServer, method: string, p: string, token: string, body?: unknown) {
  return fedApi(fed.ca, s, method, `/_matrix/client/v3${p}`, { body, headers: { authorization: `Bearer ${token}` } });
}
async function bodies(s: FedServer, token: string, roomId: string): Promise<string[]> {
  const r = await capi(s, 'GET', `/rooms/${enc(roomId)}/messages?dir=b&limit=100`, token);
  return r.status === 200 ? r.body.chunk.filter((e: any) => e.type === 'm.room.message').map((e: any) => e.content.body).sort() : [];
}
async function roomName(s: FedServer, token: string, roomId: string): Promise<string | undefined> {
  const r = await capi(s, 'GET', `/rooms/${enc(roomId)}/state/m.room.name`, token);
  return r.status === 200 ? r.body.name : undefined;
}

test('split, conflicting state, heal, restart and catch up', async () => {
  fed = await startFederation(3);
  const splits = new Map<string, SplitTransport>();
  for (const s of fed.servers) {
    const t = new SplitTransport(new FederationClientTransport(s.hs.services.federationClient), new Set());
    splits.set(s.serverName, t);
    s.hs.services.federationSender?.setTransport(t);
  }
  const [hs1, hs2, hs3] = fed.servers;
  const alice = await user(hs1, 'alice');
  const bob = await user(hs2, 'bob');
  const carol = await user(hs3, 'carol');
  const created = await capi(hs1, 'POST', '/createRoom', alice.access_token, { preset: 'public_chat', name: 'Start', room_version: '11', power_level_content_override: { state_default: 50, users: { [alice.user_id]: 100, [bob.user_id]: 50 } } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  const roomId = created.body.room_id;
  for (const [s, u] of [[hs2, bob], [hs3, carol]] as const) {
    const j = await fedApi(fed.ca, s, 'POST', `/_matrix/client/v3/join/${enc(roomId)}?via=${hs1.serverName}`, { body: {}, headers: { authorization: `Bearer ${u.access_token}` } });
    assert.equal(j.status, 200, JSON.stringify(j.body));
  }
  await eventually('everyone joined everywhere', async () => {
    for (const [s, u] of [[hs1, alice], [hs2, bob], [hs3, carol]] as const) {
      const m = await capi(s, 'GET', `/rooms/${enc(roomId)}/joined_members`, u.access_token);
      if (Object.keys(m.body.joined ?? {}).length !== 3) return false;
    }
    return true;
  });

  // Split hs2 off.
  splits.get(hs1.serverName)!.blocked.add(hs2.serverName);
  splits.get(hs3.serverName)!.blocked.add(hs2.serverName);
  splits.get(hs2.serverName)!.blocked.add(hs1.serverName).add(hs3.serverName);

  await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/p1`, alice.access_token, { msgtype: 'm.text', body: 'alice during split' });
  await capi(hs3, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/p2`, carol.access_token, { msgtype: 'm.text', body: 'carol during split' });
  await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/p3`, bob.access_token, { msgtype: 'm.text', body: 'bob during split' });
  // Conflicting state on both sides of the split.
  assert.equal((await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/state/m.room.name`, alice.access_token, { name: 'Alice side' })).status, 200);
  assert.equal((await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/state/m.room.name`, bob.access_token, { name: 'Bob side' })).status, 200);
  await eventually('hs3 has alice\'s message', async () => (await bodies(hs3, carol.access_token, roomId)).includes('alice during split'));
  assert.ok(!(await bodies(hs1, alice.access_token, roomId)).includes('bob during split'), 'the split holds');

  // Heal.
  for (const t of splits.values()) t.blocked.clear();
  for (const s of fed.servers) for (const other of fed.servers) if (s !== other) await s.hs.services.federationSender?.markDestinationUp(other.serverName);
  const all = ['alice during split', 'bob during split', 'carol during split'];
  await eventually('messages everywhere', async () => {
    for (const [s, u] of [[hs1, alice], [hs2, bob], [hs3, carol]] as const) {
      const b = await bodies(s, u.access_token, roomId);
      if (!all.every((x) => b.includes(x))) return false;
    }
    return true;
  }, 30_000);
  const names = await eventually('one name everywhere', async () => {
    const n = [await roomName(hs1, alice.access_token, roomId), await roomName(hs2, bob.access_token, roomId), await roomName(hs3, carol.access_token, roomId)];
    return n.every((x) => x === n[0]) ? n : undefined;
  }, 30_000);
  assert.ok(names[0] === 'Alice side' || names[0] === 'Bob side', `resolved to a side: ${names[0]}`);

  // hs2 goes down (process stops), the room goes on, hs2 restarts on the same database and catches up.
  const hs2Config = hs2.hs.services.config;
  await hs2.hs.stop();
  await capi(hs1, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/d1`, alice.access_token, { msgtype: 'm.text', body: 'while hs2 was down' });
  await capi(hs3, 'PUT', `/rooms/${enc(roomId)}/state/m.room.topic`, carol.access_token, { topic: 'changed while down' }).catch(() => undefined);
  const restarted = await startHomeserver(hs2Config, { logger: pino({ level: 'silent' }) });
  restarted.services.federationSender?.setTransport(new FederationClientTransport(restarted.services.federationClient));
  hs2.hs = restarted;
  try {
    // hs2 speaks first after its restart; hs1 hears from it, clears its backoff and sends the backlog.
    await capi(hs2, 'PUT', `/rooms/${enc(roomId)}/send/m.room.message/back`, bob.access_token, { msgtype: 'm.text', body: 'bob is back' });
    await eventually('hs2 caught up', async () => (await bodies(hs2, bob.access_token, roomId)).includes('while hs2 was down'), 40_000);
    await eventually('hs1 got bob back', async () => (await bodies(hs1, alice.access_token, roomId)).includes('bob is back'), 40_000);
  } finally {
    // The harness's stop() closes the first hs2 process (already stopped); this one is ours.
    await restarted.stop();
  }
});
