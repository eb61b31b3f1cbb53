// KeyRing: direct and notary fetches, signature checks, caching in memory and in the database
// (SQLite, or PostgreSQL with TEST_DATABASE_URL), valid_until_ts / 7-day cap / old keys, throttling.
// Remote servers are simulated behind the KeyTransport seam; the database is real.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Knex } from 'knex';
import { KeyRing, MAX_KEY_VALIDITY_MS, type KeyTransport, type OwnKeys } from '../../src/federation/keyring.js';
import { FederationKeysStore } from '../../src/storage/federation-keys-store.js';
import { openDatabase, migrate } from '../../src/storage/db.js';
import { generateSigningKey, signJson, verifyJsonSignature, type SigningKey } from '../../src/crypto/signing.js';
import { encodeBase64 } from '../../src/crypto/base64.js';
import { freshDatabase, type TestDatabase } from '../harness.js';

const dbs: { tdb: TestDatabase; db: Knex }[] = [];
after(async () => {
  for (const { tdb, db } of dbs) {
    await db.destroy();
    await tdb.drop();
  }
});

async function newDb(): Promise<Knex> {
  const tdb = await freshDatabase();
  const db = openDatabase({ url: tdb.url });
  await migrate(db);
  dbs.push({ tdb, db });
  return db;
}

const pub = (k: SigningKey) => encodeBase64(k.publicKey);

class Remote {
  key = generateSigningKey();
  old: { key: SigningKey; expiredTs: number }[] = [];
  validForMs = 3600_000;
  down = false;
  /** Rewrites the signed response (to simulate forgeries). */
  mutate?: (r: Record<string, unknown>) => Record<string, unknown>;
  constructor(readonly name: string) {}
  response(now: number): Record<string, unknown> {
    const body = signJson({
      server_name: this.name,
      valid_until_ts: now + this.validForMs,
      verify_keys: { [this.key.keyId]: { key: pub(this.key) } },
      old_verify_keys: Object.fromEntries(this.old.map((o) => [o.key.keyId, { key: pub(o.key), expired_ts: o.expiredTs }])),
    }, this.name, this.key);
    return this.mutate ? this.mutate(body) : body;
  }
  rotate(now: number): void {
    this.old.push({ key: this.key, expiredTs: now });
    this.key = generateSigningKey();
  }
}

function world(opts: { trusted?: { server_name: string; verify_keys?: Record<string, string> }[] } = {}) {
  const clock = { now: 1_700_000_000_000 };
  const remotes = new Map<string, Remote>();
  const calls: string[] = [];
  const add = (name: string) => {
    const r = new Remote(name);
    remotes.set(name, r);
    return r;
  };
  const transport: KeyTransport = {
    async getJson<T>(dest: string, path: string): Promise<T> {
      calls.push(`GET ${dest}${path}`);
      const r = remotes.get(dest);
      if (!r || r.down) throw new Error(`${dest} is down`);
      return r.response(clock.now) as T;
    },
    async request<T>(dest: string, method: string, path: string, o?: { body?: unknown }): Promise<T> {
      calls.push(`${method} ${dest}${path}`);
      const notary = remotes.get(dest);
      if (!notary || notary.down) throw new Error(`${dest} is down`);
      const asked = (o?.body as { server_keys: Record<string, unknown> }).server_keys;
      const server_keys = Object.keys(asked).filter((n) => remotes.has(n)).map((n) => signJson(remotes.get(n)!.response(clock.now), dest, notary.key));
      return { server_keys: server_keys.map((k) => (notary.mutate ? notary.mutate(k) : k)) } as T;
    },
  };
  const me = generateSigningKey();
  const ownKeys: OwnKeys = {
    serverName: 'me.test',
    keyResponse: (now = clock.now) => signJson({ server_name: 'me.test', valid_until_ts: now + 86400_000, verify_keys: { [me.keyId]: { key: pub(me) } }, old_verify_keys: {} }, 'me.test', me),
  };
  const ring = (db: Knex) => new KeyRing({ store: new FederationKeysStore(db), ownKeys, transport, trustedKeyServers: opts.trusted ?? [], now: () => clock.now, minRefetchIntervalMs: 60_000 });
  return { clock, remotes, calls, add, ring, me, ownKeys };
}

test('our own keys are answered locally', async () => {
  const w = world();
  const ring = w.ring(await newDb());
  const keys = await ring.verifyKeys('me.test', [w.me.keyId], { validAt: w.clock.now });
  assert.equal(keys.get(w.me.keyId)?.key, pub(w.me));
  assert.deepEqual(w.calls, []);
});

test('direct fetch, then memory and database caches; unknown key ids refetch at most once a minute', async () => {
  const w = world();
  const db = await newDb();
  const hs = w.add('a.test');
  const ring = w.ring(db);
  const k = await ring.verifyKeys('a.test', [hs.key.keyId]);
  assert.deepEqual(k.get(hs.key.keyId), { key: pub(hs.key), validUntilTs: w.clock.now + 3600_000 });
  assert.deepEqual(w.calls, ['GET a.test/_matrix/key/v2/server']);
  assert.equal(await ring.publicKey('a.test', hs.key.keyId, w.clock.now), pub(hs.key));
  assert.equal(w.calls.length, 1);
  // Another KeyRing (another process) finds it in the database.
  assert.equal(await w.ring(db).publicKey('a.test', hs.key.keyId), pub(hs.key));
  assert.equal(w.calls.length, 1);
  // The raw response is kept for serving as a notary.
  const row = await new FederationKeysStore(db).keyJson('a.test');
  assert.ok(verifyJsonSignature(JSON.parse(row!.key_json), 'a.test', hs.key.keyId, pub(hs.key)));

  // An unknown key id: one refetch, then none until the interval has passed (counted from the last
  // fetch, so right after the first one there was none).
  assert.equal(await ring.publicKey('a.test', 'ed25519:nope0'), undefined);
  assert.equal(w.calls.length, 1);
  w.clock.now += 60_001;
  assert.equal(await ring.publicKey('a.test', 'ed25519:nope'), undefined);
  assert.equal(w.calls.length, 2);
  assert.equal(await ring.publicKey('a.test', 'ed25519:nope2'), undefined);
  assert.equal(w.calls.length, 2);
  // Malformed key ids never cause a fetch.
  assert.equal(await ring.publicKey('a.test', 'rsa:x'), undefined);
  w.clock.now += 60_001;
  assert.equal(await ring.publicKey('a.test', 'ed25519:nope'), undefined);
  assert.equal(w.calls.length, 3);
  // Concurrent lookups share one fetch.
  w.clock.now += 60_001;
  await Promise.all([ring.publicKey('a.test', 'ed25519:x1'), ring.publicKey('a.test', 'ed25519:x2'), ring.publicKey('a.test', 'ed25519:x3')]);
  assert.equal(w.calls.length, 4);
});

test('valid_until_ts: stale keys are refetched when validity is required, capped at 7 days', async () => {
  const w = world();
  const db = await newDb();
  const hs = w.add('b.test');
  const ring = w.ring(db);
  const t0 = w.clock.now;
  await ring.verifyKeys('b.test', [hs.key.keyId]);
  w.clock.now = t0 + 2 * 3600_000; // the response said: refresh after one hour
  // Without validAt (room versions 1-4) the cached key serves, with no fetch.
  assert.ok((await ring.verifyKeys('b.test', [hs.key.keyId])).has(hs.key.keyId));
  assert.equal(w.calls.length, 1);
  // With validAt = now it must be refetched; the new response extends its validity.
  const fresh = await ring.verifyKeys('b.test', [hs.key.keyId], { validAt: w.clock.now });
  assert.equal(fresh.get(hs.key.keyId)?.validUntilTs, w.clock.now + 3600_000);
  assert.equal(w.calls.length, 2);
  // An event from the first hour still verifies (validity only grows).
  assert.ok((await ring.verifyKeys('b.test', [hs.key.keyId], { validAt: t0 + 60_000 })).has(hs.key.keyId));

  // A server claiming 30 days of validity gets 7.
  const c = w.add('c.test');
  c.validForMs = 30 * 24 * 3600_000;
  const k = await ring.verifyKeys('c.test', [c.key.keyId]);
  assert.equal(k.get(c.key.keyId)?.validUntilTs, w.clock.now + MAX_KEY_VALIDITY_MS);
  // Asking for validity beyond what the server gives yields nothing (after one refetch).
  assert.equal((await ring.verifyKeys('c.test', [c.key.keyId], { validAt: w.clock.now + 8 * 24 * 3600_000 })).size, 0);
});

test('old_verify_keys: valid until expired_ts', async () => {
  const w = world();
  const db = await newDb();
  const hs = w.add('d.test');
  const ring = w.ring(db);
  const oldKey = hs.key;
  await ring.verifyKeys('d.test', [oldKey.keyId]);
  w.clock.now += 10 * 60_000;
  const rotatedAt = w.clock.now - 1000;
  hs.rotate(rotatedAt);
  w.clock.now += 60_001;
  // A request signed with the new key: fetched; the response lists the old key as expired.
  assert.equal(await ring.publicKey('d.test', hs.key.keyId, w.clock.now), pub(hs.key));
  const before = await ring.verifyKeys('d.test', [oldKey.keyId], { validAt: rotatedAt - 1 });
  assert.deepEqual(before.get(oldKey.keyId), { key: pub(oldKey), validUntilTs: rotatedAt, expiredTs: rotatedAt });
  assert.equal((await ring.verifyKeys('d.test', [oldKey.keyId], { validAt: rotatedAt + 1 })).size, 0);
  // A ring that only ever saw the rotated response knows the old key too.
  const other = w.ring(await newDb());
  assert.equal(await other.publicKey('d.test', oldKey.keyId), pub(oldKey));
});

test('responses with a wrong server_name, a bad or missing self-signature are refused', async () => {
  const w = world();
  const ring = w.ring(await newDb());
  const forged = w.add('e.test');
  const attacker = generateSigningKey();
  forged.mutate = (r) => ({ ...r, verify_keys: { [attacker.keyId]: { key: pub(attacker) } } }); // signature no longer matches
  assert.equal(await ring.publicKey('e.test', attacker.keyId), undefined);
  const wrongName = w.add('f.test');
  wrongName.mutate = (r) => signJson({ ...r, server_name: 'g.test', signatures: undefined } as Record<string, unknown>, 'g.test', wrongName.key);
  assert.equal(await ring.publicKey('f.test', wrongName.key.keyId), undefined);
  const unsigned = w.add('h.test');
  unsigned.mutate = (r) => ({ ...r, signatures: {} });
  assert.equal(await ring.publicKey('h.test', unsigned.key.keyId), undefined);
  const signedByOther = w.add('i.test');
  signedByOther.mutate = (r) => signJson({ ...r, signatures: undefined } as Record<string, unknown>, 'i.test', attacker);
  assert.equal(await ring.publicKey('i.test', signedByOther.key.keyId), undefined);
});

test('notaries: used when the server is down; their signature is checked with configured or fetched keys', async () => {
  const notaryKey = generateSigningKey();
  const w = world({ trusted: [{ server_name: 'n1.test', verify_keys: { [notaryKey.keyId]: pub(notaryKey) } }, { server_name: 'n2.test' }] });
  const n1 = w.add('n1.test');
  n1.key = notaryKey;
  const n2 = w.add('n2.test');
  const target = w.add('t.test');
  target.down = true;
  const ring = w.ring(await newDb());
  assert.equal(await ring.publicKey('t.test', target.key.keyId, w.clock.now), pub(target.key));
  assert.deepEqual(w.calls, ['GET t.test/_matrix/key/v2/server', 'POST n1.test/_matrix/key/v2/query']);

  // n1 forges: its signature no longer verifies, so n2 (whose key we fetch from n2 itself) is asked.
  const t2 = w.add('t2.test');
  t2.down = true;
  n1.mutate = (r) => ({ ...r, valid_until_ts: (r.valid_until_ts as number) + 1 });
  w.calls.length = 0;
  assert.equal(await ring.publicKey('t2.test', t2.key.keyId), pub(t2.key));
  assert.deepEqual(w.calls, ['GET t2.test/_matrix/key/v2/server', 'POST n1.test/_matrix/key/v2/query', 'POST n2.test/_matrix/key/v2/query', 'GET n2.test/_matrix/key/v2/server']);

  // A notary relaying a response whose origin signature does not verify is refused, even though
  // the notary signed it.
  const t3 = w.add('t3.test');
  t3.down = true;
  n1.down = true;
  const forger = generateSigningKey();
  n2.mutate = (r) => {
    const { signatures, ...rest } = r as { signatures: Record<string, Record<string, string>> };
    const tampered = { ...rest, verify_keys: { [t3.key.keyId]: { key: pub(forger) } } };
    return signJson({ ...tampered, signatures: { 't3.test': signatures['t3.test'] } }, 'n2.test', n2.key);
  };
  w.clock.now += 60_001;
  w.calls.length = 0;
  assert.equal(await ring.publicKey('t3.test', t3.key.keyId), undefined);
  assert.ok(w.calls.includes('POST n2.test/_matrix/key/v2/query'));
});

test('notary serving: cached responses, refreshed when not valid long enough, stale when the server is down', async () => {
  const w = world();
  const db = await newDb();
  const hs = w.add('s.test');
  const ring = w.ring(db);
  const [first] = await ring.notaryResponses('s.test');
  assert.equal(first.server_name, 's.test');
  assert.ok(verifyJsonSignature(first, 's.test', hs.key.keyId, pub(hs.key)));
  assert.equal(w.calls.length, 1);
  await ring.notaryResponses('s.test', { minimumValidUntilTs: w.clock.now + 1000 });
  assert.equal(w.calls.length, 1);
  w.clock.now += 2 * 3600_000;
  const [second] = await ring.notaryResponses('s.test');
  assert.equal(second.valid_until_ts, w.clock.now + 3600_000);
  assert.equal(w.calls.length, 2);
  hs.down = true;
  w.clock.now += 2 * 3600_000;
  const [stale] = await ring.notaryResponses('s.test');
  assert.equal(stale.valid_until_ts, second.valid_until_ts);
  assert.deepEqual(await ring.notaryResponses('unknown.test'), []);
  assert.deepEqual(await ring.notaryResponses('bad name'), []);
  const [own] = await ring.notaryResponses('me.test');
  assert.ok(verifyJsonSignature(own, 'me.test', w.me.keyId, pub(w.me)));
});

test('keys another process fetched are found in the database, even within the refetch interval', async () => {
  const w = world();
  const db = await newDb();
  const hs = w.add('z.test');
  hs.down = true;
  const ring1 = w.ring(db);
  assert.equal(await ring1.publicKey('z.test', hs.key.keyId), undefined);
  hs.down = false;
  const ring2 = w.ring(db);
  assert.equal(await ring2.publicKey('z.test', hs.key.keyId), pub(hs.key));
  const fetches = w.calls.length;
  assert.equal(await ring1.publicKey('z.test', hs.key.keyId), pub(hs.key));
  assert.equal(w.calls.length, fetches);
});
