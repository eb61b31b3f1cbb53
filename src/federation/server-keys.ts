// This server's Ed25519 signing keys: generated on first start, kept in the database so every
// process sharing it signs with the same key; served at GET /_matrix/key/v2/server.
import type { Knex } from 'knex';
import { generateSigningKey, signJson, signingKeyFromSeed, type SigningKey } from '../crypto/signing.js';
import { decodeBase64, encodeBase64 } from '../crypto/base64.js';
import type { ServerKeysStore } from '../storage/server-keys-store.js';

const KEY_RESPONSE_VALIDITY_MS = 24 * 3600_000;

export class ServerKeys {
  private current!: SigningKey;
  private old: { keyId: string; publicKey: string; expiredTs: number }[] = [];
  private cached: { body: Record<string, unknown>; until: number } | null = null;

  constructor(private readonly store: ServerKeysStore, readonly serverName: string) {}

  async load(db: Knex): Promise<void> {
    let rows = await this.store.allKeys(db);
    if (!rows.some((r) => r.expired_ts === null)) {
      const k = generateSigningKey();
      await this.store.insertKey({ key_id: k.keyId, seed: encodeBase64(k.seed), created_ts: Date.now(), expired_ts: null }, db);
      rows = await this.store.allKeys(db);
    }
    // Two processes starting at once may both insert a key; all of them agree on the oldest.
    const live = rows.filter((r) => r.expired_ts === null);
    const chosen = live[0];
    this.current = signingKeyFromSeed(chosen.key_id, decodeBase64(chosen.seed));
    this.old = rows
      .filter((r) => r !== chosen)
      .map((r) => {
        const k = signingKeyFromSeed(r.key_id, decodeBase64(r.seed));
        return { keyId: r.key_id, publicKey: encodeBase64(k.publicKey), expiredTs: Number(r.expired_ts ?? r.created_ts) };
      });
  }

  get signingKey(): SigningKey {
    return this.current;
  }

  sign<T extends Record<string, unknown>>(obj: T): T {
    return signJson(obj, this.serverName, this.current);
  }

  /** The signed body of GET /_matrix/key/v2/server, reused until it is half-way to expiry. */
  keyResponse(now = Date.now()): Record<string, unknown> {
    if (this.cached && this.cached.until > now) return this.cached.body;
    const validUntil = now + KEY_RESPONSE_VALIDITY_MS;
    const body = this.sign({
      server_name: this.serverName,
      valid_until_ts: validUntil,
      verify_keys: { [this.current.keyId]: { key: encodeBase64(this.current.publicKey) } },
      old_verify_keys: Object.fromEntries(this.old.map((o) => [o.keyId, { key: o.publicKey, expired_ts: o.expiredTs }])),
    });
    this.cached = { body, until: now + KEY_RESPONSE_VALIDITY_MS / 2 };
    return body;
  }
}
