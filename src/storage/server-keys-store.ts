import type { Knex } from 'knex';

export interface ServerSigningKeyRow { key_id: string; seed: string; created_ts: number | string; expired_ts: number | string | null }

export class ServerKeysStore {
  constructor(private readonly db: Knex) {}

  async allKeys(q: Knex = this.db): Promise<ServerSigningKeyRow[]> {
    return q<ServerSigningKeyRow>('server_signing_keys').orderBy('created_ts');
  }

  /** Inserts unless a current key already exists (another process may have raced us at first start). */
  async insertKey(row: ServerSigningKeyRow, q: Knex = this.db): Promise<void> {
    await q('server_signing_keys').insert(row).onConflict('key_id').ignore();
  }
}
