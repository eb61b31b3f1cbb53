// The federation outbox against a test peer: a real local HTTP server standing in for the remote
// homeservers, which records every transaction and answers as each test tells it to. The
// homeserver is real (HTTP client API, EventPersister, outbox hook, job queue, sender); only the
// transport's address book is the test's: every destination is delivered to the peer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { loadConfig } from '../../src/config/index.js';
import { startHomeserver, type Homeserver } from '../../src/main.js';
import { DestinationUnavailable, FederationError } from '../../src/federation/client.js';
import { classifyFailure, TransportError, type FederationSenderOptions, type TransactionBody, type TransactionResponse, type TransactionTransport } from '../../src/federation/sender.js';
import { api, freshDatabase, registerUser, redisUrl, usingPostgres, type TestDatabase } from '../harness.js';

const c = (p: string) => `/_matrix/client/v3${p}`;
const enc = encodeURIComponent;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// The test peer

interface Received { destination: string; txnId: string; body: TransactionBody; at: number }
type Answer = { status: number; body: unknown };

class Peer {
  readonly received: Received[] = [];
  /** Every request, failed ones included. */
  readonly attempts: Received[] = [];
  /** Decides the answer to a request (default: 200, every PDU accepted). */
  answer: (r: Received) => Promise<Answer> | Answer = () => ({ status: 200, body: { pdus: {} } });
  private inflight = new Map<string, number>();
  maxInflight = 0;
  private server!: http.Server;
  url = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (b: Buffer) => chunks.push(b));
      req.on('end', async () => {
        const m = /^\/_matrix\/federation\/v1\/send\/([^/?]+)$/.exec(req.url ?? '');
        if (req.method !== 'PUT' || !m) {
          res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errcode: 'M_UNRECOGNIZED' }));
          return;
        }
        const destination = String(req.headers['x-destination']);
        const r: Received = { destination, txnId: decodeURIComponent(m[1]), body: JSON.parse(Buffer.concat(chunks).toString('utf8')), at: Date.now() };
        const n = (this.inflight.get(destination) ?? 0) + 1;
        this.inflight.set(destination, n);
        this.maxInflight = Math.max(this.maxInflight, n);
        this.attempts.push(r);
        try {
          const a = await this.answer(r);
          if (a.status === 200) this.received.push(r);
          res.writeHead(a.status, { 'content-type': 'application/json' }).end(JSON.stringify(a.body));
        } finally {
          this.inflight.set(destination, (this.inflight.get(destination) ?? 1) - 1);
        }
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  to(destination: string): Received[] {
    return this.received.filter((r) => r.destination === destination);
  }

  /** Message bodies delivered to a destination, in delivery order. */
  bodies(destination: string): string[] {
    return this.to(destination).flatMap((r) => r.body.pdus as { type: string; content: { body?: string } }[])
      .filter((p) => p.type === 'm.room.message').map((p) => String(p.content.body));
  }
}

/** Delivers every destination's transactions to the peer over HTTP (what FederationClient does for real). */
class PeerTransport implements TransactionTransport {
  constructor(private readonly peer: Peer) {}

  async sendTransaction(destination: string, txnId: string, body: TransactionBody): Promise<TransactionResponse> {
    let res: Response;
    try {
      res = await fetch(`${this.peer.url}/_matrix/federation/v1/send/${encodeURIComponent(txnId)}`, {
        method: 'PUT', headers: { 'content-type': 'application/json', 'x-destination': destination }, body: JSON.stringify(body),
      });
    } catch (err) {
      throw new TransportError((err as Error).message);
    }
    const json = await res.json().catch(() => ({})) as { pdus?: TransactionResponse['pdus']; errcode?: string };
    if (res.status !== 200) throw new TransportError(`HTTP ${res.status} ${json.errcode ?? ''}`, res.status);
    return { pdus: json.pdus ?? {} };
  }
}

// A homeserver wired to the peer

interface Srv { hs: Homeserver; url: string; stop(): Promise<void> }

async function startServer(db: TestDatabase, peer: Peer, sender: Partial<FederationSenderOptions> = {}): Promise<Srv> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'lattice-data-'));
  const config = loadConfig({
    file: null,
    env: {},
    overrides: {
      server_name: 'localhost',
      data_dir: dataDir,
      database: { url: db.url },
      redis: { url: redisUrl },
      listeners: [{ address: '127.0.0.1', port: 0, apis: ['client', 'federation'] }],
      registration: { mode: 'open', shared_secret: 'test-shared-secret' },
      rate_limits: { enabled: false },
      logging: { level: process.env.TEST_LOG_LEVEL ?? 'silent' },
    },
  });
  const hs = await startHomeserver(config, {
    logger: pino({ level: config.logging.level }),
    federationTransport: new PeerTransport(peer),
    federationSender: { minBackoffMs: 100, backoffJitter: 0, ...sender },
  });
  return {
    hs,
    url: hs.listeners[0].url,
    async stop() {
      await hs.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A local user's public room that remote users have joined (their joins persisted as if received). */
async function roomWithRemotes(srv: Srv, remotes: string[]): Promise<{ roomId: string; token: string }> {
  const alice = await registerUser(srv.url);
  const created = await api(srv.url, 'POST', c('/createRoom'), { token: alice.access_token, body: { preset: 'public_chat' } });
  assert.equal(created.status, 200, JSON.stringify(created.body));
  for (const r of remotes) await srv.hs.services.rooms.join(r, created.body.room_id);
  return { roomId: created.body.room_id, token: alice.access_token };
}

async function say(srv: Srv, room: { roomId: string; token: string }, body: string): Promise<string> {
  const r = await api(srv.url, 'PUT', c(`/rooms/${enc(room.roomId)}/send/m.room.message/${enc(body)}-${Date.now()}-${Math.random()}`), { token: room.token, body: { msgtype: 'm.text', body } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.event_id;
}

async function outboxCounts(srv: Srv): Promise<{ pdus: number; edus: number }> {
  const db = srv.hs.services.db;
  const p = await db('federation_outbox_pdus').count({ n: '*' }).first();
  const e = await db('federation_outbox_edus').count({ n: '*' }).first();
  return { pdus: Number(p?.n), edus: Number(e?.n) };
}

async function destinationRow(srv: Srv, destination: string) {
  return srv.hs.services.db('federation_destinations').where({ destination }).first();
}

/** Holds every request until released (answers 200 then). */
function gate(peer: Peer): { release(): void; waiting(): number } {
  let open!: () => void;
  const opened = new Promise<void>((r) => { open = r; });
  let waiting = 0;
  peer.answer = async () => {
    waiting++;
    await opened;
    return { status: 200, body: { pdus: {} } };
  };
  return { release: () => open(), waiting: () => waiting };
}

async function withSetup(fn: (ctx: { peer: Peer; db: TestDatabase }) => Promise<void>): Promise<void> {
  const peer = new Peer();
  await peer.start();
  const db = await freshDatabase();
  try {
    await fn({ peer, db });
  } finally {
    await peer.stop();
    await db.drop();
  }
}

test('delivery failures: which are retried, and after how long', () => {
  const now = Date.now();
  const c = (err: unknown) => {
    const f = classifyFailure(err);
    return [f.retry, f.status];
  };
  assert.deepEqual(c(new TransportError('ECONNREFUSED')), [true, null]);
  assert.deepEqual(c(new Error('socket hang up')), [true, null]);
  assert.deepEqual(c(new FederationError('x', 500, 'M_UNKNOWN', {})), [true, 500]);
  assert.deepEqual(c(new FederationError('x', 502, undefined, '')), [true, 502]);
  assert.deepEqual(c(new FederationError('x', 408, undefined, {})), [true, 408]);
  assert.deepEqual(c(new FederationError('x', 400, 'M_BAD_JSON', {})), [false, 400]);
  assert.deepEqual(c(new FederationError('x', 403, 'M_FORBIDDEN', {})), [false, 403]);
  assert.deepEqual(c(new FederationError('x', 404, 'M_UNRECOGNIZED', {})), [false, 404]);
  const limited = classifyFailure(new FederationError('x', 429, 'M_LIMIT_EXCEEDED', { retry_after_ms: 12_345 }));
  assert.equal(limited.retry, true);
  assert.equal(limited.retryAfterMs, 12_345);
  const down = classifyFailure(new DestinationUnavailable('x', now + 30_000, 'down'));
  assert.equal(down.retry, true);
  assert.ok(down.retryAfterMs! > 29_000 && down.retryAfterMs! <= 30_000);
});

test('events go to every other server in the room, oldest first, at most 50 per transaction', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer);
  try {
    const room = await roomWithRemotes(srv, ['@bob:remote-a.test', '@carol:remote-b.test', '@dave:remote-b.test']);
    assert.equal(peer.attempts.length, 0, 'the remote joins themselves are not sent back');
    const g = gate(peer);
    await say(srv, room, 'm0');
    await until(() => g.waiting() === 2, 10_000, 'the first transactions to be in flight');
    const sent = ['m0'];
    for (let i = 1; i <= 120; i++) {
      await say(srv, room, `m${i}`);
      sent.push(`m${i}`);
    }
    g.release();
    for (const d of ['remote-a.test', 'remote-b.test']) {
      await until(() => peer.bodies(d).length === 121, 20_000, `all events at ${d}`);
      assert.deepEqual(peer.bodies(d), sent, `order at ${d}`);
      const txns = peer.to(d);
      assert.ok(txns.every((t) => t.body.pdus.length <= 50), `sizes ${txns.map((t) => t.body.pdus.length)}`);
      assert.ok(txns.some((t) => t.body.pdus.length === 50), 'the backlog is sent in full batches');
      assert.equal(new Set(txns.map((t) => t.txnId)).size, txns.length, 'txn ids are unique');
      for (const t of txns) {
        assert.equal(t.body.origin, 'localhost');
        assert.equal(typeof t.body.origin_server_ts, 'number');
        for (const p of t.body.pdus as Record<string, unknown>[]) {
          assert.equal(p.unsigned, undefined, 'no unsigned in a PDU');
          assert.ok(p.signatures && p.hashes, 'PDUs are signed and hashed');
        }
      }
    }
    assert.equal(peer.maxInflight, 1, 'one transaction in flight per destination');
    await until(async () => (await outboxCounts(srv)).pdus === 0, 5000, 'an empty outbox');
    assert.ok(!peer.received.some((r) => r.destination === 'localhost'), 'nothing is sent to ourselves');
  } finally {
    await srv.stop();
  }
}));

test('membership changes of remote users also go to their server; remote events are not relayed', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer);
  try {
    const room = await roomWithRemotes(srv, ['@bob:remote-a.test']);
    const alice = (await api(srv.url, 'GET', c('/account/whoami'), { token: room.token })).body.user_id;
    // A remote user with no joined member on its server: invited, then the invite is withdrawn.
    // (Persisted directly: the room service's invite path also asks the invitee's server to
    // countersign over federation, which is not what this test is about.)
    const info = (await srv.hs.services.roomData.room(room.roomId))!;
    for (const membership of ['invite', 'leave']) {
      await srv.hs.services.persister.send(info, { sender: alice, type: 'm.room.member', stateKey: '@erin:remote-c.test', content: { membership } });
    }
    // An event "received" from remote-a (sender is remote): not sent anywhere.
    await srv.hs.services.rooms.send('@bob:remote-a.test', 'DEV', room.roomId, 'm.room.message', { msgtype: 'm.text', body: 'from bob' }, 't1');
    await say(srv, room, 'after');
    await until(() => peer.bodies('remote-a.test').includes('after'), 10_000, 'delivery to remote-a');
    await until(() => peer.to('remote-c.test').flatMap((t) => t.body.pdus).length === 2, 10_000, 'the invite and its withdrawal at remote-c');
    const toC = peer.to('remote-c.test').flatMap((t) => t.body.pdus as { type: string; state_key: string; content: { membership: string } }[]);
    assert.deepEqual(toC.map((p) => [p.type, p.state_key, p.content.membership]), [
      ['m.room.member', '@erin:remote-c.test', 'invite'],
      ['m.room.member', '@erin:remote-c.test', 'leave'],
    ]);
    await sleep(200);
    assert.ok(!peer.bodies('remote-a.test').includes('from bob'), 'remote events are not relayed');
    assert.ok(!peer.bodies('remote-c.test').includes('after'), 'no messages to a server with nobody joined');
  } finally {
    await srv.stop();
  }
}));

test('a failing destination is retried with the same transaction and a persisted backoff; per-PDU errors are not retried', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer, { minBackoffMs: 150 });
  try {
    const room = await roomWithRemotes(srv, ['@bob:remote-a.test']);
    let calls = 0;
    peer.answer = (r) => {
      calls++;
      if (calls <= 2) return { status: calls === 1 ? 500 : 502, body: { errcode: 'M_UNKNOWN' } };
      const eventId = `$${r.txnId}`;
      return { status: 200, body: { pdus: { [eventId]: { error: 'You are not allowed to send a message to this room.' } } } };
    };
    await say(srv, room, 'persistent');
    await until(async () => (await destinationRow(srv, 'remote-a.test'))?.retry_count === 1, 10_000, 'the first failure to be recorded');
    const failed = await destinationRow(srv, 'remote-a.test');
    assert.ok(Number(failed.next_attempt_ts) > Number(failed.last_failure_ts), 'next attempt is in the future');
    assert.match(failed.last_error, /HTTP 500/);
    assert.ok(failed.txn_id, 'the transaction in flight is kept');

    await until(() => peer.received.length === 1, 10_000, 'delivery after two failures');
    assert.equal(peer.attempts.length, 3);
    assert.equal(new Set(peer.attempts.map((a) => a.txnId)).size, 1, 'retries reuse the txn id (spec: retry until 200)');
    assert.deepEqual(peer.attempts[2].body, peer.attempts[0].body, 'and the same body');
    const gaps = [peer.attempts[1].at - peer.attempts[0].at, peer.attempts[2].at - peer.attempts[1].at];
    assert.ok(gaps[0] >= 140, `first retry after ${gaps[0]} ms`);
    assert.ok(gaps[1] >= 290, `second retry after ${gaps[1]} ms (doubled)`);

    await until(async () => (await destinationRow(srv, 'remote-a.test'))?.retry_count === 0, 5000, 'the backoff reset');
    const ok = await destinationRow(srv, 'remote-a.test');
    assert.equal(Number(ok.next_attempt_ts), 0);
    assert.ok(Number(ok.last_success_ts) > 0);
    assert.equal(ok.txn_id, null);
    await sleep(500);
    assert.equal(peer.attempts.length, 3, 'a PDU the destination rejected is not sent again');
    assert.deepEqual(await outboxCounts(srv), { pdus: 0, edus: 0 });
  } finally {
    await srv.stop();
  }
}));

test('a 4xx for a whole transaction drops it; the next one goes through', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer);
  try {
    const room = await roomWithRemotes(srv, ['@bob:remote-a.test']);
    peer.answer = (r) => (r.body.pdus as { content: { body?: string } }[]).some((p) => p.content.body === 'refused')
      ? { status: 400, body: { errcode: 'M_BAD_JSON', error: 'no' } }
      : { status: 200, body: { pdus: {} } };
    await say(srv, room, 'refused');
    await until(() => peer.attempts.length === 1, 10_000, 'the refused attempt');
    await until(async () => (await outboxCounts(srv)).pdus === 0, 5000, 'the refused transaction to be dropped');
    await say(srv, room, 'accepted');
    await until(() => peer.bodies('remote-a.test').includes('accepted'), 10_000, 'the next event');
    await sleep(300);
    assert.equal(peer.attempts.length, 2, 'the refused transaction was not retried');
    assert.equal((await destinationRow(srv, 'remote-a.test')).retry_count, 0, 'a 4xx is not a reason to back off');
  } finally {
    await srv.stop();
  }
}));

test('markDestinationUp forgets the backoff and sends at once', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer, { minBackoffMs: 120_000 });
  try {
    const room = await roomWithRemotes(srv, ['@bob:remote-a.test']);
    peer.answer = () => ({ status: 503, body: {} });
    await say(srv, room, 'while down');
    await until(async () => (await destinationRow(srv, 'remote-a.test'))?.retry_count === 1, 10_000, 'the failure');
    await say(srv, room, 'queued behind the backoff');
    await sleep(300);
    assert.equal(peer.attempts.length, 1, 'no attempt while backing off');
    peer.answer = () => ({ status: 200, body: { pdus: {} } });
    const sender = srv.hs.services.federationSender!;
    await sender.markDestinationUp('remote-other.test'); // no row: nothing to do
    await sender.markDestinationUp('remote-a.test');
    await until(() => peer.bodies('remote-a.test').length === 2, 5000, 'delivery after markDestinationUp');
    assert.deepEqual(peer.bodies('remote-a.test'), ['while down', 'queued behind the backoff']);
  } finally {
    await srv.stop();
  }
}));

test('EDUs: at most 100 per transaction, a dedupe key keeps only the newest, transactional enqueue waits for commit', () => withSetup(async ({ peer, db }) => {
  const srv = await startServer(db, peer);
  try {
    const sender = srv.hs.services.federationSender!;
    const g = gate(peer);
    await sender.enqueueEdu('remote-a.test', { edu_type: 'm.presence', content: { push: [] } });
    await until(() => g.waiting() === 1, 10_000, 'the first transaction in flight');
    for (let i = 0; i < 3; i++) {
      await sender.enqueueEdu(['remote-a.test', 'localhost'], { edu_type: 'm.typing', content: { room_id: '!r:localhost', user_id: '@a:localhost', typing: i < 2, n: i } }, { dedupeKey: 'typing:!r:localhost:@a:localhost' });
    }
    for (let i = 0; i < 150; i++) await sender.enqueueEdu('remote-a.test', { edu_type: 'm.direct_to_device', content: { n: i } });
    // Written in a transaction that rolls back: never sent. In one that commits: sent.
    await srv.hs.services.db.transaction(async (trx) => {
      await sender.enqueueEdu('remote-a.test', { edu_type: 'm.receipt', content: { rolled: 'back' } }, { trx });
      throw new Error('rollback');
    }).catch(() => undefined);
    await srv.hs.services.db.transaction(async (trx) => {
      await sender.enqueueEdu('remote-a.test', { edu_type: 'm.receipt', content: { committed: true } }, { trx });
    });
    g.release();
    const edus = () => peer.to('remote-a.test').flatMap((t) => t.body.edus as { edu_type: string; content: Record<string, unknown> }[]);
    await until(() => edus().some((e) => e.edu_type === 'm.receipt'), 10_000, 'all EDUs');
    const all = edus();
    assert.ok(peer.to('remote-a.test').every((t) => t.body.edus.length <= 100));
    const typing = all.filter((e) => e.edu_type === 'm.typing');
    assert.deepEqual(typing.map((e) => e.content.n), [2], 'only the newest typing EDU');
    assert.deepEqual(all.filter((e) => e.edu_type === 'm.direct_to_device').map((e) => e.content.n), [...Array(150).keys()], 'in order');
    assert.deepEqual(all.filter((e) => e.edu_type === 'm.receipt').map((e) => e.content), [{ committed: true }]);
    assert.ok(!peer.received.some((r) => r.destination === 'localhost'));
    await until(async () => (await outboxCounts(srv)).edus === 0, 5000, 'an empty outbox');
  } finally {
    await srv.stop();
  }
}));

test('queued events survive a restart: a new server on the same database sends them', () => withSetup(async ({ peer, db }) => {
  peer.answer = () => ({ status: 503, body: {} });
  const one = await startServer(db, peer, { minBackoffMs: 200 });
  let room: { roomId: string; token: string };
  try {
    room = await roomWithRemotes(one, ['@bob:remote-a.test']);
    for (const b of ['r1', 'r2', 'r3']) await say(one, room, b);
    await until(async () => ((await destinationRow(one, 'remote-a.test'))?.retry_count ?? 0) >= 1, 10_000, 'a failed attempt');
  } finally {
    await one.stop();
  }
  const failedTxnIds = new Set(peer.attempts.map((a) => a.txnId));
  assert.ok(failedTxnIds.size >= 1);
  peer.answer = () => ({ status: 200, body: { pdus: {} } });
  const two = await startServer(db, peer, { minBackoffMs: 200 });
  try {
    await until(() => peer.bodies('remote-a.test').length === 3, 10_000, 'delivery by the new server');
    assert.deepEqual(peer.bodies('remote-a.test'), ['r1', 'r2', 'r3']);
    assert.ok(failedTxnIds.has(peer.received[0].txnId), 'the transaction in flight at the restart is re-sent as it was');
    await until(async () => (await outboxCounts(two)).pdus === 0, 5000, 'an empty outbox');
    // And the new server keeps sending new events.
    await say(two, room!, 'r4');
    await until(() => peer.bodies('remote-a.test').includes('r4'), 10_000, 'a new event');
  } finally {
    await two.stop();
  }
}));

test('two processes sharing PostgreSQL never send to one destination at once, nor twice', { skip: usingPostgres ? false : 'needs TEST_DATABASE_URL (PostgreSQL)' }, () => withSetup(async ({ peer, db }) => {
  peer.answer = async () => {
    await sleep(15);
    return { status: 200, body: { pdus: {} } };
  };
  const one = await startServer(db, peer);
  const two = await startServer(db, peer);
  try {
    const room = await roomWithRemotes(one, ['@bob:remote-a.test', '@carol:remote-b.test']);
    const senders = [one.hs.services.federationSender!, two.hs.services.federationSender!];
    let hammering = true;
    // Both processes keep trying to drain both destinations while events are written via both.
    const hammer = (async () => {
      while (hammering) {
        await Promise.all(senders.flatMap((s) => ['remote-a.test', 'remote-b.test'].flatMap((d) => [s.drain(d), s.drain(d)])));
        await sleep(5);
      }
    })();
    const sent: string[] = [];
    for (let i = 0; i < 80; i++) {
      const body = `p${i}`;
      await say(i % 2 ? two : one, room, body);
      sent.push(body);
    }
    for (const d of ['remote-a.test', 'remote-b.test']) {
      await until(() => peer.bodies(d).length >= sent.length, 20_000, `delivery to ${d}`);
    }
    hammering = false;
    await hammer;
    await sleep(200);
    for (const d of ['remote-a.test', 'remote-b.test']) assert.deepEqual(peer.bodies(d), sent, `each event once, in order, at ${d}`);
    assert.equal(peer.maxInflight, 1, 'never two transactions in flight to one destination');
    assert.equal(new Set(peer.received.map((r) => `${r.destination} ${r.txnId}`)).size, peer.received.length);
  } finally {
    await one.stop();
    await two.stop();
  }
}));
