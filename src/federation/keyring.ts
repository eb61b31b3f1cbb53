// Other servers' signing keys (spec "Retrieving server keys"): fetched from the server itself
// (GET /_matrix/key/v2/server) or through the configured notaries (POST /_matrix/key/v2/query),
// checked (the origin's self-signature, the notary's signature, server_name), kept in the database
// and in memory. Our own keys are answered from ServerKeys without HTTP.
//
// Validity: a key listed in verify_keys is valid until the response's valid_until_ts, capped at 7 days
// after we received it ("Servers MUST use the lesser of this field and 7 days into the future"); a key
// in old_verify_keys is valid until its expired_ts. Room versions 5+ need a key valid at the event's
// origin_server_ts (`validAt`); versions 1-4 ignore validity (no `validAt`). A key that is missing or
// not valid long enough triggers a refetch, at most once per `minRefetchIntervalMs` per server, so
// requests naming unknown key ids cannot make us hammer a server.
import type { Knex } from 'knex';
import type { Logger } from 'pino';
import { verifyJsonSignature, publicKeyObject } from '../crypto/signing.js';
import { Lru } from '../rooms/lru.js';
import type { FederationKeysStore, RemoteServerKeyRow } from '../storage/federation-keys-store.js';
import { isValidServerName } from './server-name.js';

export const MAX_KEY_VALIDITY_MS = 7 * 24 * 3600_000;
const KEY_ID = /^ed25519:[A-Za-z0-9_]+$/;

export interface ServerVerifyKey {
  /** Unpadded base64 Ed25519 public key. */
  key: string;
  /** Valid until (ms); for an old key, its expiredTs. */
  validUntilTs: number;
  /** Set when the server lists the key under old_verify_keys. */
  expiredTs?: number;
}

export interface TrustedKeyServer { server_name: string; verify_keys?: Record<string, string> }

/** What the key ring needs from the federation client (unauthenticated GET, signed POST). */
export interface KeyTransport {
  getJson<T>(destination: string, path: string, opts?: { timeoutMs?: number }): Promise<T>;
  request<T>(destination: string, method: string, path: string, opts?: { body?: unknown; timeoutMs?: number }): Promise<T>;
}

/** Our own keys: the signed body of GET /_matrix/key/v2/server (ServerKeys). */
export interface OwnKeys {
  readonly serverName: string;
  keyResponse(now?: number): Record<string, unknown>;
}

export class KeyLookupError extends Error {}

export interface KeyRingOptions {
  store: FederationKeysStore;
  ownKeys: OwnKeys;
  transport: KeyTransport;
  trustedKeyServers?: readonly TrustedKeyServer[];
  logger?: Logger;
  now?: () => number;
  minRefetchIntervalMs?: number;
  fetchTimeoutMs?: number;
  db?: Knex;
}

type KeyResponse = Record<string, unknown> & {
  server_name: string;
  valid_until_ts: number;
  verify_keys: Record<string, { key: string }>;
  old_verify_keys?: Record<string, { key: string; expired_ts: number }>;
  signatures: Record<string, Record<string, string>>;
};

export class KeyRing {
  private readonly mem = new Lru<string, Map<string, ServerVerifyKey>>(5000);
  private readonly inflight = new Map<string, Promise<void>>();
  private readonly lastAttempt = new Map<string, number>();
  private readonly now: () => number;
  private readonly minRefetchMs: number;
  private readonly fetchTimeoutMs: number;
  private readonly trusted: readonly TrustedKeyServer[];

  constructor(private readonly opts: KeyRingOptions) {
    this.now = opts.now ?? Date.now;
    this.minRefetchMs = opts.minRefetchIntervalMs ?? 30_000;
    this.fetchTimeoutMs = opts.fetchTimeoutMs ?? 15_000;
    this.trusted = opts.trustedKeyServers ?? [];
  }

  get serverName(): string {
    return this.opts.ownKeys.serverName;
  }

  /**
   * The requested keys of `serverName` that we have or can fetch, and (with `validAt`) that are valid
   * at that time. Keys we cannot find are absent from the map; this never throws for network errors.
   */
  async verifyKeys(serverName: string, keyIds: string[], opts: { validAt?: number } = {}): Promise<Map<string, ServerVerifyKey>> {
    return this.lookup(serverName, keyIds, opts.validAt, true);
  }

  private async lookup(serverName: string, keyIds: string[], validAt: number | undefined, viaNotaries: boolean): Promise<Map<string, ServerVerifyKey>> {
    const ok = (k: ServerVerifyKey | undefined): k is ServerVerifyKey => !!k && (validAt === undefined || k.validUntilTs >= validAt);
    let known = await this.known(serverName);
    const satisfied = (m: Map<string, ServerVerifyKey>) => keyIds.every((id) => ok(m.get(id)));
    if (!satisfied(known) && serverName !== this.serverName) {
      // Another process may have fetched them since we cached this server in memory.
      this.mem.delete(serverName);
      known = await this.known(serverName);
    }
    if (!satisfied(known) && serverName !== this.serverName && isValidServerName(serverName)) {
      const wanted = keyIds.filter((id) => KEY_ID.test(id));
      if (wanted.length) {
        await this.refresh(serverName, { keyIds: wanted, minimumValidUntilTs: validAt, viaNotaries, done: async () => satisfied(await this.known(serverName)) });
        known = await this.known(serverName);
      }
    }
    const out = new Map<string, ServerVerifyKey>();
    for (const id of keyIds) {
      const k = known.get(id);
      if (ok(k)) out.set(id, k);
    }
    return out;
  }

  /** One key's unpadded base64, or undefined when unknown (or not valid at `validAt`). */
  async publicKey(serverName: string, keyId: string, validAt?: number): Promise<string | undefined> {
    return (await this.verifyKeys(serverName, [keyId], { validAt })).get(keyId)?.key;
  }

  /**
   * The key responses we serve as a notary for `serverName` (only its own signatures; the route adds
   * ours). Refetched directly from the server when the cached one is not valid until
   * `minimumValidUntilTs` or lacks a requested key; a stale copy is served when the server is down.
   */
  async notaryResponses(serverName: string, opts: { keyIds?: string[]; minimumValidUntilTs?: number } = {}): Promise<Record<string, unknown>[]> {
    if (serverName === this.serverName) return [this.opts.ownKeys.keyResponse(this.now())];
    if (!isValidServerName(serverName)) return [];
    const minUntil = opts.minimumValidUntilTs ?? this.now();
    const keyIds = (opts.keyIds ?? []).filter((id) => KEY_ID.test(id));
    const good = (json: KeyResponse | undefined) =>
      !!json && json.valid_until_ts >= minUntil && keyIds.every((id) => json.verify_keys[id] || json.old_verify_keys?.[id]);
    let json = await this.cachedJson(serverName);
    if (!good(json)) {
      await this.refresh(serverName, { keyIds, minimumValidUntilTs: minUntil, viaNotaries: false, done: async () => good(await this.cachedJson(serverName)) });
      json = await this.cachedJson(serverName);
    }
    return json ? [json] : [];
  }

  /** GET /_matrix/key/v2/server from the server itself; stores what verifies. */
  async fetchDirect(serverName: string): Promise<void> {
    const json = await this.opts.transport.getJson<unknown>(serverName, '/_matrix/key/v2/server', { timeoutMs: this.fetchTimeoutMs });
    await this.storeResponse(this.checkResponse(json, serverName), serverName);
  }

  /** POST /_matrix/key/v2/query to a notary for one server's keys; stores what verifies. */
  async fetchFromNotary(notary: string, serverName: string, opts: { keyIds?: string[]; minimumValidUntilTs?: number } = {}): Promise<void> {
    const criteria: Record<string, { minimum_valid_until_ts?: number }> = {};
    for (const id of opts.keyIds ?? []) criteria[id] = opts.minimumValidUntilTs !== undefined ? { minimum_valid_until_ts: opts.minimumValidUntilTs } : {};
    const res = await this.opts.transport.request<{ server_keys?: unknown }>(notary, 'POST', '/_matrix/key/v2/query', {
      body: { server_keys: { [serverName]: criteria } },
      timeoutMs: this.fetchTimeoutMs,
    });
    if (!res || !Array.isArray(res.server_keys)) throw new KeyLookupError(`notary ${notary} sent no server_keys`);
    const notaryKeys = await this.notaryVerifyKeys(notary, res.server_keys);
    let stored = 0;
    for (const entry of res.server_keys) {
      try {
        if (!entry || typeof entry !== 'object' || (entry as KeyResponse).server_name !== serverName) continue;
        const signedByNotary = Object.entries((entry as KeyResponse).signatures?.[notary] ?? {})
          .some(([keyId]) => notaryKeys.has(keyId) && verifyJsonSignature(entry as KeyResponse, notary, keyId, notaryKeys.get(keyId)!));
        if (!signedByNotary) throw new KeyLookupError(`key response for ${serverName} is not signed by notary ${notary}`);
        await this.storeResponse(this.checkResponse(entry, serverName), serverName);
        stored++;
      } catch (err) {
        this.opts.logger?.warn({ notary, serverName, err: (err as Error).message }, 'rejected key response from notary');
      }
    }
    if (!stored) throw new KeyLookupError(`notary ${notary} returned no valid keys for ${serverName}`);
  }

  // --- internals ---

  /** The notary's keys to check its signatures: the configured ones, else its own published keys. */
  private async notaryVerifyKeys(notary: string, entries: unknown[]): Promise<Map<string, string>> {
    const configured = this.trusted.find((t) => t.server_name === notary)?.verify_keys;
    if (configured && Object.keys(configured).length) return new Map(Object.entries(configured));
    const ids = new Set<string>();
    for (const e of entries) for (const id of Object.keys((e as KeyResponse)?.signatures?.[notary] ?? {})) ids.add(id);
    // Directly from the notary only: a notary's keys via another notary could wait on itself.
    const keys = await this.lookup(notary, [...ids].filter((id) => KEY_ID.test(id)), this.now(), false);
    return new Map([...keys].map(([id, k]) => [id, k.key]));
  }

  /** Shape, server_name and self-signature checks of a key response (spec "Publishing Keys"). */
  private checkResponse(json: unknown, serverName: string): KeyResponse {
    const r = json as KeyResponse;
    if (!r || typeof r !== 'object' || Array.isArray(r)) throw new KeyLookupError('key response is not an object');
    if (r.server_name !== serverName) throw new KeyLookupError(`key response is for ${String(r.server_name)}, not ${serverName}`);
    if (!Number.isSafeInteger(r.valid_until_ts)) throw new KeyLookupError('key response has no valid_until_ts');
    if (!r.verify_keys || typeof r.verify_keys !== 'object') throw new KeyLookupError('key response has no verify_keys');
    const usable = (id: string, k: unknown) => KEY_ID.test(id) && !!k && typeof (k as { key?: unknown }).key === 'string' && validKey((k as { key: string }).key);
    for (const [id, k] of Object.entries(r.verify_keys)) if (!usable(id, k)) throw new KeyLookupError(`bad verify key ${id}`);
    if (r.old_verify_keys !== undefined) {
      if (typeof r.old_verify_keys !== 'object' || r.old_verify_keys === null) throw new KeyLookupError('bad old_verify_keys');
      for (const [id, k] of Object.entries(r.old_verify_keys)) {
        if (!usable(id, k) || !Number.isSafeInteger(k.expired_ts)) throw new KeyLookupError(`bad old verify key ${id}`);
      }
    }
    // Every origin signature by a key it lists must verify, and there must be at least one. (A
    // signature by a key not in verify_keys is skipped, as Synapse does.)
    let verified = false;
    for (const keyId of Object.keys(r.signatures?.[serverName] ?? {})) {
      const k = r.verify_keys[keyId];
      if (!k) continue;
      if (!verifyJsonSignature(r, serverName, keyId, k.key)) throw new KeyLookupError(`bad self-signature ${keyId} on ${serverName}'s keys`);
      verified = true;
    }
    if (!verified) throw new KeyLookupError(`${serverName}'s key response is not signed by its own keys`);
    return r;
  }

  private async storeResponse(r: KeyResponse, serverName: string): Promise<void> {
    const now = this.now();
    const validUntil = Math.min(r.valid_until_ts, now + MAX_KEY_VALIDITY_MS);
    const rows: RemoteServerKeyRow[] = [];
    for (const [keyId, k] of Object.entries(r.verify_keys)) {
      rows.push({ server_name: serverName, key_id: keyId, key: k.key, valid_until_ts: validUntil, expired_ts: null, fetched_ts: now });
    }
    for (const [keyId, k] of Object.entries(r.old_verify_keys ?? {})) {
      if (r.verify_keys[keyId]) continue;
      rows.push({ server_name: serverName, key_id: keyId, key: k.key, valid_until_ts: k.expired_ts, expired_ts: k.expired_ts, fetched_ts: now });
    }
    const existing = await this.known(serverName);
    for (const row of rows) {
      const had = existing.get(row.key_id);
      if (had && had.key !== row.key) this.opts.logger?.warn({ serverName, keyId: row.key_id }, 'server published a different key under a known key id; keeping the first');
    }
    const stripped = { ...r, signatures: { [serverName]: r.signatures[serverName] } };
    const db = this.opts.db;
    await this.opts.store.upsertKeys(rows, db);
    await this.opts.store.upsertKeyJson({ server_name: serverName, valid_until_ts: r.valid_until_ts, fetched_ts: now, key_json: JSON.stringify(stripped) }, db);
    this.mem.delete(serverName);
  }

  private async known(serverName: string): Promise<Map<string, ServerVerifyKey>> {
    if (serverName === this.serverName) return this.ownKeyMap();
    let m = this.mem.get(serverName);
    if (!m) {
      m = new Map();
      for (const row of await this.opts.store.keysOf(serverName, this.opts.db)) {
        const expired = row.expired_ts === null ? undefined : Number(row.expired_ts);
        m.set(row.key_id, { key: row.key, validUntilTs: expired ?? Number(row.valid_until_ts), ...(expired !== undefined ? { expiredTs: expired } : {}) });
      }
      this.mem.set(serverName, m);
    }
    return m;
  }

  private ownKeyMap(): Map<string, ServerVerifyKey> {
    const r = this.opts.ownKeys.keyResponse(this.now()) as KeyResponse;
    const m = new Map<string, ServerVerifyKey>();
    for (const [id, k] of Object.entries(r.verify_keys)) m.set(id, { key: k.key, validUntilTs: r.valid_until_ts });
    for (const [id, k] of Object.entries(r.old_verify_keys ?? {})) m.set(id, { key: k.key, validUntilTs: k.expired_ts, expiredTs: k.expired_ts });
    return m;
  }

  private async cachedJson(serverName: string): Promise<KeyResponse | undefined> {
    const row = await this.opts.store.keyJson(serverName, this.opts.db);
    return row ? (JSON.parse(row.key_json) as KeyResponse) : undefined;
  }

  /**
   * Fetches keys: directly first (the server's word on its own keys), then from each notary until
   * `done` holds. One fetch per server at a time; at most one per minRefetchIntervalMs.
   */
  private refresh(serverName: string, r: { keyIds: string[]; minimumValidUntilTs?: number; viaNotaries: boolean; done: () => Promise<boolean> }): Promise<void> {
    // Direct-only fetches never wait on anything else, so keeping them apart from full ones (which
    // may wait on a direct fetch of a notary's keys) rules out cycles.
    const flightKey = `${r.viaNotaries ? 'n' : 'd'}|${serverName}`;
    const running = this.inflight.get(flightKey);
    if (running) return running;
    const last = this.lastAttempt.get(serverName);
    const now = this.now();
    if (last !== undefined && now - last < this.minRefetchMs) return Promise.resolve();
    this.lastAttempt.set(serverName, now);
    if (this.lastAttempt.size > 10_000) this.lastAttempt.delete(this.lastAttempt.keys().next().value as string);
    const p = (async () => {
      try {
        await this.fetchDirect(serverName);
        if (await r.done()) return;
      } catch (err) {
        this.opts.logger?.debug({ serverName, err: (err as Error).message }, 'direct key fetch failed');
      }
      if (!r.viaNotaries) return;
      for (const t of this.trusted) {
        if (t.server_name === serverName || t.server_name === this.serverName) continue;
        try {
          await this.fetchFromNotary(t.server_name, serverName, { keyIds: r.keyIds, minimumValidUntilTs: r.minimumValidUntilTs });
          if (await r.done()) return;
        } catch (err) {
          this.opts.logger?.debug({ serverName, notary: t.server_name, err: (err as Error).message }, 'notary key fetch failed');
        }
      }
    })().finally(() => this.inflight.delete(flightKey));
    this.inflight.set(flightKey, p);
    return p;
  }
}

function validKey(b64: string): boolean {
  try {
    publicKeyObject(b64);
    return true;
  } catch {
    return false;
  }
}
