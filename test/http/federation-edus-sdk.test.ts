// An encrypted conversation between two matrix-js-sdk clients with Rust crypto on different
// servers: device keys and one-time keys fetched across federation, the Megolm room key sent as an
// Olm-encrypted to-device message through m.direct_to_device, and the messages decrypted each side.
import 'fake-indexeddb/auto';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Agent, fetch as undiciFetch } from 'undici';
import { createClient, type MatrixClient, type MatrixEvent } from 'matrix-js-sdk';
import { LoggerLevel, Tracing } from '@matrix-org/matrix-sdk-crypto-wasm';
import { startFederation, fedApi, closeFedAgents, type Federation, type FedServer } from '../federation-harness.js';
import { startSyncing, waitFor } from '../sdk.js';

// matrix-js-sdk arms a 60 s abort timer for each crypto request and never clears it; such timers
// must not keep the test process alive once the tests are done.
const realSetTimeout = globalThis.setTimeout;
globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
  const t = realSetTimeout(fn, ms, ...args);
  if ((ms ?? 0) >= 60_000) t.unref();
  return t;
}) as typeof setTimeout;

// The SDK logs every step of encryption (debug and info, one logger per module, each set to debug);
// the test wants warnings only.
console.debug = () => undefined;
console.info = () => undefined;

let fed: Federation;
const clients: MatrixClient[] = [];
const agents: Agent[] = [];
before(async () => { fed = await startFederation(2); });
after(async () => {
  for (const c of clients) c.stopClient();
  await fed?.stop();
  await closeFedAgents();
  await Promise.all(agents.map((a) => a.close()));
});

interface Login { user_id: string; access_token: string; device_id: string }

async function register(s: FedServer, name: string): Promise<Login> {
  const username = `${name}${Date.now().toString(36)}${Math.floor(Math.random() * 1e6)}`;
  const r = await fedApi(fed.ca, s, 'POST', '/_matrix/client/v3/register', { body: { username, password: 'pw', auth: { type: 'm.login.dummy' } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body as Login;
}

/** A client of `s`'s TLS listener (the client API is there too), trusting the run's CA. */
async function cryptoClient(s: FedServer, u: Login): Promise<MatrixClient> {
  const agent = new Agent({ connect: { ca: readFileSync(fed.ca.caFile, 'utf8'), servername: s.serverName } });
  agents.push(agent);
  const fetchFn = ((input: string | URL | Request, init?: RequestInit) =>
    undiciFetch(input as never, { ...(init as object), dispatcher: agent } as never)) as unknown as typeof globalThis.fetch;
  const client = createClient({ baseUrl: s.fedUrl, fetchFn, accessToken: u.access_token, userId: u.user_id, deviceId: u.device_id });
  clients.push(client);
  await client.initRustCrypto({ useIndexedDB: false });
  new Tracing(LoggerLevel.Warn).minLevel = LoggerLevel.Warn;
  return client;
}

function decryptedBodies(client: MatrixClient, roomId: string): string[] {
  const events = client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? [];
  return events.filter((e: MatrixEvent) => e.isEncrypted() && !e.isDecryptionFailure() && e.getType() === 'm.room.message').map((e) => e.getContent().body as string);
}

test('two Rust crypto clients on different servers talk in an encrypted room', { timeout: 90_000 }, async () => {
  const [hs1, hs2] = fed.servers;
  const aliceLogin = await register(hs1, 'alice');
  const bobLogin = await register(hs2, 'bob');
  const alice = await cryptoClient(hs1, aliceLogin);
  const bob = await cryptoClient(hs2, bobLogin);
  await startSyncing(alice);
  await startSyncing(bob);

  // Both devices' keys are uploaded and visible from the other server.
  const keysVisible = async (s: FedServer, asker: Login, target: Login) => {
    for (let i = 0; i < 200; i++) {
      const q = await fedApi(fed.ca, s, 'POST', '/_matrix/client/v3/keys/query', { body: { device_keys: { [target.user_id]: [] } }, headers: { authorization: `Bearer ${asker.access_token}` } });
      if (q.body?.device_keys?.[target.user_id]?.[target.device_id]) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`keys of ${target.user_id} not visible on ${s.serverName}`);
  };
  await keysVisible(hs1, aliceLogin, bobLogin);
  await keysVisible(hs2, bobLogin, aliceLogin);

  const { room_id: roomId } = await alice.createRoom({
    preset: 'private_chat' as never,
    invite: [bobLogin.user_id],
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  });
  await waitFor(bob, () => bob.getRoom(roomId), 20_000, 'bob gets the invite');
  await bob.joinRoom(roomId, { viaServers: [hs1.serverName] });
  await waitFor(alice, () => alice.getRoom(roomId)?.getMember(bobLogin.user_id)?.membership === 'join', 20_000, 'alice sees bob join');

  await alice.sendTextMessage(roomId, 'hello from hs1, encrypted');
  await waitFor(bob, () => decryptedBodies(bob, roomId).includes('hello from hs1, encrypted'), 30_000, 'bob decrypts alice\'s message');

  await bob.sendTextMessage(roomId, 'hello back from hs2');
  await waitFor(alice, () => decryptedBodies(alice, roomId).includes('hello back from hs2'), 30_000, 'alice decrypts bob\'s reply');

  // What the servers stored is ciphertext.
  const raw = await fedApi(fed.ca, hs2, 'GET', `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/messages?dir=b&limit=20`, { headers: { authorization: `Bearer ${bobLogin.access_token}` } });
  const types = raw.body.chunk.map((e: { type: string }) => e.type);
  assert.ok(types.includes('m.room.encrypted'));
  assert.ok(!types.includes('m.room.message'));
});
